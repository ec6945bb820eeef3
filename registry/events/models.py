from django.conf import settings
from django.db import models


class WritingTransactionId(models.Func):
    """Column default of ``Event.txid``: the writing transaction's id on PostgreSQL
    (``pg_current_xact_id()``, the top-level transaction's even inside a savepoint, as a bigint),
    0 elsewhere (SQLite serialises writers: see ``registry.events.cursor``)."""

    output_field = models.BigIntegerField()

    def as_sql(self, compiler, connection, **extra_context):
        return "0", []

    def as_postgresql(self, compiler, connection, **extra_context):
        return "(pg_current_xact_id()::text::bigint)", []


class Event(models.Model):
    """Append-only log, written in the same transaction as the change it describes.

    Readers never order by ``id`` alone (ids are allocated at insert and become visible at commit,
    out of order): they read through ``registry.events.cursor.events_after``, which orders by
    ``(txid, id)`` and stops at the oldest transaction that may still commit. ``?after=<id>``
    stays an event id; its position is that event's ``(txid, id)``.
    """

    type = models.CharField(max_length=64)
    finding_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    plugin = models.CharField(max_length=100, blank=True)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    # The writing transaction (PostgreSQL xid8 as a bigint; 0 on SQLite), set by the database.
    txid = models.BigIntegerField(db_default=WritingTransactionId(), editable=False)
    # Who could read the finding when its ``finding.deleted`` event was written (set by
    # ``event_emit`` for that type only): everyone (``audience_public``) or these users. Once the
    # finding is gone this is what the visibility rule goes on for all of its events
    # (``registry.events.cursor``, ``registry.events.services._visible_ids``).
    audience_public = models.BooleanField(null=True, blank=True, editable=False)
    audience = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="+", editable=False)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["type"]), models.Index(fields=["txid", "id"], name="events_event_cursor")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.type}"


class Subscription(models.Model):
    """A subscriber's standing request for events: one filter (finding, tag, plugin, or all when
    none is set), optional event types (empty = all) and a channel."""

    class Channel(models.TextChoices):
        WEBHOOK = "webhook"
        FEED = "feed"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="subscriptions")
    name = models.CharField(max_length=200)
    # SET_NULL, not CASCADE: a follower must outlive the finding to receive its ``finding.deleted``.
    # ``finding_ref`` keeps the followed finding's id after that (matching goes on it; ids are never
    # reused, so once the finding is gone the subscription matches nothing new).
    finding = models.ForeignKey(
        "findings.Finding", null=True, blank=True, on_delete=models.SET_NULL, related_name="subscriptions"
    )
    finding_ref = models.BigIntegerField(null=True, blank=True, db_index=True)
    tag = models.CharField(max_length=64, blank=True)
    plugin = models.CharField(max_length=100, blank=True)
    event_types = models.JSONField(default=list, blank=True)
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.WEBHOOK)
    url = models.CharField(max_length=2000, blank=True)
    secret = models.CharField(max_length=128, blank=True)
    # After a rotation the former secret still signs deliveries (a second signature) until then.
    previous_secret = models.CharField(max_length=128, blank=True)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    active = models.BooleanField(default=True)
    # Automatic disabling (registry.events.webhooks): failed delivery attempts in a row, when the
    # first of them happened, and why/when the registry turned the subscription off (empty/None
    # unless it did; PATCH {"active": true} clears all four).
    consecutive_failures = models.PositiveIntegerField(default=0)
    failing_since = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=500, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    # Events up to this id predate the subscription and are never delivered to it.
    after_event_id = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["channel", "active"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.channel})"


class Delivery(models.Model):
    """One event sent (or to be sent) to one webhook subscription, with its retry state."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="deliveries")
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    attempts = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    last_status_code = models.IntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Latency of the latest attempt (ms), for the delivery list; every attempt is in ``attempt_log``.
    last_latency_ms = models.FloatField(null=True, blank=True)
    # The lease: while set and in the future, one sender (a sweep) is sending an attempt of this
    # delivery; nobody else claims it and a redelivery is refused until it is recorded.
    claimed_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["subscription", "event"], name="events_delivery_once_per_event")
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"delivery #{self.pk} of event #{self.event_id} to subscription #{self.subscription_id}"


class DeliveryAttempt(models.Model):
    """One attempt of a delivery, as the subscription's owner sees it in the delivery log: the
    answer's status code, the latency, the first ``DELIVERY_RESPONSE_LOG_BYTES`` of the answer's
    body (text, control characters stripped) and the error."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    status_code = models.IntegerField(null=True, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    response_body = models.TextField(blank=True)
    error = models.TextField(blank=True)
    attempted_at = models.DateTimeField()

    class Meta:
        ordering = ["delivery", "number", "id"]
        indexes = [models.Index(fields=["delivery", "number"])]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery #{self.delivery_id}"


class DeliveryCursor(models.Model):
    """Singleton (pk=1): the event id up to which the webhook sweep has matched events."""

    last_event_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"delivery cursor at #{self.last_event_id}"
