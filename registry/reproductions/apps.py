from django.apps import AppConfig


class ReproductionsConfig(AppConfig):
    name = "registry.reproductions"
    label = "reproductions"
