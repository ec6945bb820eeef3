"""Webhooks connect only to the address that passed the public-address check: the refusal matrix at
creation and at every send, a resolver that changes its answer (DNS rebinding), Host header, TLS SNI
and certificate check against the URL's hostname."""

from __future__ import annotations

import http.server
import shutil
import socket
import ssl
import subprocess
import threading

import pytest

from registry.events import webhooks
from registry.events.models import Delivery
from registry.events.services import subscription_create, webhooks_sweep
from tests.events.helpers import emit, finding, webhook_receiver

pytestmark = pytest.mark.django_db

PUBLIC = "93.184.215.14"
REFUSED = [
    "127.0.0.1", "127.8.9.10", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "100.127.255.254", "0.0.0.0", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "192.0.2.1",
    "198.18.0.1", "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "ff0e::1",
    "::ffff:127.0.0.1", "::ffff:8.8.8.8", "::7f00:1", "::808:808", "64:ff9b::7f00:1", "64:ff9b::808:808",
    "64:ff9b:1::1", "2002:7f00:1::", "2002:808:808::1", "2001::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "2001:db8::1", "100::1",
]
ALLOWED = [PUBLIC, "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001:82a::200e"]


class FakeDNS:
    """A resolver for ``*.test`` names whose answers the test sets (and can change), recorded."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {}
        self.calls: list[str] = []

    def __call__(self, hostname: str, port: int) -> list[str]:
        self.calls.append(hostname)
        if hostname not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answer = self.answers[hostname]
        return list(answer() if callable(answer) else answer)


@pytest.fixture
def dns(monkeypatch) -> FakeDNS:
    fake = FakeDNS()
    monkeypatch.setattr(webhooks, "_resolve", fake)
    return fake


@pytest.fixture
def strict(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = False  # the production default, for this test only


@pytest.fixture
def connections(monkeypatch) -> list[tuple[str, int]]:
    """Every TCP connection the process opens; ones to PUBLIC are answered 'refused' (no network
    here), loopback ones really connect (so a rebinding would reach the local receiver)."""
    made: list[tuple[str, int]] = []
    real = socket.create_connection

    def create_connection(address, *args, **kwargs):
        made.append((address[0], address[1]))
        if address[0] == PUBLIC:
            raise ConnectionRefusedError(111, "Connection refused (public test address)")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", create_connection)
    return made


def _create(api, url):
    return api.post("/api/v1/subscriptions/", {"name": "x", "channel": "webhook", "url": url}, format="json")


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


@pytest.mark.parametrize("address", REFUSED)
def test_refused_at_creation_by_name_and_by_literal(api, dns, strict, address):
    dns.answers["hook.test"] = [address]
    for url in ("https://hook.test/h", f"http://{_url_host(address)}:8080/h"):
        response = _create(api, url)
        assert response.status_code == 400, (url, response.json())
        assert "public address" in response.json()["errors"]["url"][0], response.json()
    # a name with one bad answer among good ones is refused as well
    dns.answers["mixed.test"] = [PUBLIC, address]
    assert _create(api, "https://mixed.test/h").status_code == 400


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_accepted(api, dns, strict, address):
    dns.answers["hook.test"] = [address]
    assert _create(api, "https://hook.test/h").status_code == 201
    assert _create(api, f"http://{_url_host(address)}/h").status_code == 201


def test_unresolvable_host_is_refused_at_creation(api, dns, settings):
    for allow in (False, True):  # even on the development switch: such a URL can never be delivered to
        settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = allow
        response = _create(api, "https://nowhere.test/h")
        assert response.status_code == 400 and "url" in response.json()["errors"], response.json()
        assert "does not resolve" in response.json()["errors"]["url"][0]


@pytest.mark.parametrize("address", REFUSED)
def test_refused_at_send_when_the_name_moved(user, dns, strict, connections, address):
    dns.answers["hook.test"] = [PUBLIC]
    sub, _ = subscription_create(owner=user, name="h", url="http://hook.test/h")
    dns.answers["hook.test"] = [address]
    emit("finding.created", finding(created_by=user))
    webhooks_sweep()
    delivery = Delivery.objects.get(subscription=sub)
    assert delivery.status == "pending" and delivery.attempts == 1 and delivery.last_status_code is None
    assert delivery.last_error.startswith("refused:") and address in delivery.last_error
    assert connections == []


def test_dns_rebinding_never_reaches_loopback(user, dns, strict, connections):
    """A name that answers a public address to the check and 127.0.0.1 to any later lookup: the
    delivery goes to the public address (refused here: no network) or fails, never to loopback."""
    with webhook_receiver() as receiver:
        port = int(receiver.url.rsplit(":", 1)[1].split("/")[0])
        dns.answers["rebind.test"] = [PUBLIC]
        sub, _ = subscription_create(owner=user, name="h", url=f"http://rebind.test:{port}/hook")
        lookups = []

        def flipping():
            lookups.append(1)
            return [PUBLIC] if len(lookups) == 1 else ["127.0.0.1"]

        dns.answers["rebind.test"] = flipping
        emit("finding.created", finding(created_by=user))
        for _ in range(3):
            webhooks_sweep()
            Delivery.objects.filter(subscription=sub).update(next_attempt_at="2000-01-01T00:00:00Z")
        assert receiver.requests == []
    delivery = Delivery.objects.get(subscription=sub)
    assert delivery.status == "pending" and delivery.attempts == 3
    assert connections == [(PUBLIC, port)]  # the first attempt: the checked answer, and only it
    assert "127.0.0.1" in delivery.last_error and delivery.last_error.startswith("refused:")


def test_rebinding_through_getaddrinfo_itself(user, strict, connections, monkeypatch):
    """The same with the system resolver replaced: any second lookup by the HTTP client would get
    127.0.0.1 and reach the receiver."""
    with webhook_receiver() as receiver:
        port = int(receiver.url.rsplit(":", 1)[1].split("/")[0])
        real = socket.getaddrinfo
        answers = iter([PUBLIC, PUBLIC])

        def getaddrinfo(host, *args, **kwargs):
            if host != "rebind.test":
                return real(host, *args, **kwargs)
            address = next(answers, "127.0.0.1")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        sub, _ = subscription_create(owner=user, name="h", url=f"http://rebind.test:{port}/hook")  # 1st answer
        emit("finding.created", finding(created_by=user))
        webhooks_sweep()  # 2nd answer: public; a 3rd lookup would say 127.0.0.1
        assert receiver.requests == []
    assert connections == [(PUBLIC, port)]
    assert Delivery.objects.get(subscription=sub).status == "pending"


def test_connects_to_the_resolved_address_with_the_host_header_kept(user, dns, connections):
    with webhook_receiver() as receiver:
        port = int(receiver.url.rsplit(":", 1)[1].split("/")[0])
        dns.answers["hook.test"] = ["127.0.0.1"]
        sub, _ = subscription_create(owner=user, name="h", url=f"http://hook.test:{port}/hook?x=1")
        answers = iter([["127.0.0.1"]])
        dns.answers["hook.test"] = lambda: next(answers, ["10.255.255.1"])  # any later lookup: elsewhere
        emit("finding.created", finding(created_by=user))
        assert webhooks_sweep()["delivered"] == 1, Delivery.objects.get(subscription=sub).last_error
        request = receiver.requests[0]
    assert request.headers["Host"] == f"hook.test:{port}" and request.path == "/hook?x=1"
    assert connections == [("127.0.0.1", port)]


# --- HTTPS: connect to the checked IP, SNI and certificate for the hostname ----------------------

@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("openssl not available to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(folder / "key.pem"),
         "-out", str(folder / "cert.pem"), "-subj", "/CN=hook.test", "-addext", "subjectAltName=DNS:hook.test",
         "-days", "2"],
        check=True, capture_output=True,
    )
    return folder / "cert.pem", folder / "key.pem"


@pytest.fixture
def tls_receiver(certificate, monkeypatch):
    cert, key = certificate
    seen: dict[str, list] = {"sni": [], "requests": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's API
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen["requests"].append((self.path, self.headers.get("Host")))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    server_context.sni_callback = lambda sock, name, ctx: seen["sni"].append(name)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def client_context() -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(cert))
        return context

    monkeypatch.setattr(webhooks, "_ssl_context", client_context)
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_https_connects_to_the_checked_ip_with_sni_and_certificate_check(user, dns, tls_receiver):
    port, seen = tls_receiver
    dns.answers["hook.test"] = ["127.0.0.1"]
    sub, _ = subscription_create(owner=user, name="h", url=f"https://hook.test:{port}/tls")
    emit("finding.created", finding(created_by=user))
    assert webhooks_sweep()["delivered"] == 1, Delivery.objects.get(subscription=sub).last_error
    assert seen["sni"] == ["hook.test"] and seen["requests"] == [("/tls", f"hook.test:{port}")]


def test_https_certificate_must_match_the_hostname(user, dns, tls_receiver):
    port, seen = tls_receiver
    dns.answers["other.test"] = ["127.0.0.1"]  # same server, a name its certificate does not cover
    sub, _ = subscription_create(owner=user, name="h", url=f"https://other.test:{port}/tls")
    emit("finding.created", finding(created_by=user))
    webhooks_sweep()
    delivery = Delivery.objects.get(subscription=sub)
    assert delivery.status == "pending" and delivery.last_status_code is None
    assert "certificate" in delivery.last_error.lower() or "ssl" in delivery.last_error.lower()
    assert seen["requests"] == [] and seen["sni"] == ["other.test"]


def test_address_refusal_names_the_range():
    assert webhooks.address_refusal("100.64.1.1") == "carrier-grade NAT"
    assert webhooks.address_refusal("64:ff9b::808:808") == "NAT64"
    assert webhooks.address_refusal("2002:808:808::1") == "6to4"
    assert webhooks.address_refusal("2001::1") == "Teredo"
    assert webhooks.address_refusal("::ffff:8.8.8.8") == "IPv4-mapped"
    assert webhooks.address_refusal("::808:808") == "IPv4-compatible"
    assert webhooks.address_refusal("fe80::1%eth0") == "link-local"
    assert webhooks.address_refusal("8.8.8.8") == ""
