from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "registry.events"
    label = "events"
