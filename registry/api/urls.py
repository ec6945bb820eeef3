from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from registry.api import effects_views, events_views, version_views, views

app_name = "api"

router = DefaultRouter()
router.register("findings", views.FindingViewSet, basename="finding")
router.register("claims", views.ClaimViewSet, basename="claim")
router.register("experiments", views.ExperimentViewSet, basename="experiment")
router.register("reproductions", views.ReproductionViewSet, basename="reproduction")
router.register("runs", views.RunViewSet, basename="run")
router.register("subscriptions", events_views.SubscriptionViewSet, basename="subscription")

urlpatterns = [
    path(
        "api/v1/findings/<int:pk>/rereproduce/", version_views.finding_rereproduce_view, name="finding-rereproduce"
    ),
    path("api/v1/landscape/", effects_views.landscape, name="landscape"),
    path("api/v1/findings/<int:pk>/rollup/", effects_views.finding_rollup, name="finding-rollup"),
    path(
        "api/v1/experiments/<int:pk>/self-reported-runs/",
        effects_views.self_reported_run_create,
        name="experiment-self-reported-runs",
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
]
