"""The Celery app, its thin tasks, and the runner that executes one run of a plugin."""
