"""A readable landscape (issue 13, part 6): axes on the effects' scales (a symmetric log axis where
scores span decades, so a score of 285 does not squash everything else onto the origin), every
point hoverable, focusable and a link, overlapping points spread apart and counted, the aggregate
answer, the trend and differential progress in plain words, and a trend drawn only with enough
findings and always with its confidence band."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from registry.dashboard import charts
from registry.dashboard.landscape import trend_line
from registry.effects.models import FindingEffects
from registry.effects.selectors import MIN_LANDSCAPE_FINDINGS
from registry.findings.models import Finding
from tests.dashboard import builders as b
from tests.dashboard.test_views import page

SVG = "{http://www.w3.org/2000/svg}"


def point(i: int, x: float, y: float, **kw) -> charts.ScatterPoint:
    return charts.ScatterPoint(finding=i, title=kw.pop("title", f"F{i}"), href=f"/findings/{i}/", x=x, y=y, **kw)


def scatter(html: str, which: str = "wide") -> str:
    return html.split(f'class="scatter scatter--{which}"')[1].split("</svg>")[0]


# ---------------------------------------------------------------- scales


def test_scores_spanning_decades_get_a_symmetric_log_axis_and_ordinary_points_stay_apart():
    points = [point(1, 0.4, 0.3), point(2, 1.2, 0.5), point(3, 285.0, 1.0), point(4, -0.8, 0.2)]
    g = charts.scatter_geometry(points)
    assert g.x_scale.kind == "symlog" and g.y_scale.kind == "linear"
    by_id = {p["finding"]: p for p in g.points}
    # on a linear axis 0.4 and 1.2 would lie 0.8/286 of 640 px ≈ 2 px apart
    assert by_id[2]["cx"] - by_id[1]["cx"] > 30
    assert by_id[1]["cx"] - by_id[4]["cx"] > 30
    assert by_id[3]["cx"] <= 700 and by_id[3]["cx"] > by_id[2]["cx"] + 300
    ticks = [v for v, _ in g.x_ticks]
    assert {0.0, 1.0, 10.0, 100.0} <= set(ticks)
    assert all(a < b for a, b in zip(ticks, ticks[1:], strict=False))
    svg = str(charts.scatter_svg(points))
    assert 'data-x-scale="symlog"' in svg and "symmetric log" in svg


def test_ordinary_scores_keep_a_linear_axis():
    g = charts.scatter_geometry([point(1, 0.4, 0.3), point(2, 2.5, -1.0), point(3, 6.0, 4.0)])
    assert g.x_scale.kind == g.y_scale.kind == "linear"
    assert charts.spans_decades([0.5, 0.6, 0.7, 12.0, 0.5])  # 12 is 20x the median
    assert not charts.spans_decades([5.0, 8.0, 12.0])  # large, but not spanning decades
    assert not charts.spans_decades([0.1, 3.0])  # spans decades, but nothing reaches 10 log units


def test_symlog_is_odd_monotonic_and_inverts():
    for value in (-300.0, -2.0, -0.1, 0.0, 0.5, 9.0, 285.0):
        assert charts.symlog_inverse(charts.symlog(value)) == pytest.approx(value)
        assert charts.symlog(-value) == pytest.approx(-charts.symlog(value))
    values = [charts.symlog(v) for v in (-100, -1, 0, 1, 100)]
    assert values == sorted(values)


# ---------------------------------------------------------------- overlaps and labels


def test_coinciding_points_are_spread_apart_counted_and_led_back():
    points = [point(i, 0.7, 0.7) for i in range(1, 4)] + [point(9, 3.0, -2.0)]
    g = charts.scatter_geometry(points)
    assert [group["n"] for group in g.overlaps] == [3] and g.n_overlapping == 3
    spread = [(p["cx"], p["cy"]) for p in g.points if p["overlap"]]
    radius = charts.SCATTER_BOX["radius"]
    for i, a in enumerate(spread):
        for c in spread[i + 1 :]:
            assert math.dist(a, c) >= 2 * radius  # no longer on top of each other
    centre = (sum(x for x, _ in spread) / 3, sum(y for _, y in spread) / 3)
    true = (g.points[0]["tx"], g.points[0]["ty"])
    assert math.dist(centre, true) < 1  # the group keeps its shared position
    assert g.points[3]["overlap"] == 0 and not g.points[3]["moved"]
    svg = str(charts.scatter_svg(points))
    assert "3 overlapping" in svg and svg.count('class="chart__leader"') == 3
    assert svg.count('data-overlap="3"') == 3
    assert svg == str(charts.scatter_svg(points))  # deterministic: the same page every time


def test_many_overlapping_points_use_rings_without_collisions():
    positions = [(300.0, 200.0)] * 20
    placed, groups = charts.spread_overlaps(positions, separation=14)
    assert groups == [list(range(20))]
    for i, a in enumerate(placed):
        for c in placed[i + 1 :]:
            assert math.dist(a, c) >= 14 - 1e-6


def test_every_point_is_a_titled_link_and_few_points_are_labelled():
    points = [point(1, 0.5, 0.5, title="<script>alert(1)</script> steering"), point(2, -1.0, 2.0, title="B")]
    svg = str(charts.scatter_svg(points))
    root = ET.fromstring(svg)  # well-formed: the title was escaped
    links = list(root.iter(f"{SVG}a"))
    assert [a.get("href") for a in links] == ["/findings/1/", "/findings/2/"]
    for a in links:
        title = a.find(f"{SVG}title")
        assert title is not None and "safety" in title.text and "capability" in title.text
        assert a.get("aria-label") == title.text
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "chart__point-label"]
    assert labels == ["<script>alert(1)</scrip…", "B"]
    assert "<script>" not in svg


def test_labels_never_overlap_and_too_many_points_go_unlabelled():
    points = [point(i, 0.1 * i, 0.1 * (i % 3)) for i in range(1, 16)]
    g = charts.scatter_geometry(points)
    boxes = []
    for p in g.points:
        if p["text"]:
            x, y, width = p["text"]["x"], p["text"]["y"], len(p["text"]["text"]) * charts.CHAR_WIDTH
            left = {"start": x, "end": x - width, "middle": x - width / 2}[p["text"]["anchor"]]
            boxes.append((left, y - 12, left + width, y))
    assert boxes
    for i, a in enumerate(boxes):
        for c in boxes[i + 1 :]:
            assert not charts._boxes_overlap(a, c)
    assert g.labels_hidden == sum(1 for p in g.points if p["text"] is None)
    crowd = charts.scatter_geometry([point(i, i * 0.01, 0.0) for i in range(charts.LABEL_LIMIT + 1)])
    assert not crowd.labelled and all(p["text"] is None for p in crowd.points)


# ---------------------------------------------------------------- the trend and its band


def test_the_trend_needs_its_band_and_the_band_widens_away_from_the_mean():
    progress = {"slope": 0.5, "intercept": 0.1, "n": 6, "residual_sd": 0.3, "capability_mean": 1.0,
                "capability_ss": 4.0, "confidence": 0.95}
    line = trend_line(progress)
    assert line is not None and line.has_band
    assert line.half_width(1.0) < line.half_width(3.0)
    assert trend_line({**progress, "capability_ss": None}) is None  # no band: no line
    assert trend_line({"slope": None, "n": 2}) is None
    g = charts.scatter_geometry([point(1, 0.0, 0.0), point(2, 2.0, 1.0)], trend=line)
    assert g.trend_path.startswith("M") and g.band_path.endswith("Z")
    svg = str(charts.scatter_svg([point(1, 0.0, 0.0), point(2, 2.0, 1.0)], trend=line, uid="t"))
    assert 'clip-path="url(#t-frame)"' in svg and 'class="chart__band"' in svg


# ---------------------------------------------------------------- the page


def _measured(user, i: int, safety_factor: float, capability_factor: float, **fields) -> Finding:
    finding = b.finding(user, title=f"Readable {i}", **fields)
    wobble = [1.0, 1.03, 0.97, 1.01, 0.99]
    risk = [(1.0 + 0.1 * s, (1.0 + 0.1 * s) / safety_factor * wobble[s]) for s in range(5)]
    skill = [(1.0, capability_factor * wobble[(s + 2) % 5]) for s in range(5)]
    b.measured(b.echo_experiment(finding, user), {"risk": risk, "skill": skill})
    return finding


def _set_capability_score(finding: Finding, score: float) -> None:
    """Give a finding an extreme capability score (as a deterministic metric can): the stored
    summary columns follow the JSON (generated columns)."""
    row = FindingEffects.objects.get(finding=finding)
    data = row.data
    data["axis_scores"]["capability"] = {**data["axis_scores"]["capability"], "score": score,
                                         "ci_low": score - 1.0, "ci_high": score + 1.0}
    FindingEffects.objects.filter(pk=row.pk).update(data=data)


@pytest.fixture
def readers_and_owner(readers, user):
    from django.test import Client

    owner = Client()
    owner.force_login(user)
    return {**readers, "owner": owner}


@pytest.mark.django_db
def test_page_with_few_findings_says_why_no_trend(readers_and_owner, user):
    _measured(user, 1, 2.0, 1.0)
    _measured(user, 2, 1.0, 3.0)
    for who, client in readers_and_owner.items():
        html = page(client, "/landscape/")
        assert "chart__trend" not in html and "chart__band" not in html, who
        assert f"No trend line: one is drawn only with at least {MIN_LANDSCAPE_FINDINGS} findings" in html
        assert f"a trend needs at least {MIN_LANDSCAPE_FINDINGS} findings with both scores" in html
        assert "2 findings have both" in html
        assert "Every point is labelled" in html
        assert '<details class="filters-disclosure"' in html  # the filters collapse
        assert scatter(html, "narrow").count("data-finding=") == 2  # the phone-sized chart too


@pytest.mark.django_db
def test_page_with_enough_findings_draws_the_band_and_says_it_in_words(readers_and_owner, user):
    findings = [
        _measured(user, i, s, c)
        for i, (s, c) in enumerate([(2.0, 1.0), (1.2, 2.5), (4.0, 1.5), (1.0, 4.0), (8.0, 1.1), (1.5, 1.8)])
    ]
    for who, client in readers_and_owner.items():
        html = page(client, "/landscape/")
        svg = scatter(html)
        assert svg.count("data-finding=") == len(findings), who
        assert 'class="chart__band"' in svg and 'class="chart__trend"' in svg
        trend = html.split('class="answer__trend"')[1].split("</p>")[0]
        assert "Across 6 findings with both scores" in trend and "95% interval" in trend
        assert "confidence band" in trend
        progress = html.split('class="answer__progress"')[1].split("</p>")[0]
        assert "Differential progress:" in progress and "of 6 findings buy measurably more safety" in progress
        assert f"at least {MIN_LANDSCAPE_FINDINGS} findings have both scores" in html
        for finding in findings:
            assert f'href="/findings/{finding.pk}/"' in svg


@pytest.mark.django_db
def test_page_with_an_extreme_score_uses_a_symmetric_log_axis(readers_and_owner, user):
    ordinary = [_measured(user, i, s, c) for i, (s, c) in enumerate([(2.0, 1.2), (1.5, 2.0), (3.0, 1.5)])]
    extreme = _measured(user, 9, 1.2, 1.0)
    _set_capability_score(extreme, 285.0)
    for who, client in readers_and_owner.items():
        html = page(client, "/landscape/")
        svg = scatter(html)
        assert 'data-x-scale="symlog"' in svg, who
        assert "capability axis is on a symmetric log scale" in html and "+285" in html
        xs = {}
        for finding in [*ordinary, extreme]:
            circle = svg.split(f'data-finding="{finding.pk}"')[1].split("<circle")[1]
            xs[finding.pk] = float(circle.split('cx="')[1].split('"')[0])
        spread = max(xs[f.pk] for f in ordinary) - min(xs[f.pk] for f in ordinary)
        assert spread > 25  # not squashed onto the origin (about 2 px on a linear axis)
        assert xs[extreme.pk] > max(xs[f.pk] for f in ordinary) + 200


@pytest.mark.django_db
def test_coinciding_findings_are_noted_on_the_page(readers_and_owner, user):
    twins = [_measured(user, i, 2.0, 1.5) for i in range(3)]
    for client in readers_and_owner.values():
        html = page(client, "/landscape/")
        assert "3 overlapping" in scatter(html)
        assert "3 points overlapped in 1 place" in html
        for twin in twins:
            assert f'data-finding="{twin.pk}" data-overlap="3"' in scatter(html)


@pytest.mark.django_db
def test_a_restricted_finding_is_not_plotted_for_others(readers_and_owner, user):
    _measured(user, 1, 2.0, 1.0)
    secret = _measured(user, 2, 1.0, 3.0, visibility=Finding.Visibility.RESTRICTED)
    for who, client in readers_and_owner.items():
        html = page(client, "/landscape/")
        shown = f'data-finding="{secret.pk}"' in scatter(html)
        assert shown == (who == "owner"), who
        assert (secret.title in html) == (who == "owner"), who


def test_differential_progress_carries_what_the_band_needs_and_the_band_matches_the_fit():
    from registry.effects.stats import differential_progress

    capability, safety = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0], [0.1, 0.4, 0.4, 1.2, 1.0, 1.6]
    d = differential_progress(safety, capability, [0.1] * 6)
    mean = sum(capability) / 6
    assert d.capability_mean == pytest.approx(mean)
    assert d.capability_ss == pytest.approx(sum((x - mean) ** 2 for x in capability))
    line = trend_line({**d.to_dict(), "points": None})
    assert line is not None  # t recovered from the confidence: it reproduces the slope's interval
    assert line.t * line.s / math.sqrt(line.x_ss) == pytest.approx(d.slope_ci_high - d.slope)
    assert line.half_width(mean) == pytest.approx(line.t * line.s / math.sqrt(6))
