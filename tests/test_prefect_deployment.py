"""`elborl serve`: the pipeline as a Prefect deployment with a cron schedule, against the suite's real Prefect
server on loopback (`prefect_api`); a triggered run of the deployment executes `dvc repro` to completion."""

from __future__ import annotations

import os
import subprocess

import yaml

from tests.conftest import BIN, project_env
from tests.helpers.servers import wait_for


def test_served_deployment_runs_the_pipeline(clone, tmp_path, prefect_api):
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["schedule"].update(name="nightly", cron="30 2 * * *", project_dir=str(clone), targets=["prompts"])
    (clone / "params.yaml").write_text(yaml.safe_dump(params))
    env = project_env()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        served = subprocess.Popen([str(BIN / "elborl"), "serve", "--params", str(clone / "params.yaml")], cwd=clone,
                                  env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        inspect = [str(BIN / "prefect"), "deployment", "inspect", "elborl-pipeline/nightly"]
        wait_for(lambda: subprocess.run(inspect, env=env, capture_output=True).returncode == 0, 180, "the deployment")
        details = subprocess.run(inspect, env=env, capture_output=True, text=True).stdout
        assert "30 2 * * *" in details  # the cron schedule from params

        run = subprocess.run([str(BIN / "prefect"), "deployment", "run", "elborl-pipeline/nightly", "--watch"],
                             env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        assert "COMPLETED" in (run.stdout + run.stderr).upper()
        assert (clone / "data" / "prompts" / "train.jsonl").is_file()  # the stage ran, through dvc repro
        assert "Running stage 'prompts'" in log.read_text()
    finally:
        os.killpg(served.pid, 15)
        served.wait(timeout=60)
