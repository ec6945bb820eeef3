"""Production: no insecure defaults. Requires DJANGO_SECRET_KEY, DATABASE_URL, CELERY_BROKER_URL."""

from urllib.parse import urlsplit, urlunsplit

from registry.settings.base import *  # noqa: F403
from registry.settings.base import cache_from_url, env

SECRET_KEY = env.str("DJANGO_SECRET_KEY")
# Required here (no SQLite fallback); base.py builds DATABASES from it with its timeouts and
# keepalives, and CONN_MAX_AGE 0 (persistent connections pile up under ASGI).
env.str("DATABASE_URL")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL")
DEBUG = False
# Accounts: staff create them unless SIGNUP_MODE says "open" or "invite"; never a demo user.
SIGNUP_MODE = env.str("SIGNUP_MODE", default="staff")
if SIGNUP_MODE not in SIGNUP_MODES:  # noqa: F405
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(f"SIGNUP_MODE must be one of {', '.join(SIGNUP_MODES)}, not {SIGNUP_MODE!r}")  # noqa: F405
DEMO_USER_ALLOWED = False
# Email (confirmation and password-reset links) by SMTP: EMAIL_HOST, EMAIL_PORT, EMAIL_HOST_USER,
# EMAIL_HOST_PASSWORD, EMAIL_USE_TLS / EMAIL_USE_SSL, DEFAULT_FROM_EMAIL.
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", default=False)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT_S", default=10)
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=True)
CSRF_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# Throttle counts shared by every web process: Redis. CACHE_URL, or by default the broker's Redis
# with database 1 (the broker's own keys stay in its database). A broker that is not Redis
# (RabbitMQ) needs CACHE_URL.
if env.str("CACHE_URL", default="") or not CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CACHES = {"default": cache_from_url(env.str("CACHE_URL"))}
else:
    _broker = urlsplit(CELERY_BROKER_URL)
    CACHES = {"default": cache_from_url(urlunsplit(_broker._replace(path=f"/{env.int('CACHE_REDIS_DB', default=1)}")))}
CACHES["default"].setdefault("KEY_PREFIX", env.str("CACHE_KEY_PREFIX", default="registry"))

# HTTPS: HSTS (a year by default; DJANGO_HSTS_SECONDS=0 turns it off), behind a TLS-terminating
# proxy that sets X-Forwarded-Proto (DJANGO_SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https";
# trust it only where the proxy overwrites the client's header). The proxy usually redirects to
# HTTPS itself: DJANGO_SECURE_SSL_REDIRECT=true makes Django do it.
SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_HSTS_PRELOAD", default=False)
_proxy_ssl_header = env.list("DJANGO_SECURE_PROXY_SSL_HEADER", default=[])
SECURE_PROXY_SSL_HEADER = tuple(_proxy_ssl_header) if len(_proxy_ssl_header) == 2 else None
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=False)
# /healthz and /readyz answer the orchestrator's plain-HTTP probes
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = env.str("DJANGO_REFERRER_POLICY", default="same-origin")
