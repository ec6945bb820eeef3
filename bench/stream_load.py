"""Live stream load: 500 concurrent SSE clients on ONE ASGI server process, against the former
sync-worker deployment.

    .venv/bin/python bench/stream_load.py [--clients 500] [--healthz 200] [--peer-streams 8]

* Database: a scratch PostgreSQL database (``bench_stream`` on 127.0.0.1:5432, user postgres,
  trust auth), dropped, re-created and migrated (``registry.settings.base``, DEBUG off).
* ASGI: the production command with one worker process,
  ``gunicorn registry.asgi:application -k uvicorn_worker.UvicornWorker --workers 1``;
  ``STREAM_MAX_PER_CLIENT`` raised (every client comes from 127.0.0.1).
  ``--clients`` streams are opened with asyncio raw sockets and held; while they are open,
  ``--healthz`` sequential ``GET /healthz`` (a new connection each) give the latency p50/p95/max;
  the worker's RSS is read before and after opening them; the database connections the server
  holds are counted in ``pg_stat_activity``; then one event is emitted (committed in this process)
  and the time until every client has received its ``id:`` line is measured.
* Peer (the former behaviour): ``gunicorn registry.wsgi:application --workers 4 --timeout 30``
  (sync workers) with ``--peer-streams`` streams open, then ``/healthz`` with a 2 s client timeout,
  timeouts counted.

Writes bench/results/stream_load.json and prints the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DB_NAME = "bench_stream"
VENV_BIN = Path(sys.executable).parent
ENV = {
    **os.environ,
    "DJANGO_SETTINGS_MODULE": "registry.settings.base",
    "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
    "DEBUG": "0",
    "REGISTRY_VAR_DIR": tempfile.mkdtemp(prefix="bench-stream-"),
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/14",
    "CELERY_BROKER_KEY_PREFIX": f"bench-stream-{os.getpid()}:",
    "STREAM_MAX_PER_CLIENT": "10000",
    "STREAM_MAX_TOTAL": "10000",
    "PYTHONPATH": str(ROOT),
}
os.environ.update({k: ENV[k] for k in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "DEBUG", "REGISTRY_VAR_DIR",
                                       "CELERY_BROKER_URL", "CELERY_BROKER_KEY_PREFIX")})


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid="], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _reset_database() -> None:
    import psycopg

    with psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=ENV, check=True)


def _db_connections() -> int:
    import psycopg

    with psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (DB_NAME,)
        ).fetchone()[0]


async def _request(port: int, path: str, timeout: float) -> tuple[int, float]:
    started = time.perf_counter()
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        body = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    return int(body.split(b" ", 2)[1]), time.perf_counter() - started


class Client:
    def __init__(self) -> None:
        self.buffer = b""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.writer.write(b"GET /api/v1/events/stream?timeout=900 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await self.writer.drain()
        await self.until(b"retry: 3000")

    async def until(self, needle: bytes) -> float:
        while needle not in self.buffer:
            chunk = await self.reader.read(65536)
            if not chunk:
                raise ConnectionError(f"stream closed: {self.buffer[:300]!r}")
            self.buffer += chunk
        return time.perf_counter()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _start(args: list[str], port: int) -> subprocess.Popen:
    log = open(Path(ENV["REGISTRY_VAR_DIR"]) / f"server-{port}.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        [str(VENV_BIN / "gunicorn"), *args, "--bind", f"127.0.0.1:{port}"], cwd=ROOT, env=ENV, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if asyncio.run(_request(port, "/healthz", 2))[0] == 200:
                return process
        except (TimeoutError, OSError, IndexError):
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"server did not start: {(Path(ENV['REGISTRY_VAR_DIR']) / f'server-{port}.log').read_text()}")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def _emit() -> tuple[int, float, float]:
    """Emit and commit one event; also when it became *settled* (readable by the commit-ordered
    cursor: every transaction of the cluster older than it has finished)."""
    from django.db import connection, transaction

    from registry.events.cursor import events_head
    from registry.events.services import event_emit

    with transaction.atomic():
        event = event_emit(type="finding.updated", finding_id=None, plugin="", payload={"bench": True})
    emitted = time.perf_counter()
    while events_head() != event.pk:
        time.sleep(0.005)
    settled = time.perf_counter()
    connection.close()
    return event.pk, emitted, settled


async def _asgi_phase(port: int, server_pid: int, clients_n: int, healthz_n: int) -> dict:
    for _ in range(20):  # warm-up: imports, first connections
        await _request(port, "/healthz", 5)
    warm = Client()
    await warm.open(port)
    warm.close()
    await asyncio.sleep(1)
    rss_before = _rss_mib(server_pid)
    baseline = [(await _request(port, "/healthz", 5))[1] for _ in range(50)]

    clients = [Client() for _ in range(clients_n)]
    started = time.perf_counter()
    for batch in range(0, clients_n, 50):  # 50 connects at a time (the listen backlog)
        await asyncio.gather(*(c.open(port) for c in clients[batch:batch + 50]))
    open_s = time.perf_counter() - started
    await asyncio.sleep(2)  # the watcher has polled; idle streams
    rss_after = _rss_mib(server_pid)
    db_connections = await asyncio.to_thread(_db_connections)

    latencies, statuses = [], []
    for _ in range(healthz_n):
        status, seconds = await _request(port, "/healthz", 10)
        statuses.append(status)
        latencies.append(seconds)

    waits = [asyncio.create_task(c.until(b"id: ")) for c in clients]
    event_id, emitted, settled = await asyncio.to_thread(_emit)
    arrived = await asyncio.wait_for(asyncio.gather(*waits), 60)
    delivered = sum(f"id: {event_id}\n".encode() in c.buffer for c in clients)
    fanout = [t - emitted for t in arrived]
    from_settled = [t - settled for t in arrived]
    db_connections_after_fanout = await asyncio.to_thread(_db_connections)
    for c in clients:
        c.close()
    await asyncio.sleep(1.5)
    return {
        "clients": clients_n,
        "open_all_s": round(open_s, 2),
        "healthz_baseline_no_streams_ms": {"p50": round(statistics.median(baseline) * 1000, 2),
                                           "p95": round(_percentile(baseline, 0.95) * 1000, 2)},
        "healthz_with_streams": {
            "requests": healthz_n, "non_200": sum(s != 200 for s in statuses),
            "p50_ms": round(statistics.median(latencies) * 1000, 2),
            "p95_ms": round(_percentile(latencies, 0.95) * 1000, 2),
            "max_ms": round(max(latencies) * 1000, 2),
        },
        "rss_mib": {"before": round(rss_before, 1), "with_streams": round(rss_after, 1),
                    "per_client_kib": round((rss_after - rss_before) * 1024 / clients_n, 1)},
        "db_connections_held_by_server": {"with_streams_idle": db_connections,
                                          "after_fanout": db_connections_after_fanout},
        "fanout": {"delivered": delivered, "of": clients_n,
                   "first_ms": round(min(fanout) * 1000, 1), "p50_ms": round(statistics.median(fanout) * 1000, 1),
                   "last_ms": round(max(fanout) * 1000, 1),
                   "settled_after_ms": round((settled - emitted) * 1000, 1),
                   "from_settled_first_ms": round(min(from_settled) * 1000, 1),
                   "from_settled_last_ms": round(max(from_settled) * 1000, 1)},
        "rss_mib_after_close": round(_rss_mib(server_pid), 1),
    }


async def _peer_phase(port: int, streams_n: int, healthz_n: int, timeout_s: float) -> dict:
    held = []
    for _ in range(streams_n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/v1/events/stream?timeout=900 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        held.append(writer)
    await asyncio.sleep(2)
    timeouts, latencies = 0, []
    for _ in range(healthz_n):
        try:
            status, seconds = await _request(port, "/healthz", timeout_s)
            latencies.append(seconds)
        except (TimeoutError, OSError, IndexError):
            timeouts += 1
    for writer in held:
        writer.close()
    return {"streams": streams_n, "healthz_requests": healthz_n, "client_timeout_s": timeout_s,
            "timeouts": timeouts, "answered_ms": [round(s * 1000, 1) for s in latencies]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--healthz", type=int, default=200)
    parser.add_argument("--peer-streams", type=int, default=8)
    parser.add_argument("--peer-healthz", type=int, default=10)
    options = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # clients and server inherit it

    _reset_database()
    import django

    django.setup()
    result: dict = {"machine": {"cpus": os.cpu_count()}, "database": "PostgreSQL (scratch bench_stream)"}

    port = 18700 + os.getpid() % 1000
    command = ["registry.asgi:application", "-k", "uvicorn_worker.UvicornWorker", "--workers", "1", "--timeout", "60"]
    server = _start(command, port)
    try:
        worker_pid = _children(server.pid)[0]
        result["asgi"] = {"command": "gunicorn " + " ".join(command), **asyncio.run(
            _asgi_phase(port, worker_pid, options.clients, options.healthz))}
    finally:
        _stop(server)

    port += 1
    command = ["registry.wsgi:application", "--workers", "4", "--timeout", "30"]
    server = _start(command, port)
    try:
        result["peer_sync_workers"] = {"command": "gunicorn " + " ".join(command), **asyncio.run(
            _peer_phase(port, options.peer_streams, options.peer_healthz, 2.0))}
    finally:
        _stop(server)

    out = ROOT / "bench" / "results" / "stream_load.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
