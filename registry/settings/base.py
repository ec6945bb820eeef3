"""Settings from environment variables with safe defaults.

The defaults are the embedded mode: SQLite and a broker on a SQLite file, no services needed.
Production sets DATABASE_URL (PostgreSQL) and CELERY_BROKER_URL (Redis or RabbitMQ).
"""

from datetime import timedelta
from pathlib import Path

import environ

from registry.datadir import data_dir

BASE_DIR = Path(__file__).resolve().parents[2]
env = environ.Env()

# One data directory (registry/datadir.py): REGISTRY_DATA_DIR, else the checkout's var/, else the
# user's data directory; never site-packages. It holds the embedded default's SQLite database and
# broker, the artifacts, the collected static files and beat's schedule. VAR_DIR: its older name.
DATA_DIR = VAR_DIR = data_dir()
try:
    DATA_DIR.mkdir(parents=True, exist_ok=True)  # SQLite and the SQLite broker need the folder
except OSError:
    pass  # read-only here (e.g. a container): whatever writes into it reports the error

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="insecure-embedded-default-change-me")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "registry.findings",
    "registry.reproductions",
    "registry.effects",
    "registry.events",
    "registry.api",
    "registry.dashboard",
    "django_prometheus",
    "registry.idempotency",
    "registry.accounts",
    "axes",
]

MIDDLEWARE = [
    # Prometheus (django-prometheus): request counts and latency; this pair wraps every other one
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    # X-Request-ID on every response, request_id on every log record (registry/api/request_id.py)
    "registry.api.request_id.RequestIdMiddleware",
    # first: an unreachable database is a 503 with Retry-After wherever it is noticed
    "registry.api.middleware.DatabaseUnavailableMiddleware",
    # an API body over API_MAX_BODY_BYTES is a 413 JSON before anything reads it
    "registry.api.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy (and friends) on the dashboard's HTML pages
    "registry.dashboard.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Idempotency-Key on the API's POSTs: after AuthenticationMiddleware (registry/idempotency)
    "registry.idempotency.middleware.IdempotencyMiddleware",
    # login lockout (django-axes): after AuthenticationMiddleware; turns a locked-out sign-in into its 429 page
    "axes.middleware.AxesMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "registry.urls"
WSGI_APPLICATION = "registry.wsgi.application"
ASGI_APPLICATION = "registry.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'registry.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the worker write concurrently: WAL and a generous lock timeout.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    # 0: no persistent connections. The web runs under ASGI, where Django's persistent connections
    # pile up (one per request thread, never reused; Django's docs: disable them under ASGI). The
    # web server's processes pool instead (psycopg's pool, one per process: a request borrows a
    # connection and gives it back, ~5 ms of connect saved): registry/asgi.py turns
    # DATABASE_POOL_MAX_SIZE on for them; elsewhere (workers, commands) it is 0 unless set.
    # DATABASE_CONN_MAX_AGE still overrides (workers keep theirs: worker/celery.py).
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=0))
    DATABASE_POOL_MAX_SIZE = env.int("DATABASE_POOL_MAX_SIZE", default=0)
    if DATABASE_POOL_MAX_SIZE > 0 and DATABASES["default"]["CONN_MAX_AGE"] == 0:
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": min(2, DATABASE_POOL_MAX_SIZE),
            "max_size": DATABASE_POOL_MAX_SIZE,
            # a request waits this long for a free (or a new) connection, then is answered 503
            "timeout": env.float("DATABASE_POOL_TIMEOUT_S", default=env.int("DATABASE_CONNECT_TIMEOUT_S", default=3)),
            "max_idle": 300,
        }
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # An unreachable database fails a request in seconds (answered 503), never hangs it.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT_S", default=3)
    )
    # A cut network link fails a connection in about 30 s instead of the kernel's ~15 min, so a
    # partitioned worker stops supervising blind (its late writes are fenced off anyway).
    for _name, _value in (
        ("keepalives", 1), ("keepalives_idle", 10), ("keepalives_interval", 5), ("keepalives_count", 3),
        ("tcp_user_timeout", env.int("DATABASE_TCP_USER_TIMEOUT_MS", default=30000)),
    ):
        DATABASES["default"]["OPTIONS"].setdefault(_name, _value)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("DJANGO_STATIC_ROOT", default=str(VAR_DIR / "static")))
# Static files need no separate step: WhiteNoise also serves them straight from the apps (their
# finders) when they were never collected; `interp-registry-server serve` collects them into
# STATIC_ROOT first (hashed, compressed copies for production's manifest storage).
WHITENOISE_USE_FINDERS = env.bool("WHITENOISE_USE_FINDERS", default=True)
ARTIFACT_ROOT = Path(env.str("REGISTRY_ARTIFACT_ROOT", default=str(VAR_DIR / "artifacts")))
LOGIN_URL = "dashboard:login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

# Accounts (registry/accounts/signup.py). SIGNUP_MODE: "open" = anyone may sign up; "invite" = sign-up
# needs an unused invitation code from staff (admin or `manage.py create_invitation`); "staff" = no
# sign-up page, staff create accounts (admin or `manage.py create_api_user`). Open here (the embedded
# default); production.py defaults to "staff". A self-service account stays inactive until the link
# emailed to it is followed (within ACCOUNT_CONFIRMATION_MAX_AGE_S); password reset links last
# PASSWORD_RESET_TIMEOUT seconds. Email goes to the console here; production.py sends it by SMTP.
SIGNUP_MODES = ("open", "invite", "staff")
SIGNUP_MODE = env.str("SIGNUP_MODE", default="open")
if SIGNUP_MODE not in SIGNUP_MODES:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(f"SIGNUP_MODE must be one of {', '.join(SIGNUP_MODES)}, not {SIGNUP_MODE!r}")
ACCOUNT_CONFIRMATION_MAX_AGE_S = env.int("ACCOUNT_CONFIRMATION_MAX_AGE_S", default=3 * 86400)
PASSWORD_RESET_TIMEOUT = env.int("PASSWORD_RESET_TIMEOUT_S", default=3 * 86400)
INVITATION_DEFAULT_DAYS = env.int("INVITATION_DEFAULT_DAYS", default=14)
# Confirmation, re-sent confirmation and password-reset emails requested from one address per hour.
ACCOUNT_EMAILS_PER_HOUR = env.int("ACCOUNT_EMAILS_PER_HOUR", default=20)
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="registry@localhost")
# `scripts/dev run` creates a "demo" user and prints its password (manage.py demo_user); never in production.
DEMO_USER_ALLOWED = env.bool("DEMO_USER_ALLOWED", default=True)

# Sign-in lockout (django-axes), on the dashboard's sign-in and the admin's login alike: after
# AXES_FAILURE_LIMIT wrong passwords for one username from one address, that username is refused
# from that address for AXES_COOLOFF_MINUTES (each further try during the lockout restarts it).
# By username AND address: an attacker elsewhere cannot lock a user out of their own machine.
# The address is registry.api.throttling.client_address, the same as the API's anonymous throttle:
# REMOTE_ADDR when API_NUM_PROXIES is 0 (X-Forwarded-For ignored: a client can forge it); behind N
# trusted proxies that append to X-Forwarded-For, its N-th entry from the right.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("AXES_COOLOFF_MINUTES", default=15.0))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_LOCKOUT_CALLABLE = "registry.accounts.lockout.lockout_response"
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
AXES_CLIENT_IP_CALLABLE = "registry.api.throttling.client_address"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # hashed, named, expiring tokens: "Authorization: Token <secret>" or "Bearer <secret>"
        "registry.accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    "DEFAULT_PAGINATION_CLASS": "registry.api.pagination.Pagination",
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "registry.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_THROTTLE_CLASSES": [
        "registry.api.throttling.AnonRateThrottle",
        "registry.api.throttling.UserRateThrottle",
    ],
    # Trusted reverse proxies in front that append to X-Forwarded-For: 0 = none, the client is
    # REMOTE_ADDR and X-Forwarded-For is ignored (registry.api.throttling.client_address)
    "NUM_PROXIES": env.int("API_NUM_PROXIES", default=0),
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.str("API_THROTTLE_ANON", default="600/minute"),
        "user": env.str("API_THROTTLE_USER", default="3000/minute"),
        # requests that queue runs (API and dashboard): registry.api.throttling.ReproductionRateThrottle
        "reproductions": env.str("API_THROTTLE_REPRODUCTIONS", default="60/hour"),
    },
    # size, nesting depth, NUL/surrogate and NaN checks: registry/api/parsers.py
    "DEFAULT_PARSER_CLASSES": [
        "registry.api.parsers.JSONParser",
        "registry.api.parsers.FormParser",
        "registry.api.parsers.MultiPartParser",
    ],
}

# Throttle counts (and anything else cached) live in this cache: shared by every process only when
# it is a shared one (Redis: CACHE_URL=redis://host:6379/1; production.py derives it from a Redis
# broker). The embedded default keeps them in each process's memory.
CACHE_SOCKET_TIMEOUT_S = env.float("CACHE_SOCKET_TIMEOUT_S", default=2.0)


def cache_from_url(url: str) -> dict:
    """A CACHES entry from a URL (django-environ's schemes); a Redis one fails within seconds."""
    config = environ.Env.cache_url_config(url)
    if config["BACKEND"].endswith("RedisCache"):
        options = config.setdefault("OPTIONS", {})
        options.setdefault("socket_connect_timeout", CACHE_SOCKET_TIMEOUT_S)
        options.setdefault("socket_timeout", CACHE_SOCKET_TIMEOUT_S)
        # one pool per process, not one per request (registry/rediscache.py)
        options.setdefault("pool_class", "registry.rediscache.ProcessWideConnectionPool")
    return config


CACHES = {"default": cache_from_url(env.str("CACHE_URL", default="locmemcache://registry"))}

# Hostile input (registry/api/parsers.py, registry/api/middleware.py): a body over
# API_MAX_BODY_BYTES is a 413 (nothing the API takes is larger: no uploads), JSON nested deeper
# than API_MAX_JSON_DEPTH a 400; Django's own limits match for forms.
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=2 * 1024 * 1024)
API_MAX_JSON_DEPTH = env.int("API_MAX_JSON_DEPTH", default=64)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES
DATA_UPLOAD_MAX_NUMBER_FIELDS = env.int("DATA_UPLOAD_MAX_NUMBER_FIELDS", default=1000)
# A CSRF failure under /api/ is a JSON 403 like every other API error.
CSRF_FAILURE_VIEW = "registry.urls.csrf_failure"
# Security headers on every response (production.py adds HSTS and the proxy settings).
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = env.str("DJANGO_REFERRER_POLICY", default="same-origin")
X_FRAME_OPTIONS = "DENY"

SPECTACULAR_SETTINGS = {
    "TITLE": "Interpretability Findings Registry API",
    "DESCRIPTION": "Findings, reproduction experiments, runs and their measured safety and capability effects.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Served from local static files: the registry must work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # JSON is the API's format (the form parsers serve the browsable API's forms)
    "PARSER_WHITELIST": ["rest_framework.parsers.JSONParser"],
    # the error responses every operation shares, Idempotency-Key on POSTs, a tag per resource
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "registry.api.schema.postprocess_common_responses",
    ],
}

# Celery: the database row is the source of truth, the broker carries run ids only.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=f"sqla+sqlite:///{VAR_DIR / 'broker.sqlite3'}")
CELERY_TASK_ALWAYS_EAGER = False
# Namespaces every broker key (Redis): lets several registries or test runs share one Redis.
CELERY_BROKER_KEY_PREFIX = env.str("CELERY_BROKER_KEY_PREFIX", default="")
# visibility_timeout is above the longest run (RUN_MAX_TIME_LIMIT_S): Redis redelivers
# unacknowledged messages after it, and the run's claim makes a redelivered duplicate harmless
# anyway (a batch of runs, RUN_BATCH_SEEDS, may outlast it: its message is then redelivered and
# skipped, the batch's heartbeats being fresh).
# (The SQLAlchemy transport of the embedded default passes its options to create_engine: none there.)
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {}
# A frozen or unreachable broker fails a publish (or a readiness check) within seconds: the request
# still answers, and the reaper re-sends what could not be published.
BROKER_SOCKET_TIMEOUT_S = env.float("BROKER_SOCKET_TIMEOUT_S", default=2.0)
if CELERY_BROKER_URL.startswith(("redis", "rediss")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": 6 * 3600,
        "socket_timeout": BROKER_SOCKET_TIMEOUT_S,
        "socket_connect_timeout": BROKER_SOCKET_TIMEOUT_S,
        # connecting (kombu's ensure_connection): one try, not a hundred
        "max_retries": 1,
        "interval_start": 0,
        "interval_step": 0.2,
        "interval_max": 0.2,
    }
    if CELERY_BROKER_KEY_PREFIX:
        CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = CELERY_BROKER_KEY_PREFIX
CELERY_WORKER_CONCURRENCY = env.int("CELERY_WORKER_CONCURRENCY", default=1)
# beat's schedule (its last run times) in the data directory, not the current directory
CELERY_BEAT_SCHEDULE_FILENAME = env.str("CELERY_BEAT_SCHEDULE_FILENAME", default=str(VAR_DIR / "celerybeat-schedule"))

# Runs
RUN_TORCH_THREADS = env.int("RUN_TORCH_THREADS", default=1)
RUN_MAX_ATTEMPTS = env.int("RUN_MAX_ATTEMPTS", default=3)
# A dead worker's run is taken over once its heartbeat is RUN_HEARTBEAT_TIMEOUT_S old (by a
# redelivered message, or by the reaper every REAPER_INTERVAL_S): within about timeout + interval.
RUN_HEARTBEAT_INTERVAL_S = env.float("RUN_HEARTBEAT_INTERVAL_S", default=3.0)
RUN_HEARTBEAT_TIMEOUT_S = env.float("RUN_HEARTBEAT_TIMEOUT_S", default=15.0)
# A queued run whose message is in neither its queue nor with a worker is re-sent after this.
RUN_REDISPATCH_AFTER_S = env.float("RUN_REDISPATCH_AFTER_S", default=15.0)
REAPER_INTERVAL_S = env.float("REAPER_INTERVAL_S", default=5.0)
# Faster than the heartbeat timeout: on PostgreSQL a worker holds a liveness lock per run on a
# connection of its own (worker/liveness.py); a run whose heartbeat is RUN_DEAD_AFTER_S late and whose
# lock is free (its worker's connections closed: the process died) is requeued at once.
RUN_LIVENESS_LOCKS = env.bool("RUN_LIVENESS_LOCKS", default=True)
RUN_DEAD_AFTER_S = env.float("RUN_DEAD_AFTER_S", default=2 * RUN_HEARTBEAT_INTERVAL_S)
# A worker that cannot reach the database puts a run's message back after this many seconds.
RUN_DB_RETRY_S = env.float("RUN_DB_RETRY_S", default=3.0)
# /readyz fails when the beat (the reaper's trigger) has not been seen for this long.
BEAT_MISSING_AFTER_S = env.float("BEAT_MISSING_AFTER_S", default=5 * REAPER_INTERVAL_S)
STALE_CHECK_INTERVAL_S = env.float("STALE_CHECK_INTERVAL_S", default=600.0)
# When changes commit during a finding's effects recompute, its next recompute waits this long
# (bounded to [0, 60]; 0: at once): a stream of results costs about one recompute per interval.
EFFECTS_RECOMPUTE_BUSY_DELAY_S = env.float("EFFECTS_RECOMPUTE_BUSY_DELAY_S", default=2.0)
# Check staleness once when a web server (registry/asgi.py, wsgi.py) or a worker starts, too.
STALE_CHECK_ON_STARTUP = env.bool("STALE_CHECK_ON_STARTUP", default=True)
# The registry's public address: absolute links in webhook payloads (no request to take it from).
REGISTRY_BASE_URL = env.str("REGISTRY_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")
WEBHOOKS_SWEEP_INTERVAL_S = env.float("WEBHOOKS_SWEEP_INTERVAL_S", default=10.0)
# Webhooks to loopback/private addresses would let users probe the registry's own network.
WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = env.bool("WEBHOOKS_ALLOW_PRIVATE_ADDRESSES", default=False)
# After a secret rotation, deliveries carry the old secret's signature too for this long.
WEBHOOKS_SECRET_ROTATION_GRACE_S = env.float("WEBHOOKS_SECRET_ROTATION_GRACE_S", default=86400.0)
# Automatic disabling: a webhook subscription is turned off (active=False, disabled_reason set)
# once at least this many delivery attempts in a row have failed AND the first of them is at least
# this many seconds old (so a short outage never disables anyone). Any success resets the count.
WEBHOOKS_DISABLE_AFTER_FAILURES = env.int("WEBHOOKS_DISABLE_AFTER_FAILURES", default=20)
WEBHOOKS_DISABLE_AFTER_S = env.float("WEBHOOKS_DISABLE_AFTER_S", default=86400.0)
# The live event stream (SSE, served under ASGI): a keep-alive comment after this many idle seconds;
# open streams per client (signed-in user, else remote address) and in all, per server process
# (beyond either: 429); how often the one watcher per process reads the head of the event log; the
# threads (so at most that many database connections) that every stream's queries share.
STREAM_HEARTBEAT_S = env.float("STREAM_HEARTBEAT_S", default=15.0)
STREAM_MAX_PER_CLIENT = env.int("STREAM_MAX_PER_CLIENT", default=5)
STREAM_MAX_TOTAL = env.int("STREAM_MAX_TOTAL", default=1000)
STREAM_POLL_S = env.float("STREAM_POLL_S", default=1.0)
STREAM_DB_THREADS = env.int("STREAM_DB_THREADS", default=4)
# The sweep sends due deliveries concurrently through a pool of this many threads (1 = one after
# another); a slow endpoint then holds one thread, not the whole sweep.
WEBHOOKS_SEND_CONCURRENCY = env.int("WEBHOOKS_SEND_CONCURRENCY", default=16)
RUN_DETERMINISTIC = env.bool("RUN_DETERMINISTIC", default=False)
# Containment of each run's child process (worker/sandbox.py).
RUN_SCRATCH_DIR = env.str("RUN_SCRATCH_DIR", default="")  # "" = the system's temporary directory
RUN_MEMORY_LIMIT_MB = env.int("RUN_MEMORY_LIMIT_MB", default=4096)  # 0 = none; Experiment.memory_limit_mb overrides
RUN_KILL_GRACE_S = env.float("RUN_KILL_GRACE_S", default=10.0)  # stop request -> SIGTERM -> SIGKILL
# How a run's child starts: "zygote" = forked from the worker process's preloaded fork server
# (worker/zygote.py; GPU runs, RUN_ISOLATE_NETWORK and RUN_AS_USER still exec fresh), "spawn" =
# always a fresh `python -m worker.sandbox` (~1 s of imports per run).
RUN_CHILD_START = env.str("RUN_CHILD_START", default="zygote")
# Seeds in parallel: a worker that claims a run of a plugin with ``batched_seeds = True`` also claims
# up to this many runs of the same reproduction in all (queued ones, lowest seeds first) and trains
# them as one batched model in one process (the plugin's ``run_seeds``); 1 = one run per process.
# A deployment setting: where runs are dispatched it sizes each message's backstop time limit, which
# caps the worker's batch. Worth it on a GPU (one worker process per GPU); on a CPU worker the
# pool's processes already run seeds side by side. Bounded to [1, 64].
RUN_BATCH_SEEDS = max(1, min(64, env.int("RUN_BATCH_SEEDS", default=1)))
# Optional containment beyond the child process (off by default; see the README's trust model):
# a network namespace with only loopback (unshare; root, or unprivileged user namespaces), and an
# unprivileged account to run the plugin as (the worker must be root to switch to it).
RUN_ISOLATE_NETWORK = env.bool("RUN_ISOLATE_NETWORK", default=False)
RUN_AS_USER = env.str("RUN_AS_USER", default="")
RUN_CGROUP_PARENT = env.str("RUN_CGROUP_PARENT", default="")  # a delegated cgroup v2 dir; "" = RLIMIT_AS
RUN_ENV_PASSTHROUGH = env.list("RUN_ENV_PASSTHROUGH", default=[])  # extra variables the child may see
RUN_SAVE_RETRY_S = env.float("RUN_SAVE_RETRY_S", default=120.0)  # retrying a result's save on DB errors
# A run's artifacts: each at most RUN_MAX_ARTIFACT_BYTES, all together RUN_MAX_ARTIFACTS_TOTAL_BYTES
# (checked by size before the worker reads them; the child's files are capped by RLIMIT_FSIZE).
RUN_MAX_ARTIFACT_BYTES = env.int("RUN_MAX_ARTIFACT_BYTES", default=50 * 1024 * 1024)
RUN_MAX_ARTIFACTS_TOTAL_BYTES = env.int("RUN_MAX_ARTIFACTS_TOTAL_BYTES", default=200 * 1024 * 1024)
# ctx.save_checkpoint: an artifact of type application/x-checkpoint, each at most this (and within
# the artifacts' limits above).
RUN_MAX_CHECKPOINT_BYTES = env.int("RUN_MAX_CHECKPOINT_BYTES", default=50 * 1024 * 1024)
# A run created this recently without a dispatched_at is being sent by its creator: not lost yet.
RUN_DISPATCH_GRACE_S = env.float("RUN_DISPATCH_GRACE_S", default=5.0)
GPU_WORKER_SEEN_WINDOW_S = env.float("GPU_WORKER_SEEN_WINDOW_S", default=300.0)
MAX_SEEDS_PER_REPRODUCTION = env.int("MAX_SEEDS_PER_REPRODUCTION", default=50)
# Idempotency keys (registry/idempotency): a POST's key and response are kept this long per user
# (expired keys purged by the maintenance beat every IDEMPOTENCY_PURGE_INTERVAL_S, and lazily on
# reuse); a reservation whose request has run longer than IDEMPOTENCY_IN_PROGRESS_TIMEOUT_S is
# taken as abandoned (its process died) and the key may be used again. Keep it above the longest a
# request can run: the server's worker timeout (gunicorn --timeout 60 in the README) kills longer ones.
IDEMPOTENCY_KEY_TTL_S = env.float("IDEMPOTENCY_KEY_TTL_S", default=24 * 3600.0)
IDEMPOTENCY_IN_PROGRESS_TIMEOUT_S = env.float("IDEMPOTENCY_IN_PROGRESS_TIMEOUT_S", default=90.0)
IDEMPOTENCY_PURGE_INTERVAL_S = env.float("IDEMPOTENCY_PURGE_INTERVAL_S", default=3600.0)
# Per-user quotas on runs (registry.reproductions.quotas; staff raise one user's caps with a UserQuota):
# queued + running runs at once, and runs requested in any 24 hours. Beyond a cap: 429 + Retry-After.
QUOTA_ACTIVE_RUNS = env.int("QUOTA_ACTIVE_RUNS", default=200)
QUOTA_RUNS_PER_DAY = env.int("QUOTA_RUNS_PER_DAY", default=2000)
QUOTA_ACTIVE_RETRY_AFTER_S = env.int("QUOTA_ACTIVE_RETRY_AFTER_S", default=60)  # Retry-After at the active cap
# One batch of self-reported runs (POST /api/v1/experiments/{id}/self-reported-runs/batch/): at most
# this many runs and measurements in all, else a 413 (the body is also bounded by API_MAX_BODY_BYTES)
SELF_REPORTED_BATCH_MAX_RUNS = env.int("SELF_REPORTED_BATCH_MAX_RUNS", default=1000)
SELF_REPORTED_BATCH_MAX_MEASUREMENTS = env.int("SELF_REPORTED_BATCH_MAX_MEASUREMENTS", default=100_000)
# Bounds on what an experiment may ask of a worker (a 400 naming the field beyond them).
RUN_MAX_TIME_LIMIT_S = env.int("RUN_MAX_TIME_LIMIT_S", default=6 * 3600)
RUN_MAX_MEMORY_LIMIT_MB = env.int("RUN_MAX_MEMORY_LIMIT_MB", default=32768)

# Plugins: an empty list enables every installed plugin.
PLUGINS_ALLOWED = env.list("PLUGINS_ALLOWED", default=[])
# Plugins not packaged with an entry point: "name=module:Class" items.
PLUGINS_EXTRA = env.list("PLUGINS_EXTRA", default=[])
REREPRODUCE_ON_PLUGIN_UPGRADE = env.bool("REREPRODUCE_ON_PLUGIN_UPGRADE", default=False)

# Logs: LOG_FORMAT=text (default) or json (one JSON object a line). Every record carries the run
# id in the worker while a run executes and the request id (X-Request-ID) in the web
# (registry/logcontext.py): "[run_id=5]" / "[request_id=...]" in text, "run_id"/"request_id" in JSON.
LOG_FORMAT = env.str("LOG_FORMAT", default="text")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "registry.logcontext.ContextFilter"}},
    "formatters": {
        "plain": {
            "()": "registry.logcontext.TextFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s",
        },
        "json": {"()": "registry.logcontext.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}

# Prometheus metrics at /metrics (registry/api/metrics.py). With METRICS_TOKEN set, a scrape must
# send "Authorization: Bearer <token>"; without it only clients in METRICS_ALLOWED_NETWORKS that
# did not come through a proxy are served (a proxy on the same host: set a token, or block /metrics).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_NETWORKS = env.list("METRICS_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"])
# The window of the "recent" metrics (runs finished, their durations, webhook attempts).
METRICS_RECENT_WINDOW_S = env.float("METRICS_RECENT_WINDOW_S", default=3600.0)
