"""Prefect flows and deployments that run the DVC stages (docs/ARCHITECTURE.md section 5)."""

import os

# No telemetry from a machine that may have no internet (Prefect's temporary server would log a
# failed heartbeat on every run).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
