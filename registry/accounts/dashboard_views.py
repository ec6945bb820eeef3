"""The dashboard's account pages: sign-in, sign-up (open, by invitation, or staff only), email
confirmation, password reset, and the profile page (API tokens: list, create with the secret shown
once, revoke; change password)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model, update_session_auth_hash
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import PasswordChangeForm, SetPasswordForm, UserCreationForm
from django.contrib.auth.password_validation import password_validators_help_texts
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from registry.accounts import services, signup
from registry.api.throttling import client_address
from registry.errors import ApplicationError

EXPIRY_CHOICES = [("", "Never"), ("7", "7 days"), ("30", "30 days"), ("90", "90 days"), ("365", "1 year")]
TOO_MANY_EMAILS = "Too many account emails were requested from your address; try again in an hour."
MAIL_UNAVAILABLE = ("No email can be sent just now (the mail service is unavailable); try again in a few minutes. "
                    "If your sign-up went through, ask for its confirmation email again from the resend page.")
MAIL_RETRY_AFTER_S = 60


def _mail_unavailable(request: HttpRequest, template: str, context: dict[str, Any]) -> HttpResponse:
    """503 with the form and a message: never a 500 when the mail server or the email cap's cache is down."""
    context["form"].add_error(None, MAIL_UNAVAILABLE)
    response = render(request, template, context, status=503)
    response["Retry-After"] = str(MAIL_RETRY_AFTER_S)
    return response


class TokenCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the token is for, e.g. “laptop” or “CI”.")
    expires_in_days = forms.TypedChoiceField(
        label="Expires", choices=EXPIRY_CHOICES, coerce=int, empty_value=None, required=False
    )


def _plain_password_help(form: forms.Form, name: str) -> None:
    """Django's password help is an HTML list; the field template shows plain text beside the field."""
    form.fields[name].help_text = " ".join(password_validators_help_texts())


class ProfilePasswordChangeForm(PasswordChangeForm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_password_help(self, "new_password1")
        self.fields["old_password"].widget.attrs.pop("autofocus", None)  # not the profile page's first field


class NewPasswordForm(SetPasswordForm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_password_help(self, "new_password1")


class SignUpForm(UserCreationForm):
    email = forms.EmailField(max_length=254, help_text="A confirmation link is sent here.")
    invitation_code = forms.CharField(max_length=64, required=False, help_text="The code staff sent you.")

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")

    def __init__(self, *args: Any, invite_only: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if invite_only:
            self.fields["invitation_code"].required = True
        else:
            del self.fields["invitation_code"]
        self.fields["email"].widget.attrs["autocomplete"] = "email"
        _plain_password_help(self, "password1")

    def clean_email(self) -> str:
        # An address that has an account already is not an error on the page (that would tell anyone
        # which addresses have accounts, as resend and password reset do not): the view emails that
        # address instead of making a second account for it.
        email = self.cleaned_data["email"].strip()
        self.email_taken = signup.email_has_account(email)
        return email

    def clean_invitation_code(self) -> str:
        code = self.cleaned_data["invitation_code"].strip()
        if signup.invitation_usable(code) is None:
            raise forms.ValidationError("This invitation code is not valid (unknown, used or expired).")
        return code


class ResendConfirmationForm(forms.Form):
    email = forms.EmailField(max_length=254, help_text="The address you signed up with.")


# --- sign-in ---------------------------------------------------------------------------------------


class SignInView(auth_views.LoginView):
    template_name = "dashboard/login.html"
    redirect_authenticated_user = True
    next_page = "dashboard:finding-list"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {**super().get_context_data(**kwargs), "signup_allowed": signup.signup_allowed()}


# --- sign-up and confirmation ----------------------------------------------------------------------


def _confirm_url(request: HttpRequest, token: str) -> str:
    return request.build_absolute_uri(reverse("dashboard:confirm-email", args=[token]))


@never_cache
@sensitive_post_parameters("password1", "password2")
@require_http_methods(["GET", "POST"])
def signup_view(request: HttpRequest) -> HttpResponse:
    mode = signup.signup_mode()
    if mode == "staff":
        return render(request, "dashboard/accounts/signup_closed.html", status=404)
    if request.user.is_authenticated:
        return redirect("dashboard:profile")
    invite_only = mode == "invite"
    status = 200
    if request.method == "POST":
        signup.purge_expired_signups()  # a never-confirmed account gives its name and address back
        form = SignUpForm(request.POST, invite_only=invite_only)
        if form.is_valid():
            try:
                return _signup_submit(request, form, invite_only)
            except signup.MailUnavailable:
                return _mail_unavailable(request, "dashboard/accounts/signup.html",
                                         {"form": form, "invite_only": invite_only})
        status = 400
    else:
        form = SignUpForm(initial={"invitation_code": request.GET.get("code", "")[:64]}, invite_only=invite_only)
    return render(request, "dashboard/accounts/signup.html", {"form": form, "invite_only": invite_only}, status=status)


def _signup_submit(request: HttpRequest, form: SignUpForm, invite_only: bool) -> HttpResponse:
    """A valid sign-up form: the email cap, then the account (or the "you have one" email). Raises
    MailUnavailable when no email can be sent."""
    if not signup.email_allowance_take(client_address(request)):
        form.add_error(None, TOO_MANY_EMAILS)
        return render(request, "dashboard/accounts/signup.html", {"form": form, "invite_only": invite_only},
                      status=429)
    if getattr(form, "email_taken", False):
        signup.send_account_exists(
            email=form.cleaned_data["email"],
            sign_in_url=request.build_absolute_uri(reverse("dashboard:login")),
            reset_url=request.build_absolute_uri(reverse("dashboard:password-reset")),
            resend_url=request.build_absolute_uri(reverse("dashboard:confirm-email-resend")),
        )
        return redirect("dashboard:signup-done")
    try:
        result = signup.signup_create(
            username=form.cleaned_data["username"],
            email=form.cleaned_data["email"],
            password=form.cleaned_data["password1"],
            invitation_code=form.cleaned_data.get("invitation_code", ""),
        )
    except ApplicationError as exc:
        form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        return render(request, "dashboard/accounts/signup.html", {"form": form, "invite_only": invite_only},
                      status=400)
    signup.send_confirmation(signup=result.user.signup, confirm_url=_confirm_url(request, result.token))
    return redirect("dashboard:signup-done")


@require_http_methods(["GET"])
def signup_done(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/accounts/signup_done.html")


@never_cache
@require_http_methods(["GET", "POST"])
def confirm_email(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows a button (reads never write: a mail scanner's prefetch confirms nothing); POST confirms."""
    if request.method == "POST":
        user = signup.signup_confirm(token=token)
        if user is not None:
            messages.success(request, f"Your email address is confirmed: sign in as {user.get_username()}.")
            return redirect("dashboard:login")
    else:
        pending = signup.signup_pending_for(token)
        if pending is not None:
            return render(request, "dashboard/accounts/confirm_email.html", {"pending": pending})
    return render(request, "dashboard/accounts/confirm_invalid.html", status=400)


def _resend_each(request: HttpRequest, email: str) -> None:
    """Each pending sign-up's link again, one more email of the address's allowance each (the first
    was taken by the caller). A failed send is logged, not shown: the answer must not differ between
    an address with pending sign-ups and one without."""
    for number, pending in enumerate(signup.pending_signups_by_email(email)):
        try:
            if number and not signup.email_allowance_take(client_address(request)):
                return
            token = signup.confirmation_token(pending)
            signup.send_confirmation(signup=pending, confirm_url=_confirm_url(request, token))
        except signup.MailUnavailable:
            return  # logged where it failed


@never_cache
@require_http_methods(["GET", "POST"])
def resend_confirmation(request: HttpRequest) -> HttpResponse:
    """Send a pending sign-up's link again. The answer is the same whether or not the address has a
    pending sign-up (it tells nobody which addresses have accounts)."""
    status = 200
    if request.method == "POST":
        form = ResendConfirmationForm(request.POST)
        if form.is_valid():
            try:
                if not signup.email_allowance_take(client_address(request)):
                    form.add_error(None, TOO_MANY_EMAILS)
                    status = 429
                else:
                    _resend_each(request, form.cleaned_data["email"])
                    return redirect("dashboard:signup-done")
            except signup.MailUnavailable:
                return _mail_unavailable(request, "dashboard/accounts/resend_confirmation.html", {"form": form})
        else:
            status = 400
    else:
        form = ResendConfirmationForm()
    return render(request, "dashboard/accounts/resend_confirmation.html", {"form": form}, status=status)


# --- password reset (Django's views, the registry's templates, a cap on emails per address) ------


class PasswordResetView(auth_views.PasswordResetView):
    template_name = "dashboard/accounts/password_reset_form.html"
    email_template_name = "dashboard/accounts/email/password_reset_email.txt"
    subject_template_name = "dashboard/accounts/email/password_reset_subject.txt"
    success_url = reverse_lazy("dashboard:password-reset-done")

    def form_valid(self, form: forms.Form) -> HttpResponse:
        # Django's PasswordResetForm logs a failed send itself (and answers as if sent); the cap's cache
        # being down is answered here
        try:
            allowed = signup.email_allowance_take(client_address(self.request))
        except signup.MailUnavailable:
            return _mail_unavailable(self.request, self.template_name, self.get_context_data(form=form))
        if not allowed:
            form.add_error(None, TOO_MANY_EMAILS)
            return self.render_to_response(self.get_context_data(form=form), status=429)
        return super().form_valid(form)

    def form_invalid(self, form: forms.Form) -> HttpResponse:
        return self.render_to_response(self.get_context_data(form=form), status=400)


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "dashboard/accounts/password_reset_confirm.html"
    form_class = NewPasswordForm
    success_url = reverse_lazy("dashboard:password-reset-complete")

    def form_invalid(self, form: forms.Form) -> HttpResponse:
        return self.render_to_response(self.get_context_data(form=form), status=400)


# --- invitations (staff) -------------------------------------------------------------------------


INVITATION_EXPIRY_CHOICES = [("1", "1 day"), ("7", "7 days"), ("14", "14 days"), ("30", "30 days"),
                             ("90", "90 days"), ("0", "Never")]


class InvitationCreateForm(forms.Form):
    note = forms.CharField(max_length=200, required=False, help_text="Who it is for (only staff see this).")
    expires_in_days = forms.TypedChoiceField(label="Expires", choices=INVITATION_EXPIRY_CHOICES, coerce=int,
                                             initial="14")


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def invitations(request: HttpRequest) -> HttpResponse:
    """Staff: the latest invitation codes, and a new one (its code and sign-up link shown)."""
    if not request.user.is_staff:
        return render(request, "dashboard/message.html", {
            "title": "Staff only", "message": "Only staff can invite people to sign up.",
        }, status=403)
    created = None
    status = 200
    form = InvitationCreateForm()
    if request.method == "POST":
        form = InvitationCreateForm(request.POST)
        if form.is_valid():
            created = signup.invitation_create(created_by=request.user, note=form.cleaned_data["note"],
                                               expires_in_days=form.cleaned_data["expires_in_days"])
            form = InvitationCreateForm()
            status = 201
        else:
            status = 400
    link = None
    if created is not None:
        link = request.build_absolute_uri(reverse("dashboard:signup") + "?" + urlencode({"code": created.code}))
    return render(request, "dashboard/accounts/invitations.html", {
        "form": form, "created": created, "link": link, "mode": signup.signup_mode(),
        "invitations": signup.invitation_list(limit=50),
    }, status=status)


# --- the profile page: account, API tokens, password ---------------------------------------------


def _profile_page(
    request: HttpRequest,
    *,
    token_form: TokenCreateForm | None = None,
    password_form: ProfilePasswordChangeForm | None = None,
    created: Any = None,
    secret: str | None = None,
    status: int = 200,
) -> HttpResponse:
    return render(
        request,
        "dashboard/accounts/profile.html",
        {
            "form": token_form or TokenCreateForm(),
            "password_form": password_form or ProfilePasswordChangeForm(request.user),
            "tokens": services.token_list(user=request.user),
            "created": created,
            "secret": secret,
        },
        status=status,
    )


@never_cache
@login_required
@require_http_methods(["GET"])
def profile(request: HttpRequest) -> HttpResponse:
    return _profile_page(request)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    """GET: the tokens' section of the profile page. POST: create a token and show its secret on this
    answer only (not in a message or a redirect: the secret never goes into the session or a cookie)."""
    if request.method == "GET":
        return redirect(reverse("dashboard:profile") + "#tokens")
    form = TokenCreateForm(request.POST)
    if not form.is_valid():
        return _profile_page(request, token_form=form, status=400)
    try:
        created, secret = services.token_create(
            user=request.user, name=form.cleaned_data["name"], expires_in_days=form.cleaned_data["expires_in_days"]
        )
    except ApplicationError as exc:
        form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        return _profile_page(request, token_form=form, status=400)
    return _profile_page(request, created=created, secret=secret, status=201)


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = services.token_revoke(user=request.user, pk=pk)
    if token is None:
        messages.error(request, "No such token.")
    else:
        messages.success(request, f"Token “{token.name}” ({token.prefix}…) revoked: it no longer works.")
    return redirect(reverse("dashboard:profile") + "#tokens")


@never_cache
@sensitive_post_parameters("old_password", "new_password1", "new_password2")
@login_required
@require_POST
def password_change(request: HttpRequest) -> HttpResponse:
    form = ProfilePasswordChangeForm(request.user, request.POST)
    if not form.is_valid():
        return _profile_page(request, password_form=form, status=400)
    user = form.save()
    update_session_auth_hash(request, user)  # this session stays signed in; the others are signed out
    messages.success(request, "Your password has been changed.")
    return redirect("dashboard:profile")
