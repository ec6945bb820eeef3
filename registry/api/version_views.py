from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import api_view, throttle_classes
from rest_framework.generics import get_object_or_404
from rest_framework.request import Request
from rest_framework.response import Response

from registry.api.schema import QUOTA_429, error
from registry.api.serializers import ReproductionSerializer
from registry.api.throttling import REPRODUCTION_THROTTLES
from registry.findings.selectors import finding_list
from registry.reproductions.versions import finding_rereproduce


@extend_schema(
    request=None,
    responses={
        202: ReproductionSerializer(many=True),
        403: error("Not an author of the finding, nor staff."),
        429: QUOTA_429,
    },
    description="Reproduce every experiment of the finding again with the installed plugin versions (its authors "
    "or staff), within the caller's run quota: one reproduction per experiment, a bare list.",
)
@api_view(["POST"])
@throttle_classes(REPRODUCTION_THROTTLES)  # queues runs: the "reproductions" scope too
def finding_rereproduce_view(request: Request, pk: int) -> Response:
    finding = get_object_or_404(finding_list(user=request.user), pk=pk)
    reproductions = finding_rereproduce(finding=finding, user=request.user)
    data = ReproductionSerializer(reproductions, many=True, context={"request": request}).data
    return Response(data, status=status.HTTP_202_ACCEPTED)
