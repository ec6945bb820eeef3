"""Idempotency keys on the API's POSTs (as Stripe does): see ``middleware``."""
