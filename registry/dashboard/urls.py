from django.contrib.auth import views as auth_views
from django.urls import path

from registry.accounts import dashboard_views as token_views
from registry.dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("", views.finding_list, name="finding-list"),
    path("findings/<int:pk>/", views.finding_detail, name="finding-detail"),
    path("findings/<int:pk>/runs/", views.finding_runs, name="finding-runs"),
    path("findings/<int:pk>/reproductions/", views.reproduction_create, name="reproduction-create"),
    path("runs/<int:pk>/", views.run_detail, name="run-detail"),
    path("landscape/", views.landscape, name="landscape"),
    path("plugins/", views.plugin_list, name="plugin-list"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(
            template_name="dashboard/login.html", redirect_authenticated_user=True, next_page="dashboard:finding-list"
        ),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="dashboard:finding-list"), name="logout"),
    path("accounts/tokens/", token_views.token_list, name="tokens"),
    path("accounts/tokens/<int:pk>/revoke/", token_views.token_revoke, name="token-revoke"),
]
