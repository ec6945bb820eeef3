"""The dashboard's submit and edit forms (registry.dashboard.views_submit), through Django's test
client on the real database: who may use them, errors beside their fields with nothing written,
and a valid submission writing exactly what the API writes for the same input."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.test import Client
from django.urls import reverse

from registry.api import serializers as s
from registry.findings.models import Claim, Finding
from registry.reproductions.models import Experiment, Reproduction, Run
from tests.dashboard import builders as b

pytestmark = pytest.mark.django_db


# ---------------------------------------------------------------- reading the rendered forms


class _Fields(HTMLParser):
    """Per ``div.field`` of a page: the names of its controls and its error messages."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[dict] = []
        self._stack: list[dict | None] = []
        self._in_error: dict | None = None

    def handle_starttag(self, tag, attrs) -> None:
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag in ("input", "select", "textarea", "br", "img", "meta", "link", "hr"):
            if tag in ("input", "select", "textarea") and self._current() is not None and attrs.get("name"):
                self._current()["names"].append(attrs["name"])
            if tag in ("input", "br", "img", "meta", "link", "hr"):
                return
        if tag == "div" and "field" in classes:
            field = {"names": [], "errors": [], "invalid": "field--invalid" in classes}
            self.fields.append(field)
            self._stack.append(field)
        else:
            self._stack.append(None)
        if tag == "p" and "field__error" in classes and self._current() is not None:
            self._in_error = self._current()
            self._in_error["errors"].append("")

    def handle_endtag(self, tag) -> None:
        if tag in ("input", "br", "img", "meta", "link", "hr"):
            return
        if tag == "p":
            self._in_error = None
        if self._stack:
            self._stack.pop()

    def handle_data(self, data) -> None:
        if self._in_error is not None:
            self._in_error["errors"][-1] += data

    def _current(self) -> dict | None:
        return next((f for f in reversed(self._stack) if f is not None), None)


def errors_beside(response, name: str) -> list[str]:
    """The error messages shown in the field block holding the control called ``name``."""
    parser = _Fields()
    parser.feed(response.content.decode())
    for field in parser.fields:
        if name in field["names"]:
            assert field["invalid"] == bool(field["errors"]), field
            return [e.strip() for e in field["errors"]]
    raise AssertionError(f"no field {name!r} on the page")


def no_errors_elsewhere(response, *names: str) -> None:
    parser = _Fields()
    parser.feed(response.content.decode())
    for field in parser.fields:
        if field["errors"] and not set(field["names"]) & set(names):
            raise AssertionError(f"unexpected errors beside {field['names']}: {field['errors']}")


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def owner(client, user) -> Client:
    client.force_login(user)
    return client


@pytest.fixture
def finding(user) -> Finding:
    return b.finding(user, title="Weight decay groks", summary="A *first* version.", tags=["grokking"])


@pytest.fixture
def restricted(user) -> Finding:
    return b.finding(user, title="Unpublished", visibility=Finding.Visibility.RESTRICTED)


FINDING_POST = {
    "title": "Resize-convolution removes checkerboards",
    "kind": "fix",
    "summary": "Use **resize** then convolve.\n\n<script>alert(1)</script>",
    "tags": "vision, generative",
    "references": "arXiv:1603.07285\nhttps://distill.pub/2016/deconv-checkerboard/",
    "visibility": "public",
    "restricted_to": "",
    "embargo_until": "",
    "xrisk_expected_safety_effects": "Fewer artifacts a monitor could miss.",
    "xrisk_expected_capability_effects": "",
    "xrisk_hazards": "",
    "xrisk_dual_use": "no",
    "xrisk_notes": "",
}
FINDING_JSON = {
    "title": FINDING_POST["title"],
    "kind": "fix",
    "summary": FINDING_POST["summary"],
    "tags": ["vision", "generative"],
    "references": ["arXiv:1603.07285", "https://distill.pub/2016/deconv-checkerboard/"],
    "visibility": "public",
    "restricted_to": [],
    "embargo_until": None,
    "xrisk_sheet": {"expected_safety_effects": "Fewer artifacts a monitor could miss.", "dual_use": False},
}
VOLATILE = {"id", "url", "created_at", "updated_at"}


def as_api_shows(finding: Finding) -> dict:
    data = dict(s.FindingSerializer(Finding.objects.get(pk=finding.pk)).data)
    return {k: v for k, v in data.items() if k not in VOLATILE}


def write_urls(finding: Finding, experiment: Experiment | None = None) -> list[str]:
    urls = [
        reverse("dashboard:finding-edit", args=[finding.pk]),
        reverse("dashboard:claim-create", args=[finding.pk]),
        reverse("dashboard:experiment-create", args=[finding.pk]),
    ]
    if experiment is not None:
        urls.append(reverse("dashboard:experiment-retract", args=[experiment.pk]))
    return urls


# ---------------------------------------------------------------- who may use the forms


def test_anonymous_visitors_are_sent_to_sign_in_and_nothing_is_written(client, user, finding):
    experiment = b.echo_experiment(finding, user)
    urls = [
        reverse("dashboard:finding-create"),
        *write_urls(finding, experiment),
        reverse("dashboard:summary-preview"),
        reverse("dashboard:builds-on-search"),
        reverse("dashboard:plugin-metrics"),
        reverse("dashboard:plugin-params"),
    ]
    before = (Finding.objects.count(), Claim.objects.count(), Experiment.objects.count())
    for url in urls:
        for method in (client.get, client.post):
            response = method(url, {**FINDING_POST, "metric": "risk", "direction": "decrease", "plugin": "echo",
                                    "reason": "gone", "summary": "x"})
            if response.status_code == 405:  # a fragment taking only GET or only POST
                continue
            assert response.status_code == 302, (url, response.status_code)
            assert response["Location"].startswith(reverse("dashboard:login") + "?next="), url
    assert (Finding.objects.count(), Claim.objects.count(), Experiment.objects.count()) == before
    experiment.refresh_from_db()
    assert experiment.retracted_at is None


def test_a_stranger_may_not_change_a_finding_403_or_404_when_hidden(stranger, user, finding, restricted):
    experiment = b.echo_experiment(finding, user)
    hidden_experiment = b.echo_experiment(restricted, user)
    before = as_api_shows(finding)
    for url in write_urls(finding, experiment):
        assert stranger.get(url).status_code == 403, url
        response = stranger.post(url, {**FINDING_POST, "metric": "risk", "direction": "decrease",
                                       "plugin": "echo", "reason": "I do not like it"})
        assert response.status_code == 403, url
    for url in write_urls(restricted, hidden_experiment):
        assert stranger.get(url).status_code == 404, url
        assert stranger.post(url, {"title": "mine now", "reason": "x"}).status_code == 404, url
    missing = Experiment.objects.order_by("-pk").first().pk + 1000
    assert stranger.get(reverse("dashboard:experiment-retract", args=[missing])).status_code == 404
    assert as_api_shows(finding) == before
    assert Claim.objects.count() == 0
    assert Experiment.objects.filter(retracted_at__isnull=False).count() == 0
    assert Experiment.objects.count() == 2


def test_links_to_the_forms_are_shown_to_whoever_may_use_them(client, stranger, owner, finding):
    page = reverse("dashboard:finding-detail", args=[finding.pk])
    edit = reverse("dashboard:finding-edit", args=[finding.pk])
    new = reverse("dashboard:finding-create")
    for reader in (Client(), stranger):
        html = reader.get(page).content.decode()
        assert edit not in html
        assert reverse("dashboard:claim-create", args=[finding.pk]) not in html
    assert new not in Client().get(reverse("dashboard:finding-list")).content.decode()
    assert new in stranger.get(reverse("dashboard:finding-list")).content.decode()
    html = owner.get(page).content.decode()
    for url in write_urls(finding):
        assert f'href="{url}"' in html
    assert owner.get(edit).status_code == 200


def test_forms_need_a_csrf_token(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post(reverse("dashboard:finding-create"), FINDING_POST)
    assert response.status_code == 403
    assert not Finding.objects.exists()
    page = client.get(reverse("dashboard:finding-create"))
    assert page.status_code == 200
    assert 'name="csrfmiddlewaretoken"' in page.content.decode()


# ---------------------------------------------------------------- the finding form


def test_a_valid_finding_creates_exactly_what_the_api_creates(owner, api, user):
    response = owner.post(reverse("dashboard:finding-create"), FINDING_POST)
    assert response.status_code == 302, response.content[:2000]
    from_form = Finding.objects.get(title=FINDING_POST["title"])
    assert response["Location"] == reverse("dashboard:finding-detail", args=[from_form.pk])
    api_response = api.post("/api/v1/findings/", FINDING_JSON, format="json")
    assert api_response.status_code == 201, api_response.json()
    from_api = Finding.objects.get(pk=api_response.json()["id"])
    assert as_api_shows(from_form) == as_api_shows(from_api)
    assert from_form.created_by == user and list(from_form.authors) == [user]
    assert "<script>" not in as_api_shows(from_form)["summary_html"]


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"title": ""}, "title", "blank"),
        ({"title": "x" * 301}, "title", "300"),
        ({"kind": "manifesto"}, "kind", "not a valid choice"),
        ({"tags": "fine, not a slug!"}, "tags", "“not a slug!”: enter a valid \"slug\""),
        ({"visibility": "secret"}, "visibility", "not a valid choice"),
        ({"restricted_to": "nobody-by-that-name"}, "restricted_to", "unknown users"),
        ({"embargo_until": "next tuesday"}, "embargo_until", "format"),
        ({"xrisk_dual_use": "perhaps"}, "xrisk_dual_use", "true or false"),
        ({"xrisk_hazards": "h" * 5001}, "xrisk_hazards", "5000"),
        ({"builds_on": "999999"}, "builds_on_q", "does not exist"),
        ({"builds_on": "abc"}, "builds_on_q", "incorrect type"),
    ],
)
def test_finding_errors_are_shown_beside_their_field_and_nothing_is_created(owner, change, field, message):
    response = owner.post(reverse("dashboard:finding-create"), {**FINDING_POST, **change})
    assert response.status_code == 400
    errors = errors_beside(response, field)
    assert errors and message in " ".join(errors).lower(), errors
    no_errors_elsewhere(response, field)
    assert not Finding.objects.exists()
    html = response.content.decode()
    assert "Nothing was saved" in html
    if field != "title":
        assert FINDING_POST["title"] in html  # what was typed is kept


def test_a_hidden_finding_cannot_be_built_on_and_is_not_found_by_the_search(owner, stranger, other_user, restricted):
    stranger_post = {**FINDING_POST, "builds_on": str(restricted.pk)}
    response = stranger.post(reverse("dashboard:finding-create"), stranger_post)
    assert response.status_code == 400
    assert "does not exist" in " ".join(errors_beside(response, "builds_on_q"))
    assert not Finding.objects.filter(created_by=other_user).exists()
    search = reverse("dashboard:builds-on-search")
    hidden = stranger.get(search, {"builds_on_q": "Unpublished"})
    assert hidden.status_code == 200
    assert f'value="{restricted.pk}"' not in hidden.content.decode()
    assert "No finding matches" in hidden.content.decode()
    assert restricted.title not in stranger.get(search, {"builds_on": restricted.pk}).content.decode()
    found = owner.get(search, {"builds_on_q": "unpub"})
    assert found.status_code == 200
    assert f'value="{restricted.pk}"' in found.content.decode()


def test_a_co_author_editing_keeps_the_links_to_findings_they_cannot_see(stranger, user, other_user):
    from registry.findings.models import FindingAuthor

    secret = b.finding(user, title="Secret", visibility=Finding.Visibility.RESTRICTED)
    public = b.finding(user, title="Public parent")
    shared = b.finding(user, title="Shared", builds_on=[secret, public])
    FindingAuthor.objects.create(finding=shared, user=other_user, status=FindingAuthor.Status.ACCEPTED)
    url = reverse("dashboard:finding-edit", args=[shared.pk])
    page = stranger.get(url).content.decode()
    assert "Secret" not in page and "Public parent" in page
    # the co-author edits the title and drops the one link they see
    response = stranger.post(url, {**FINDING_POST, "title": "Shared, edited"})
    assert response.status_code == 302, response.content[:2000]
    shared.refresh_from_db()
    assert shared.title == "Shared, edited"
    assert set(shared.builds_on.values_list("pk", flat=True)) == {secret.pk}


def test_builds_on_search_keeps_the_chosen_and_lists_matches(owner, user, finding):
    other = b.finding(user, title="Fourier features of modular addition")
    response = owner.get(reverse("dashboard:builds-on-search"),
                         {"builds_on_q": "fourier", "builds_on": [str(finding.pk), "junk", "9" * 30]})
    assert response.status_code == 200
    html = response.content.decode()
    assert f'value="{finding.pk}" checked' in html
    assert f'value="{other.pk}">' in html
    nothing = owner.get(reverse("dashboard:builds-on-search"), {"builds_on_q": "zzzq"})
    assert "No finding matches" in nothing.content.decode()
    excluded = owner.get(reverse("dashboard:builds-on-search"), {"builds_on_q": "fourier", "exclude": other.pk})
    assert f'value="{other.pk}"' not in excluded.content.decode()


def test_summary_preview_is_the_sanitised_markdown(owner):
    response = owner.post(reverse("dashboard:summary-preview"),
                          {"summary": "**bold** <script>alert(1)</script> [x](javascript:alert(1))"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "<strong>bold</strong>" in html
    assert "<script>" not in html and "javascript:" not in html
    assert owner.get(reverse("dashboard:summary-preview")).status_code == 405
    assert "Too long" in owner.post(reverse("dashboard:summary-preview"),
                                    {"summary": "x" * (s.SUMMARY_MAX_CHARS + 1)}).content.decode()


def test_owner_edits_a_finding_like_a_put_and_a_cycle_is_refused(owner, user, finding):
    child = b.finding(user, title="Builds on it", builds_on=[finding])
    form_page = owner.get(reverse("dashboard:finding-edit", args=[finding.pk]))
    assert form_page.status_code == 200
    assert "Weight decay groks" in form_page.content.decode()

    post = {**FINDING_POST, "title": "Weight decay groks, edited", "tags": "grokking, fourier",
            "visibility": "restricted", "embargo_until": "2030-01-02T03:04"}
    response = owner.post(reverse("dashboard:finding-edit", args=[finding.pk]), post)
    assert response.status_code == 302
    shown = as_api_shows(finding)
    assert shown["title"] == "Weight decay groks, edited"
    assert shown["tags"] == ["fourier", "grokking"]
    assert shown["visibility"] == "restricted" and shown["embargo_until"].startswith("2030-01-02T")
    again = owner.get(reverse("dashboard:finding-edit", args=[finding.pk])).content.decode()
    assert 'value="2030-01-02T03:04"' in again and 'value="fourier, grokking"' in again  # the form shows it back

    cycle = owner.post(reverse("dashboard:finding-edit", args=[finding.pk]), {**post, "builds_on": str(child.pk)})
    assert cycle.status_code == 400
    assert "cannot build on itself" in " ".join(errors_beside(cycle, "builds_on_q"))
    assert not Finding.objects.get(pk=finding.pk).builds_on.exists()


# ---------------------------------------------------------------- claims


def claim_post(**change) -> dict:
    return {"plugin": "echo", "metric": "risk", "direction": "decrease", "threshold_unit": "relative",
            "min_relative_effect": "0.3", "margin": "", "statement": "Risk at least 30% lower.", **change}


def test_claim_metric_choices_come_from_the_chosen_plugin(owner, finding):
    page = owner.get(reverse("dashboard:claim-create", args=[finding.pk]), {"plugin": "echo"})
    assert page.status_code == 200
    html = page.content.decode()
    for metric in ("risk", "skill", "width"):
        assert f'<option value="{metric}"' in html
    fragment = owner.get(reverse("dashboard:plugin-metrics"), {"plugin": "grokking"})
    assert fragment.status_code == 200
    html = fragment.content.decode()
    assert '<option value="test_accuracy"' in html and '<option value="risk"' not in html
    assert "baseline vs intervention" in html
    unknown = owner.get(reverse("dashboard:plugin-metrics"), {"plugin": "<nope>"})
    assert unknown.status_code == 200  # an unknown plugin falls back to the first available one


def test_a_valid_claim_creates_exactly_what_the_api_creates(owner, api, user, finding):
    twin = b.finding(user, title="Twin")
    response = owner.post(reverse("dashboard:claim-create", args=[finding.pk]), claim_post())
    assert response.status_code == 302
    api_response = api.post(f"/api/v1/findings/{twin.pk}/claims/", {
        "metric": "risk", "direction": "decrease", "threshold_unit": "relative", "min_relative_effect": 0.3,
        "statement": "Risk at least 30% lower.",
    }, format="json")
    assert api_response.status_code == 201, api_response.json()
    volatile = {"id", "finding", "created_at"}
    from_form = {k: v for k, v in s.ClaimSerializer(finding.claims.get()).data.items() if k not in volatile}
    from_api = {k: v for k, v in api_response.json().items() if k not in volatile}
    assert from_form == from_api

    another = owner.post(reverse("dashboard:claim-create", args=[finding.pk]),
                         claim_post(metric="skill", direction="non_inferior", min_relative_effect="", margin="0.05",
                                    add_another="1"))
    assert another.status_code == 302
    assert another["Location"] == reverse("dashboard:claim-create", args=[finding.pk]) + "?plugin=echo"
    assert finding.claims.get(metric="skill").margin == 0.05


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"metric": "not_declared"}, "metric", "declares a metric"),
        ({"direction": "sideways"}, "direction", "not a valid choice"),
        ({"min_relative_effect": "lots"}, "min_relative_effect", "number"),
        ({"min_relative_effect": "1.5"}, "min_relative_effect", "impossible"),
        ({"min_relative_effect": "-0.2"}, "min_relative_effect", "magnitude"),
        ({"min_relative_effect": "nan"}, "min_relative_effect", ""),
        ({"direction": "non_inferior", "min_relative_effect": ""}, "margin", "needs a margin"),
        ({"threshold_unit": "furlongs"}, "threshold_unit", "not a valid choice"),
        ({"statement": "s" * 501}, "statement", "500"),
    ],
)
def test_claim_errors_are_shown_beside_their_field_and_nothing_is_created(owner, finding, change, field, message):
    response = owner.post(reverse("dashboard:claim-create", args=[finding.pk]), claim_post(**change))
    assert response.status_code == 400
    errors = errors_beside(response, field)
    assert errors and message in " ".join(errors).lower(), errors
    no_errors_elsewhere(response, field)
    assert not Claim.objects.exists()


# ---------------------------------------------------------------- experiments


def experiment_post(**change) -> dict:
    return {"plugin": "echo", "preset": "", "params.baseline": "2.0", "params.effect": "-1", "params.noise": "0",
            "params.sleep_s": "", "default_seeds": "2", "device": "", "time_limit_s": "", "memory_limit_mb": "",
            **change}


def test_the_experiment_form_is_generated_from_the_plugin_schema(owner, finding):
    page = owner.get(reverse("dashboard:experiment-create", args=[finding.pk]), {"plugin": "echo"})
    assert page.status_code == 200
    html = page.content.decode()
    # types, bounds, defaults, descriptions
    assert 'name="params.noise"' in html and 'min="0.0"' in html or 'min="0"' in html
    assert 'name="params.sleep_s"' in html and 'max="120' in html
    assert 'value="-0.5"' in html  # the default of effect
    assert "Added to it in the intervention arm." in html

    params = owner.get(reverse("dashboard:plugin-params"), {"plugin": "checkerboard"})
    html = params.content.decode()
    assert params.status_code == 200
    assert '<select name="params.loss"' in html and '<option value="full"' in html  # an enum
    assert 'name="params.steps"' in html and 'step="1"' in html and 'max="100000"' in html
    assert '<option value="tiny">' in html  # the presets

    tiny = owner.get(reverse("dashboard:plugin-params"), {"plugin": "checkerboard", "preset": "tiny"}).content.decode()
    assert 'name="params.steps" value="15"' in tiny or ('value="15"' in tiny and 'name="params.steps"' in tiny)
    assert '<option value="tiny" selected>' in tiny

    topk = owner.get(reverse("dashboard:plugin-params"), {"plugin": "topk_sae"}).content.decode()
    assert 'type="checkbox" name="params.tied_init"' in topk  # a boolean
    shortcut = owner.get(reverse("dashboard:plugin-params"), {"plugin": "shortcut"}).content.decode()
    assert 'value="[0.1, 0.2]"' in shortcut  # an array, as JSON


def test_without_javascript_apply_fills_the_preset_and_saves_nothing(owner, finding):
    url = reverse("dashboard:experiment-create", args=[finding.pk])
    page = owner.get(url).content.decode()
    assert '<noscript><button type="submit" name="apply_preset"' in page
    before = Experiment.objects.count()
    applied = owner.post(url, {**experiment_post(plugin="checkerboard", preset="tiny"), "apply_preset": "1"})
    assert applied.status_code == 200
    html = applied.content.decode()
    assert re.search(r'name="params.steps" value="15"|value="15"[^>]*name="params.steps"', html)
    assert '<option value="tiny" selected>' in html and 'field--invalid' not in html
    assert Experiment.objects.count() == before


def test_a_valid_experiment_creates_exactly_what_the_api_creates(owner, api, user, finding):
    twin = b.finding(user, title="Twin")
    response = owner.post(reverse("dashboard:experiment-create", args=[finding.pk]),
                          experiment_post(reproduce="on"))
    assert response.status_code == 302, response.content[:3000]
    api_response = api.post(f"/api/v1/findings/{twin.pk}/experiments/", {
        "plugin": "echo", "params": {"baseline": 2.0, "effect": -1, "noise": 0}, "default_seeds": 2,
    }, format="json")
    assert api_response.status_code == 201, api_response.json()
    from_form, from_api = finding.experiments.get(), twin.experiments.get()
    fields = ("plugin", "plugin_version_constraint", "params", "default_seeds", "device", "time_limit_s",
              "memory_limit_mb")
    assert {f: getattr(from_form, f) for f in fields} == {f: getattr(from_api, f) for f in fields}
    assert from_form.params["baseline"] == 2.0 and from_form.params["effect"] == -1.0
    # the first reproduction queued, as the API's default does
    assert [r.seeds for r in Reproduction.objects.filter(experiment=from_form)] == [[0, 1]]
    assert Run.objects.filter(reproduction__experiment=from_form).count() == 2


def test_an_experiment_without_reproduce_queues_nothing(owner, finding):
    response = owner.post(reverse("dashboard:experiment-create", args=[finding.pk]), experiment_post())
    assert response.status_code == 302
    assert finding.experiments.count() == 1
    assert not Reproduction.objects.exists()


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"params.noise": "-1"}, "params.noise", "greater than or equal to 0"),
        ({"params.sleep_s": "121"}, "params.sleep_s", "less than or equal to 120"),
        ({"params.baseline": "a lot"}, "params.baseline", "valid number"),
        ({"params.baseline": "nan"}, "params.baseline", "finite"),
        ({"default_seeds": "0"}, "default_seeds", "greater than or equal to 1"),
        ({"default_seeds": "many"}, "default_seeds", "valid integer"),
        ({"time_limit_s": "999999999"}, "time_limit_s", "less than or equal"),
        ({"memory_limit_mb": "-5"}, "memory_limit_mb", "greater than or equal"),
        ({"device": "tpu"}, "device", "not a valid choice"),
    ],
)
def test_experiment_errors_are_shown_beside_their_field_and_nothing_is_created(
    owner, finding, change, field, message
):
    response = owner.post(reverse("dashboard:experiment-create", args=[finding.pk]),
                          experiment_post(reproduce="on", **change))
    assert response.status_code == 400, response.status_code
    errors = errors_beside(response, field)
    assert errors and message in " ".join(errors).lower(), errors
    no_errors_elsewhere(response, field)
    assert not Experiment.objects.exists() and not Reproduction.objects.exists()
    if field != "device":  # (a select shows its own choices)
        assert f'value="{change[field]}"' in response.content.decode()  # what was typed is kept


def test_an_unknown_plugin_is_refused_beside_the_plugin_field(owner, finding):
    response = owner.post(reverse("dashboard:experiment-create", args=[finding.pk]),
                          experiment_post(plugin="no_such_plugin"))
    assert response.status_code == 400
    assert "unknown plugin" in " ".join(errors_beside(response, "plugin"))
    assert not Experiment.objects.exists()


def test_a_model_level_parameter_error_is_shown_on_the_form(owner, finding):
    """A pydantic error of the whole model (no single field): shown at the top of the form."""
    response = owner.post(reverse("dashboard:experiment-create", args=[finding.pk]), {
        "plugin": "induction", "params.min_segment": "30", "params.max_segment": "10",
        "params.train_on_repeat_only": "on", "default_seeds": "1",
    })
    assert response.status_code == 400
    html = response.content.decode()
    assert "Nothing was saved" in html
    top = html.split('class="form-errors submit-errors"')[1].split("</div>")[0]
    assert "min_segment must not exceed max_segment" in top
    assert not Experiment.objects.exists()


# ---------------------------------------------------------------- retracting


def test_owner_retracts_an_experiment_after_confirming_with_a_reason(owner, user, finding):
    experiment = b.echo_experiment(finding, user)
    url = reverse("dashboard:experiment-retract", args=[experiment.pk])
    confirm = owner.get(url)
    assert confirm.status_code == 200
    assert "cannot be undone" in confirm.content.decode()
    experiment.refresh_from_db()
    assert experiment.retracted_at is None  # the confirmation page writes nothing

    blank = owner.post(url, {"reason": "   "})
    assert blank.status_code == 400
    assert "say why" in " ".join(errors_beside(blank, "reason"))
    experiment.refresh_from_db()
    assert experiment.retracted_at is None

    done = owner.post(url, {"reason": "The baseline was misconfigured."})
    assert done.status_code == 302
    experiment.refresh_from_db()
    assert experiment.retracted_at is not None and experiment.retraction_reason == "The baseline was misconfigured."
    again = owner.post(url, {"reason": "twice"})
    assert again.status_code == 400
    assert "already retracted" in again.content.decode()


# ---------------------------------------------------------------- garbage


GARBAGE = [
    {},
    {"title": "\x00", "kind": "\x00", "summary": "\x00"},
    {"builds_on": ["1" * 40, "-1", ""], "embargo_until": "9999-99-99T99:99"},
    # str.isdigit() is true of these, yet int() refuses them
    {"builds_on": ["²", "¹²", "٣"], "exclude": "²", "builds_on_q": "x"},
    {"tags": "," * 500, "references": "\n" * 100, "restricted_to": " , , "},
    {"min_relative_effect": "1e400", "margin": "-inf", "metric": "\x00", "plugin": "\x00"},
    {"plugin": "echo", "params.baseline": "1e400", "params.noise": "[1,2]", "default_seeds": "1e9",
     "time_limit_s": "3.5", "memory_limit_mb": "\x00", "preset": "../../etc"},
    {"plugin": "shortcut", "params.train_colour_noise": "[0.1,", "params.hidden_dim": "{}"},
    {"plugin": "topk_sae", "params.k": "null", "params.tied_init": "maybe"},
    {"reason": "r" * 3000},
]


def test_garbage_never_makes_a_server_error(owner, user, finding):
    experiment = b.echo_experiment(finding, user)
    urls = [reverse("dashboard:finding-create"), *write_urls(finding, experiment)]
    for data in GARBAGE:
        for url in urls:
            response = owner.post(url, data)
            assert response.status_code < 500, (url, data, response.status_code)
        for fragment in ("dashboard:builds-on-search", "dashboard:plugin-metrics", "dashboard:plugin-params"):
            assert owner.get(reverse(fragment), data).status_code == 200
        assert owner.post(reverse("dashboard:summary-preview"), data).status_code == 200
    assert Finding.objects.count() == 1
    assert not Claim.objects.exists()
    assert Experiment.objects.count() == 1


def test_an_experiment_beyond_the_run_quota_is_refused_beside_reproduce(owner, finding, settings):
    settings.QUOTA_ACTIVE_RUNS = 1
    response = owner.post(reverse("dashboard:experiment-create", args=[finding.pk]),
                          experiment_post(reproduce="on", default_seeds="2"))
    assert response.status_code == 429
    assert response["Retry-After"]
    assert errors_beside(response, "reproduce")
    no_errors_elsewhere(response, "reproduce")
    assert not Experiment.objects.exists() and not Reproduction.objects.exists()
