"""Scheduled runs: a Prefect deployment of the whole pipeline (`dvc repro` of the project), served
with the cron schedule of the `schedule` params section against a Prefect server
(`prefect server start`; point PREFECT_API_URL at it).

`dvc repro` keeps the stage graph's caching: a scheduled run re-runs only the stages whose inputs
changed (new params, new prompts, a new base), and each stage's CLI starts its own flow, reported to
the same server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prefect import flow, get_run_logger

from elborl.config import ScheduleConfig
from elborl.errors import UserError


@flow(name="elborl-pipeline")
def pipeline_flow(project_dir: str = ".", targets: list[str] | None = None) -> None:
    """`dvc repro [targets]` in `project_dir`, its output streamed to the run's log.

    Args:
        project_dir: The project (a git + DVC repository with dvc.yaml and params.yaml).
        targets: Stages to reproduce (with their upstream stages); None = all.
    """
    logger = get_run_logger()
    bin_dir = str(Path(sys.executable).parent)  # dvc and elborl from this environment
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = ["dvc", "repro", *(targets or [])]
    logger.info(f"{' '.join(cmd)} in {project_dir}")
    proc = subprocess.Popen(cmd, cwd=project_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        logger.info(line.rstrip())
    if proc.wait() != 0:
        raise RuntimeError(f"dvc repro failed in {project_dir} (exit code {proc.returncode})")


def serve(cfg: ScheduleConfig) -> None:
    """Register the deployment with its cron schedule and run its flow runs until interrupted."""
    project = Path(cfg.project_dir).resolve()
    if not (project / "dvc.yaml").is_file():
        raise UserError(f"schedule.project_dir: expected a folder with dvc.yaml, found {project}")
    if not os.environ.get("PREFECT_API_URL"):
        raise UserError("PREFECT_API_URL: expected the URL of a Prefect server (prefect server start), found none")
    pipeline_flow.serve(name=cfg.name, cron=cfg.cron, parameters={"project_dir": str(project),
                        "targets": cfg.targets or None})  # fmt: skip
