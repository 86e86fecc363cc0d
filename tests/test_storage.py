"""Storage against a real S3-compatible server on loopback (moto's), and local paths."""

import boto3
import pytest
from moto.server import ThreadedMotoServer

from elborl.errors import UserError
from elborl.storage import StorageOptions, download_dir, exists, read_bytes, upload_dir, write_bytes
from tests.helpers.servers import free_port


@pytest.fixture(scope="module")
def s3():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                 region_name="us-east-1").create_bucket(Bucket="elborl")  # fmt: skip
    yield StorageOptions(endpoint_url=endpoint, key="test", secret="test")
    server.stop()


def test_s3_round_trip(s3):
    write_bytes("s3://elborl/a/b.bin", b"\x00\x01payload", s3)
    assert exists("s3://elborl/a/b.bin", s3)
    assert not exists("s3://elborl/a/missing.bin", s3)
    assert read_bytes("s3://elborl/a/b.bin", s3) == b"\x00\x01payload"
    with pytest.raises(UserError, match=r"s3://elborl/a/missing\.bin: not found"):
        read_bytes("s3://elborl/a/missing.bin", s3)


def test_s3_folder_round_trip(s3, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "x.json").write_text("{}")
    (src / "sub" / "y.png").write_bytes(b"png")
    upload_dir(src, "s3://elborl/run1", s3)
    download_dir("s3://elborl/run1", tmp_path / "dst", s3)
    assert (tmp_path / "dst" / "x.json").read_text() == "{}"
    assert (tmp_path / "dst" / "sub" / "y.png").read_bytes() == b"png"


def test_local_paths_are_atomic_files(tmp_path):
    write_bytes(tmp_path / "d" / "f.txt", b"hello")
    assert read_bytes(tmp_path / "d" / "f.txt") == b"hello"
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["f.txt"]  # no temp file left


def test_unreachable_endpoint_is_a_clear_error():
    dead = StorageOptions(endpoint_url=f"http://127.0.0.1:{free_port()}", key="k", secret="s", connect_timeout=1,
                          retries=1)  # fmt: skip
    with pytest.raises(UserError, match=r"s3://elborl/x: cannot reach the storage at http://127.0.0.1:\d+"):
        write_bytes("s3://elborl/x", b"1", dead)


def test_dvc_remote_on_s3_push_pull_round_trip(tmp_path, s3_server):
    """The documented DVC S3 remote commands, against moto: push, lose the cache and the file, pull."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    endpoint, env = s3_server
    env = {**env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}

    def sh(*args: str) -> str:
        done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
        return done.stdout

    sh("git", "init", "-q")
    sh("dvc", "init", "-q")
    sh("dvc", "remote", "add", "-d", "storage", "s3://elborl/dvcstore")
    sh("dvc", "remote", "modify", "storage", "endpointurl", endpoint)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "model.bin").write_bytes(b"\x00weights" * 1000)
    sh("dvc", "add", "data/model.bin")
    sh("dvc", "push")
    sh("rm", "-rf", ".dvc/cache", "data/model.bin")
    sh("dvc", "pull")
    assert (tmp_path / "data" / "model.bin").read_bytes() == b"\x00weights" * 1000
