"""Prefect flows composing the pipeline steps, schedules, and the ``bindset`` CLI."""

import os

# Prefect's ephemeral API server (used when no PREFECT_API_URL is set) migrates a fresh SQLite
# database on first start; 20 s (Prefect's default) is not enough on a busy 2-core machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
