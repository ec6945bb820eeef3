from django.contrib.auth import views as auth_views
from django.urls import path, re_path

from registry.accounts import dashboard_views as token_views
from registry.dashboard import views, views_compare, views_submit

app_name = "dashboard"

urlpatterns = [
    path("", views.finding_list, name="finding-list"),
    path("findings/<int:pk>/", views.finding_detail, name="finding-detail"),
    path("findings/<int:pk>/runs/", views.finding_runs, name="finding-runs"),
    path("findings/<int:pk>/evidence/", views.finding_evidence, name="finding-evidence"),
    path("workers/", views.workers, name="workers"),
    path("findings/<int:pk>/reproductions/", views.reproduction_create, name="reproduction-create"),
    path("runs/<int:pk>/", views.run_detail, name="run-detail"),
    path("landscape/", views.landscape, name="landscape"),
    path("findings/<int:pk>/compare/", views_compare.finding_compare, name="finding-compare"),
    re_path(
        r"^findings/(?P<pk>[0-9]+)/export\.(?P<fmt>csv|json)$", views_compare.finding_export, name="finding-export"
    ),
    re_path(r"^runs/(?P<pk>[0-9]+)/export\.(?P<fmt>csv|json)$", views_compare.run_export, name="run-export"),
    re_path(r"^landscape/export\.(?P<fmt>csv|json)$", views_compare.landscape_export, name="landscape-export"),
    path("plugins/", views.plugin_list, name="plugin-list"),
    # submitting and editing (registry.dashboard.views_submit)
    path("findings/new/", views_submit.finding_create, name="finding-create"),
    path("findings/<int:pk>/edit/", views_submit.finding_edit, name="finding-edit"),
    path("findings/<int:pk>/claims/new/", views_submit.claim_create, name="claim-create"),
    path("findings/<int:pk>/experiments/new/", views_submit.experiment_create, name="experiment-create"),
    path("experiments/<int:pk>/retract/", views_submit.experiment_retract, name="experiment-retract"),
    path("submit/preview/", views_submit.summary_preview, name="summary-preview"),
    path("submit/builds-on/", views_submit.builds_on_search, name="builds-on-search"),
    path("submit/plugin-metrics/", views_submit.plugin_metrics, name="plugin-metrics"),
    path("submit/plugin-params/", views_submit.plugin_params, name="plugin-params"),
    path("accounts/login/", token_views.SignInView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="dashboard:finding-list"), name="logout"),
    path("accounts/tokens/", token_views.token_list, name="tokens"),
    path("accounts/tokens/<int:pk>/revoke/", token_views.token_revoke, name="token-revoke"),
    # accounts: sign-up, email confirmation, password reset and change, the profile page
    path("accounts/signup/", token_views.signup_view, name="signup"),
    path("accounts/signup/done/", token_views.signup_done, name="signup-done"),
    path("accounts/confirm/resend/", token_views.resend_confirmation, name="confirm-email-resend"),
    path("accounts/confirm/<str:token>/", token_views.confirm_email, name="confirm-email"),
    path("accounts/profile/", token_views.profile, name="profile"),
    path("accounts/invitations/", token_views.invitations, name="invitations"),
    path("accounts/password/change/", token_views.password_change, name="password-change"),
    path("accounts/password/reset/", token_views.PasswordResetView.as_view(), name="password-reset"),
    path(
        "accounts/password/reset/done/",
        auth_views.PasswordResetDoneView.as_view(template_name="dashboard/accounts/password_reset_done.html"),
        name="password-reset-done",
    ),
    path("accounts/reset/<uidb64>/<token>/", token_views.PasswordResetConfirmView.as_view(),
         name="password-reset-confirm"),
    path(
        "accounts/reset/done/",
        auth_views.PasswordResetCompleteView.as_view(template_name="dashboard/accounts/password_reset_complete.html"),
        name="password-reset-complete",
    ),
]
