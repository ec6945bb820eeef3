"""Django admin: staff raise a user's run quotas here (or through PATCH /api/v1/users/{username}/quota/)."""

from django.contrib import admin

from registry.reproductions.models import UserQuota


@admin.register(UserQuota)
class UserQuotaAdmin(admin.ModelAdmin):
    list_display = ["user", "active_runs", "runs_per_day", "updated_at"]
    search_fields = ["user__username"]
    autocomplete_fields = ["user"]
    readonly_fields = ["updated_at"]
