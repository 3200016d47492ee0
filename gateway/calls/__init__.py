"""The bridge between front doors and dialogue services: per-turn idempotency."""
