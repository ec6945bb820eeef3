from django.contrib import admin
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from django.views import csrf, defaults

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("registry.api.urls")),
    path("", include("registry.dashboard.urls")),
]


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's 400 (SuspiciousOperation: a bad Host header, a body over its size limit, too many
    form fields): JSON under /api/, with 413 for a body too large."""
    if _is_api(request):
        if isinstance(exception, RequestDataTooBig):
            from registry.api.parsers import too_large_message

            return JsonResponse({"detail": too_large_message(), "errors": {}}, status=413)
        if isinstance(exception, TooManyFieldsSent | TooManyFilesSent):
            return JsonResponse({"detail": "too many form fields", "errors": {}}, status=400)
        return JsonResponse({"detail": "bad request", "errors": {}}, status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": "you do not have permission to perform this action", "errors": {}},
                            status=403)
    return defaults.permission_denied(request, exception)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: a JSON 403 under /api/ (a session-authenticated write without the
    token), Django's page elsewhere."""
    if _is_api(request):
        return JsonResponse({"detail": f"CSRF check failed: {reason}", "errors": {}}, status=403)
    return csrf.csrf_failure(request, reason=reason)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": f"no API endpoint at {request.path}", "errors": {}}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": "internal error; it has been logged", "errors": {}}, status=500)
    return defaults.server_error(request)


handler400 = bad_request
handler403 = permission_denied
handler404 = not_found
handler500 = server_error
