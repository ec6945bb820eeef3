"""Production: no insecure defaults. Requires DJANGO_SECRET_KEY, DATABASE_URL, CELERY_BROKER_URL."""

from registry.settings.base import *  # noqa: F403
from registry.settings.base import env

SECRET_KEY = env.str("DJANGO_SECRET_KEY")
# Required here (no SQLite fallback); base.py builds DATABASES from it with its timeouts and
# keepalives, and CONN_MAX_AGE 0 (persistent connections pile up under ASGI).
env.str("DATABASE_URL")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL")
DEBUG = False
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=True)
CSRF_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
