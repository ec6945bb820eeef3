"""A preloaded fork server ("zygote") for runs: the per-run start-up cost without the interpreter.

Each worker process starts one zygote (a CPU worker's pool processes when they start, see
worker/celery.py; any other process at its first run): a fresh interpreter (``python -m worker.zygote FD``,
never a fork of the worker) with the same scrubbed environment a run's child gets
(``sandbox.child_environment``: no DATABASE_URL, secret key or broker URL), which imports torch,
the plugin SDK and the installed plugins once, runs no torch operation and never touches CUDA,
and then serves fork requests over a unix socket (SOCK_SEQPACKET: one JSON message per request,
the run's channel and output pipes passed along as file descriptors).

Per run the zygote forks a short-lived middle process, which forks the run's process and exits at
once. The worker is a child subreaper (``PR_SET_CHILD_SUBREAPER``), so the orphaned run process is
re-parented to the worker: the worker is its parent, reaps it and learns its exit code or signal
itself (``ForkedProcess``), exactly as with a process it started; a zygote that dies mid-run
changes nothing for the runs already forked. The two forks and the middle process's exit (each
milliseconds for a process that has torch mapped) happen ahead of the run: the zygote keeps one
such process ready, a spare that waits for its run (``_Spare``), hands it the next request and
forks the next spare after its reply. The run's process then does what a fresh child does:
its own session and process group, stdin from /dev/null, stdout/stderr into the output pipe, its
scratch directory as cwd, the run's environment (HOME/TMPDIR its scratch directory), then
``sandbox.child_main`` (die-with-parent watchdog on the worker, memory and file-size limits,
cgroup, seeding, torch threads, the plugin, the result channel).

The zygote exits when its worker does (the socket's other end closes, or its parent changes). The
worker side (``Zygote``, ``zygote_for``) restarts a zygote that died or misbehaves; whoever cannot
use one starts the run the old way (``python -m worker.sandbox``), so no run is lost because of it.
GPU runs, RUN_ISOLATE_NETWORK and RUN_AS_USER always take the fresh-exec path (worker/sandbox.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1024 * 1024
READY_TIMEOUT_S = 120.0  # importing torch and the plugins on a loaded machine
REPLY_TIMEOUT_S = 15.0
REPARENT_TIMEOUT_S = 5.0
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
#: A run's process that could not be set up (before the plugin's code ran) exits with this code.
EXIT_SETUP_FAILED = 70
#: A run's process that was not re-parented to its worker (the worker died meanwhile).
EXIT_ORPHANED = 71
#: Environment variables that differ per run and do not make a zygote's preload stale.
PER_RUN_ENV = frozenset({"HOME", "TMPDIR", "TEMP", "TMP"})


class ZygoteUnavailable(Exception):
    """The zygote could not fork the run: the caller starts it the fresh-exec way."""


# ---------------------------------------------------------------- the zygote process


def _cuda_initialised() -> bool:
    torch = sys.modules.get("torch")
    try:
        return bool(torch is not None and torch.cuda.is_initialized())
    except Exception:  # noqa: BLE001
        return False


def _preload(modules: Iterable[str]) -> tuple[list[str], list[str]]:
    """Import torch, numpy.random (seed_everything), the SDK, the sandbox and ``modules``; no
    torch operation is run, CUDA is not touched."""
    import importlib

    loaded, failed = [], []
    for name in ("torch", "numpy.random", "interp_registry.sdk", "worker.sandbox", *modules):
        try:
            importlib.import_module(name)
            loaded.append(name)
        except BaseException:  # noqa: BLE001 - a broken plugin fails its runs, not the zygote
            failed.append(name)
    import platform

    platform.platform()  # cached: ~50 ms per run otherwise (it scans the interpreter's binary)
    return loaded, failed


def _become_run(request: dict[str, Any], channel_fd: int, output_fd: int) -> None:
    """In the forked run process: the per-run set-up a fresh child gets, then ``child_main``."""
    code = EXIT_SETUP_FAILED
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(output_fd, 1)
        os.dup2(output_fd, 2)
        os.close(null)
        os.close(output_fd)
        # Wait for the middle process to exit: then this process is the worker's child (the
        # worker is a subreaper) and the die-with-parent watchdog watches the worker.
        worker_pid = int(request["worker_pid"])
        deadline = time.monotonic() + REPARENT_TIMEOUT_S
        while os.getppid() != worker_pid:
            if time.monotonic() > deadline:
                code = EXIT_ORPHANED
                raise RuntimeError("the run's process was not re-parented to its worker")
            time.sleep(0.0005)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in request["env"].items()})
        tempfile.tempdir = None  # recomputed from this run's TMPDIR
        from worker.sandbox import child_main

        code = 1
        child_main(str(request["spec"]), channel_fd)  # never returns
    except BaseException:  # noqa: BLE001
        with contextlib.suppress(BaseException):
            traceback.print_exc()
            sys.stderr.flush()
    finally:
        os._exit(code)


def _double_fork(target: Any, server: socket.socket, close: Iterable[Any] = ()) -> int:
    """Fork a process through a middle process that exits at once, so that it is re-parented to
    the worker (a subreaper); ``target()`` runs in it and must never return. Returns its pid once
    the middle process is gone (the process is then the worker's child)."""
    read_end, write_end = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    middle = os.fork()
    if middle == 0:
        code = 1
        try:
            server.close()
            for item in close:  # a spare's socket: no other process may hand it a run
                with contextlib.suppress(OSError):
                    item.close() if hasattr(item, "close") else os.close(item)
            os.close(read_end)
            pid = os.fork()
            if pid == 0:
                os.close(write_end)
                target()
            os.write(write_end, str(pid).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    data = b""
    try:
        while chunk := os.read(read_end, 64):
            data += chunk
    finally:
        os.close(read_end)
        os.waitpid(middle, 0)
    if not data:
        raise RuntimeError("the run's process could not be forked")
    return int(data)


def _fork_run(request: dict[str, Any], fds: list[int], server: socket.socket, close: Iterable[Any] = ()) -> int:
    """Fork the run's process (through a middle process that exits at once); returns its pid."""
    if len(fds) != 2:
        raise ValueError(f"a fork request carries 2 file descriptors, not {len(fds)}")
    channel_fd, output_fd = fds
    return _double_fork(lambda: _become_run(request, channel_fd, output_fd), server, close)


class _Spare:
    """A run's process forked ahead of its run (through the middle process, like any run's) and
    already re-parented to the worker: it waits, in the zygote's process group, for the one run it
    will become, so that a fork request costs no fork on the run's critical path. The zygote hands
    it the request and the run's pipes over a socket only the two of them hold; it exits unused
    when that socket closes (the zygote exited or was stopped) or when the worker dies (its parent
    changes). The worker reaps an unused one by the zygote's process group, which it leaves (its
    own session) only once it has its run (``Zygote.reap_spares``)."""

    def __init__(self, server: socket.socket, worker_pid: int):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.pid = _double_fork(lambda: _spare_main(theirs, worker_pid), server, close=(ours,))
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours
        self.worker_pid = worker_pid

    def hand_over(self, request: dict[str, Any], fds: list[int]) -> int:
        """Give the spare its run; its pid, or an OSError/ValueError (the caller forks afresh)."""
        if len(fds) != 2:
            raise ValueError(f"a fork request carries 2 file descriptors, not {len(fds)}")
        try:
            socket.send_fds(self.sock, [json.dumps(request).encode()], fds)
        finally:
            self.sock.close()
        return self.pid

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _spare_main(sock: socket.socket, worker_pid: int) -> None:
    """In a spare: wait to be re-parented to the worker, then for its run; then ``_become_run``."""
    code = EXIT_ORPHANED
    try:
        deadline = time.monotonic() + REPARENT_TIMEOUT_S
        while os.getppid() != worker_pid:
            if time.monotonic() > deadline:
                os._exit(code)
            time.sleep(0.0005)
        while True:
            readable, _, _ = select.select([sock], [], [], 1.0)
            if os.getppid() != worker_pid:
                os._exit(code)  # the worker died: nothing may start now
            if readable:
                break
        code = EXIT_SETUP_FAILED
        data, fds, _flags, _address = socket.recv_fds(sock, MAX_MESSAGE_BYTES, 4)
        sock.close()
        if not data or len(fds) != 2:
            os._exit(0 if not data else code)  # no run: the zygote went away
        request = json.loads(data)
    except BaseException:  # noqa: BLE001
        os._exit(code)
    _become_run(request, fds[0], fds[1])


def _warm_up() -> None:
    """Read, once in the zygote, the source lines a run's process would otherwise read at its
    seeding: ``torch.manual_seed`` queues its CUDA seeding with the caller's stack, formatted
    from the source files of these modules (~5-10 ms per run cold). Imports nothing."""
    import linecache

    names = ("runpy", "worker.zygote", "worker.sandbox", "interp_registry.sdk", "torch.random", "torch.cuda",
             "torch.cuda.random", "torch.xpu", "torch.xpu.random", "torch.mtia", "torch.mps")
    for name in names:
        path = getattr(sys.modules.get(name), "__file__", None)
        if path:
            with contextlib.suppress(Exception):
                linecache.getlines(path)


def serve(server: socket.socket, preload: Iterable[str]) -> None:
    """The zygote's loop: one fork request at a time, until the worker goes away.

    It is ready once torch and the SDK are imported (about what a fresh child takes); the
    installed plugins (``preload``) are then imported one at a time while no request waits, so
    the first run never waits for plugins it does not use. Once nothing is left to import it keeps
    one spare run process ready (``_Spare``); a request takes it, and the next spare is forked
    after the reply, off the run's critical path."""
    parent = os.getppid()
    loaded, failed = _preload(())
    if _cuda_initialised():
        server.send(json.dumps({"error": "CUDA was initialised while preloading; refusing to fork"}).encode())
        return
    _warm_up()
    server.send(json.dumps({"ready": True, "pid": os.getpid(), "loaded": loaded, "failed": failed}).encode())
    pending = [name for name in preload if name not in sys.modules]
    spare: _Spare | None = None
    try:
        while True:
            if spare is None and not pending:
                with contextlib.suppress(Exception):  # without one, the next request forks afresh
                    spare = _Spare(server, parent)
            readable, _, _ = select.select([server], [], [], 0.0 if pending else 1.0)
            if os.getppid() != parent:
                return  # the worker died
            if not readable:
                if pending:
                    _preload([pending.pop(0)])
                    if _cuda_initialised():
                        return  # the worker sees the socket close and starts a new zygote
                continue
            try:
                data, fds, _flags, _address = socket.recv_fds(server, MAX_MESSAGE_BYTES, 4)
            except OSError:
                return
            if not data:
                return  # the worker closed its end
            request: dict[str, Any] = {}
            try:
                request = json.loads(data)
                pid = None
                if spare is not None and request.get("worker_pid") == spare.worker_pid:
                    taken, spare = spare, None
                    with contextlib.suppress(OSError):  # a spare that died: fork afresh
                        pid = taken.hand_over(request, fds)
                reply: dict[str, Any] = {"pid": pid, "spare": pid is not None}
                if pid is None:
                    reply["pid"] = _fork_run(request, fds, server, close=[spare.sock] if spare is not None else [])
            except Exception as exc:  # noqa: BLE001 - told to the worker, which starts the run itself
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            finally:
                for fd in fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            try:
                server.send(json.dumps(reply).encode())
            except OSError:
                return
            module = str(request.get("module") or "")
            if module and module not in sys.modules:  # the next run of this plugin forks it preloaded
                if spare is not None:  # forked without it: replaced by one that has it
                    spare.close()
                    spare = None
                _preload([module])
                if _cuda_initialised():
                    return  # the worker sees the socket close and starts a new zygote
    finally:
        if spare is not None:
            spare.close()  # it sees its socket close and exits; the worker reaps it


def main(argv: list[str]) -> None:
    server = socket.socket(fileno=int(argv[1]))
    preload = [name for name in argv[2].split(",") if name] if len(argv) > 2 else []
    try:
        serve(server, preload)
    finally:
        home = os.environ.get("HOME", "")
        if os.path.basename(home).startswith("zygote-"):  # its own scratch directory (Zygote.home)
            shutil.rmtree(home, ignore_errors=True)
        os._exit(0)


# ---------------------------------------------------------------- the worker side


def make_subreaper() -> bool:
    """Make this process a child subreaper (Linux): orphaned descendants become its children."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            return False
        value = ctypes.c_int(0)
        return libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0) == 0 and value.value == 1
    except Exception:  # noqa: BLE001 - not Linux: no zygote
        return False


def _wait_readable(fd: int, timeout: float) -> None:
    with contextlib.suppress(OSError, ValueError):
        select.select([fd], [], [], max(0.0, timeout))


class ForkedProcess:
    """A run's process forked by the zygote and re-parented to this worker, as seen through the
    part of ``subprocess.Popen``'s interface ChildRun uses (pid, returncode, poll, wait, stdout)."""

    def __init__(self, pid: int, stdout: Any):
        self.pid = pid
        self.stdout = stdout
        self.returncode: int | None = None
        self._lock = threading.Lock()
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except (OSError, AttributeError):
            self._pidfd = None

    def poll(self) -> int | None:
        with self._lock:
            if self.returncode is None:
                try:
                    pid, status = os.waitpid(self.pid, os.WNOHANG)
                except ChildProcessError:  # not our child: its status is gone
                    logger.error("run process %s: not a child of this worker; exit status unknown", self.pid)
                    pid, status = self.pid, 255 << 8
                if pid == 0:
                    return None
                self.returncode = os.waitstatus_to_exitcode(status)
                if self._pidfd is not None:
                    os.close(self._pidfd)
                    self._pidfd = None
            return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            remaining = 1.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise subprocess.TimeoutExpired(f"run process {self.pid}", timeout or 0)
            pidfd = self._pidfd
            if pidfd is not None:
                _wait_readable(pidfd, min(remaining, 1.0))
            else:
                time.sleep(min(remaining, 0.005))
        return code


class Zygote:
    """The worker's handle on its zygote: start it, ask it to fork a run, stop it."""

    def __init__(self, env: dict[str, str], preload: Iterable[str] = ()):
        self.env_signature = env_signature(env)
        self.home = tempfile.mkdtemp(prefix="zygote-")
        env = {**env, "HOME": self.home, "TMPDIR": self.home, "TEMP": self.home, "TMP": self.home}
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.owner = os.getpid()
        self.lock = threading.Lock()
        self.ready = False
        self.info: dict[str, Any] = {}
        self.spares_used = 0  # the runs that started as a spare (``_Spare``): no fork on their path
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "worker.zygote", str(theirs.fileno()), ",".join(sorted(set(preload)))],
                cwd=self.home, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),), start_new_session=True, close_fds=True,
            )
        except BaseException:
            ours.close()
            shutil.rmtree(self.home, ignore_errors=True)
            raise
        finally:
            theirs.close()
        self.sock = ours
        self.pid = self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def _receive(self, timeout: float) -> dict[str, Any]:
        readable, _, _ = select.select([self.sock], [], [], timeout)
        if not readable:
            raise ZygoteUnavailable(f"the zygote did not answer within {timeout:.0f} s")
        data = self.sock.recv(MAX_MESSAGE_BYTES)
        if not data:
            raise ZygoteUnavailable(f"the zygote exited (status {self.process.poll()})")
        message = json.loads(data)
        if not isinstance(message, dict) or message.get("error"):
            raise ZygoteUnavailable(f"the zygote failed: {message}")
        return message

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        if not self.ready:
            self.info = self._receive(timeout)
            self.ready = True

    def fork(self, *, spec: str, cwd: str, env: dict[str, str], module: str, fds: tuple[int, int]) -> int:
        """Fork a run's process (``fds``: the write ends of its channel and output pipes);
        returns its pid (a child of this process). ZygoteUnavailable on any failure: the zygote
        is then stopped, and the caller starts the run itself."""
        request = {"spec": spec, "cwd": cwd, "env": env, "module": module, "worker_pid": os.getpid()}
        with self.lock:
            try:
                self.wait_ready()
                self.reap_spares()
                socket.send_fds(self.sock, [json.dumps(request).encode()], list(fds))
                reply = self._receive(REPLY_TIMEOUT_S)
                pid = int(reply["pid"])
                self.spares_used += bool(reply.get("spare"))
            except (OSError, ValueError, KeyError, TypeError, ZygoteUnavailable) as exc:
                self.close()
                if isinstance(exc, ZygoteUnavailable):
                    raise
                raise ZygoteUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return pid

    def close(self) -> None:
        """Stop the zygote (its forked runs are the worker's children and go on)."""
        if os.getpid() != self.owner:
            return  # a forked copy of the worker: the zygote is not ours to stop
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        # its unused spare sees its socket close and exits (never killed here: a run just handed
        # over may not have left the zygote's process group yet)
        if not self.reap_spares(timeout=1.0):
            _closed_groups.append(self.pid)  # a spare still exiting: reaped by a later zygote
        shutil.rmtree(self.home, ignore_errors=True)

    def reap_spares(self, timeout: float = 0.0) -> bool:
        """Reap the zygote's spares that ended unused (re-parented to this worker, still in the
        zygote's process group), for up to ``timeout`` seconds while some are left; no zombie
        accumulates in a long-lived worker. The zygote's own exit is left to its ``Popen`` (its
        status stays known). Also reaps what earlier, closed zygotes left. True when the group is
        empty."""
        for group in list(_closed_groups):
            if _reap_group(group, own=None, timeout=0.0):
                _closed_groups.remove(group)
        return _reap_group(self.pid, own=self.process, timeout=timeout)


#: Process groups of closed zygotes whose spare had not exited yet.
_closed_groups: list[int] = []


def _reap_group(group: int, *, own: subprocess.Popen | None, timeout: float) -> bool:
    """Reap the ended processes of ``group`` (the zygote's own through ``own``), waiting up to
    ``timeout`` while some are alive; True when none is left."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = os.waitid(os.P_PGID, group, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except (ChildProcessError, OSError):
            return True  # none left in the group
        if info is None or (own is not None and info.si_pid == own.pid and own.poll() is None):
            # nothing ended yet, or the zygote's own status not taken yet (its Popen busy elsewhere)
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        elif own is not None and info.si_pid == own.pid:
            continue  # the zygote itself, reaped by its Popen (which keeps its exit status)
        else:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(info.si_pid, 0)


def env_signature(env: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """What of a run's environment the zygote's own start depends on (not HOME/TMPDIR)."""
    return tuple(sorted((k, v) for k, v in env.items() if k not in PER_RUN_ENV))


_zygote: Zygote | None = None
_zygote_lock = threading.Lock()
_subreaper: bool | None = None


def zygote_for(env: dict[str, str], preload: Iterable[str] = ()) -> Zygote | None:
    """This worker process's zygote, started (or restarted) as needed; None where forking runs
    is not possible here (no subreaper support). ``env`` is a run's scrubbed environment: a
    zygote started with a different one (say RUN_ENV_PASSTHROUGH changed) is replaced."""
    global _zygote, _subreaper
    with _zygote_lock:
        if _zygote is not None and _zygote.owner != os.getpid():
            _zygote = None  # inherited through a fork of the worker: not ours
        if _subreaper is None or (_zygote is None and not _subreaper):
            _subreaper = make_subreaper()
        if not _subreaper:
            return None
        if _zygote is not None and (not _zygote.alive() or _zygote.env_signature != env_signature(env)):
            _zygote.close()
            _zygote = None
        if _zygote is None:
            _zygote = Zygote(env, preload)
        return _zygote


def zygote_discard(zygote: Zygote) -> None:
    """Forget a zygote that failed (it is closed): the next run starts a new one."""
    global _zygote
    with _zygote_lock:
        if _zygote is zygote:
            _zygote = None
    zygote.close()


def zygote_stop() -> None:
    """Stop this worker process's zygote (worker shutdown, tests)."""
    global _zygote
    with _zygote_lock:
        zygote, _zygote = _zygote, None
    if zygote is not None:
        zygote.close()


def zygote_current() -> Zygote | None:
    return _zygote


if __name__ == "__main__":
    main(sys.argv)
