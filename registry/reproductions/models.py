import uuid

from django.conf import settings
from django.db import models

from registry.findings.models import Finding


class MetricDefinition(models.Model):
    """A metric as declared by a plugin version: the registry's metric catalogue."""

    class Axis(models.TextChoices):
        SAFETY = "safety"
        CAPABILITY = "capability"
        DIAGNOSTIC = "diagnostic"

    plugin = models.CharField(max_length=100)
    name = models.CharField(max_length=100)
    version = models.PositiveIntegerField(default=1)
    plugin_version = models.CharField(max_length=50)
    axis = models.CharField(max_length=16, choices=Axis.choices)
    higher_is_better = models.BooleanField()
    unit = models.CharField(max_length=50, blank=True)
    description = models.TextField(blank=True)
    # plugins.sdk.Scale: "ratio" | "proportion" | "difference" (how effects are computed).
    scale = models.CharField(max_length=16, default="difference")
    # Time to an event: values may be censored ("not reached within the budget").
    time_to_event = models.BooleanField(default=False)

    class Meta:
        ordering = ["plugin", "name", "version"]
        constraints = [
            models.UniqueConstraint(fields=["plugin", "name", "version"], name="unique_metric_version")
        ]

    def __str__(self) -> str:
        return f"{self.plugin}.{self.name} v{self.version} ({self.axis})"


class Experiment(models.Model):
    class Device(models.TextChoices):
        CPU = "cpu"
        GPU = "gpu"

    finding = models.ForeignKey(Finding, on_delete=models.CASCADE, related_name="experiments")
    plugin = models.CharField(max_length=100)
    # What sets this experiment apart from the finding's others (e.g. "plain MSE loss"); optional.
    label = models.CharField(max_length=200, blank=True, default="")
    plugin_version_constraint = models.CharField(max_length=100, blank=True)
    params = models.JSONField(default=dict)
    default_seeds = models.PositiveIntegerField(default=3)
    device = models.CharField(max_length=8, choices=Device.choices, default=Device.CPU)
    time_limit_s = models.PositiveIntegerField(default=600)
    # Memory limit of each run's process; null: the worker's RUN_MEMORY_LIMIT_MB (0: none).
    memory_limit_mb = models.PositiveIntegerField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    # A retracted experiment is kept for the record but excluded from effects.
    retracted_at = models.DateTimeField(null=True, blank=True)
    retraction_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["id"]
        # the findings filter ?plugin= and the landscape's per-plugin views look experiments up by plugin
        indexes = [
            models.Index(fields=["plugin"], name="experiment_plugin"),
            # the landscape's data version counts retracted experiments on every read: a few rows
            # of this partial index instead of a scan of every experiment
            models.Index(fields=["retracted_at"], name="experiment_retracted",
                         condition=models.Q(retracted_at__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.plugin} experiment #{self.pk} of finding {self.finding_id}"


class Reproduction(models.Model):
    class Source(models.TextChoices):
        REGISTRY = "registry"
        SELF_REPORTED = "self_reported"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="reproductions")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    seeds = models.JSONField(default=list)
    device = models.CharField(max_length=8, choices=Experiment.Device.choices, default=Experiment.Device.CPU)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.REGISTRY)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        # quota counts: a user's runs by request time (registry.reproductions.quotas)
        indexes = [models.Index(fields=["requested_by", "created_at"], name="reproduction_user_created")]

    def __str__(self) -> str:
        return f"reproduction #{self.pk} ({len(self.seeds)} seeds)"


class Run(models.Model):
    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        TIMED_OUT = "timed_out"
        CANCELLED = "cancelled"

    reproduction = models.ForeignKey(Reproduction, on_delete=models.CASCADE, related_name="runs")
    seed = models.IntegerField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    queue = models.CharField(max_length=16, default="cpu")
    attempts = models.PositiveIntegerField(default=0)
    claim_token = models.UUIDField(null=True, blank=True)
    progress = models.FloatField(default=0.0)
    progress_message = models.CharField(max_length=300, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    worker_host = models.CharField(max_length=200, blank=True)
    batch_size = models.PositiveSmallIntegerField(
        default=1,
        help_text="How many runs this attempt's process trains as one batched model (seeds in parallel, "
        "RUN_BATCH_SEEDS); the attempt may take this many times the experiment's time limit.",
    )
    plugin_version = models.CharField(max_length=50, blank=True)
    requested_plugin_version = models.CharField(
        max_length=50, blank=True,
        help_text="The plugin version installed on the server when the run was requested (a worker with another "
        "version refuses the run); for a self-reported run, the version it declares. Empty for runs older than it.",
    )
    hardware = models.CharField(max_length=200, blank=True, help_text="'cpu' or the GPU model used.")
    environment = models.JSONField(default=dict, blank=True)
    logs = models.TextField(blank=True)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["state", "heartbeat_at"])]

    def __str__(self) -> str:
        return f"run #{self.pk} seed {self.seed} ({self.state})"

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def self_reported(self) -> bool:
        return self.reproduction.source == Reproduction.Source.SELF_REPORTED


TERMINAL_STATES = frozenset(
    {Run.State.SUCCEEDED, Run.State.FAILED, Run.State.TIMED_OUT, Run.State.CANCELLED}
)


class Measurement(models.Model):
    """One value of one run. Sized for 10^8 rows (README, "Measurements at scale"): the one index
    is the unique (run, arm, metric) b-tree, which *includes* metric_version, value and censored, so
    the effects query (``registry.effects.services._measurement_rows``: the finding's experiments ->
    reproductions -> runs by their foreign-key indexes, then each run's measurements) is an
    index-only scan of this index, never a visit to the table's heap; its leading column serves the
    foreign key (lookups by run, cascade deletes), so the run column has no index of its own
    (10^8 rows: one index fewer to write on every insert and ~2 GB less to cache)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="measurements", db_index=False)
    arm = models.CharField(max_length=50)
    metric = models.CharField(max_length=100)
    metric_version = models.PositiveIntegerField(default=1)
    value = models.FloatField()
    # True: the event did not happen within the budget; ``value`` is the budget (a lower bound).
    censored = models.BooleanField(default=False)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "arm", "metric"], include=["metric_version", "value", "censored"],
                name="unique_measurement_covering",
            )
        ]

    def __str__(self) -> str:
        return f"{self.arm}.{self.metric} = {self.value}"


def _artifact_id() -> str:
    return uuid.uuid4().hex


class Artifact(models.Model):
    """A file a run produced, stored content-addressed under ARTIFACT_ROOT/sha256[:2]/sha256."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="artifacts")
    name = models.CharField(max_length=200)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    content_type = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)
    # The run's state when the artifact was stored: anything but "succeeded" (failed, timed_out,
    # cancelled) marks what a run left when it did not finish: partial.
    run_state = models.CharField(max_length=16, default="succeeded")

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="unique_artifact_name")]

    def __str__(self) -> str:
        return self.name

    @property
    def partial(self) -> bool:
        return self.run_state != "succeeded"


class RunSeries(models.Model):
    """One training curve of one run: ``ctx.log_series(name, step, value, arm=arm)``'s points,
    bounded as interp_registry.series says (at most 10,000 points, thinned beyond; ``logged``
    says how many were logged). One row per (run, arm, name), bulk-created with the run's result."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="series", db_index=False)
    arm = models.CharField(max_length=50)
    name = models.CharField(max_length=100)
    steps = models.JSONField(default=list)  # integers, increasing
    values = models.JSONField(default=list)  # finite floats, as many as steps
    logged = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["run", "arm", "name"], name="unique_run_series")]

    def __str__(self) -> str:
        return f"{self.arm}.{self.name} ({len(self.steps)} points)"


class WorkerPresence(models.Model):
    """Last time a worker consuming some queues said it was alive (to tell 'no GPU worker')."""

    hostname = models.CharField(max_length=200, unique=True)
    queues = models.JSONField(default=list)
    hardware = models.CharField(max_length=200, blank=True)
    last_seen = models.DateTimeField()

    def __str__(self) -> str:
        return self.hostname


class UserQuota(models.Model):
    """A user's quota row: staff overrides of the default caps (null: the QUOTA_* setting), and the
    row a quota check locks (SELECT ... FOR UPDATE) so that concurrent requests are counted in turn.
    Created on a user's first request, or by staff raising a cap."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="run_quota")
    active_runs = models.PositiveIntegerField(
        null=True, blank=True, help_text="Cap on queued + running runs; empty: QUOTA_ACTIVE_RUNS."
    )
    runs_per_day = models.PositiveIntegerField(
        null=True, blank=True, help_text="Cap on runs requested in any 24 hours; empty: QUOTA_RUNS_PER_DAY."
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"quota of user {self.user_id}"


class RunsRequestedHour(models.Model):
    """How many runs a user requested in one clock hour (by their reproduction's ``created_at``):
    the daily quota sums the window's whole hours from these rows instead of counting the user's
    runs, so its check costs the same at run 10 and run 100,000 (``registry.reproductions.quotas``).
    Written under the user's quota lock; the user's rows older than the window are deleted as one of
    their new hours starts. A run deleted later stays counted until its hour becomes the window's
    partial first hour, which is counted from the runs themselves."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    hour = models.DateTimeField(help_text="The start of the clock hour (UTC).")
    runs = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "hour"], name="runs_requested_hour_unique")]

    def __str__(self) -> str:
        return f"{self.runs} runs of user {self.user_id} in the hour from {self.hour:%Y-%m-%d %H:00}"
