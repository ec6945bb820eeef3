"""Dashboard pages to compare runs and reproductions, and the CSV / JSON exports of a finding, a run
and the landscape. Thin: the same visibility selectors as the pages (a finding or run the reader
may not see is a 404 here too), the data from :mod:`registry.dashboard.compare`."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from registry.dashboard import compare, selectors
from registry.dashboard.forms import LandscapeFilterForm

#: A spreadsheet would run a cell starting with one of these as a formula (CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A value for a CSV cell: numbers as they are; text that a spreadsheet would take for a
    formula gets a leading apostrophe; None empty; dicts and lists as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return value if not (isinstance(value, float) and not math.isfinite(value)) else ""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_response(columns: list[str], rows: list[list[Any]], filename: str) -> HttpResponse:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([csv_cell(v) for v in row] for row in rows)
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}.csv"'
    return response


def json_response(data: dict[str, Any], filename: str) -> HttpResponse:
    body = json.dumps(data, cls=DjangoJSONEncoder, indent=2, sort_keys=True, allow_nan=False, default=str)
    response = HttpResponse(body, content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{filename}.json"'
    return response


def _finite(data: Any) -> Any:
    """NaN and infinities become null (JSON has neither)."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data


@require_GET
def finding_compare(request: HttpRequest, pk: int) -> HttpResponse:
    finding = selectors.finding_get(user=request.user, pk=pk)
    selection = compare.parse_selection(request.GET)
    if selection.errors:  # keep the form's choices (and tick what was valid), compare nothing
        selection.runs = selection.runs[: compare.MAX_COMPARED]
        selection.reproductions = selection.reproductions[: compare.MAX_COMPARED]
    context = compare.compare(finding=finding, selection=selection)
    if selection.errors:
        context.update(items=[], metric_rows=[], config_rows=[], n_differences=0, default_selection=False)
    context["errors"] = selection.errors
    return render(request, "dashboard/compare.html", context, status=400 if selection.errors else 200)


@require_GET
def finding_export(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    finding = selectors.finding_get(user=request.user, pk=pk)
    data = compare.finding_export(finding=finding)
    name = f"finding-{finding.pk}"
    if fmt == "json":
        return json_response(_finite(data), name)
    return csv_response(compare.RUN_COLUMNS, compare.run_rows(data["runs"]), name)


@require_GET
def run_export(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    run = selectors.run_get(user=request.user, pk=pk)
    data = compare.run_export(run=run)
    name = f"run-{run.pk}"
    if fmt == "json":
        return json_response(_finite(data), name)
    return csv_response(compare.RUN_COLUMNS, compare.run_rows([data["run"]]), name)


@require_GET
def landscape_export(request: HttpRequest, fmt: str) -> HttpResponse:
    form = LandscapeFilterForm(
        request.GET or None, tags=selectors.visible_tags(user=request.user), plugins=selectors.plugin_names()
    )
    data = compare.landscape_export(user=request.user, **form.filters())
    if fmt == "json":
        return json_response(_finite(data), "landscape")
    rows = [[row[c] for c in compare.LANDSCAPE_COLUMNS] for row in data["findings"]]
    return csv_response(compare.LANDSCAPE_COLUMNS, rows, "landscape")
