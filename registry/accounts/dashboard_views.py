"""The dashboard's "API tokens" page: list, create (the secret shown once), revoke."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from registry.accounts import services
from registry.errors import ApplicationError

EXPIRY_CHOICES = [("", "Never"), ("7", "7 days"), ("30", "30 days"), ("90", "90 days"), ("365", "1 year")]


class TokenCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the token is for, e.g. “laptop” or “CI”.")
    expires_in_days = forms.TypedChoiceField(
        label="Expires", choices=EXPIRY_CHOICES, coerce=int, empty_value=None, required=False
    )


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    """GET: the signed-in user's tokens. POST: create one and show its secret on this answer only
    (not in a message or a redirect: the secret never goes into the session or a cookie)."""
    created = secret = None
    status = 200
    if request.method == "POST":
        form = TokenCreateForm(request.POST)
        if form.is_valid():
            try:
                created, secret = services.token_create(
                    user=request.user,
                    name=form.cleaned_data["name"],
                    expires_in_days=form.cleaned_data["expires_in_days"],
                )
            except ApplicationError as exc:
                form.add_error(None, exc.message)
                status = 400
            else:
                form = TokenCreateForm()
                status = 201
        else:
            status = 400
    else:
        form = TokenCreateForm()
    return render(
        request,
        "dashboard/tokens.html",
        {"form": form, "tokens": services.token_list(user=request.user), "created": created, "secret": secret},
        status=status,
    )


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = services.token_revoke(user=request.user, pk=pk)
    if token is None:
        messages.error(request, "No such token.")
    else:
        messages.success(request, f"Token “{token.name}” ({token.prefix}…) revoked: it no longer works.")
    return redirect("dashboard:tokens")
