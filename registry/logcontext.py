"""Log context: every log record carries the run id (in the worker, while a run executes) and the
request id (in the web, while a request is served), in text or JSON lines (``LOG_FORMAT``).

The ids live in context variables, set by ``run_context`` (worker/runner.py's ``run_execute``) and
by ``registry.api.request_id.RequestIdMiddleware``; ``ContextFilter`` (on the console handler)
copies them onto each record as ``run_id`` and ``request_id`` (None when unset) unless the call
passed its own (``extra={"run_id": ...}``).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

run_id_var: contextvars.ContextVar[int | None] = contextvars.ContextVar("registry_run_id", default=None)
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("registry_request_id", default=None)

#: The record attributes filled from the context, in the order they are printed.
CONTEXT_FIELDS = ("run_id", "request_id")


@contextlib.contextmanager
def run_context(run_id: int) -> Iterator[None]:
    """Log records emitted inside carry ``run_id``."""
    token = run_id_var.set(run_id)
    try:
        yield
    finally:
        run_id_var.reset(token)


def with_run_context(function: Callable[P, R]) -> Callable[P, R]:
    """Decorate a function whose first argument is a run id: its log records carry that id."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        run_id = args[0] if args else kwargs.get("run_id")
        with run_context(run_id):  # type: ignore[arg-type]
            return function(*args, **kwargs)

    return wrapper


class ContextFilter(logging.Filter):
    """Copies the run id and request id of the current context onto each record (never drops one).
    ``context`` is the text form for the plain formatter: `` [run_id=5 request_id=ab12]`` or ``""``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "run_id", None) is None:
            record.run_id = run_id_var.get()
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        parts = [f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if getattr(record, name) is not None]
        record.context = f" [{' '.join(parts)}]" if parts else ""
        return True


class TextFormatter(logging.Formatter):
    """The plain format, tolerant of records that did not pass ``ContextFilter``."""

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "context"):
            record.context = ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, run_id and
    request_id when set, process, and the formatted exception when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        entry["process"] = record.process
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)
