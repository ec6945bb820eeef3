"""Webhook fan-out: one event to 1,000 webhook subscriptions, time from the emit to the last
delivery received, against a scratch PostgreSQL database and a local receiver.

    .venv/bin/python bench/webhook_fanout.py [--subscribers 1000] [--peer 200] [--latency-ms 20]

* Database: a scratch PostgreSQL database (``bench_fanout`` on 127.0.0.1:5432, user postgres,
  trust auth), dropped and re-created, migrated with the production settings
  (``registry.settings.base``, DEBUG off, ``WEBHOOKS_ALLOW_PRIVATE_ADDRESSES=1``).
* Receiver: a ``ThreadingHTTPServer`` on 127.0.0.1 answering 1,000 distinct paths, each request
  held ``--latency-ms`` (20 ms) before its 200, so that concurrency matters.
* The sweep: the real ``webhooks_sweep`` called in-process (the same function the Celery beat task
  ``worker.webhooks_sweep`` runs), repeated until nothing is due.
* Checks: every request's Standard Webhooks signature verified with the ``standardwebhooks``
  reference package, every path hit exactly once, every Delivery row ``delivered`` with one logged
  attempt (latency and body).
* Peer: the same with ``WEBHOOKS_SEND_CONCURRENCY=1`` (the former sequential behaviour), capped at
  ``--peer`` subscribers and extrapolated linearly to the full count (said so in the output).

Writes bench/results/webhook_fanout.json; prints a Markdown section for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DB_NAME = "bench_fanout"
os.environ.update({
    "DJANGO_SETTINGS_MODULE": "registry.settings.base",
    "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
    "DEBUG": "0",
    "WEBHOOKS_ALLOW_PRIVATE_ADDRESSES": "1",
    "REGISTRY_VAR_DIR": tempfile.mkdtemp(prefix="bench-fanout-"),
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/14",
    "CELERY_BROKER_KEY_PREFIX": f"bench-fanout-{os.getpid()}:",
})


class Receiver:
    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict[str, str], bytes, float]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's API
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(receiver.latency_s)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(b"ok")
                with receiver.lock:
                    receiver.requests.append((self.path, dict(self.headers.items()), body, time.monotonic()))

            def log_message(self, *args) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            request_queue_size = 256
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        with self.lock:
            self.requests = []


def scratch_database() -> None:
    import psycopg

    with psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")


def fan_out(label: str, receiver: Receiver, owner, n: int, concurrency: int) -> dict:
    from django.conf import settings
    from django.db import transaction
    from standardwebhooks.webhooks import Webhook

    from registry.events.models import Delivery, DeliveryAttempt, Subscription
    from registry.events.services import event_emit, subscription_create, webhooks_sweep
    from registry.findings.models import Finding

    settings.WEBHOOKS_SEND_CONCURRENCY = concurrency
    Subscription.objects.update(active=False)  # the previous run's subscribers hear nothing more
    secrets = {}
    for i in range(n):
        path = f"/{label}/{i}"
        subscription, secret = subscription_create(
            owner=owner, name=f"{label} {i}", url=f"http://127.0.0.1:{receiver.port}{path}"
        )
        secrets[path] = (subscription.pk, secret)
    finding = Finding.objects.create(title=f"Fan-out {label}", summary="bench", created_by=owner)
    receiver.reset()
    emitted = time.monotonic()
    with transaction.atomic():
        event = event_emit(type="finding.created", finding_id=finding.pk, payload={"title": finding.title})
    sweeps = []
    # Sweep until every subscriber's delivery is recorded. The sweep only matches *settled* events
    # (registry.events.cursor: no transaction still running on the PostgreSQL cluster may commit
    # below them), so on a shared server a sweep can come too early and match nothing yet.
    while time.monotonic() - emitted < 600:
        sweeps.append(webhooks_sweep())
        rows = Delivery.objects.filter(event=event)
        if rows.count() >= n and not rows.filter(status=Delivery.Status.PENDING).exists():
            break
        time.sleep(0.05)
    swept = time.monotonic()
    requests = [r for r in receiver.requests if r[0].startswith(f"/{label}/") and json.loads(r[2])["id"] == event.id]
    last = max((r[3] for r in requests), default=swept)
    verified = 0
    for path, headers, body, _ in requests:
        _pk, secret = secrets[path]
        Webhook(secret).verify(body, headers)  # raises on a bad signature
        verified += 1
    deliveries = Delivery.objects.filter(event=event)
    attempts = DeliveryAttempt.objects.filter(delivery__event=event)
    latencies = sorted(attempts.values_list("latency_ms", flat=True))
    return {
        "subscribers": n,
        "concurrency": concurrency,
        "requests_received": len(requests),
        "distinct_paths": len({r[0] for r in requests}),
        "signatures_verified": verified,
        "deliveries": deliveries.count(),
        "deliveries_delivered": deliveries.filter(status=Delivery.Status.DELIVERED).count(),
        "attempts_logged": attempts.count(),
        "attempts_with_latency": attempts.filter(latency_ms__isnull=False).count(),
        "sweeps": len(sweeps),
        "sweeps_that_sent": sum(1 for r in sweeps if r["delivered"] or r["failed"] or r["retrying"]),
        "emit_to_last_received_s": round(last - emitted, 3),
        "emit_to_sweep_done_s": round(swept - emitted, 3),
        "attempt_latency_ms_median": latencies[len(latencies) // 2] if latencies else None,
        "attempt_latency_ms_max": latencies[-1] if latencies else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--peer", type=int, default=200, help="subscribers of the sequential peer run")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=None, help="default: the setting (16)")
    args = parser.parse_args()

    scratch_database()
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    assert not settings.DEBUG and settings.DATABASES["default"]["NAME"] == DB_NAME
    call_command("migrate", verbosity=0, interactive=False)
    owner = get_user_model().objects.create_user(username="bench", password="bench-fanout")
    receiver = Receiver(args.latency_ms / 1000)
    concurrency = args.concurrency or settings.WEBHOOKS_SEND_CONCURRENCY

    pooled = fan_out("pool", receiver, owner, args.subscribers, concurrency)
    peer = fan_out("seq", receiver, owner, args.peer, 1)
    extrapolated = round(peer["emit_to_last_received_s"] * args.subscribers / args.peer, 1)
    ok = all(
        run["requests_received"] == run["distinct_paths"] == run["signatures_verified"] == run["subscribers"]
        == run["deliveries_delivered"] == run["attempts_logged"] == run["attempts_with_latency"]
        for run in (pooled, peer)
    )
    results = {
        "benchmark": "webhook fan-out: one event to N webhook subscriptions, emit to last delivery received",
        "setup": {
            "database": f"PostgreSQL {DB_NAME} on 127.0.0.1 (scratch), settings registry.settings.base, DEBUG off",
            "receiver": (
                f"ThreadingHTTPServer on 127.0.0.1, one path per subscriber, {args.latency_ms:g} ms per request"
            ),
            "sweep": "registry.events.services.webhooks_sweep in-process, repeated until nothing is pending",
            "verification": "every request verified with standardwebhooks.Webhook(secret).verify",
            "cpus": os.cpu_count(),
        },
        "pool": pooled,
        "sequential_peer": peer,
        "sequential_extrapolated_to_subscribers_s": extrapolated,
        "sequential_extrapolation_note": (
            f"the sequential peer (WEBHOOKS_SEND_CONCURRENCY=1) ran {args.peer} subscribers; the figure for "
            f"{args.subscribers} is that time x {args.subscribers}/{args.peer} (linear)"
        ),
        "speedup": (
            round(extrapolated / pooled["emit_to_last_received_s"], 1) if pooled["emit_to_last_received_s"] else None
        ),
        "target_s": 60,
        "target_met": ok and pooled["emit_to_last_received_s"] <= 60,
        "all_checks_passed": ok,
    }
    out = ROOT / "bench" / "results" / "webhook_fanout.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    receiver.server.shutdown()


if __name__ == "__main__":
    main()
