"""schemathesis hooks (SCHEMATHESIS_HOOKS=tests.api.schemathesis_hooks): a fresh Idempotency-Key
for every request that sends a valid one. Keys are per user across all POSTs (as Stripe's), so a
generated key such as "0" reused on another operation is, rightly, a 422 before the view runs:
that would hide the operations behind it. Invalid keys are kept (their 400 is tested)."""

from __future__ import annotations

import re
import uuid

import schemathesis

_VALID = re.compile(r"[\x20-\x7e]{1,255}")


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and _VALID.fullmatch(key):
        headers["Idempotency-Key"] = uuid.uuid4().hex
