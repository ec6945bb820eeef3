from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import models
from django.db.models import QuerySet


class Tag(models.Model):
    name = models.SlugField(max_length=64, unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Finding(models.Model):
    class Kind(models.TextChoices):
        THEORY = "theory"
        FIX = "fix"
        OBSERVATION = "observation"

    class Status(models.TextChoices):
        UNREPRODUCED = "unreproduced"  # no data yet
        REPRODUCED = "reproduced"  # every current claim confirmed
        PARTIALLY_REPRODUCED = "partially_reproduced"  # some confirmed, the rest undecided
        FAILED_TO_REPRODUCE = "failed_to_reproduce"  # some refuted, none confirmed
        CONTESTED = "contested"  # some confirmed and some refuted, or sources disagree
        UNDECIDED = "undecided"  # data, but no claim decided yet

    class Visibility(models.TextChoices):
        PUBLIC = "public"
        RESTRICTED = "restricted"

    title = models.CharField(max_length=300)
    summary = models.TextField(blank=True, help_text="Markdown; sanitised when rendered.")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    tags = models.ManyToManyField(Tag, blank=True, related_name="findings")
    references = models.JSONField(default=list, blank=True, help_text="DOIs, arXiv ids or URLs.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="created_findings"
    )
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.UNREPRODUCED)
    builds_on = models.ManyToManyField("self", symmetrical=False, blank=True, related_name="built_upon_by")
    visibility = models.CharField(max_length=16, choices=Visibility.choices, default=Visibility.PUBLIC)
    restricted_to = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="+")
    embargo_until = models.DateTimeField(null=True, blank=True)
    xrisk_sheet = models.JSONField(null=True, blank=True)
    effects_stale = models.BooleanField(
        default=False, help_text="Effects come from an older plugin version than the one installed."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status"]),
            models.Index(fields=["kind"]),
            # the list's default order (newest first, id breaking ties): a page is an index walk
            models.Index(fields=["-created_at", "-id"], name="finding_created_id_desc"),
            models.Index(fields=["updated_at"], name="finding_updated_at"),  # the landscape's cache key
            # who may see what, read without the rows (index-only): the landscape's counts and joins
            models.Index(fields=["visibility", "embargo_until"], include=["id", "kind"], name="finding_visible_cover"),
        ]
        # PostgreSQL also has a GIN index on the words of title + summary (migration 0004), used
        # by ``registry.findings.selectors.finding_search_filter`` for ``?q=``.

    def __str__(self) -> str:
        return self.title

    @property
    def authors(self) -> QuerySet:
        """The finding's authors: its *accepted* authors only (``FindingAuthor``). Invited and
        declined users are not authors: not for edit rights, not for the independence of
        reproductions, not for display or ``?author=``. Read-only; change authorship through
        ``registry.findings.services``."""
        return get_user_model().objects.filter(
            authorships__finding=self, authorships__status=FindingAuthor.Status.ACCEPTED
        )

    @property
    def invited_authors(self) -> QuerySet:
        """Users invited as co-authors who have not answered yet (not authors)."""
        return get_user_model().objects.filter(
            authorships__finding=self, authorships__status=FindingAuthor.Status.INVITED
        )


class FindingAuthor(models.Model):
    """One user named as an author of a finding, and whether they agreed to it. The creator is an
    accepted author from the start; anyone else named by an author is ``invited`` until they accept
    (only they can), and counts as an author only once ``accepted``."""

    class Status(models.TextChoices):
        INVITED = "invited"
        ACCEPTED = "accepted"
        DECLINED = "declined"  # declined the invitation, or withdrew after accepting

    finding = models.ForeignKey(Finding, on_delete=models.CASCADE, related_name="author_links")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="authorships")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.INVITED)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    responded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["finding", "user"], name="finding_author_unique")]
        indexes = [models.Index(fields=["user", "status"])]

    def __str__(self) -> str:
        return f"{self.user_id} on {self.finding_id}: {self.status}"


class Claim(models.Model):
    """A pre-registered, checkable statement about one metric. Fixed once reproductions exist."""

    class Direction(models.TextChoices):
        INCREASE = "increase"
        DECREASE = "decrease"
        NON_INFERIOR = "non_inferior"

    class ThresholdUnit(models.TextChoices):
        RELATIVE = "relative"  # a fraction of the baseline (0.9 = 90%)
        ABSOLUTE = "absolute"  # metric units (points as fractions for proportions: 0.3 = 30 points)

    finding = models.ForeignKey(Finding, on_delete=models.CASCADE, related_name="claims")
    metric = models.CharField(max_length=100)
    direction = models.CharField(max_length=16, choices=Direction.choices)
    min_relative_effect = models.FloatField(
        null=True, blank=True, help_text="For increase/decrease: at least this relative change (0.9 = 90%)."
    )
    margin = models.FloatField(
        null=True, blank=True, help_text="For non_inferior: not worse by more than this relative margin."
    )
    threshold_unit = models.CharField(
        max_length=16,
        choices=ThresholdUnit.choices,
        default=ThresholdUnit.RELATIVE,
        help_text="The unit of min_relative_effect and margin: relative to the baseline, or absolute.",
    )
    statement = models.CharField(max_length=500, blank=True)
    version = models.PositiveIntegerField(default=1)
    supersedes = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="superseded_by"
    )
    is_current = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.metric} {self.direction}"
