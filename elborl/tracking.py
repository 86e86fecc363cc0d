"""MLflow tracking and registry through an explicit client and explicit run ids.

MLflow's "active run" is per thread; Prefect tasks run on worker threads, so everything here takes
the run id as an argument. The tracking URI defaults to a SQLite file in the project (never the
deprecated ./mlruns file store); an `http://` URI talks to `mlflow server`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from elborl.errors import UserError

DEFAULT_URI = "sqlite:///mlflow.db"


def client(uri: str = DEFAULT_URI, artifact_root: str | Path | None = None):
    """An MlflowClient for tracking and registry at `uri`.

    Args:
        uri: `sqlite:///path.db` or `http://host:port`.
        artifact_root: Where new experiments keep artifacts (local or s3://) for a SQLite store.

    Raises:
        UserError: A file-store URI (./mlruns) or a server that cannot be reached.
    """
    if not (uri.startswith("sqlite:///") or uri.startswith("http://") or uri.startswith("https://")):
        raise UserError(f"tracking uri: expected sqlite:///FILE or http(s)://HOST:PORT, found {uri!r}")
    # Fail fast on a dead server instead of MLflow's minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    from mlflow.tracking import MlflowClient

    if artifact_root is None and uri.startswith("sqlite:///"):
        # Artifacts beside the database (MLflow's own default would be ./mlruns in the working folder).
        artifact_root = (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    c._elborl_artifact_root = str(artifact_root) if artifact_root else None  # our own attributes
    c._elborl_uri = uri
    if uri.startswith("http"):
        try:
            c.search_experiments(max_results=1)
        except Exception as err:  # MlflowException wraps the connection error
            raise UserError(f"{uri}: cannot reach the MLflow server ({err.__class__.__name__})") from None
    return c


class TrackingUnreachable(UserError):
    """The MLflow server stopped answering mid-run: a transient fault (the epoch is retried, then the run
    stops with this error; finished epochs are cached, so rerunning the command continues)."""


@contextmanager
def reaching(c, what: str) -> Iterator[None]:
    """Turn MLflow's connection failures inside the block into one clear `TrackingUnreachable`."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, OSError) as err:
        uri = getattr(c, "_elborl_uri", "the tracking server")
        msg = f"{uri}: cannot reach the MLflow server while {what} ({err.__class__.__name__}); finished epochs "
        raise TrackingUnreachable(msg + "are cached: rerun the same command once it answers") from None


def start_run(c, experiment: str, params: dict, run_name: str | None = None) -> str:
    """Create (or reuse) the experiment, open a run, log flattened params; returns the run id."""
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        root = getattr(c, "_elborl_artifact_root", None)
        exp_id = c.create_experiment(experiment, artifact_location=f"{root}/{experiment}" if root else None)
    else:
        exp_id = exp.experiment_id
    run = c.create_run(exp_id, run_name=run_name)
    for key, value in flatten(params).items():
        c.log_param(run.info.run_id, key, value)
    return run.info.run_id


def resume_or_start_run(c, experiment: str, params: dict, key: str, run_name: str | None = None) -> str:
    """The run tagged `elborl.run_key = key` if one exists (a resumed training run keeps its MLflow run),
    else a new one with that tag; returns the run id."""
    exp = c.get_experiment_by_name(experiment)
    if exp is not None:
        runs = c.search_runs([exp.experiment_id], f"tags.`elborl.run_key` = '{key}'", max_results=1,
                             order_by=["attributes.start_time DESC"])  # fmt: skip
        if runs:
            c.update_run(runs[0].info.run_id, status="RUNNING")
            return runs[0].info.run_id
    run_id = start_run(c, experiment, params, run_name)
    c.set_tag(run_id, "elborl.run_key", key)
    return run_id


def flatten(params: dict, prefix: str = "") -> dict[str, str]:
    """{"train": {"lr": 1e-4}} -> {"train.lr": "0.0001"}."""
    out: dict[str, str] = {}
    for k, v in params.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


def log_metrics(c, run_id: str, metrics: dict, step: int) -> None:
    """Log every numeric entry (nested dicts flattened with dots) at `step`.

    Raises:
        TrackingUnreachable: The server stopped answering.
    """
    with reaching(c, f"logging step {step}"):
        for key, value in flatten_numbers(metrics).items():
            c.log_metric(run_id, key, value, step=step)


def flatten_numbers(metrics: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            out.update(flatten_numbers(v, f"{prefix}{k}."))
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


def register(c, run_id: str, name: str, source: str, scores: dict, alias: str = "champion") -> tuple[str, bool]:
    """Register `source` (a logged artifact URI) as a new version of model `name`, tag it with its
    GenEval scores, and move `alias` to it when its `overall` beats the current holder's.

    Returns:
        (version, promoted).
    """
    from mlflow.exceptions import MlflowException

    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(name)
    version = c.create_model_version(name, source, run_id=run_id, tags={
        f"geneval.{k}": f"{v:.4f}" for k, v in flatten_numbers(scores).items()
    }).version  # fmt: skip
    try:
        holder = c.get_model_version_by_alias(name, alias)
        best = float(holder.tags.get("geneval.overall", "-inf"))
    except MlflowException:
        best = float("-inf")
    promoted = float(scores["overall"]) > best
    if promoted:
        c.set_registered_model_alias(name, alias, version)
    return str(version), promoted


def compare(c, name: str, alias: str = "champion") -> list[dict]:
    """The registered versions of `name`, newest first: version, alias mark, GenEval tags, run params."""
    holder = None
    try:
        holder = str(c.get_model_version_by_alias(name, alias).version)
    except Exception:  # no alias yet
        holder = None
    rows = []
    for mv in sorted(c.search_model_versions(f"name='{name}'"), key=lambda m: -int(m.version)):
        params = c.get_run(mv.run_id).data.params if mv.run_id else {}
        rows.append({"version": str(mv.version), alias: str(mv.version) == holder,
                     **{k.removeprefix("geneval."): float(v) for k, v in mv.tags.items() if k.startswith("geneval.")},
                     "params": params})  # fmt: skip
    return rows
