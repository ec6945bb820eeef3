"""The one domain error type: services raise it, the API maps it to a 4xx JSON response."""

from __future__ import annotations


class ApplicationError(Exception):
    def __init__(self, message: str, *, field: str | None = None, status: int = 400, extra: dict | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status
        self.extra = extra or {}

    def as_detail(self) -> dict:
        detail: dict = {"detail": self.message}
        if self.field:
            detail["errors"] = {self.field: [self.message]}
        detail.update(self.extra)
        return detail


class NotFound(ApplicationError):
    def __init__(self, message: str, **kwargs):
        super().__init__(message, status=404, **kwargs)


class PermissionDenied(ApplicationError):
    def __init__(self, message: str, **kwargs):
        super().__init__(message, status=403, **kwargs)
