from rest_framework import routers, serializers, viewsets

from bench.bare_drf.models import Result


class ResultSerializer(serializers.ModelSerializer):
    class Meta:
        model = Result
        fields = ["id", "seed", "measurements", "params", "hardware", "environment", "created_at"]


class ResultViewSet(viewsets.ModelViewSet):
    queryset = Result.objects.all()
    serializer_class = ResultSerializer


router = routers.DefaultRouter()
router.register("results", ResultViewSet)
urlpatterns = router.urls
