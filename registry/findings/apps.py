from django.apps import AppConfig


class FindingsConfig(AppConfig):
    name = "registry.findings"
    label = "findings"
