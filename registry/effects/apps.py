from django.apps import AppConfig


class EffectsConfig(AppConfig):
    name = "registry.effects"
    label = "effects"
