"""Every write endpoint x (anonymous, signed-in stranger, author, staff) -> the status code the rules
give, and a refused write changes nothing.

The expected codes come from the rules (DESIGN.md "API", the README's endpoint table, the
permission classes and the services' checks), not from a recording of what the code does:

- reading is public, writing needs an account: anonymous writes are 401 (the API authenticates by
  token, so DRF answers 401 with ``WWW-Authenticate``), checked before any object is looked up;
- a finding, its claims and its experiments change by the finding's (accepted) authors or staff
  only: a stranger is 403 on a finding they can read, 404 on one hidden from them;
- anyone signed in may request a reproduction of what they can read (independent reproductions);
  re-reproducing a whole finding and cancelling someone else's run are the authors' (or staff's);
- self-reported runs are the authors' own statement: staff too are 403 unless authors;
- subscriptions and API tokens are the caller's own: anyone else's (staff included) is a 404;
- raising a user's quota is staff's alone (403 for everyone else, the user included);
- only the named user answers an invitation or withdraws their own authorship (403 for others,
  staff included; 404 where the finding is hidden from the caller).

Adding an endpoint is one ``Write(...)`` line in ``WRITES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from django.apps import apps
from django.db import transaction
from rest_framework.test import APIClient

from registry.accounts import services as account_services
from registry.events.models import Delivery
from registry.events.services import webhooks_sweep
from registry.findings import services as finding_services
from registry.findings.models import Finding
from registry.reproductions import services as repro_services
from tests.events.helpers import emit, webhook_receiver
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

ACTORS = ("anonymous", "stranger", "author", "staff")
API = "/api/v1"
# bookkeeping that a refused request may legitimately leave (none of it is the resource written)
NOT_STATE = {"idempotency", "sessions", "contenttypes", "admin", "django_celery_beat", "django_celery_results"}


@dataclass(frozen=True)
class Write:
    """One write: its path from the world (``w``), a body, and the code for each of ACTORS."""

    name: str
    method: str
    path: Callable[[Any], str]
    expected: tuple[int, int, int, int]  # anonymous, stranger, author, staff
    body: Callable[[Any], dict] | None = None
    changes: bool = True  # an allowed call changes stored state (a ping only answers)


FINDING = {"title": "A new finding", "kind": "theory"}
CLAIM = {"metric": "risk", "direction": "decrease", "min_relative_effect": 0.1}
SELF_REPORTED = {
    "seed": 7,
    "measurements": {
        "baseline": {"risk": 1.0, "skill": 1.0, "width": 3.0},
        "intervention": {"risk": 0.5, "skill": 1.0, "width": 3.0},
    },
    "params": {},
    "hardware": "cpu",
    "environment": {"torch": "2.4.0"},
}

# On a finding the stranger can read (public) and on one hidden from them (restricted).
OWNED = (401, 403, 200, 200)
OWNED_HIDDEN = (401, 404, 200, 200)
OWN_ONLY = (401, 404, 200, 404)  # the caller's own resource: subscriptions, tokens
NAMED_USER = (401, 403, 200, 403)  # only the user named in the path
NO_SUCH_METHOD = (401, 405, 405, 405)

WRITES = [
    # findings
    Write("finding create", "post", lambda w: f"{API}/findings/", (401, 201, 201, 201), lambda w: FINDING),
    Write("finding update", "patch", lambda w: f"{API}/findings/{w.public.pk}/", OWNED, lambda w: {"title": "x"}),
    Write("finding update hidden", "patch", lambda w: f"{API}/findings/{w.hidden.pk}/", OWNED_HIDDEN,
          lambda w: {"title": "x"}),
    Write("finding replace", "put", lambda w: f"{API}/findings/{w.public.pk}/", OWNED, lambda w: FINDING),
    Write("finding delete", "delete", lambda w: f"{API}/findings/{w.public.pk}/", (401, 403, 204, 204)),
    Write("finding delete hidden", "delete", lambda w: f"{API}/findings/{w.hidden.pk}/", (401, 404, 204, 204)),
    Write("finding rereproduce", "post", lambda w: f"{API}/findings/{w.public.pk}/rereproduce/", (401, 403, 202, 202)),
    Write("finding rereproduce hidden", "post", lambda w: f"{API}/findings/{w.hidden.pk}/rereproduce/",
          (401, 404, 202, 202)),
    # claims
    Write("claim create", "post", lambda w: f"{API}/findings/{w.bare.pk}/claims/", (401, 403, 201, 201),
          lambda w: CLAIM),
    Write("claim create hidden", "post", lambda w: f"{API}/findings/{w.hidden_bare.pk}/claims/", (401, 404, 201, 201),
          lambda w: CLAIM),
    Write("claim update", "patch", lambda w: f"{API}/claims/{w.claim.pk}/", OWNED, lambda w: {"statement": "x"}),
    Write("claim update hidden", "patch", lambda w: f"{API}/claims/{w.hidden_claim.pk}/", OWNED_HIDDEN,
          lambda w: {"statement": "x"}),
    Write("claim delete (none)", "delete", lambda w: f"{API}/claims/{w.claim.pk}/", NO_SUCH_METHOD),
    # experiments
    Write("experiment create", "post", lambda w: f"{API}/findings/{w.public.pk}/experiments/", (401, 403, 201, 201),
          lambda w: {"plugin": "echo", "default_seeds": 1}),
    Write("experiment create hidden", "post", lambda w: f"{API}/findings/{w.hidden.pk}/experiments/",
          (401, 404, 201, 201), lambda w: {"plugin": "echo", "default_seeds": 1}),
    Write("experiment update (none)", "patch", lambda w: f"{API}/experiments/{w.experiment.pk}/", NO_SUCH_METHOD,
          lambda w: {"plugin": "echo"}),
    Write("experiment delete (none)", "delete", lambda w: f"{API}/experiments/{w.experiment.pk}/", NO_SUCH_METHOD),
    Write("experiment retract", "post", lambda w: f"{API}/experiments/{w.experiment.pk}/retract/", OWNED,
          lambda w: {"reason": "a bug in the setup"}),
    Write("experiment retract hidden", "post", lambda w: f"{API}/experiments/{w.hidden_experiment.pk}/retract/",
          OWNED_HIDDEN, lambda w: {"reason": "a bug in the setup"}),
    # reproductions and runs
    Write("reproduction request", "post", lambda w: f"{API}/experiments/{w.experiment.pk}/reproductions/",
          (401, 202, 202, 202), lambda w: {"seeds": [11]}),
    Write("reproduction request hidden", "post",
          lambda w: f"{API}/experiments/{w.hidden_experiment.pk}/reproductions/", (401, 404, 202, 202),
          lambda w: {"seeds": [11]}),
    Write("run cancel", "post", lambda w: f"{API}/runs/{w.run.pk}/cancel/", OWNED),
    Write("run cancel hidden", "post", lambda w: f"{API}/runs/{w.hidden_run.pk}/cancel/", OWNED_HIDDEN),
    Write("self-reported run", "post", lambda w: f"{API}/experiments/{w.experiment.pk}/self-reported-runs/",
          (401, 403, 201, 403), lambda w: SELF_REPORTED),
    Write("self-reported run hidden", "post",
          lambda w: f"{API}/experiments/{w.hidden_experiment.pk}/self-reported-runs/", (401, 404, 201, 403),
          lambda w: SELF_REPORTED),
    Write("self-reported batch", "post",
          lambda w: f"{API}/experiments/{w.experiment.pk}/self-reported-runs/batch/",
          (401, 403, 201, 403), lambda w: {"runs": [SELF_REPORTED]}),
    Write("self-reported batch hidden", "post",
          lambda w: f"{API}/experiments/{w.hidden_experiment.pk}/self-reported-runs/batch/", (401, 404, 201, 403),
          lambda w: {"runs": [SELF_REPORTED]}),
    # subscriptions: the caller's own
    Write("subscription create", "post", lambda w: f"{API}/subscriptions/", (401, 201, 201, 201),
          lambda w: {"name": "mine", "url": w.receiver.url}),
    Write("subscription update", "patch", lambda w: f"{API}/subscriptions/{w.subscription}/", OWN_ONLY,
          lambda w: {"name": "renamed"}),
    Write("subscription replace", "put", lambda w: f"{API}/subscriptions/{w.subscription}/", OWN_ONLY,
          lambda w: {"name": "replaced", "url": w.receiver.url}),
    Write("subscription delete", "delete", lambda w: f"{API}/subscriptions/{w.subscription}/", (401, 404, 204, 404)),
    Write("subscription rotate-secret", "post", lambda w: f"{API}/subscriptions/{w.subscription}/rotate-secret/",
          OWN_ONLY),
    Write("subscription redeliver", "post",
          lambda w: f"{API}/subscriptions/{w.subscription}/deliveries/{w.delivery.pk}/redeliver/",
          (401, 404, 202, 404)),
    Write("subscription ping", "post", lambda w: f"{API}/subscriptions/{w.subscription}/ping/", OWN_ONLY,
          changes=False),
    # API tokens: the caller's own
    Write("token create", "post", lambda w: f"{API}/tokens/", (401, 201, 201, 201), lambda w: {"name": "laptop"}),
    Write("token revoke", "delete", lambda w: f"{API}/tokens/{w.token.pk}/", (401, 404, 204, 404)),
    # quotas: staff only, the user included
    Write("quota raise", "patch", lambda w: f"{API}/users/{w.author.username}/quota/", (401, 403, 403, 200),
          lambda w: {"active_runs": 7}),
    # co-authorship by consent: the named user only
    Write("invitation accept", "post", lambda w: f"{API}/findings/{w.invited.pk}/authors/{w.author.username}/accept",
          NAMED_USER),
    Write("invitation accept hidden", "post",
          lambda w: f"{API}/findings/{w.hidden_invited.pk}/authors/{w.author.username}/accept", (401, 404, 200, 403)),
    Write("invitation decline", "post",
          lambda w: f"{API}/findings/{w.invited.pk}/authors/{w.author.username}/decline", NAMED_USER),
    Write("authorship withdraw", "post",
          lambda w: f"{API}/findings/{w.public.pk}/authors/{w.author.username}/withdraw", NAMED_USER),
]


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    """One of everything, the author's (public and hidden), built through the services once for
    the module inside a transaction that is rolled back at its end. Each test's own transaction
    (``db``) is then a savepoint: what a test writes is undone before the next one."""
    with django_db_blocker.unblock(), transaction.atomic():
        yield from _build_world()
        transaction.set_rollback(True)


def _build_world():
    author, coauthor, inviter = UserFactory(), UserFactory(), UserFactory()
    w = SimpleNamespace(author=author, stranger=UserFactory(), staff=UserFactory(is_staff=True))

    def finding(owner=author, **fields) -> Finding:
        return finding_services.finding_create(user=owner, title="Mine", kind=Finding.Kind.THEORY, **fields)

    def experiment_and_run(of: Finding):
        experiment = repro_services.experiment_create(finding=of, user=author, plugin="echo", default_seeds=1)
        return experiment, experiment.reproductions.get().runs.get()

    w.public = finding(authors=[coauthor])
    finding_services.author_invitation_accept(finding=w.public, user=coauthor, username=coauthor.username)
    w.hidden = finding(visibility=Finding.Visibility.RESTRICTED)
    w.experiment, w.run = experiment_and_run(w.public)
    w.hidden_experiment, w.hidden_run = experiment_and_run(w.hidden)
    # claims are edited in place only while their finding has no runs: on findings of their own
    w.bare = finding()
    w.hidden_bare = finding(visibility=Finding.Visibility.RESTRICTED)
    w.claim = finding_services.claim_create(finding=w.bare, user=author, **CLAIM)
    w.hidden_claim = finding_services.claim_create(finding=w.hidden_bare, user=author, **CLAIM)
    w.invited = finding(owner=inviter, authors=[author])
    w.hidden_invited = finding(owner=inviter, authors=[author], visibility=Finding.Visibility.RESTRICTED)
    w.token, _ = account_services.token_create(user=author, name="ci")
    with webhook_receiver() as receiver:
        w.receiver = receiver
        owner = APIClient()
        owner.force_authenticate(author)
        response = owner.post(f"{API}/subscriptions/", {"name": "hook", "url": receiver.url}, format="json")
        assert response.status_code == 201, response.content
        w.subscription = response.json()["id"]
        emit("finding.created", w.public)
        webhooks_sweep()
        w.delivery = Delivery.objects.get(subscription_id=w.subscription)
        yield w


def state() -> dict[str, list[tuple]]:
    """Every stored row of the registry's own models (and the users), field by field."""
    models = [
        model for model in apps.get_models()
        if model._meta.app_label not in NOT_STATE
        and (model.__module__.startswith("registry.") or model._meta.label == "auth.User")
    ]
    return {model._meta.label: list(model.objects.order_by("pk").values_list()) for model in models}


def client(w, actor: str) -> APIClient:
    api = APIClient()
    if actor != "anonymous":
        api.force_authenticate(getattr(w, actor))
    return api


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("write", WRITES, ids=[write.name.replace(" ", "-") for write in WRITES])
def test_write_permission(world, db, write: Write, actor: str):
    expected = write.expected[ACTORS.index(actor)]
    before = state()
    body = write.body(world) if write.body else None
    response = getattr(client(world, actor), write.method)(write.path(world), body, format="json")
    assert response.status_code == expected, (write.name, actor, response.status_code, response.content[:500])
    after = state()
    if expected >= 400:
        assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
        changed = sorted(label for label in before if before[label] != after[label])
        assert not changed, f"a refused {write.name} ({actor}, {expected}) changed {changed}"
    elif write.changes:
        assert after != before, f"an allowed {write.name} ({actor}) changed nothing"


def test_the_matrix_covers_every_write_route():
    """A write route added to the API without a line in WRITES fails here."""
    from django.urls import get_resolver

    covered = {(write.method, _pattern(write.path(_FAKE))) for write in WRITES}
    missing = []
    for route, methods in _write_routes(get_resolver()):
        for method in methods:
            if not any(m == method and _same(route, pattern) for m, pattern in covered):
                missing.append(f"{method.upper()} {route}")
    assert not missing, f"write routes with no line in the permission matrix: {missing}"


# --- the coverage check's helpers ------------------------------------------------------------------

class _Fake:
    """Stands in for the world when only the shape of each path is wanted."""

    def __getattr__(self, name: str) -> Any:
        return SimpleNamespace(pk=1, username="someone", url="http://127.0.0.1/")

    def __format__(self, spec: str) -> str:
        return "1"


_FAKE = _Fake()
_FAKE.subscription = 1  # type: ignore[attr-defined]


def _pattern(path: str) -> str:
    import re

    return re.sub(r"/(\d+|someone)(?=/|$)", "/{}", path)


def _same(route: str, pattern: str) -> bool:
    return _pattern(route) == pattern


def _write_routes(resolver, prefix: str = "") -> list[tuple[str, set[str]]]:
    """(path with a placeholder per argument, write methods) for each API route under /api/v1/."""
    import re

    from django.urls import URLPattern, URLResolver

    found = []
    for entry in resolver.url_patterns:
        text = str(entry.pattern)
        if isinstance(entry, URLResolver):
            found += _write_routes(entry, prefix + text)
            continue
        assert isinstance(entry, URLPattern)
        route = prefix + text
        route = re.sub(r"\(\?P<format>[^)]*\)\$?$", "", route)  # router's format suffix variant
        if ".(?P<format>" in route or "\\.(?P<format>" in route:
            continue
        route = re.sub(r"\(\?P<[^>]+>[^)]*\)", "1", route)
        route = re.sub(r"<[^>]+>", "1", route)
        route = "/" + route.replace("^", "").replace("$", "").replace("\\", "")
        if not route.startswith(f"{API}/"):
            continue
        methods = _methods(entry.callback)
        if methods:
            found.append((route, methods))
    return found


def _methods(callback) -> set[str]:
    cls = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
    if cls is None:
        return set()
    writes = {"post", "put", "patch", "delete"} & set(cls.http_method_names)
    actions = getattr(callback, "actions", None)
    if actions:  # a router's viewset route: only the methods it maps
        return writes & set(actions)
    return {method for method in writes if hasattr(cls, method)}
