"""``/api/v1/tokens/``: the caller's own API tokens. The secret appears once, in the answer to the POST."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from registry.accounts import services
from registry.accounts.models import ApiToken
from registry.api.schema import error
from registry.api.serializers import StrictCharField
from registry.errors import NotFound


class ApiTokenSerializer(serializers.ModelSerializer):
    expired = serializers.BooleanField(source="is_expired", read_only=True)

    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "created_at", "expires_at", "expired", "last_used_at"]
        read_only_fields = fields


class ApiTokenCreateSerializer(serializers.Serializer):
    name = StrictCharField(max_length=100)
    expires_in_days = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=services.MAX_EXPIRY_DAYS
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = serializers.CharField(read_only=True, help_text="The secret: shown this once, never stored.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]
        read_only_fields = fields


_UNAUTHENTICATED = error("No, an invalid, an expired or a revoked token.")
_NOT_FOUND = error("No such live token of the caller's.")


@extend_schema(tags=["tokens"])
@extend_schema_view(
    list=extend_schema(
        description="The caller's live (not revoked) tokens, expired ones marked; never a secret.",
        responses={200: ApiTokenSerializer(many=True), 401: _UNAUTHENTICATED},
    ),
    retrieve=extend_schema(
        description="One of the caller's live tokens (never its secret).",
        responses={200: ApiTokenSerializer, 401: _UNAUTHENTICATED, 404: _NOT_FOUND},
    ),
)
class ApiTokenViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    """The caller's own live (not revoked) API tokens. Anyone else's token is a 404."""

    serializer_class = ApiTokenSerializer
    permission_classes = [permissions.IsAuthenticated]
    pagination_class = None
    lookup_value_regex = r"\d+"

    def get_queryset(self):  # type: ignore[override]
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no user
            return ApiToken.objects.none()
        return ApiToken.objects.active().filter(user=self.request.user)

    @extend_schema(
        request=ApiTokenCreateSerializer,
        responses={
            201: ApiTokenCreatedSerializer,
            400: error("A missing name, a bad or past expiry."),
            401: _UNAUTHENTICATED,
        },
        description="Create a named token, optionally expiring (expires_in_days or expires_at). "
        "The answer carries the secret (`token`) once; only its hash is stored.",
    )
    def create(self, request: Request) -> Response:
        form = ApiTokenCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        token, secret = services.token_create(
            user=request.user,
            name=form.validated_data["name"],
            expires_at=form.validated_data.get("expires_at"),
            expires_in_days=form.validated_data.get("expires_in_days"),
        )
        token.token = secret  # type: ignore[attr-defined]
        response = Response(ApiTokenCreatedSerializer(token).data, status=status.HTTP_201_CREATED)
        response.idempotency_secret_fields = ("token",)  # never stored for an Idempotency-Key replay
        return response

    @extend_schema(
        description="Revoke the token: it stops working at once and leaves the list.",
        responses={204: None, 401: _UNAUTHENTICATED, 404: _NOT_FOUND},
    )
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        try:
            pk_int = int(pk or "")
        except ValueError:
            raise NotFound("no such token") from None
        if services.token_revoke(user=request.user, pk=pk_int) is None:
            raise NotFound("no such token")
        return Response(status=status.HTTP_204_NO_CONTENT)
