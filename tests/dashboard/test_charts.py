"""The server-side SVG charts: pure functions, no database."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from registry.dashboard import charts

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    """Every chart must be well-formed XML with a title (its accessible name)."""
    root = ET.fromstring(str(svg))
    assert root.tag == f"{SVG}svg"
    # an image, or (the scatter, whose points are links) a group: links inside role="img" are hidden
    assert root.get("role") in ("img", "group") and root.get("aria-label")
    assert root.find(f"{SVG}title") is not None
    return root


# ---------------------------------------------------------------- scales


def test_axis_domain_includes_zero_and_pads():
    low, high = charts.axis_domain([0.2, 0.6])
    assert low < 0 < 0.6 < high
    assert low == pytest.approx(-0.048) and high == pytest.approx(0.648)


@pytest.mark.parametrize("values", [[0.5, 0.5, 0.5], [0.0], [], [None, float("nan")]])
def test_axis_domain_never_collapses(values):
    low, high = charts.axis_domain(values)
    assert high > low
    assert math.isfinite(low) and math.isfinite(high)


def test_axis_domain_of_equal_values_without_zero_is_centred():
    low, high = charts.axis_domain([3.0, 3.0], include_zero=False)
    assert (low + high) / 2 == pytest.approx(3.0) and high - low == pytest.approx(3.0)


def test_linear_maps_ends_and_runs_backwards():
    scale = charts.linear((0.0, 10.0), (100.0, 200.0))
    assert scale(0) == 100 and scale(10) == 200 and scale(2.5) == 125
    flipped = charts.linear((0.0, 1.0), (300.0, 20.0))
    assert flipped(0) == 300 and flipped(1) == 20


def test_nice_ticks():
    assert charts.nice_ticks(-0.048, 0.648, 5) == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert charts.nice_ticks(-3.2, 7.9, 5) == pytest.approx([-2, 0, 2, 4, 6])
    assert charts.nice_ticks(1.0, 1.0) == [1.0]


def test_formatters():
    assert charts.fmt_percent(-0.5) == "-50%"
    assert charts.fmt_percent(0.012) == "+1.2%"
    assert charts.fmt_number(0.123456) == "0.123"
    assert charts.fmt_number(0) == "0"
    assert charts.fmt_number(1.5e-7) == "1.50e-07"


# ---------------------------------------------------------------- interval plot


def test_interval_geometry_maps_values_to_coordinates():
    g = charts.interval_geometry(-0.5, -0.7, -0.3, domain=(-1.0, 1.0), width=208, margin=4)
    # 200 px for 2 units: x = 4 + (v + 1) * 100
    assert g.x_estimate == pytest.approx(54)
    assert g.x_low == pytest.approx(34) and g.x_high == pytest.approx(74)
    assert g.x_zero == pytest.approx(104)
    assert g.x_reference is None


def test_interval_geometry_default_domain_keeps_everything_inside():
    g = charts.interval_geometry(0.4, 0.1, 0.9, reference=-0.2, width=180, margin=8)
    xs = [g.x_estimate, g.x_low, g.x_high, g.x_zero, g.x_reference]
    assert all(8 <= x <= 172 for x in xs)
    assert g.x_reference < g.x_zero < g.x_low < g.x_estimate < g.x_high


def test_interval_geometry_orders_a_reversed_interval_and_clamps_to_the_domain():
    g = charts.interval_geometry(5.0, 2.0, -2.0, domain=(-1.0, 1.0), width=100, margin=0)
    assert g.x_low == 0 and g.x_high == 100 and g.x_estimate == 100


@pytest.mark.parametrize(("low", "high"), [(None, None), (None, 0.3), (0.1, None), (float("nan"), 0.2)])
def test_interval_without_a_full_interval_draws_only_the_estimate(low, high):
    g = charts.interval_geometry(0.2, low, high)
    assert g.x_low is None and g.x_high is None and g.x_estimate is not None
    root = parse(charts.interval_svg(0.2, low, high, label="risk"))
    assert not [line for line in root.iter(f"{SVG}line") if line.get("class") == "chart__whisker"]
    assert len(list(root.iter(f"{SVG}circle"))) == 1
    assert "no interval" in root.get("aria-label")


def test_interval_all_equal_values():
    g = charts.interval_geometry(0.0, 0.0, 0.0)
    assert g.x_estimate == g.x_low == g.x_high == g.x_zero
    assert g.domain[1] > g.domain[0]
    parse(charts.interval_svg(0.0, 0.0, 0.0))


def test_interval_without_an_estimate_says_no_data():
    root = parse(charts.interval_svg(None, None, None))
    assert list(root.iter(f"{SVG}circle")) == []
    assert "no data" in "".join(root.itertext())


def test_interval_svg_draws_whiskers_reference_and_an_accessible_label():
    root = parse(charts.interval_svg(-0.5, -0.6, -0.4, reference=-0.3, label="risk <b>", width=200))
    classes = [line.get("class") for line in root.iter(f"{SVG}line")]
    assert classes.count("chart__whisker") == 3 and "chart__reference" in classes and "chart__zero" in classes
    circle = next(root.iter(f"{SVG}circle"))
    whisker = next(line for line in root.iter(f"{SVG}line") if line.get("class") == "chart__whisker")
    assert float(whisker.get("x1")) < float(circle.get("cx")) < float(whisker.get("x2"))
    label = root.get("aria-label")
    assert label.startswith("risk <b>: estimate -50%") and "interval -60% to -40%" in label
    assert "claimed -30%" in label
    assert "<b>" not in str(charts.interval_svg(1, label="<b>"))  # text is escaped


# ---------------------------------------------------------------- dot plot


VALUES = [
    ("baseline", 1, 0, 1.0), ("intervention", 1, 0, 0.5),
    ("baseline", 2, 1, 1.2), ("intervention", 2, 1, 0.6),
]


def test_dot_plot_geometry_rows_and_values():
    g = charts.dot_plot_geometry(VALUES, width=300, left=90, right=10)
    assert list(g.rows) == ["baseline", "intervention"]
    assert g.rows["baseline"] < g.rows["intervention"]
    by = {(d.arm, d.run): d for d in g.dots}
    assert by[("intervention", 1)].x < by[("baseline", 1)].x < by[("baseline", 2)].x
    assert all(90 <= d.x <= 290 for d in g.dots)
    assert by[("baseline", 1)].y == g.rows["baseline"]


def test_dot_plot_svg_pairs_the_arms_of_each_run():
    root = parse(charts.dot_plot_svg(VALUES, metric="risk", unit="score"))
    assert len(list(root.iter(f"{SVG}circle"))) == 4
    pairs = [line for line in root.iter(f"{SVG}line") if line.get("class") == "chart__pair"]
    assert len(pairs) == 2
    assert "risk (score) per arm across 2 run(s)" == root.get("aria-label")
    texts = "".join(root.itertext())
    assert "baseline" in texts and "intervention" in texts and "seed 1 (run 2): 1.2" in texts


def test_dot_plot_with_all_equal_values_and_non_finite_ones():
    values = [("baseline", 1, 0, 3.0), ("intervention", 1, 0, 3.0), ("baseline", 2, 1, float("nan"))]
    g = charts.dot_plot_geometry(values)
    assert len(g.dots) == 2 and g.dots[0].x == g.dots[1].x
    assert g.domain[0] < 3.0 < g.domain[1]
    parse(charts.dot_plot_svg(values, metric="width"))


HOSTILE = '<script>alert("x")</script> & "quoted"'


@pytest.mark.parametrize("bound", [None, "upper", "lower"])
def test_interval_svg_escapes_its_label(bound):
    svg = str(charts.interval_svg(0.1, -0.2, 0.3, reference=0.2, label=HOSTILE, bound=bound))
    assert "<script>" not in svg and '"quoted"' not in svg
    root = parse(svg)  # well-formed: the quotes did not close the attribute
    assert root.get("aria-label").startswith(HOSTILE + ": ")
    assert root.find(f"{SVG}title").text == root.get("aria-label")


def test_dot_plot_svg_escapes_its_metric_unit_and_arm_names():
    values = [("baseline", 1, 0, 1.0), (HOSTILE, 1, 0, 2.0)]
    svg = str(charts.dot_plot_svg(values, metric=HOSTILE, unit='"u"<b>'))
    assert "<script>" not in svg and "<b>" not in svg and '"quoted"' not in svg and '"u"' not in svg
    root = parse(svg)
    assert root.get("aria-label") == f'{HOSTILE} ("u"<b>) per arm across 1 run(s)'
    assert HOSTILE in [text.text for text in root.iter(f"{SVG}text")]  # the row label
    titles = [title.text for title in root.iter(f"{SVG}title")]
    assert f"{HOSTILE}, seed 0 (run 1): 2" in titles


# ---------------------------------------------------------------- scatter


def point(i: int, x: float, y: float, **kw) -> charts.ScatterPoint:
    return charts.ScatterPoint(finding=i, title=f"F{i}", href=f"/findings/{i}/", x=x, y=y, **kw)


def test_scatter_geometry_y_grows_upwards():
    g = charts.scatter_geometry([point(1, 1.0, 2.0), point(2, -1.0, -2.0)])
    a, b = g.points
    assert a["cx"] > b["cx"] and a["cy"] < b["cy"]
    ox, oy = g.origin
    assert b["cx"] < ox < a["cx"] and a["cy"] < oy < b["cy"]


def test_scatter_whiskers_and_links():
    svg = charts.scatter_svg(
        [point(1, 0.5, 1.5, x_low=0.1, x_high=0.9, y_low=1.0, y_high=2.0, lean="safety-leaning"), point(2, 0.2, 0.1)]
    )
    root = parse(svg)
    links = list(root.iter(f"{SVG}a"))
    assert [a.get("href") for a in links] == ["/findings/1/", "/findings/2/"]
    assert [a.get("data-finding") for a in links] == ["1", "2"]
    assert links[0].get("class") == "chart__point chart__point--safety-leaning"
    first = [line for line in links[0].iter(f"{SVG}line")]
    assert len(first) == 2  # horizontal and vertical whiskers
    assert len([line for line in links[1].iter(f"{SVG}line")]) == 0  # no intervals: no whiskers
    assert "2 finding(s)" in root.get("aria-label")


def test_scatter_skips_points_without_finite_scores_and_handles_one_point_or_none():
    root = parse(charts.scatter_svg([point(1, float("nan"), 1.0), point(2, 0.0, 0.0)]))
    assert len(list(root.iter(f"{SVG}a"))) == 1
    root = parse(charts.scatter_svg([]))
    assert list(root.iter(f"{SVG}a")) == []


# ---------------------------------------------------------------- effects v2: units, bounds, log scores


def test_points_log_and_factor_formatters():
    assert charts.fmt_points(0.3) == "+30 pt" and charts.fmt_points(-0.054) == "-5.4 pt"
    assert charts.fmt_log(0.6931) == "+0.69" and charts.fmt_log(-2.0) == "-2.00"
    assert charts.factor_text(0.6931) == "×2.0 better" and charts.factor_text(-0.6931) == "×2.0 worse"
    assert charts.factor_text(0.0) == "×1.0, no change"
    assert charts.factor_text(10.0) == "×22,026 better"
    assert charts.factor_text(1000.0).endswith("better")  # no overflow


@pytest.mark.parametrize(("bound", "words"), [("upper", "at most -40%"), ("lower", "at least -40%")])
def test_one_sided_interval_draws_an_open_whisker_from_the_valid_limit(bound, words):
    low, high = (None, -0.4) if bound == "upper" else (-0.4, None)
    root = parse(charts.interval_svg(-0.5, low, high, label="steps", bound=bound, width=200))
    assert words in root.get("aria-label")
    lines = root.iter(f"{SVG}line")
    open_whisker = next(line for line in lines if line.get("class") == "chart__whisker chart__whisker--open")
    x1, x2 = float(open_whisker.get("x1")), float(open_whisker.get("x2"))
    assert (x1 == 8) if bound == "upper" else (x2 == 192)
    assert list(root.iter(f"{SVG}circle")) == []  # no point estimate: only the bound is valid


def test_one_sided_interval_without_its_limit_says_so():
    root = parse(charts.interval_svg(-0.5, None, None, bound="upper"))
    assert "no valid bound" in root.get("aria-label")


def test_scatter_domain_is_not_squashed_by_one_wide_interval():
    # scores in log units range about -10..+10; one finding's interval runs to +200
    points = [point(1, -8.0, 9.0), point(2, 6.0, -4.0, y_low=-150.0, y_high=200.0)]
    g = charts.scatter_geometry(points)
    low, high = g.y_domain
    points_span = (9.0 - -4.0) * 1.16  # the estimates' range, padded
    assert high - low <= points_span * (1 + 2 * charts.WHISKER_ROOM) + 1e-9
    assert low < -4.0 and high > 9.0
    a, b = g.points
    assert abs(a["cy"] - b["cy"]) > 150  # far apart on a 412 px frame (about 15 px if squashed)
    assert b["y_clipped"] and not a["y_clipped"]
    assert 20 <= b["y_high"] <= 432 and 20 <= b["y_low"] <= 432  # clipped to the frame
    svg = str(charts.scatter_svg(points))
    assert "chart__whisker--clipped" in svg
    assert "capability score (log units" in svg and "safety score (log units" in svg
    assert "standardised" not in svg


def test_scatter_trend_line_is_clipped_to_the_frame():
    points = [point(1, -2.0, -1.0), point(2, 2.0, 1.0), point(3, 0.0, 0.2)]
    g = charts.scatter_geometry(points, trend=(0.0, 10.0))
    x1, y1, x2, y2 = g.trend
    for x in (x1, x2):
        assert 56 - 1e-6 <= x <= 700 + 1e-6
    for y in (y1, y2):
        assert 20 - 1e-6 <= y <= 432 + 1e-6
    root = parse(charts.scatter_svg(points, trend=(0.0, 0.5)))
    assert [path for path in root.iter(f"{SVG}path") if path.get("class") == "chart__trend"]
    assert charts.scatter_geometry(points, trend=None).trend is None
    assert charts.scatter_geometry(points, trend=(float("nan"), 1.0)).trend is None
