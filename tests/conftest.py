from __future__ import annotations

import sys
from pathlib import Path

import pytest

from elborl.cli import main
from elborl.config import Params
from elborl.world.spec import WorldSpec

ROOT = Path(__file__).resolve().parents[1]
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
def s3_server():
    """moto's S3 server on 127.0.0.1 with a bucket `elborl`: (endpoint, environment with credentials)."""
    import os
    import socket

    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    creds = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                 region_name="us-east-1").create_bucket(Bucket="elborl")  # fmt: skip
    yield endpoint, {**os.environ, **creds, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    server.stop()
