"""Co-authorship by consent: a user's pending invitations, and answering one (accept, decline) or
withdrawing an accepted authorship. Only the named user may act on their own name.

Visibility first: a finding the caller cannot read is a 404 (as everywhere); on one they can read,
acting for another user, or without an invitation, is a 403.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import permissions, serializers
from rest_framework.decorators import api_view, permission_classes
from rest_framework.request import Request
from rest_framework.response import Response

from registry.api.schema import error
from registry.errors import NotFound
from registry.findings import services as finding_services
from registry.findings.models import Finding, FindingAuthor
from registry.findings.selectors import finding_list, invitation_list


class AuthorshipSerializer(serializers.ModelSerializer):
    finding_title = serializers.CharField(source="finding.title", read_only=True)
    finding_url = serializers.SerializerMethodField()
    user = serializers.CharField(source="user.username", read_only=True)
    invited_by = serializers.SerializerMethodField()

    class Meta:
        model = FindingAuthor
        fields = ["finding", "finding_title", "finding_url", "user", "status", "invited_by", "created_at",
                  "responded_at"]
        read_only_fields = fields

    def get_finding_url(self, link: FindingAuthor) -> str:
        return reverse("api:finding-detail", args=[link.finding_id])

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_invited_by(self, link: FindingAuthor) -> str | None:
        return link.invited_by.get_username() if link.invited_by else None


def _visible_finding(request: Request, pk: int) -> Finding:
    finding = finding_list(user=request.user).filter(pk=pk).first()
    if finding is None:
        raise NotFound(f"no finding {pk}")
    return finding


@extend_schema(
    summary="My pending invitations to author a finding",
    description="The caller's invitations not yet answered, newest first. Accept or decline each at "
    "`/api/v1/findings/{id}/authors/{username}/accept` or `.../decline`.",
    responses={200: AuthorshipSerializer(many=True)},
)
@api_view(["GET"])
@permission_classes([permissions.IsAuthenticated])
def my_invitations(request: Request) -> Response:
    invitations = invitation_list(user=request.user).select_related("user")  # each row names its user
    return Response(AuthorshipSerializer(invitations, many=True).data)


def _answer(action: Callable[..., FindingAuthor], request: Request, pk: int, username: str) -> Response:
    finding = _visible_finding(request, pk)
    link = action(finding=finding, user=request.user, username=username)
    link = FindingAuthor.objects.select_related("finding", "user", "invited_by").get(pk=link.pk)
    return Response(AuthorshipSerializer(link).data)


_ANSWER_RESPONSES: dict[int, Any] = {
    200: AuthorshipSerializer,
    403: error("Someone else's name, or no invitation (or authorship) to act on."),
    404: error("No such finding the caller may see."),
    409: error("Conflict: the invitation was answered meanwhile, an author declining, or the last author "
               "withdrawing."),
}


@extend_schema(
    summary="Accept an invitation to author a finding",
    description="Only the invited user, for themselves. They become an author: they may edit the finding, and "
    "their reproductions no longer count as independent (the effects are recomputed). Accepting twice is a "
    "no-op. 404 for a finding the caller cannot see; 403 for someone else's name or without an invitation.",
    request=None,
    responses=_ANSWER_RESPONSES,
)
@api_view(["POST"])
@permission_classes([permissions.IsAuthenticated])
def author_accept(request: Request, pk: int, username: str) -> Response:
    return _answer(finding_services.author_invitation_accept, request, pk, username)


@extend_schema(
    summary="Decline an invitation to author a finding",
    description="Only the invited user, for themselves; declining twice is a no-op. An accepted author "
    "withdraws instead (409). 404 for a finding the caller cannot see; 403 for someone else's name or without "
    "an invitation.",
    request=None,
    responses=_ANSWER_RESPONSES,
)
@api_view(["POST"])
@permission_classes([permissions.IsAuthenticated])
def author_decline(request: Request, pk: int, username: str) -> Response:
    return _answer(finding_services.author_invitation_decline, request, pk, username)


@extend_schema(
    summary="Withdraw one's own authorship of a finding",
    description="Only the author, for themselves. Their reproductions count as independent again (the effects "
    "are recomputed). The last author cannot withdraw (409): delete the finding or invite a co-author first.",
    request=None,
    responses=_ANSWER_RESPONSES,
)
@api_view(["POST"])
@permission_classes([permissions.IsAuthenticated])
def author_withdraw(request: Request, pk: int, username: str) -> Response:
    return _answer(finding_services.author_withdraw, request, pk, username)
