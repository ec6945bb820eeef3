import json
from functools import cached_property
from typing import Any

from django.core.paginator import EmptyPage, PageNotAnInteger
from django.core.paginator import Page as DjangoPage
from django.core.paginator import Paginator as DjangoPaginator
from django.db import connections
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response


class Pagination(PageNumberPagination):
    """Pages of 25; ``page_size`` is capped at 200. A ``page_size`` that is not a whole number of at
    least 1 is a 400 naming it (not silently the default); a ``page`` that is not one, or is past the
    last, a 404."""

    page_size = 25
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_page_size(self, request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw in (None, ""):
            return self.page_size
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise ValidationError({self.page_size_query_param: ["must be a whole number of at least 1"]})
        return min(value, self.max_page_size)

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1}
            elif parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1}
                parameter["description"] = (
                    f"Results per page (default {self.page_size}, capped at {self.max_page_size})."
                )
        return parameters


#: Up to this many matching rows the count is exact; above it, PostgreSQL's planner estimate
#: (counting further costs a full-text match per row: ~0.25 s at 10,000 matches of 100,000).
EXACT_COUNT_LIMIT = 1_000
#: Past this page of an estimated count there are no rows (and the offset would overflow).
MAX_ESTIMATED_PAGE = 10**9


class _EstimatedPage(DjangoPage):
    """A page whose successor is known from one extra row fetched, not from the count."""

    def __init__(self, object_list: Any, number: int, paginator: DjangoPaginator, has_next: bool) -> None:
        super().__init__(object_list, number, paginator)
        self._has_next = has_next

    def has_next(self) -> bool:
        return self._has_next


class EstimatedCountPaginator(DjangoPaginator):
    """Counts at most ``EXACT_COUNT_LIMIT + 1`` rows (``SELECT count(*) FROM (... LIMIT n)``);
    past that, on PostgreSQL, ``count`` is the planner's estimate of the rows matching
    (``EXPLAIN``, never below the limit) and ``count_estimated`` is true. Then pages are not
    checked against the count: a page is served while it has rows (an empty page past the first
    is a 404) and ``next`` is given when one more row exists."""

    count_estimated = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        capped = queryset.order_by()[: EXACT_COUNT_LIMIT + 1].count()  # any rows: no sort
        if capped <= EXACT_COUNT_LIMIT or connections[queryset.db].vendor != "postgresql":
            if capped > EXACT_COUNT_LIMIT:
                return queryset.count()
            return capped
        self.count_estimated = True
        return max(EXACT_COUNT_LIMIT + 1, _planner_rows(queryset))

    def validate_number(self, number: Any) -> int:
        if not (self.count > EXACT_COUNT_LIMIT and self.count_estimated):
            return super().validate_number(number)
        try:
            if isinstance(number, float) and not number.is_integer():
                raise ValueError
            number = int(number)
        except (TypeError, ValueError):
            raise PageNotAnInteger(self.error_messages["invalid_page"]) from None
        if number < 1:
            raise EmptyPage(self.error_messages["min_page"])
        if number > MAX_ESTIMATED_PAGE:  # its offset would overflow the database's bigint
            raise EmptyPage(self.error_messages["no_results"])
        return number

    def page(self, number: Any) -> DjangoPage:
        number = self.validate_number(number)
        if not self.count_estimated:
            return super().page(number)
        bottom = (number - 1) * self.per_page
        rows = list(self.object_list[bottom : bottom + self.per_page + 1])
        if not rows and number > 1:
            raise EmptyPage(self.error_messages["no_results"])
        return _EstimatedPage(rows[: self.per_page], number, self, has_next=len(rows) > self.per_page)


def _planner_rows(queryset: Any) -> int:
    plan = json.loads(queryset.order_by().explain(format="json"))
    return int(plan[0]["Plan"]["Plan Rows"])


class EstimatedCountPagination(Pagination):
    """:class:`Pagination` for large tables: the response adds ``count_estimated`` (false when
    ``count`` is exact). See :class:`EstimatedCountPaginator`."""

    django_paginator_class = EstimatedCountPaginator

    def get_paginated_response(self, data: Any) -> Response:
        response = super().get_paginated_response(data)
        response.data["count_estimated"] = bool(self.page.paginator.count_estimated)
        return response

    def get_paginated_response_schema(self, schema: dict) -> dict:
        response_schema = super().get_paginated_response_schema(schema)
        response_schema["properties"]["count_estimated"] = {
            "type": "boolean",
            "description": f"True when `count` is PostgreSQL's estimate (more than {EXACT_COUNT_LIMIT} matches).",
        }
        return response_schema
