"""Run quotas: a user reads their own caps and use; staff read and raise anyone's."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import permissions, serializers
from rest_framework.decorators import api_view, permission_classes
from rest_framework.request import Request
from rest_framework.response import Response

from registry.api.schema import error
from registry.reproductions.quotas import quota_set, quota_usage


class QuotaSerializer(serializers.Serializer):
    """Staff's change of a user's caps: a number sets it, null resets it to the default."""

    active_runs = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=10_000_000,
        help_text="Cap on the user's queued + running runs; null: QUOTA_ACTIVE_RUNS.",
    )
    runs_per_day = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=100_000_000,
        help_text="Cap on the runs the user requests in any 24 hours; null: QUOTA_RUNS_PER_DAY.",
    )


_CAP = inline_serializer(
    "QuotaCap",
    {
        "limit": serializers.IntegerField(),
        "used": serializers.IntegerField(),
        "default": serializers.IntegerField(),
        "overridden": serializers.BooleanField(),
    },
)
QUOTA_RESPONSE = inline_serializer(
    "QuotaUsage", {"user": serializers.CharField(), "active_runs": _CAP, "runs_per_day": _CAP}
)


_STAFF_ONLY = error("Not staff.")
_NO_USER = error("No user of that name.")


def _body(user) -> dict:
    return {"user": user.get_username(), **quota_usage(user)}


@extend_schema(responses={200: QUOTA_RESPONSE}, tags=["quotas"],
               description="Your run quotas: each cap with its limit, your current use and its default.")
@api_view(["GET"])
@permission_classes([permissions.IsAuthenticated])
def my_quota(request: Request) -> Response:
    return Response(_body(request.user))


@extend_schema(
    methods=["GET"], responses={200: QUOTA_RESPONSE, 403: _STAFF_ONLY, 404: _NO_USER}, tags=["quotas"],
    description="A user's run quotas and use (staff only).",
)
@extend_schema(
    methods=["PATCH"], request=QuotaSerializer, responses={200: QUOTA_RESPONSE, 403: _STAFF_ONLY, 404: _NO_USER},
    tags=["quotas"],
    description="Raise (or lower, or with null reset to the default) a user's run quotas (staff only).",
)
@api_view(["GET", "PATCH"])
@permission_classes([permissions.IsAdminUser])
def user_quota(request: Request, username: str) -> Response:
    user = get_object_or_404(get_user_model(), **{get_user_model().USERNAME_FIELD: username})
    if request.method == "PATCH":
        serializer = QuotaSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        quota_set(user=user, by=request.user, **serializer.validated_data)
    return Response(_body(user))
