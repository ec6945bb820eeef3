from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import api_view
from rest_framework.generics import get_object_or_404
from rest_framework.request import Request
from rest_framework.response import Response

from registry.api.serializers import ReproductionSerializer
from registry.findings.selectors import finding_list
from registry.reproductions.versions import finding_rereproduce


@extend_schema(
    request=None,
    responses={202: ReproductionSerializer(many=True)},
    description="Reproduce every experiment of the finding again with the installed plugin versions.",
)
@api_view(["POST"])
def finding_rereproduce_view(request: Request, pk: int) -> Response:
    finding = get_object_or_404(finding_list(user=request.user), pk=pk)
    reproductions = finding_rereproduce(finding=finding, user=request.user)
    data = ReproductionSerializer(reproductions, many=True, context={"request": request}).data
    return Response(data, status=status.HTTP_202_ACCEPTED)
