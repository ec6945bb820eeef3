from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from registry.accounts.api import ApiTokenViewSet
from registry.api import (
    author_views,
    effects_views,
    events_views,
    metrics,
    quota_views,
    series_views,
    version_views,
    views,
)

app_name = "api"

router = DefaultRouter()
router.register("findings", views.FindingViewSet, basename="finding")
router.register("claims", views.ClaimViewSet, basename="claim")
router.register("experiments", views.ExperimentViewSet, basename="experiment")
router.register("reproductions", views.ReproductionViewSet, basename="reproduction")
router.register("runs", views.RunViewSet, basename="run")
router.register("subscriptions", events_views.SubscriptionViewSet, basename="subscription")
router.register("tokens", ApiTokenViewSet, basename="token")

urlpatterns = [
    path(
        "api/v1/findings/<int:pk>/rereproduce/", version_views.finding_rereproduce_view, name="finding-rereproduce"
    ),
    path("api/v1/landscape/", effects_views.landscape, name="landscape"),
    path("api/v1/runs/<int:pk>/series/", series_views.run_series_view, name="run-series"),
    path("api/v1/findings/<int:pk>/series/", series_views.finding_series_view, name="finding-series"),
    path("api/v1/findings/<int:pk>/rollup/", effects_views.finding_rollup, name="finding-rollup"),
    path(
        "api/v1/experiments/<int:pk>/self-reported-runs/",
        effects_views.self_reported_run_create,
        name="experiment-self-reported-runs",
    ),
    path(
        "api/v1/experiments/<int:pk>/self-reported-runs/batch/",
        effects_views.self_reported_runs_batch_create,
        name="experiment-self-reported-runs-batch",
    ),
    path("api/v1/me/quota/", quota_views.my_quota, name="my-quota"),
    path("api/v1/users/<str:username>/quota/", quota_views.user_quota, name="user-quota"),
    path("api/v1/me/invitations/", author_views.my_invitations, name="my-invitations"),
    path(
        "api/v1/findings/<int:pk>/authors/<str:username>/accept", author_views.author_accept, name="author-accept"
    ),
    path(
        "api/v1/findings/<int:pk>/authors/<str:username>/decline", author_views.author_decline, name="author-decline"
    ),
    path(
        "api/v1/findings/<int:pk>/authors/<str:username>/withdraw",
        author_views.author_withdraw,
        name="author-withdraw",
    ),
    path("api/v1/", include(router.urls)),
    path("api/v1/artifacts/<int:pk>/download/", views.artifact_download, name="artifact-download"),
    path("api/v1/plugins/", views.plugin_list, name="plugin-list"),
    path("api/v1/plugins/<str:name>/", views.plugin_detail, name="plugin-detail"),
    path("api/v1/metrics/", views.metric_list, name="metric-list"),
    path("api/v1/events/", views.events, name="event-list"),
    path("api/v1/events/stream", events_views.events_stream, name="event-stream"),
    path("api/v1/events/feed.atom", events_views.events_feed, name="event-feed"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    # Prometheus (registry/api/metrics.py); /api/v1/metrics/ is the plugins' metric catalogue
    path("metrics", metrics.metrics_view, name="prometheus-metrics"),
]
