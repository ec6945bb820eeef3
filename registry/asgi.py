import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "registry.settings.base")
application = get_asgi_application()

# Staleness is checked as the server starts (in the background; skipped, logged, before migrations).
from registry.reproductions.versions import stale_check_at_startup_in_background  # noqa: E402

stale_check_at_startup_in_background(where="web server")
