"""A second "host" on this machine for the worker tests: a network namespace (and a UTS namespace,
so its own hostname) joined to this one by a veth pair, with small TCP forwarders in the test
process that carry its PostgreSQL and Redis traffic (the services listen on 127.0.0.1 only).

Cutting the link (the namespace's end of the veth down) is a partition: packets stop, nothing is
reset, established connections hang, new ones fail; bringing it up again lets them resume."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]


class NamespaceUnavailable(Exception):
    """The kernel (or the user's privileges) does not allow network namespaces here."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


class TcpForwarder:
    """Listens on ``listen`` and relays every connection to ``upstream`` (two threads each)."""

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int]):
        self.upstream = upstream
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(listen)
        self.server.listen(64)
        self.server.settimeout(0.5)
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True, name=f"forward-{listen[1]}").start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self.lock:
                if self.closed:
                    client.close()
                    upstream.close()
                    return
                self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:  # neither protocol half-closes: one side gone ends the pair
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        """Stop listening and end every relayed connection (the upstream ends see them close)."""
        with self.lock:
            self.closed = True
            sockets, self.sockets = self.sockets, []
        self.server.close()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class NamespacedHost:
    """A network namespace ``name`` reached from here at ``host_ip`` (its own address: ``ns_ip``)."""

    def __init__(self, tag: str):
        if shutil.which("ip") is None or shutil.which("unshare") is None:
            raise NamespaceUnavailable("the 'ip' (iproute2) and 'unshare' (util-linux) commands are needed")
        self.name = f"ns{tag}"[:15]
        self.host_link, self.ns_link = f"vh{tag}"[:15], f"vn{tag}"[:15]
        self.hostname = f"partb-{tag}"
        number = int(tag) if tag.isdigit() else abs(hash(tag))
        third, fourth = (number >> 6) % 256, (number % 64) * 4
        self.host_ip, self.ns_ip = f"10.251.{third}.{fourth + 1}", f"10.251.{third}.{fourth + 2}"
        self.forwarders: list[TcpForwarder] = []
        self._remove_leftovers()
        created = _ip("netns", "add", self.name, check=False)
        if created.returncode != 0:
            error = created.stderr.strip()
            if any(word in error for word in ("Operation not permitted", "Permission denied", "not supported")):
                raise NamespaceUnavailable(f"ip netns add refused: {error}")
            raise RuntimeError(f"ip netns add {self.name}: {error}")
        try:
            _ip("link", "add", self.host_link, "type", "veth", "peer", "name", self.ns_link)
            _ip("link", "set", self.ns_link, "netns", self.name)
            _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_link)
            _ip("link", "set", self.host_link, "up")
            self.exec("ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_link)
            self.exec("ip", "link", "set", self.ns_link, "up")
            self.exec("ip", "link", "set", "lo", "up")
            # Retransmit at least every second inside the namespace, so that connections resume
            # promptly when the link returns (kernels >= 6.15; older ones back off up to 120 s).
            self.exec("sysctl", "-qw", "net.ipv4.tcp_rto_max_ms=1000", check=False)
        except BaseException:
            self.remove()
            raise

    def exec(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return _ip("netns", "exec", self.name, *args, check=check)

    def forward(self, port: int, upstream: tuple[str, int]) -> tuple[str, int]:
        """Relay ``host_ip:port`` (reachable from the namespace) to ``upstream`` on this host."""
        self.forwarders.append(TcpForwarder((self.host_ip, port), upstream))
        return self.host_ip, port

    def cut(self) -> None:
        self.exec("ip", "link", "set", self.ns_link, "down")

    def restore(self) -> None:
        self.exec("ip", "link", "set", self.ns_link, "up")

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace, with this host's own hostname."""
        return ["ip", "netns", "exec", self.name, "unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"',
                self.hostname, *argv]

    def _remove_leftovers(self) -> None:
        _ip("netns", "del", self.name, check=False)
        _ip("link", "del", self.host_link, check=False)

    def remove(self) -> None:
        """Kill what still runs inside (a run's child has a process group of its own), end the
        relayed connections, delete the namespace and the veth pair."""
        pids = _ip("netns", "pids", self.name, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        for forwarder in self.forwarders:
            forwarder.close()
        self._remove_leftovers()


class Worker:
    """A real ``celery worker`` subprocess (its own process group), optionally inside a namespace."""

    def __init__(self, env: dict[str, str], *, queues: str, concurrency: int = 1, prefix=None, extra=(), wait=True):
        self.log_path = Path(settings.VAR_DIR) / f"worker-{time.time_ns()}.log"
        self.log = self.log_path.open("w")
        argv = [
            sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", queues, "--concurrency",
            str(concurrency), "--loglevel", "INFO", "--without-gossip", "--without-mingle",
            "-n", f"test-{time.time_ns()}@%h", *extra,
        ]
        self.process = subprocess.Popen(
            prefix(argv) if prefix else argv, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"celery worker exited: {self.output()[-3000:]}")
            if "ready." in self.output():
                return
            time.sleep(0.2)
        raise RuntimeError(f"celery worker did not start: {self.output()[-3000:]}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after ``timeout``."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:  # the pool's children too, even when the main process is gone already
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)
        self.log.close()
