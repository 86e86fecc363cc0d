"""`elborl serve`: the pipeline as a Prefect deployment with a cron schedule, against a real Prefect
server on loopback; a triggered run of the deployment executes `dvc repro` to completion."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def test_served_deployment_runs_the_pipeline(clone, tmp_path):
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["schedule"].update(name="nightly", cron="30 2 * * *", project_dir=str(clone), targets=["prompts"])
    (clone / "params.yaml").write_text(yaml.safe_dump(params))
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": api, "DVC_NO_ANALYTICS": "1",
           "PATH": f"{BIN}:{os.environ['PATH']}", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}  # fmt: skip
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    served = None
    try:
        _wait(lambda: _healthy(api), 180, "the Prefect server")
        served = subprocess.Popen([str(BIN / "elborl"), "serve", "--params", str(clone / "params.yaml")], cwd=clone,
                                  env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        inspect = [str(BIN / "prefect"), "deployment", "inspect", "elborl-pipeline/nightly"]
        _wait(lambda: subprocess.run(inspect, env=env, capture_output=True).returncode == 0, 180, "the deployment")
        details = subprocess.run(inspect, env=env, capture_output=True, text=True).stdout
        assert "30 2 * * *" in details  # the cron schedule from params

        run = subprocess.run([str(BIN / "prefect"), "deployment", "run", "elborl-pipeline/nightly", "--watch"],
                             env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        assert "COMPLETED" in (run.stdout + run.stderr).upper()
        assert (clone / "data" / "prompts" / "train.jsonl").is_file()  # the stage ran, through dvc repro
        assert "Running stage 'prompts'" in (tmp_path / "server.log").read_text()
    finally:
        for proc in (served, server):
            if proc is not None:
                os.killpg(proc.pid, 15)
                proc.wait(timeout=60)
