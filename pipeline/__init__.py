"""Prefect flows and deployments that run the DVC stages (ARCHITECTURE.md section 5)."""
