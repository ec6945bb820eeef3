from django.apps import AppConfig


class BareDrfConfig(AppConfig):
    name = "bench.bare_drf"
    label = "bare_drf"
    default_auto_field = "django.db.models.BigAutoField"
