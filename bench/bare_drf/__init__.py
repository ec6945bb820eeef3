"""The ceiling for bench/perf.py: a bare Django REST framework app, one model, one ModelViewSet.

Served like the registry (gunicorn, 2 uvicorn worker processes, the same PostgreSQL), with no
authentication, throttling, idempotency keys, events or effects: what one DRF POST that inserts
one row costs on this machine. ``bare_celery`` is the matching bare Celery app (one trivial task)
for the dispatch comparison.
"""
