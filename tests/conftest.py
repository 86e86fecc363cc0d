from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from elborl.config import Params
from elborl.world.spec import WorldSpec
from pipeline.cli import main
from tests.helpers.project import make_clone
from tests.helpers.servers import free_port, server_process

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OFFICIAL_METADATA = ROOT / "assets" / "geneval" / "evaluation_metadata.jsonl"


@pytest.fixture
def spec() -> WorldSpec:
    return WorldSpec.from_config(Params().world)


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run the `elborl` CLI in-process: returns (exit code, stdout, stderr)."""

    def run(*args: object) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["elborl", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """One real Prefect server (`prefect server start`) on loopback for the whole session: its API URL,
    also set as PREFECT_API_URL for every process started after this fixture. Without it each CLI
    process of a stage starts its own temporary server (~10 s per process on 2 cores)."""
    root = tmp_path_factory.mktemp("prefect")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(root / "home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    with (
        server_process([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                       f"{api}/health", root / "server.log", env),
        pytest.MonkeyPatch.context() as mp,
    ):  # fmt: skip
        mp.setenv("PREFECT_API_URL", api)
        yield api


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 with a bucket `elborl`: (endpoint, environment with credentials)."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    creds = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                 region_name="us-east-1").create_bucket(Bucket="elborl")  # fmt: skip
    yield endpoint, {**os.environ, **creds, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    server.stop()


def project_env() -> dict:
    """The environment of a project command: the venv's bin first on PATH (dvc.yaml calls `elborl`)."""
    return dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", DVC_NO_ANALYTICS="1")


def sh(*args: str, cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, env=project_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture
def clone(tmp_path, prefect_api):
    """The repository's files (committed or not, minus ignored ones) in a fresh git repository."""
    make_clone(tmp_path)
    assert not (ROOT / "mlruns").exists()
    return tmp_path
