from datetime import timedelta

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from registry.accounts.models import ApiToken, Invitation, SignUp
from registry.accounts.signup import new_invitation_code


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Staff see and revoke tokens; nobody creates one here (the secret would have nowhere to go)."""

    list_display = ["name", "user", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "prefix", "user__username"]
    readonly_fields = ["user", "name", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at"]
    exclude = ["key_hash"]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"{count} token(s) revoked.", messages.SUCCESS)


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    """Staff make invitation codes for SIGNUP_MODE=invite (also `manage.py create_invitation`): "Add"
    fills in a fresh code; pass it on, or the sign-up link /accounts/signup/?code=CODE."""

    list_display = ["code", "note", "created_by", "created_at", "expires_at", "used_by", "used_at"]
    list_filter = [("used_at", admin.EmptyFieldListFilter)]
    search_fields = ["code", "note", "used_by__username"]
    fields = ["code", "note", "expires_at", "created_by", "created_at", "used_by", "used_at"]
    readonly_fields = ["created_by", "created_at", "used_by", "used_at"]

    def get_changeform_initial_data(self, request: HttpRequest) -> dict:
        return {
            "code": new_invitation_code(),
            "expires_at": timezone.now() + timedelta(days=settings.INVITATION_DEFAULT_DAYS),
        }

    def save_model(self, request: HttpRequest, obj: Invitation, form: object, change: bool) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


@admin.register(SignUp)
class SignUpAdmin(admin.ModelAdmin):
    """Self-service sign-ups; a pending one's user stays inactive until the emailed link is followed."""

    list_display = ["user", "email", "created_at", "confirmed_at"]
    list_filter = [("confirmed_at", admin.EmptyFieldListFilter)]
    search_fields = ["user__username", "email"]
    readonly_fields = ["user", "email", "created_at", "confirmed_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
