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

# What is loaded by now (Django, DRF, the plugins, torch) lives as long as the process: moved out of
# the garbage collector's generations, so its full passes do not walk it again and again (pauses
# of hundreds of ms were seen at 100,000 findings), and a forked worker's copy stays shared.
import gc  # noqa: E402

gc.collect()
gc.freeze()
