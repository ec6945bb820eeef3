"""Soak with faults (issue 9): many runs through real Celery workers and a real beat, under
production settings (``registry.settings.base``, DEBUG off, default run/reaper timings), while
workers are SIGKILLed, the broker is killed and restarted and the database goes away.

Nothing shared is disturbed: the harness starts its own ``redis-server`` on a free port (the
broker; a "broker restart" is a SIGKILL of it and a fresh start on the same port, so every queued
message is lost), creates its own scratch database ``soak_<pid>`` on the local PostgreSQL (dropped
at the end) and puts a TCP proxy of its own in front of it: every registry process (workers, beat)
reaches the database through the proxy, so a "database outage" is the proxy closing every
connection and refusing new ones for N seconds. The harness itself reads the database directly.

    python bench/soak.py --runs 1000 --workers 3 --kill-every 10 --broker-restarts 2 \
        --db-outages 1 --baseline-runs 300

Two arms in one invocation, on the same warm workers: a fault-free one (``--baseline-runs``), then
the one with faults. Prints a summary and writes JSON (``--json``, default bench/results/soak.json).
Exit status 0 only if nothing was lost or duplicated and every run succeeded.

Recovery, per fault:
- worker kill: from the SIGKILL until every run that was running on the killed worker is running
  again on another worker (a later attempt) or finished;
- broker restart: from the SIGKILL of redis until a run that was queued at that moment (its
  message lost) is running; also until the first run started after the restart finishes;
- database outage: from the database's return until a run finishes again.

The reusable parts (``RedisServer``, ``DbProxy``, ``Cluster``, ``soak``) are imported by
tests/worker/test_faults_soak.py, which runs this script at short parameters.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "bench" / "results" / "soak.json"
PG = ("127.0.0.1", 5432)
MEASUREMENTS_PER_RUN = 6  # the echo plugin: 2 arms x 3 metrics


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ------------------------------------------------------------------ the broker: a redis of our own


class RedisServer:
    """A private ``redis-server`` (no persistence): a restart loses every queued message."""

    def __init__(self, port: int, log_dir: Path):
        self.port, self.log_dir = port, log_dir
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        out = (self.log_dir / f"redis-{self.starts}.log").open("w")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def restart(self) -> None:
        self.kill()
        self.start()


# ------------------------------------------------------------------ the database: a proxy we can cut


class DbProxy:
    """Relays ``127.0.0.1:port`` to PostgreSQL (two threads per connection, as the forwarder in
    tests/worker/netns.py). ``outage()`` closes every relayed connection and stops listening
    (new connections are refused); ``restore()`` listens again on the same port."""

    def __init__(self, port: int, upstream: tuple[str, int] = PG):
        self.port, self.upstream = port, upstream
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.server: socket.socket | None = None
        self.generation = 0
        self.restore()

    def restore(self) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(128)
        server.settimeout(0.5)
        with self.lock:
            self.generation += 1
            self.server = server
            generation = self.generation
        threading.Thread(target=self._accept, args=(server, generation), daemon=True,
                         name=f"dbproxy-{self.port}").start()

    def _accept(self, server: socket.socket, generation: int) -> None:
        while True:
            try:
                client, _ = server.accept()
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
                if generation != self.generation or self.server is None:
                    client.close()
                    upstream.close()
                    continue
                self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
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
            with self.lock:
                for sock in (src, dst):
                    if sock in self.sockets:
                        self.sockets.remove(sock)
                        sock.close()

    def outage(self) -> int:
        """Cut: stop listening, end every relayed connection. Returns how many were cut."""
        with self.lock:
            self.generation += 1
            server, self.server = self.server, None
            sockets, self.sockets = self.sockets, []
        if server is not None:
            server.close()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        return len(sockets) // 2

    def close(self) -> None:
        self.outage()


def psql(sql: str, database: str = "postgres") -> None:
    subprocess.run(["psql", "-h", PG[0], "-p", str(PG[1]), "-U", "postgres", "-d", database, "-v",
                    "ON_ERROR_STOP=1", "-q", "-c", sql], check=True, capture_output=True, timeout=120)


# ------------------------------------------------------------------ workers and beat


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _log_time(line: str) -> float | None:
    """The epoch time of a registry log line ("2026-12-03 07:45:04,123 INFO ...", local time)."""
    match = _LOG_TIME.match(line)
    if match is None:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


@dataclass
class Proc:
    name: str
    process: subprocess.Popen
    log_path: Path
    started: float
    replacement: bool = False  # started to replace a killed worker
    ready_at: float | None = None  # epoch time of its "ready." log line
    first_claim_at: float | None = None  # of its pool process's first claim (worker/runner.py)
    _scanned: int = 0

    def scan_start(self) -> None:
        """Read the new part of the log for the start marks ("ready.", the first run claimed)."""
        if self.ready_at is not None and self.first_claim_at is not None:
            return
        try:
            with self.log_path.open("rb") as log_file:
                log_file.seek(self._scanned)
                data = log_file.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1  # whole lines only
        self._scanned += end
        for line in data[:end].decode(errors="replace").splitlines():
            if self.ready_at is None and line.rstrip().endswith(" ready."):
                self.ready_at = _log_time(line)
            elif self.first_claim_at is None and "the first run this process claimed" in line:
                self.first_claim_at = _log_time(line)

    def start_times(self) -> dict[str, Any]:
        self.scan_start()
        return {"worker": self.name,
                "ready_s": _r(self.ready_at - self.started) if self.ready_at else None,
                "first_claim_s": _r(self.first_claim_at - self.started) if self.first_claim_at else None}

    def alive(self) -> bool:
        return self.process.poll() is None

    def group_pids(self) -> set[int]:
        out = subprocess.run(["ps", "-o", "pid=", "-g", str(self.process.pid)], capture_output=True, text=True)
        return {int(pid) for pid in out.stdout.split()}

    def ready(self) -> bool:
        try:
            return "ready." in self.log_path.read_text(errors="replace")
        except OSError:
            return False

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 15) -> None:
        if self.alive():
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        self.kill()


class Cluster:
    """N ``celery worker -Q cpu --concurrency 1`` (the ones killed), one worker for the
    ``maintenance`` queue and one ``celery beat`` (as the README's deployment section: the reaper
    and the sweeps never wait behind runs; one beat for the deployment), each in its own process
    group."""

    def __init__(self, env: dict[str, str], log_dir: Path, workers: int):
        self.env, self.log_dir = env, log_dir
        self.count = 0
        self.workers: list[Proc] = [self.start_worker() for _ in range(workers)]
        self.maintenance = self._spawn("maintenance", [
            "worker", "-Q", "maintenance", "--concurrency", "1", "--loglevel", "INFO", "--without-gossip",
            "--without-mingle", "-n", "maintenance@%h",
        ])
        self.beat = self._spawn("beat", ["beat", "--loglevel", "INFO", "-s", str(log_dir / "beat.schedule")])
        self.retired: list[Proc] = []

    def _spawn(self, name: str, args: list[str]) -> Proc:
        log_path = self.log_dir / f"{name}.log"
        out = log_path.open("w")
        process = subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker", *args], cwd=ROOT, env=self.env,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        return Proc(name, process, log_path, time.time())

    def start_worker(self) -> Proc:
        self.count += 1
        name = f"soak{self.count}"
        return self._spawn(name, ["worker", "-Q", "cpu", "--concurrency", "1", "--loglevel", "INFO",
                                  "--without-gossip", "--without-mingle", "-n", f"{name}@%h"])

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for worker in self.workers:
                if not worker.alive():
                    raise RuntimeError(f"{worker.name} exited: {worker.log_path.read_text()[-2000:]}")
            if all(worker.ready() for worker in self.workers):
                return
            time.sleep(0.3)
        raise RuntimeError("workers did not become ready")

    def kill_random(self, rng: random.Random) -> tuple[Proc, set[int]]:
        """SIGKILL a random worker's whole process group and start a replacement."""
        index = rng.randrange(len(self.workers))
        victim = self.workers[index]
        pids = victim.group_pids()
        victim.kill()
        victim.scan_start()
        self.retired.append(victim)
        self.workers[index] = self.start_worker()
        self.workers[index].replacement = True
        return victim, pids

    def replacements(self, since: float) -> list[Proc]:
        return [p for p in [*self.retired, *self.workers] if p.replacement and p.started >= since]

    def stop(self) -> None:
        for proc in [*self.workers, self.maintenance, self.beat]:
            proc.stop()


# ------------------------------------------------------------------ one arm of the soak


@dataclass
class Fault:
    kind: str  # worker_kill | broker_restart | db_outage
    at: float  # epoch seconds when injected
    detail: dict[str, Any] = field(default_factory=dict)
    watch: set[int] = field(default_factory=set)  # run ids this fault's recovery waits for
    attempts: dict[int, int] = field(default_factory=dict)
    restored_at: float | None = None
    recovery_s: float | None = None
    extra: dict[str, float | None] = field(default_factory=dict)

    def as_dict(self, t0: float) -> dict[str, Any]:
        return {"kind": self.kind, "at_s": round(self.at - t0, 2), "recovery_s": _r(self.recovery_s),
                **{k: _r(v) if isinstance(v, float) else v for k, v in self.extra.items()}, **self.detail}


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _submit(experiment, user, seeds: list[int]) -> list[int]:
    from registry.reproductions.services import reproduction_request

    ids = []
    for start in range(0, len(seeds), 50):
        reproduction = reproduction_request(experiment=experiment, user=user, seeds=seeds[start:start + 50])
        ids.append(reproduction.pk)
    return ids


def soak(*, cluster: Cluster, redis: RedisServer, proxy: DbProxy, experiment, user, runs: int, seed_base: int,
         kill_every: float = 0, max_kills: int | None = None, broker_at: list[float] = (),
         db_at: list[tuple[float, float]] = (), drain_timeout: float = 1800, rng: random.Random | None = None,
         poll_s: float = 0.5) -> dict[str, Any]:
    """Submit ``runs`` runs, inject the faults (times in seconds after submission), wait until
    every run has ended or ``drain_timeout`` passed, and count."""
    from django.db import connection
    from django.db.models import Count

    from registry.events.models import Event
    from registry.reproductions.models import Measurement, Run

    rng = rng or random.Random(0)
    t0 = time.time()
    reproductions = _submit(experiment, user, list(range(seed_base, seed_base + runs)))
    submitted_s = time.time() - t0
    mine = Run.objects.filter(reproduction_id__in=reproductions)
    run_ids = set(mine.values_list("pk", flat=True))
    terminal = ("succeeded", "failed", "timed_out", "cancelled")
    faults: list[Fault] = []
    schedule: list[tuple[float, str, float]] = [(at, "broker_restart", 0.0) for at in broker_at]
    schedule += [(at, "db_outage", length) for at, length in db_at]
    schedule.sort()
    next_kill = t0 + kill_every if kill_every else None
    kills = 0
    outage_until: float | None = None
    outage_fault: Fault | None = None
    busy_until = 0.0  # no worker kill while a broker/database fault is on or just over
    done_at = None
    while True:
        now = time.time()
        # --- inject
        if outage_fault is not None and now >= outage_until:
            proxy.restore()
            outage_fault.restored_at = time.time()
            log(f"database back after {outage_fault.restored_at - outage_fault.at:.1f} s")
            busy_until = time.time() + 5
            outage_fault = None
        if schedule and now >= t0 + schedule[0][0] and outage_fault is None:
            _, kind, length = schedule.pop(0)
            if kind == "broker_restart":
                queued = set(mine.filter(state="queued").values_list("pk", flat=True))
                fault = Fault(kind, time.time(), {"queued_at_kill": len(queued)}, watch=queued)
                redis.kill()
                time.sleep(1.0)
                redis.start()
                fault.restored_at = time.time()
                log(f"broker restarted ({len(queued)} queued runs' messages lost)")
                busy_until = time.time() + 5
            else:
                fault = Fault(kind, time.time(), {"outage_s": length})
                fault.detail["connections_cut"] = proxy.outage()
                outage_fault, outage_until = fault, time.time() + length
                log(f"database outage for {length:.0f} s ({fault.detail['connections_cut']} connections cut)")
            faults.append(fault)
        if (next_kill is not None and now >= next_kill and outage_fault is None and now >= busy_until
                and (max_kills is None or kills < max_kills) and done_at is None):
            victim, pids = cluster.kill_random(rng)
            kills += 1
            fault = Fault("worker_kill", time.time(), {"worker": victim.name})
            hosts = [f":{pid}" for pid in pids]
            for pk, host, attempts in mine.filter(state="running").values_list("pk", "worker_host", "attempts"):
                if any(host.endswith(suffix) for suffix in hosts):
                    fault.watch.add(pk)
                    fault.attempts[pk] = attempts
            fault.detail["runs_on_it"] = len(fault.watch)
            faults.append(fault)
            log(f"SIGKILL {victim.name} (runs on it: {sorted(fault.watch)}); started soak{cluster.count}")
            next_kill = time.time() + kill_every
        # --- replacement workers' start (spawn -> ready -> first run claimed)
        for worker in cluster.replacements(t0):
            had = (worker.ready_at, worker.first_claim_at)
            worker.scan_start()
            if worker.ready_at is not None and had[0] is None:
                log(f"{worker.name} ready {worker.ready_at - worker.started:.2f} s after its spawn")
            if worker.first_claim_at is not None and had[1] is None:
                log(f"{worker.name} claimed its first run {worker.first_claim_at - worker.started:.2f} s after "
                    f"its spawn")
        # --- observe recoveries
        for fault in faults:
            if fault.recovery_s is not None or fault.kind == "db_outage" and fault.restored_at is None:
                continue
            if fault.kind == "worker_kill":
                if not fault.watch:
                    fault.recovery_s = 0.0
                    fault.detail["note"] = "no run was running on the killed worker"
                    continue
                pending = held = 0
                for pk, state, attempts in Run.objects.filter(pk__in=fault.watch).values_list(
                        "pk", "state", "attempts"):
                    if not (state in terminal or state == "running" and attempts > fault.attempts[pk]):
                        pending += 1
                    if state == "running" and attempts == fault.attempts[pk]:
                        held += 1  # still held by the dead worker's claim: not yet requeued
                if held == 0 and "released_s" not in fault.extra:
                    fault.extra["released_s"] = time.time() - fault.at
                if pending == 0:
                    fault.recovery_s = time.time() - fault.at
            elif fault.kind == "broker_restart":
                since = datetime.fromtimestamp(fault.restored_at, tz=UTC)
                if "first_finish_after_restart_s" not in fault.extra:
                    first = mine.filter(started_at__gte=since, finished_at__isnull=False).order_by("finished_at") \
                        .values_list("finished_at", flat=True).first()
                    if first is not None:
                        fault.extra["first_finish_after_restart_s"] = first.timestamp() - fault.at
                if not fault.watch:
                    fault.recovery_s = 0.0
                elif Run.objects.filter(pk__in=fault.watch).exclude(state="queued").exists():
                    fault.recovery_s = time.time() - fault.at
            elif fault.kind == "db_outage":
                since = datetime.fromtimestamp(fault.restored_at, tz=UTC)
                first = mine.filter(finished_at__gte=since).order_by("finished_at").values_list(
                    "finished_at", flat=True).first()
                if first is not None:
                    fault.recovery_s = first.timestamp() - fault.restored_at
        # --- done?
        open_runs = mine.exclude(state__in=terminal).count()
        if open_runs == 0 and done_at is None:
            done_at = time.time()
        if done_at is not None and not schedule and outage_fault is None and \
                all(f.recovery_s is not None or f.kind == "worker_kill" for f in faults):
            break
        if done_at is not None and time.time() - done_at > 60:
            break  # a recovery that can no longer be observed (every run ended first)
        if now - t0 > drain_timeout:
            log(f"drain timeout: {open_runs} runs not finished")
            break
        # every dead worker's replacement counts as one more worker; restart the beat if it died
        if not cluster.beat.alive():
            log("beat exited; starting another")
            cluster.beat = cluster._spawn(f"beat{cluster.count}", ["beat", "--loglevel", "INFO", "-s",
                                                                   str(cluster.log_dir / "beat.schedule")])
        connection.close()  # never hold a transaction; the harness's own connection is direct
        time.sleep(poll_s)
    if outage_fault is not None:
        proxy.restore()
    end = done_at or time.time()
    states = dict(mine.values_list("state").annotate(n=Count("pk")).values_list("state", "n"))
    measurement_counts = dict(
        Measurement.objects.filter(run_id__in=run_ids).values_list("run_id").annotate(n=Count("pk"))
        .values_list("run_id", "n"))
    finished_events: dict[int, int] = {}
    for payload in Event.objects.filter(type="run.finished").values_list("payload", flat=True):
        pk = payload.get("run")
        if pk in run_ids:
            finished_events[pk] = finished_events.get(pk, 0) + 1
    succeeded = states.get("succeeded", 0)
    lost_ids = sorted(mine.exclude(state__in=terminal).values_list("pk", flat=True))
    duplicated = sorted(pk for pk in run_ids if measurement_counts.get(pk, 0) > MEASUREMENTS_PER_RUN
                        or finished_events.get(pk, 0) > 1)
    not_succeeded = sorted(mine.exclude(state="succeeded").values_list("pk", flat=True))
    attempts = list(mine.values_list("attempts", flat=True))
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in ("worker_kill", "broker_restart", "db_outage"):
        values = [f.recovery_s for f in faults if f.kind == kind and f.recovery_s is not None
                  and not (kind == "worker_kill" and not f.watch)]
        by_kind[kind] = {
            "injected": sum(f.kind == kind for f in faults),
            "measured": len(values),
            "median_s": _r(statistics.median(values)) if values else None,
            "p95_s": _r(_p95(values)) if values else None,
            "max_s": _r(max(values)) if values else None,
        }
        extra_key = {"worker_kill": "released_s", "broker_restart": "first_finish_after_restart_s"}.get(kind)
        if extra_key:
            extras = [f.extra[extra_key] for f in faults if f.kind == kind and f.watch and f.extra.get(extra_key)
                      is not None]
            by_kind[kind][f"{extra_key}_median"] = _r(statistics.median(extras)) if extras else None
            by_kind[kind][f"{extra_key}_p95"] = _r(_p95(extras)) if extras else None
    starts = [p.start_times() for p in cluster.replacements(t0)]
    worker_starts: dict[str, Any] = {"replacements": len(starts)}
    for key in ("ready_s", "first_claim_s"):
        values = [s[key] for s in starts if s[key] is not None]
        worker_starts[f"{key}_measured"] = len(values)
        worker_starts[f"{key}_median"] = _r(statistics.median(values)) if values else None
        worker_starts[f"{key}_p95"] = _r(_p95(values)) if values else None
    worker_starts["starts"] = starts
    elapsed = end - t0
    return {
        "worker_starts": worker_starts,
        "submitted": len(run_ids),
        "submit_s": round(submitted_s, 2),
        "finished": succeeded,
        "states": states,
        "lost": len(lost_ids),
        "lost_ids": lost_ids[:200],
        "duplicated": len(duplicated),
        "duplicated_ids": duplicated[:200],
        "not_succeeded_ids": not_succeeded[:200],
        "run_finished_events": sum(finished_events.values()),
        "measurements": sum(measurement_counts.values()),
        "retried_runs": sum(a > 1 for a in attempts),
        "max_attempts": max(attempts, default=0),
        "elapsed_s": round(elapsed, 1),
        "throughput_runs_per_s": round(succeeded / elapsed, 3) if elapsed > 0 else None,
        "recovery": by_kind,
        "faults": [f.as_dict(t0) for f in faults],
        "reproductions": reproductions,
    }


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(0.95 * len(ordered) + 0.5)) - 1))]


def spread(count: int, start: float, end: float) -> list[float]:
    """``count`` times evenly inside (start, end)."""
    return [start + (end - start) * (i + 1) / (count + 1) for i in range(count)]


# ------------------------------------------------------------------ the whole invocation


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--baseline-runs", type=int, default=300, help="fault-free arm first (0: none)")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kill-every", type=float, default=10.0, help="seconds between worker SIGKILLs (0: none)")
    parser.add_argument("--max-kills", type=int, default=None)
    parser.add_argument("--broker-restarts", type=int, default=2)
    parser.add_argument("--db-outages", type=int, default=1)
    parser.add_argument("--db-outage-s", type=float, default=20.0)
    parser.add_argument("--fault-window", type=float, nargs=2, default=None, metavar=("START", "END"),
                        help="seconds after submission inside which the broker and database faults are "
                             "spread evenly (default: the first 80%% of the expected duration)")
    parser.add_argument("--run-seconds", type=float, default=0.4, help="work per run (echo plugin)")
    parser.add_argument("--drain-timeout", type=float, default=1800.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--keep-logs", action="store_true", help="keep the log directory even if all is well")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # stop cleanly (workers, beat, redis, proxy) on SIGTERM, and on SIGINT even when started in the
    # background by a shell (which sets SIGINT to "ignored")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    tag = os.getpid()
    log_dir = Path(tempfile.mkdtemp(prefix=f"soak-{tag}-"))
    db = f"soak_{tag}"
    redis = RedisServer(free_port(), log_dir)
    proxy: DbProxy | None = None
    cluster: Cluster | None = None
    created = False
    ok = False
    try:
        psql(f"CREATE DATABASE {db}")
        created = True
        redis.start()
        proxy = DbProxy(free_port())
        common = {
            "DJANGO_SETTINGS_MODULE": "registry.settings.base",
            "DJANGO_DEBUG": "false",
            "REGISTRY_VAR_DIR": str(log_dir / "var"),
            "CELERY_BROKER_URL": f"redis://127.0.0.1:{redis.port}/0",
            "PLUGINS_EXTRA": "echo=tests.fakes.plugins:EchoExperiment",
            "PYTHONPATH": str(ROOT),
            # one user submits the whole soak: above the per-user run quotas (issue 10)
            "QUOTA_ACTIVE_RUNS": "1000000",
            "QUOTA_RUNS_PER_DAY": "1000000",
        }
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("RUN_", "REAPER_", "CELERY_", "DJANGO_"))
                    and k not in ("DATABASE_URL", "PLUGINS_EXTRA", "REGISTRY_VAR_DIR")}
        worker_env = {**base_env, **common, "DATABASE_URL": f"postgres://postgres@127.0.0.1:{proxy.port}/{db}"}
        own_env = {**common, "DATABASE_URL": f"postgres://postgres@{PG[0]}:{PG[1]}/{db}"}
        os.environ.update(own_env)
        for key in [k for k in os.environ if k.startswith(("RUN_", "REAPER_"))]:
            del os.environ[key]  # production defaults for every timing
        (log_dir / "var").mkdir()
        t = time.time()
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env={**base_env, **own_env},
                       check=True)
        log(f"database {db} migrated in {time.time() - t:.1f} s; broker redis :{redis.port}; "
            f"proxy :{proxy.port}; logs {log_dir}")
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        from django.conf import settings
        from django.contrib.auth import get_user_model

        from registry.findings.services import finding_create
        from registry.reproductions.services import experiment_create

        assert not settings.DEBUG
        timings = {name: getattr(settings, name) for name in (
            "RUN_HEARTBEAT_INTERVAL_S", "RUN_HEARTBEAT_TIMEOUT_S", "RUN_REDISPATCH_AFTER_S", "REAPER_INTERVAL_S",
            "RUN_DB_RETRY_S", "RUN_MAX_ATTEMPTS", "RUN_SAVE_RETRY_S")}
        user = get_user_model().objects.create(username="soak")
        finding = finding_create(user=user, title="soak", kind="fix")
        experiment = experiment_create(finding=finding, user=user, plugin="echo",
                                       params={"sleep_s": args.run_seconds}, reproduce=False)
        cluster = Cluster(worker_env, log_dir, args.workers)
        cluster.wait_ready()
        log(f"{args.workers} workers and a beat ready; timings {timings}")
        # Warm-up, not counted: a worker says "ready." before its pool processes have imported the
        # plugins (torch), so both arms start on warm workers (the fault arm's replacements do not).
        soak(cluster=cluster, redis=redis, proxy=proxy, experiment=experiment, user=user,
             runs=4 * args.workers, seed_base=10**6, drain_timeout=args.drain_timeout)
        log("warm-up done")
        result: dict[str, Any] = {
            "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "settings_module": "registry.settings.base", "debug": settings.DEBUG, "timings": timings,
            "machine": {"cpus": os.cpu_count(), "load_at_start": os.getloadavg()},
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        expected_tp = None
        if args.baseline_runs:
            log(f"fault-free arm: {args.baseline_runs} runs")
            base = soak(cluster=cluster, redis=redis, proxy=proxy, experiment=experiment, user=user,
                        runs=args.baseline_runs, seed_base=0, drain_timeout=args.drain_timeout)
            result["baseline"] = base
            expected_tp = base["throughput_runs_per_s"]
            log(f"fault-free: {base['finished']}/{base['submitted']} in {base['elapsed_s']} s = "
                f"{expected_tp} runs/s")
        expected = args.runs / (expected_tp or 0.7 * min(args.workers, os.cpu_count() or 1))
        window = args.fault_window or (0.1 * expected, 0.8 * expected)
        times = spread(args.broker_restarts + args.db_outages, *window)
        # interleave: broker, database, broker, ...
        kinds = []
        b, d = args.broker_restarts, args.db_outages
        while b or d:
            if b and (b >= d):
                kinds.append("b")
                b -= 1
            if d:
                kinds.append("d")
                d -= 1
        broker_at = [at for at, k in zip(times, kinds, strict=True) if k == "b"]
        db_at = [(at, args.db_outage_s) for at, k in zip(times, kinds, strict=True) if k == "d"]
        log(f"fault arm: {args.runs} runs; expected ~{expected:.0f} s; kill every {args.kill_every} s; "
            f"broker restarts at {[round(t) for t in broker_at]} s; db outages at {[round(t) for t, _ in db_at]} s")
        faulty = soak(cluster=cluster, redis=redis, proxy=proxy, experiment=experiment, user=user, runs=args.runs,
                      seed_base=10**6, kill_every=args.kill_every, max_kills=args.max_kills, broker_at=broker_at,
                      db_at=db_at, drain_timeout=args.drain_timeout, rng=random.Random(args.seed))
        result["faults"] = faulty
        if expected_tp:
            result["throughput_ratio"] = round(faulty["throughput_runs_per_s"] / expected_tp, 3)
        result["machine"]["load_at_end"] = os.getloadavg()
        ok = faulty["lost"] == 0 and faulty["duplicated"] == 0 and faulty["finished"] == faulty["submitted"] \
            and faulty["run_finished_events"] == faulty["submitted"]
        if args.baseline_runs:
            ok = ok and result["baseline"]["lost"] == 0 and result["baseline"]["duplicated"] == 0
        result["ok"] = ok
        result["log_dir"] = str(log_dir)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print_summary(result)
        if not ok:
            log(f"NOT OK: evidence kept in {log_dir}")
        return 0 if ok else 1
    finally:
        if cluster is not None:
            cluster.stop()
        redis.kill()
        if proxy is not None:
            proxy.close()
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: BLE001 - Django may not be set up
            pass
        if created and ok:
            try:
                psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            except subprocess.CalledProcessError as exc:
                log(f"could not drop {db}: {exc.stderr}")
        elif created:
            log(f"database {db} kept for inspection (drop it with: psql -h 127.0.0.1 -U postgres "
                f"-c 'DROP DATABASE {db} WITH (FORCE)')")
        if ok and not args.keep_logs:
            import shutil

            shutil.rmtree(log_dir, ignore_errors=True)


def print_summary(result: dict[str, Any]) -> None:
    rows = []
    for arm in ("baseline", "faults"):
        if arm not in result:
            continue
        r = result[arm]
        rows.append(f"{arm:9} submitted {r['submitted']}  finished {r['finished']}  lost {r['lost']}  "
                    f"duplicated {r['duplicated']}  run.finished events {r['run_finished_events']}  "
                    f"retried {r['retried_runs']} (max attempts {r['max_attempts']})  "
                    f"{r['elapsed_s']} s  {r['throughput_runs_per_s']} runs/s")
    print("\n".join(rows))
    for kind, figures in result["faults"]["recovery"].items():
        extras = "  ".join(f"{k} {v}" for k, v in figures.items() if k.endswith(("_median", "_p95")))
        print(f"  {kind:15} injected {figures['injected']}  measured {figures['measured']}  "
              f"median {figures['median_s']} s  p95 {figures['p95_s']} s  max {figures['max_s']} s  {extras}")
    starts = result["faults"].get("worker_starts") or {}
    if starts.get("replacements"):
        print(f"  replacement workers {starts['replacements']}: spawn -> ready median {starts['ready_s_median']} s "
              f"p95 {starts['ready_s_p95']} s; spawn -> first run claimed median {starts['first_claim_s_median']} s "
              f"p95 {starts['first_claim_s_p95']} s ({starts['first_claim_s_measured']} measured)")
    if "throughput_ratio" in result:
        print(f"  throughput with faults / fault-free: {result['throughput_ratio']:.1%} (target >= 75%)")
    print(f"  {'OK' if result['ok'] else 'NOT OK'}")


def run_script(argv: list[str], timeout: float) -> tuple[int, str, dict[str, Any] | None]:
    """Run this script in a fresh interpreter (its own Django settings and database); returns the
    exit status, the output and the JSON it wrote (None if none)."""
    json_path = next((Path(argv[i + 1]) for i, a in enumerate(argv) if a == "--json"), None)
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE",)}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    data = json.loads(json_path.read_text()) if json_path and json_path.exists() else None
    return done.returncode, done.stdout + done.stderr, data


if __name__ == "__main__":
    sys.exit(main())
