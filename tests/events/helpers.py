"""Shared helpers for the event tests: findings, events, a real local webhook receiver."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.db import transaction

from registry.events.models import Event
from registry.events.services import event_emit
from registry.findings.models import Finding, Tag
from tests.factories import FindingFactory


def finding(*, tags: tuple[str, ...] = (), restricted_to=None, **kwargs) -> Finding:
    if restricted_to is not None:
        kwargs["visibility"] = Finding.Visibility.RESTRICTED
    made = FindingFactory(**kwargs)
    for name in tags:
        made.tags.add(Tag.objects.get_or_create(name=name)[0])
    if restricted_to:
        made.restricted_to.set(restricted_to)
    return made


def emit(type: str, finding: Finding | None = None, plugin: str = "", **payload) -> Event:
    with transaction.atomic():
        return event_emit(type=type, finding_id=finding.pk if finding else None, plugin=plugin, payload=payload)


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    path: str


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)
    status: int = 200


@contextmanager
def webhook_receiver(status: int = 200) -> Iterator[Receiver]:
    """A real HTTP server on 127.0.0.1 (random port) in a thread, recording every POST."""
    receiver = Receiver(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's API
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            receiver.requests.append(Received(body=body, headers=dict(self.headers.items()), path=self.path))
            self.send_response(receiver.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.status = status
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
