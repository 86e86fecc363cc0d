"""MLflow against a real SQLite-backed store: runs, metrics, registry versions and the champion alias."""

import sys
import uuid
from pathlib import Path

import pytest

from elborl.errors import UserError
from elborl.tracking import client, compare, log_metrics, register, start_run
from tests.helpers.servers import free_port, server_process


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on loopback, backed by SQLite: its URL."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root}/db.sqlite",
           "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]  # fmt: skip
    with server_process(cmd, f"{url}/health", root / "server.log"):
        yield url


@pytest.fixture(params=["sqlite", "server"])
def mlflow_client(request, tmp_path):
    if request.param == "server":
        return client(request.getfixturevalue("mlflow_server"))
    return client(f"sqlite:///{tmp_path}/mlflow.db", artifact_root=tmp_path / "artifacts")


def test_runs_metrics_and_params(mlflow_client):
    run = start_run(mlflow_client, "embedded", {"train": {"lr": 1e-4, "objective": "epg"}})
    for step in range(3):
        log_metrics(mlflow_client, run, {"reward": 0.1 * step, "per_tag": {"colors": 0.5}, "note": "x"}, step)
    data = mlflow_client.get_run(run).data
    assert data.params == {"train.lr": "0.0001", "train.objective": "epg"}
    history = mlflow_client.get_metric_history(run, "reward")
    assert [m.step for m in history] == [0, 1, 2] and history[-1].value == pytest.approx(0.2)
    assert data.metrics["per_tag.colors"] == 0.5 and "note" not in data.metrics


def test_registry_champion_moves_only_on_improvement(mlflow_client, tmp_path):
    name = f"tiny-{uuid.uuid4().hex[:6]}"  # the server is shared by the module's tests
    run_a = start_run(mlflow_client, "embedded", {"train": {"objective": "epg"}})
    run_b = start_run(mlflow_client, "embedded", {"train": {"objective": "grpo"}})

    def source(run: str) -> str:  # a server accepts only sources inside the run's artifacts
        return f"{mlflow_client.get_run(run).info.artifact_uri}/model"

    v1, p1 = register(mlflow_client, run_a, name, source(run_a), {"overall": 0.6, "per_tag": {"colors": 0.9}})
    v2, p2 = register(mlflow_client, run_b, name, source(run_b), {"overall": 0.5})
    v3, p3 = register(mlflow_client, run_b, name, source(run_b), {"overall": 0.7})
    assert (p1, p2, p3) == (True, False, True)
    assert str(mlflow_client.get_model_version_by_alias(name, "champion").version) == v3
    rows = compare(mlflow_client, name)
    assert [r["version"] for r in rows] == [v3, v2, v1]
    assert [r["champion"] for r in rows] == [True, False, False]
    assert rows[2]["overall"] == 0.6 and rows[2]["per_tag.colors"] == 0.9
    assert rows[1]["params"]["train.objective"] == "grpo"


def test_file_store_and_dead_server_are_refused(tmp_path):
    with pytest.raises(UserError, match="expected sqlite:///FILE or http"):
        client("./mlruns")
    with pytest.raises(UserError, match="cannot reach the MLflow server"):
        client("http://127.0.0.1:9")


def test_compare_cli(cli, tmp_path):
    import yaml

    from tests.conftest import ROOT

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["tracking"]["uri"] = uri
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    code, out, _ = cli("compare", "--params", tmp_path / "params.yaml")
    assert code == 0 and "no registered versions of 'elborl-tiny'" in out
    c = client(uri)
    run = start_run(c, "embedded", {"train": {"objective": "pepg", "lr": 1e-4}})
    register(c, run, "elborl-tiny", str(tmp_path), {"overall": 0.5, "per_tag": {"colors": 0.25}})
    code, out, _ = cli("compare", "--params", tmp_path / "params.yaml")
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].startswith("version | champion | overall | per_tag.colors")
    assert lines[1].split(" | ")[:4] == ["1", "*", "0.500", "0.250"] and "pepg" in lines[1]


def test_a_server_that_stops_answering_mid_run_is_one_clear_error():
    """A server that answered when the run started, then died: logging raises TrackingUnreachable (a
    UserError the CLI prints as one line, and a transient fault the epoch task retries)."""
    import http.server
    import threading

    from elborl.tracking import TrackingUnreachable, log_metrics

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # search_experiments: an empty answer is a reachable server
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    c = client(uri)
    server.shutdown()
    server.server_close()
    with pytest.raises(TrackingUnreachable, match=f"{uri}: cannot reach the MLflow server while logging step 1"):
        log_metrics(c, "run-id", {"reward_mean": 0.5}, step=1)
