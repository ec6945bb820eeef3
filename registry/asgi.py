import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "registry.settings.base")
# The web server's processes borrow PostgreSQL connections from a pool (registry/settings/base.py);
# set to 0 to connect once per request instead. Workers and commands never import this module.
os.environ.setdefault("DATABASE_POOL_MAX_SIZE", "8")
application = get_asgi_application()

from registry.dbpool import forget_pools_after_fork  # noqa: E402

# gunicorn forks its workers from a process that may have opened the pool already (`serve`
# imports this module in the master): each worker makes its own.
os.register_at_fork(after_in_child=forget_pools_after_fork)

# Staleness is checked as the server starts (in the background; skipped, logged, before migrations).
from registry.reproductions.versions import stale_check_at_startup_in_background  # noqa: E402

stale_check_at_startup_in_background(where="web server")
