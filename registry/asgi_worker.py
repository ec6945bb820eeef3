"""The production web server's worker: gunicorn with ``-k registry.asgi_worker.Worker``.

uvicorn-worker's ``UvicornWorker`` with uvicorn's ``server`` header turned off (no ``Server:
uvicorn`` naming the software to a scanner; the documented way: a subclass setting
``CONFIG_KWARGS``). uvicorn, not gunicorn, parses the requests in these workers, so gunicorn's
``--limit-request-line`` and ``--limit-request-field_size`` do not apply (see the README's
deployment section for what a client sees).
"""

from __future__ import annotations

from typing import Any

from uvicorn_worker import UvicornWorker


class Worker(UvicornWorker):
    CONFIG_KWARGS: dict[str, Any] = {**UvicornWorker.CONFIG_KWARGS, "server_header": False}
