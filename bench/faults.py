"""Fault-injection benchmark: what a kill, an outage or a damaged file costs the `train` stage and `dvc repro`.

Every fault runs the real command line (`python -m pipeline.cli train ...`, `dvc repro`) as a subprocess
against real servers on loopback (Prefect, moto's S3, `mlflow server`), with the tiny params of
tests/test_train_pipeline.py over the shipped base `assets/base`, and every run that ends is compared with
one uninterrupted run (the reference): run.json's digest (sha256 of every weight, optimizer and EMA
tensor), every file of out/model byte for byte, history.csv (timings aside), MLflow's reward_mean per epoch.

Faults (the table's rows):
  1. SIGKILL of the train CLI's process group at `--kills` moments drawn uniformly over the reference run's
     wall time; after each kill the same command runs again (and may be killed again) until it ends.
  2. SIGKILL of `dvc repro` in a temporary git clone of the project, then `dvc repro` again.
  3. S3 (moto, in-process, stopped and restarted on its port: its buckets live in the process and survive a
     restart): down briefly mid-run, down until restarted; checkpoint files truncated / bit-flipped (local
     and S3); a cached epoch result left empty (what a SIGKILL inside Prefect's result write leaves).
  4. `mlflow server` down at start, and killed mid-run then restarted.
  5. Numerical faults: unit level (tests/test_faults.py), run with pytest.

Definitions. data lost: an epoch checkpoint or cached epoch result that existed (complete) before a fault
and is later gone or changed, beyond what `train.keep_checkpoints` prunes; or an epoch whose metrics are
missing from MLflow at the end. Epochs of work lost per fault: the epochs completed before it (the highest
complete checkpoint) minus the epochs the next run replayed from the cache ("Finished in state Cached").

    python bench/faults.py --out bench/results/faults     # full: ~20-30 min on 2 cores
    python bench/faults.py --quick                         # 3 kills, SIGKILL only (tests/test_fault_injection.py)
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import hashlib
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/faults.py` from anywhere

from elborl import storage
from elborl.config import Params
from elborl.storage import StorageOptions
from stages.prompts import run_stage as write_prompts
from stages.train import folder_digest
from tests.helpers.servers import free_port, healthy, server_process, wait_for

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BASE = ROOT / "assets" / "base"
SMALL_TRAIN = {"prompts_per_epoch": 2, "group_size": 2, "steps": 2, "eval_every": 2, "eval_min_images_per_tag": 1,
               "lr": 1e-4}  # fmt: skip
KEEP = 2  # train.keep_checkpoints (the default)
S3_CREDS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "elborl"

EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+): reward")
CACHED = re.compile(r"Task run 'epoch-(\d+)' - Finished in state Cached")
COMPLETED = re.compile(r"Task run 'epoch-(\d+)' - Finished in state Completed")
STAMP = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) \|", re.M)


def say(msg: str) -> None:
    """A progress line."""
    print(f"[faults {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- projects and runs -------------------------------------------------------------------------------


def make_project(root: Path, checkpoints: str, epochs: int, endpoint: str | None = None,
                 tracking: str | None = None) -> Path:  # fmt: skip
    """A params file and prompts folder for the tiny train run (like tests/test_train_pipeline.py's `_project`)."""
    params = {"prompts": {"test_size": 12, "train_size": 40},
              "train": {**SMALL_TRAIN, "epochs": epochs, "checkpoints": checkpoints, "keep_checkpoints": KEEP},
              "storage": {"endpoint_url": endpoint, "retries": 1, "connect_timeout": 1},
              "tracking": {"uri": tracking or f"sqlite:///{root / 'mlflow.db'}"}}  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with contextlib.redirect_stdout(io.StringIO()):  # its summary lines
        write_prompts(Params.model_validate(params), root / "prompts")
    return root


def train_cmd(project: Path, epochs: int | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "pipeline.cli", "train", "--params", str(project / "params.yaml"), "--prompts",
           str(project / "prompts"), "--base", str(BASE), "--out", str(project / "out")]  # fmt: skip
    return cmd + (["--epochs", str(epochs)] if epochs else [])


def train_env(**extra: str) -> dict:
    """The CLI's environment (PREFECT_API_URL is set by `prefect_api` by then)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **extra}


@dataclass
class Run:
    """One process of a command: exit code (None: killed by us), wall seconds, its log."""

    rc: int | None
    seconds: float
    log: str
    started: float

    @property
    def cached(self) -> int:
        return len(CACHED.findall(self.log))

    @property
    def completed(self) -> int:
        return len(COMPLETED.findall(self.log))

    def error(self) -> str:
        """The line that says why it failed: the CLI's `error:` line, else the last exception line."""
        lines = [ln for ln in self.log.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error:")]
        if errors:
            return errors[-1][:400]
        raised = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Unreachable|Checkpoint)\b", ln)]
        return (raised[-1] if raised else (lines[-1] if lines else ""))[:400]


def launch(cmd: list[str], log: Path, env: dict, cwd: Path = ROOT) -> subprocess.Popen:
    """Start `cmd` in a session of its own (so a kill reaches everything it started), logging to `log`."""
    with log.open("w") as out:
        return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, log: Path, started: float, timeout: float | None = None,
           kill_at: float | None = None) -> Run:  # fmt: skip
    """Wait for `proc`; with `kill_at`, SIGKILL its process group that many seconds after `started`
    (rc None) unless it ended before."""
    try:
        wait = timeout if kill_at is None else max(0.0, started + kill_at - time.time())
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return Run(None, time.time() - started, log.read_text(errors="replace"), started)
    return Run(proc.returncode, time.time() - started, log.read_text(errors="replace"), started)


def run(cmd: list[str], log: Path, env: dict, kill_at: float | None = None, cwd: Path = ROOT,
        timeout: float = 900) -> Run:  # fmt: skip
    """Run `cmd` to its end, or SIGKILL it `kill_at` seconds after its start."""
    started = time.time()
    return finish(launch(cmd, log, env, cwd), log, started, timeout, kill_at)


def wait_line(proc: subprocess.Popen, log: Path, pattern: str, timeout: float = 600) -> bool:
    """Poll `log` until `pattern` (a regex) appears; False if the process ended first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if re.search(pattern, log.read_text(errors="replace")):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


# --- what a run left: outputs, checkpoints, cached results, MLflow ----------------------------------------


def file_digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def history(path: Path) -> list[dict]:
    with path.open() as f:
        return [{k: v for k, v in row.items() if not k.endswith("_s")} for row in csv.DictReader(f)]


@dataclass
class Reference:
    """The uninterrupted run: what every resumed run must end on."""

    digest: str
    run_key: str
    model: dict[str, str]
    history: list[dict]
    seconds: float
    epoch_s: list[tuple[float, float]]  # (rollout_s, update_s) per epoch, to place a kill inside an epoch
    log: str
    epochs_window: tuple[float, float]  # seconds after the start: the flow's first line to its last epoch line


def reference(work: Path, epochs: int, env: dict) -> Reference:
    """Run the train CLI once without faults and keep what it ended on."""
    project = make_project(work / "reference", str(work / "reference" / "ckpt"), epochs)
    done = run(train_cmd(project), work / "reference.log", env)
    if done.rc != 0:
        raise SystemExit(f"the reference run failed ({done.rc}): {done.error()}")
    out = project / "out"
    with (out / "history.csv").open() as f:
        timing = [(float(r["rollout_s"]), float(r["update_s"])) for r in csv.DictReader(f)]
    run_json = json.loads((out / "run.json").read_text())
    return Reference(run_json["digest"], run_json["run_key"], file_digests(out / "model"), history(out / "history.csv"),
                     done.seconds, timing, done.log, epochs_window(done))  # fmt: skip


def epochs_window(done: Run) -> tuple[float, float]:
    """When a run trained: from its "train: run" line to its last epoch line, in seconds after its start."""
    start = dt.datetime.fromtimestamp(done.started)
    zero = start.hour * 3600 + start.minute * 60 + start.second + start.microsecond / 1e6
    lines = [ln for ln in done.log.splitlines() if "train: run " in ln or EPOCH_LINE.search(ln)]
    stamps = [(clock_of(m) - zero) % 86400 for ln in lines if (m := STAMP.match(ln))]
    return (stamps[0], stamps[-1]) if stamps else (0.0, done.seconds)


def model_diffs(ref: Reference, project: Path) -> list[str]:
    """out/model files that are not byte-equal to the reference's (missing or extra ones included)."""
    folder = project / "out" / "model"
    files = file_digests(folder) if folder.is_dir() else {}
    return sorted(k for k in ref.model.keys() | files.keys() if ref.model.get(k) != files.get(k))


def compare(ref: Reference, project: Path) -> list[str]:
    """How the project's outputs differ from the reference in what the run computes: run.json's digest, the
    weights (every *.safetensors of out/model, byte for byte), history.csv (empty: equal). Other files of
    out/model are reported by `side_files`."""
    out = project / "out"
    if not (out / "run.json").is_file():
        return ["no out/run.json"]
    diffs = []
    if json.loads((out / "run.json").read_text())["digest"] != ref.digest:
        diffs.append("run.json digest differs")
    diffs += [f"out/model/{f} differs" for f in model_diffs(ref, project) if f.endswith(".safetensors")]
    if history(out / "history.csv") != ref.history:
        diffs.append("history.csv differs")
    return diffs


def side_files(ref: Reference, project: Path) -> list[str]:
    """out/model files other than the weights that are not byte-equal to the reference's."""
    return [f for f in model_diffs(ref, project) if not f.endswith(".safetensors")]


def mlflow_gaps(uri: str, project: Path, epochs: int) -> list[int]:
    """Epochs (1-based steps) without a reward_mean in the MLflow run that run.json names."""
    from mlflow.tracking import MlflowClient

    run_id = json.loads((project / "out" / "run.json").read_text())["mlflow_run_id"]
    steps = {m.step for m in MlflowClient(tracking_uri=uri).get_metric_history(run_id, "reward_mean")}
    return [e for e in range(1, epochs + 1) if e not in steps]


def result_key(blob: bytes) -> str:
    """What a cached epoch result says (timings aside), as a short hash; 'unreadable' when it does not parse."""
    try:
        payload = json.loads(json.loads(blob)["result"])
    except (ValueError, KeyError, TypeError):
        return "unreadable"
    payload["metrics"] = {k: v for k, v in payload["metrics"].items() if not k.endswith("_s")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def snapshot(root: str, options: StorageOptions | None = None) -> dict:
    """The run's checkpoint folder (local or s3://): each cached result's key, each complete checkpoint's
    file digest (None for a folder without state.json)."""
    fs, path = storage.filesystem(root, options)
    snap: dict = {"results": {}, "checkpoints": {}}
    if not fs.exists(path):
        return snap
    files: dict[str, list[str]] = {}
    for f in sorted(fs.find(path)):
        rel = f[len(path.rstrip("/")) + 1 :]
        if rel.startswith("results/"):
            snap["results"][rel.split("/", 1)[1]] = result_key(fs.cat_file(f))
        elif rel.startswith("epoch_"):
            folder, name = rel.split("/", 1)
            files.setdefault(folder, []).append(name)
    for folder, names in files.items():
        h = hashlib.sha256()
        for name in sorted(names):
            h.update(fs.cat_file(f"{path.rstrip('/')}/{folder}/{name}"))
        snap["checkpoints"][int(folder[6:])] = h.hexdigest()[:16] if "state.json" in names else None
    return snap


def completed_epochs(snap: dict) -> int:
    """The highest epoch whose checkpoint is complete (0: none)."""
    return max((n for n, d in snap["checkpoints"].items() if d), default=0)


def lost_between(before: dict, after: dict) -> list[str]:
    """Completed work of `before` that `after` lost or changed (pruning by keep_checkpoints aside)."""
    lost = [f"result {name} {'gone' if name not in after['results'] else 'changed'}"
            for name, key in before["results"].items()
            if key != "unreadable" and after["results"].get(name) != key]  # fmt: skip
    newest = completed_epochs(after)
    for n, digest in before["checkpoints"].items():
        if digest is None:
            continue
        now = after["checkpoints"].get(n)
        if now is None and not (n in after["checkpoints"] or newest >= n + KEEP):  # pruned after epoch n + KEEP
            lost.append(f"checkpoint epoch_{n:04d} gone")
        elif n in after["checkpoints"] and now != digest:
            lost.append(f"checkpoint epoch_{n:04d} {'incomplete' if now is None else 'changed'}")
    return lost


def replayable(snap: dict, run_key: str, base_digest: str) -> int:
    """Epochs a resume would replay from the cache: the chain of readable results from the base digest
    on, when the checkpoint it ends on is complete (else the flow recomputes from the start)."""
    digest, epoch = base_digest, 0
    keys = snap.get("chain", {})
    while f"elborl-train-{run_key}-epoch{epoch:04d}-from-{digest}" in keys:
        digest, epoch = keys[f"elborl-train-{run_key}-epoch{epoch:04d}-from-{digest}"], epoch + 1
    if epoch and not snap["checkpoints"].get(epoch):
        return 0
    return epoch


def with_chain(snap: dict, root: Path) -> dict:
    """Add each readable local result's output digest (`chain`: file name -> digest) to a snapshot."""
    chain = {}
    for name in snap["results"]:
        try:
            chain[name] = json.loads(json.loads((root / "results" / name).read_text())["result"])["digest"]
        except (ValueError, KeyError, TypeError, OSError):
            continue
    return {**snap, "chain": chain}


# --- 1. SIGKILL of the train CLI ----------------------------------------------------------------------------


def written_since(path: Path, since: float) -> bool:
    return path.is_file() and path.stat().st_mtime >= since


def clock_of(stamp: re.Match) -> float:
    h, m, s, ms = (int(g) for g in stamp.groups())
    return h * 3600 + m * 60 + s + ms / 1000


def landing(done: Run, project: Path, root: Path, ref: Reference, epochs: int, replay: int) -> str:
    """Where a kill landed: from the killed run's log tail and the files it left (written after its start)."""
    log = done.log
    if "Beginning flow run" not in log:
        return "startup (imports, CLI checks)"
    if "train: run " not in log:
        return "flow setup (digests, MLflow run)"
    k = len(EPOCH_LINE.findall(log))
    if k >= epochs:
        run_json = project / "out" / "run.json"
        fresh = run_json.is_file() and run_json.stat().st_mtime >= done.started
        return "end (MLflow artifacts, set_terminated)" if fresh else "writing outputs (out/model, csv, run.json)"
    if k < replay:
        return "replaying cached epochs"
    folder = root / f"epoch_{k + 1:04d}"
    new = [p for p in folder.glob("*") if p.stat().st_mtime >= done.started] if folder.is_dir() else []
    if new and not (folder / "state.json").is_file():
        return f"epoch {k + 1}: checkpoint writing (no state.json)"
    if any(p.name == "state.json" for p in new):
        results = [p for p in (root / "results").glob(f"*-epoch{k:04d}-*") if p.stat().st_mtime >= done.started]
        if results:
            return f"epoch {k + 1}: result persisted, before the epoch line"
        return f"epoch {k + 1}: after the checkpoint (prune, MLflow metrics, result persistence)"
    stamps = list(STAMP.finditer(log))
    killed_clock = dt.datetime.fromtimestamp(done.started + done.seconds)
    now = killed_clock.hour * 3600 + killed_clock.minute * 60 + killed_clock.second + killed_clock.microsecond / 1e6
    elapsed = (now - clock_of(stamps[-1])) % 86400 if stamps else 0.0
    rollout, update = ref.epoch_s[min(k, len(ref.epoch_s) - 1)]
    if elapsed < rollout:
        phase = "rollout"
    elif elapsed < rollout + update:
        phase = "update"
    else:
        phase = "evaluation + sample grid" if (k + 1) % SMALL_TRAIN["eval_every"] == 0 else "prompt cache / checkpoint"
    return f"epoch {k + 1}: {phase} (by time)"


class Trial:
    """One project hit by kills until a run of it ends; keeps the bookkeeping of its kills."""

    def __init__(self, work: Path, index: int, epochs: int, ref: Reference):
        self.dir = work / f"trial_{index:02d}"
        self.project = make_project(self.dir, str(self.dir / "ckpt"), epochs)
        self.root = self.dir / "ckpt" / ref.run_key
        self.index, self.epochs, self.ref, self.runs = index, epochs, ref, 0
        self.snap = {"results": {}, "checkpoints": {}, "chain": {}}
        self.pending: list[dict] = []  # kills whose resume has not shown its replay yet
        self.lost: list[str] = []
        self.unreplayable: set[int] = set()  # completed epochs the next run will recompute
        self.completed_lines = 0  # "Finished in state Completed" over all runs: epochs + results written twice

    def charge(self, done: Run, completed: int, replay: int) -> int:
        """Epochs of work this kill lost: completed epochs a resume cannot replay, less those an earlier
        kill already lost (unless this run had recomputed them: their checkpoint is newer than its start)."""
        unreplayable = set(range(replay + 1, completed + 1))
        fresh = {e for e in unreplayable if e not in self.unreplayable
                 or written_since(self.root / f"epoch_{e:04d}" / "state.json", done.started)}  # fmt: skip
        self.unreplayable = unreplayable
        return len(fresh)

    def launch_log(self) -> Path:
        """The log file of the trial's next run."""
        self.runs += 1
        return self.dir / f"run_{self.runs:02d}.log"

    def observe(self) -> dict:
        """Snapshot the checkpoint folder; record any completed work lost since the last snapshot."""
        snap = with_chain(snapshot(str(self.root)), self.root)
        self.lost += lost_between(self.snap, snap)
        self.snap = snap
        return snap

    def settle(self, done: Run) -> None:
        """A run that got past its replay (it completed an epoch or ended) tells what the pending kills cost."""
        self.completed_lines += done.completed
        if done.rc is None and done.completed == 0:
            return
        for kill in self.pending:
            kill["replayed"] = done.cached  # what the next run that got past its replay replayed
            kill["completed_minus_replayed"] = kill["completed"] - done.cached
        if self.pending and self.pending[-1]["replay_expected"] != done.cached:
            self.pending[-1]["replay_mismatch"] = True
        self.pending = []


def sigkill_fault(ref: Reference, kills: int, rng: np.random.Generator, work: Path, epochs: int, env: dict,
                  window: str = "run") -> dict:  # fmt: skip
    """Kill the train CLI at `kills` random moments (uniform over the reference's wall time), resuming
    after each one; every trial must end on the reference and lose no completed epoch."""
    base_digest = folder_digest(BASE)
    low, high = (0.0, ref.seconds) if window == "run" else ref.epochs_window
    moments = rng.uniform(low, high, kills)
    records: list[dict] = []
    trials: list[dict] = []
    trial = Trial(work, 0, epochs, ref)

    def end(trial: Trial, done: Run) -> None:
        trial.settle(done)
        trial.observe()
        diffs = compare(ref, trial.project) if done.rc == 0 else [f"exit {done.rc}: {done.error()}"]
        gaps = mlflow_gaps(f"sqlite:///{trial.project / 'mlflow.db'}", trial.project, epochs) if done.rc == 0 else []
        trial.lost += [f"MLflow reward_mean missing at epoch {e}" for e in gaps]
        kills = sum(r["trial"] == trial.index for r in records)
        trials.append({"trial": trial.index, "runs": trial.runs, "kills": kills, "equal": not diffs, "diffs": diffs,
                       "other_files_differ": side_files(ref, trial.project) if done.rc == 0 else [],
                       "results_rewritten": trial.completed_lines - epochs, "data_lost": trial.lost})  # fmt: skip
        say(f"  trial {trial.index}: ended after {trial.runs} runs: {diffs or 'equal to the reference'}"
            f"{'; LOST ' + str(trial.lost) if trial.lost else ''}")  # fmt: skip

    for i, at in enumerate(moments):
        for _ in range(3):  # the moment may fall after a resume's end: that run ends the trial
            replay = replayable(trial.snap, ref.run_key, base_digest)
            done = run(train_cmd(trial.project), trial.launch_log(), env, kill_at=at)
            if done.rc is not None:
                end(trial, done)
                trial = Trial(work, len(trials), epochs, ref)
                continue
            break
        else:
            say(f"kill {i + 1}/{kills} at {at:.1f} s: three runs ended before it; skipped")
            continue
        trial.settle(done)
        where = landing(done, trial.project, trial.root, ref, epochs, replay)
        partial = any(d is None for d in trial.observe()["checkpoints"].values())
        completed = completed_epochs(trial.snap)
        replay = replayable(trial.snap, ref.run_key, base_digest)
        kill = {"kill": i + 1, "trial": trial.index, "run": trial.runs, "at_s": round(float(at), 2), "landed": where,
                "last_epoch_line": (EPOCH_LINE.findall(done.log) or [("0", str(epochs))])[-1][0],
                "partial_checkpoint": partial, "completed": completed, "replay_expected": replay,
                "epochs_lost": trial.charge(done, completed, replay)}  # fmt: skip
        trial.pending.append(kill)
        records.append(kill)
        say(f"kill {i + 1}/{kills} at {at:.1f} s (trial {trial.index}, run {trial.runs}): {where}; "
            f"{completed} epochs complete, {replay} replayable, {kill['epochs_lost']} lost")  # fmt: skip
    if trial.runs:
        done = run(train_cmd(trial.project), trial.launch_log(), env)
        end(trial, done)
    return {"window": window, "window_s": [round(low, 1), round(high, 1)], "kills": records, "trials": trials}


# --- 2. SIGKILL of dvc repro --------------------------------------------------------------------------------


def dvc_env() -> dict:
    return {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1"}


def sh(args: list[str], cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, env=dvc_env(), capture_output=True, text=True, timeout=900)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stdout[-1000:]}{done.stderr[-2000:]}")
    return done.stdout + done.stderr


def clone(dest: Path) -> Path:
    """The project in a fresh git repository with the DVC tests' small params (`tests.helpers.project`)."""
    from tests.helpers.project import make_clone

    return make_clone(dest)


def unreadable_outputs(project: Path) -> list[str]:
    """Every file under data/ that does not load (JSON, JSONL, CSV, PNG, safetensors) and every model
    folder that the tiny model cannot load from."""
    from PIL import Image
    from safetensors.torch import load_file

    from elborl.models.tiny import TinyT2I

    bad = []
    for path in sorted((project / "data").rglob("*")):
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".jsonl":
                [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            elif path.suffix == ".csv":
                list(csv.DictReader(path.open()))
            elif path.suffix == ".png":
                Image.open(path).load()
            elif path.suffix == ".safetensors":
                load_file(path)
            elif path.is_dir() and path.name == "model":
                TinyT2I.from_pretrained(path)
        except Exception as err:  # anything that does not load is a half-written output
            bad.append(f"{path.relative_to(project)}: {err.__class__.__name__}: {err}"[:300])
    return bad


def dvc_fault(tries: int, rng: np.random.Generator, work: Path) -> dict:
    """`dvc repro` once uninterrupted (duration, train digest), then `tries` clones killed at a random moment
    of that duration and reproduced again: exit 0, every output loads, same train digest, `dvc status` clean."""
    say("dvc: an uninterrupted `dvc repro` in a clone (the reference)")
    first = clone(work / "dvc_reference")
    ref = run(["dvc", "repro"], work / "dvc_reference.log", dvc_env(), cwd=first)
    if ref.rc != 0:
        return {"error": f"reference dvc repro failed: {ref.error()}", "tries": []}
    digest = json.loads((first / "data" / "train" / "run.json").read_text())["digest"]
    model = file_digests(first / "data" / "train" / "model")
    say(f"dvc: reference took {ref.seconds:.0f} s")
    records = []
    for i in range(tries):
        project = clone(work / f"dvc_{i}")
        at = float(rng.uniform(0, ref.seconds))
        killed = run(["dvc", "repro"], work / f"dvc_{i}_killed.log", dvc_env(), kill_at=at, cwd=project)
        stages = re.findall(r"Running stage '(\w+)'", killed.log)
        where = (
            "finished before the kill" if killed.rc is not None else f"stage {stages[-1]}" if stages else "dvc start"
        )
        again = run(["dvc", "repro"], work / f"dvc_{i}_again.log", dvc_env(), cwd=project)
        reran = re.findall(r"Running stage '(\w+)'", again.log)
        bad = unreadable_outputs(project) if again.rc == 0 else []
        run_json = project / "data" / "train" / "run.json"
        same = run_json.is_file() and json.loads(run_json.read_text())["digest"] == digest
        folder = project / "data" / "train" / "model"
        files = file_digests(folder) if folder.is_dir() else {}
        differ = sorted(k for k in model.keys() | files.keys() if model.get(k) != files.get(k))
        status = subprocess.run(["dvc", "status"], cwd=project, env=dvc_env(), capture_output=True, text=True)
        record = {"try": i + 1, "at_s": round(at, 1), "landed": where, "rerun_rc": again.rc,
                  "rerun_s": round(again.seconds), "stages_rerun": reran,
                  "train_epochs_replayed": len(CACHED.findall(again.log)), "unreadable": bad,
                  "train_digest_equal": same, "train_model_files_differ": differ,
                  "status_clean": "up to date" in status.stdout + status.stderr,
                  "error": again.error() if again.rc else ""}  # fmt: skip
        records.append(record)
        say(
            f"dvc try {i + 1}/{tries}: killed at {at:.0f} s in {where}; rerun exit {again.rc} ({again.seconds:.0f} s, "
            f"ran {reran}); outputs {bad or 'all load'}; train digest {'equal' if same else 'DIFFERS'}"
        )
    return {"reference_s": round(ref.seconds), "tries": records}


# --- 3. storage: S3 outages, damaged checkpoints and results -------------------------------------------------


class Moto:
    """moto's S3 server in this process on a fixed loopback port, which can be stopped and started again
    (moto keeps its buckets in process memory, so they survive a restart)."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.options = StorageOptions(self.endpoint, key="test", secret="test", connect_timeout=1, retries=1)
        self.up = False
        self.start()
        self.client().create_bucket(Bucket=BUCKET)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                            region_name="us-east-1")  # fmt: skip

    def start(self) -> None:
        if not self.up:
            self.server.start()
            self.up = True

    def stop(self) -> None:
        if self.up:
            self.server.stop()
            self.up = False

    def keys(self, prefix: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


def s3_outage(ref: Reference, moto: Moto, rng: np.random.Generator, work: Path, epochs: int, name: str,
              outage: float | None) -> dict:  # fmt: skip
    """Stop S3 at a random moment of a random epoch of a run on s3://; start it again after `outage` seconds
    (None: only once the run ended, then rerun the command). The run must end on the reference."""
    project = make_project(work / name, f"s3://{BUCKET}/{name}", epochs, endpoint=moto.endpoint)
    root = f"s3://{BUCKET}/{name}/{ref.run_key}"
    env = train_env(**S3_CREDS)
    log = work / f"{name}.log"
    epoch = int(rng.integers(1, epochs))
    delay = float(rng.uniform(0, 1.5))
    started = time.time()
    proc = launch(train_cmd(project), log, env)
    if not wait_line(proc, log, rf"epoch {epoch}/{epochs}: reward"):
        return {"fault": name, "error": f"the run ended before epoch {epoch}: {finish(proc, log, started).error()}"}
    time.sleep(delay)
    moto.stop()
    stopped = time.time()
    if outage is not None:
        time.sleep(outage)
        moto.start()
    done = finish(proc, log, started, timeout=600)
    title = (
        f"S3 down {outage:.0f} s mid-run (within the epoch task's retries)"
        if outage is not None
        else "S3 down mid-run until the run ended; restarted, rerun"
    )
    record = {"fault": name, "title": title, "down_after_epoch": epoch, "down_delay_s": round(delay, 2),
              "outage_s": outage, "retries": len(re.findall(r"Retry \d+/\d+ will start", done.log)), "rc": done.rc,
              "exit_after_s": round(time.time() - stopped, 1), "error": done.error() if done.rc else ""}  # fmt: skip
    moto.start()
    before = snapshot(root, moto.options)
    record["completed_before"] = completed_epochs(before)
    if done.rc != 0:
        record["clear_error"] = done.rc == 2 and f"cannot reach the storage at {moto.endpoint}" in done.log
        again = run(train_cmd(project), work / f"{name}_resume.log", env)
        record.update(resume_rc=again.rc, replayed=again.cached, epochs_lost=record["completed_before"] - again.cached,
                      resume_error=again.error() if again.rc else "")  # fmt: skip
        done = again
    else:
        record["epochs_lost"] = 0
    record["diffs"] = compare(ref, project) if done.rc == 0 else ["did not end"]
    record["other_files_differ"] = side_files(ref, project) if done.rc == 0 else []
    record["data_lost"] = lost_between(before, snapshot(root, moto.options))
    if done.rc == 0:
        gaps = mlflow_gaps(f"sqlite:///{project / 'mlflow.db'}", project, epochs)
        record["data_lost"] += [f"MLflow reward_mean missing at epoch {e}" for e in gaps]
    say(f"s3 {name}: down after epoch {epoch} (+{delay:.1f} s) for {outage if outage is not None else 'good'}: exit "
        f"{record['rc']} after {record['exit_after_s']} s{(': ' + record['error']) if record['error'] else ''}; "
        f"ends {'equal' if not record['diffs'] else record['diffs']}")  # fmt: skip
    return record


def damage(blob: bytes, how: str) -> bytes:
    """A file cut to half its length, or its last byte with one bit flipped."""
    return blob[: len(blob) // 2] if how == "truncate" else blob[:-1] + bytes([blob[-1] ^ 1])


def damaged_file_fault(ref: Reference, work: Path, epochs: int, where: str, what: str, how: str,
                       moto: Moto | None = None) -> dict:  # fmt: skip
    """A run of `epochs - 2` epochs, then a file of its last epoch damaged (`what`: the checkpoint's
    current/optimizer safetensors, or the cached result), then the full run: it must stop with a clear
    error and load nothing; then what the user does (delete the damaged checkpoint folder / result file)
    and the run again: it must end on the reference."""
    name = f"{what}_{how}_{where}"
    first = epochs - 2
    ckpt = f"s3://{BUCKET}/{name}" if where == "s3" else str(work / name / "ckpt")
    project = make_project(work / name, ckpt, epochs, endpoint=moto.endpoint if moto else None)
    env = train_env(**S3_CREDS) if moto else train_env()
    root = f"{ckpt}/{ref.run_key}"
    options = moto.options if moto else None
    prep = run(train_cmd(project, first), work / f"{name}_first.log", env)
    if prep.rc != 0:
        return {"fault": name, "error": f"first run failed: {prep.error()}"}
    if what == "checkpoint":
        target = f"{root}/epoch_{first:04d}/{'current' if how == 'truncate' else 'optimizer'}.safetensors"
    else:  # the last epoch's cached result
        result = next(n for n in snapshot(root, options)["results"] if f"-epoch{first - 1:04d}-" in n)
        target = f"{root}/results/{result}"
    blob = storage.read_bytes(target, options)
    storage.write_bytes(target, b"" if what == "result" else damage(blob, how), options)
    before = snapshot(root, options)
    stopped = run(train_cmd(project), work / f"{name}_damaged.log", env)
    after = snapshot(root, options)
    loaded_nothing = completed_epochs(after) == first and json.loads(
        (project / "out" / "run.json").read_text())["digest"] != ref.digest  # fmt: skip
    file = target.rsplit(ref.run_key + "/", 1)[-1]
    title = (
        f"checkpoint file `{file}` {'truncated to half' if how == 'truncate' else 'with one bit flipped'}"
        if what == "checkpoint"
        else f"cached result of epoch {first} left empty (a kill inside Prefect's write)"
    )
    record = {"fault": name, "title": f"{title} ({where}), rerun", "file": file, "rc": stopped.rc,
              "error": stopped.error(), "clear_error": stopped.rc == 2 and (
                  "the files' digest" in stopped.log if what == "checkpoint" else "refused" in stopped.log),
              "loaded_nothing": loaded_nothing, "data_lost": lost_between(before, after)}  # fmt: skip
    fs, path = storage.filesystem(target if what == "result" else target.rsplit("/", 1)[0], options)
    fs.rm(path, recursive=True)  # what the error tells the user to do
    fixed = run(train_cmd(project), work / f"{name}_fixed.log", env)
    record.update(user_action=f"delete {'the file' if what == 'result' else 'the checkpoint folder'}",
                  fixed_rc=fixed.rc, replayed=fixed.cached, recomputed=fixed.completed,
                  epochs_lost=fixed.completed - (epochs - first),  # recomputed beyond the epochs never run
                  diffs=compare(ref, project) if fixed.rc == 0 else ["did not end"],
                  other_files_differ=side_files(ref, project) if fixed.rc == 0 else [])  # fmt: skip
    say(
        f"{name}: exit {stopped.rc}: {record['error'][:160]}; after '{record['user_action']}': exit {fixed.rc}, "
        f"{fixed.cached} epochs replayed, {fixed.completed} recomputed, {record['diffs'] or 'equal'}"
    )
    return record


# --- 4. MLflow server down ----------------------------------------------------------------------------------


class MlflowServer:
    """`mlflow server` on loopback, SQLite-backed (its data survives a kill), killable with SIGKILL."""

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{self.root}/db.sqlite",
               "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1", "--port",
               str(self.port), "--workers", "1"]  # fmt: skip
        with (self.root / f"server_{self.starts}.log").open("w") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: healthy(f"{self.url}/health") or self.proc.poll() is not None, 180, f"mlflow at {self.url}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def mlflow_fault(ref: Reference, rng: np.random.Generator, work: Path, epochs: int) -> list[dict]:
    """(a) the tracking server down at start; (b) killed mid-run, then restarted and the command rerun."""
    env = train_env()
    server = MlflowServer(work / "mlflow_server")
    down = make_project(work / "mlflow_down", str(work / "mlflow_down" / "ckpt"), epochs, tracking=server.url)
    done = run(train_cmd(down), work / "mlflow_down.log", env)
    ckpts = list((work / "mlflow_down" / "ckpt").rglob("epoch_*"))
    a = {"fault": "mlflow_down_at_start", "title": "MLflow server down at start", "rc": done.rc,
         "seconds": round(done.seconds, 1), "error": done.error(),
         "clear_error": done.rc == 2 and "cannot reach the MLflow server" in done.log,
         "work_before_error": [str(p.name) for p in ckpts]}  # fmt: skip
    say(f"mlflow down at start: exit {done.rc} in {done.seconds:.0f} s: {a['error']}")

    server.start()
    try:
        project = make_project(work / "mlflow_kill", str(work / "mlflow_kill" / "ckpt"), epochs, tracking=server.url)
        root = work / "mlflow_kill" / "ckpt" / ref.run_key
        log = work / "mlflow_kill.log"
        epoch = int(rng.integers(1, epochs))
        started = time.time()
        proc = launch(train_cmd(project), log, env)
        wait_line(proc, log, rf"epoch {epoch}/{epochs}: reward")
        server.kill()
        killed = time.time()
        done = finish(proc, log, started, timeout=600)
        snap = snapshot(str(root))
        b = {"fault": "mlflow_killed_mid_run", "title": "MLflow server killed mid-run; restarted, rerun",
             "killed_after_epoch": epoch, "rc": done.rc,
             "exit_after_s": round(time.time() - killed, 1), "error": done.error(),
             "clear_error": done.rc == 2 and "MLflow" in done.error(),
             "epoch_lines_after_kill": len(EPOCH_LINE.findall(done.log)) - epoch,
             "completed_before": completed_epochs(snap)}  # fmt: skip
        server.start()
        again = run(train_cmd(project), work / "mlflow_kill_resume.log", env)
        b.update(resume_rc=again.rc, replayed=again.cached, epochs_lost=b["completed_before"] - again.cached,
                 diffs=compare(ref, project) if again.rc == 0 else [f"exit {again.rc}: {again.error()}"],
                 other_files_differ=side_files(ref, project) if again.rc == 0 else [],
                 data_lost=lost_between(snap, snapshot(str(root))))  # fmt: skip
        if again.rc == 0:
            gaps = mlflow_gaps(server.url, project, epochs)
            b["mlflow_epochs_missing"] = gaps
            b["data_lost"] += [f"MLflow reward_mean missing at epoch {e}" for e in gaps]
        say(
            f"mlflow killed after epoch {epoch}: exit {b['rc']} after {b['exit_after_s']} s: {b['error'][:200]}; "
            f"restarted and rerun: exit {again.rc}, {again.cached} replayed, "
            f"{'equal' if not b['diffs'] else b['diffs']}, MLflow gaps {b.get('mlflow_epochs_missing')}"
        )
    finally:
        server.kill()
    return [a, b]


# --- 5. numerical faults (unit level) -----------------------------------------------------------------------


def numerical_units() -> dict:
    """tests/test_faults.py: non-finite loss / gradient / weights, corrupt checkpoints, interrupted folder
    swaps, transient vs permanent errors, secrets kept out of errors (pytest's addopts already has -q)."""
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-W", "ignore", "tests/test_faults.py"]
    done = subprocess.run(cmd, cwd=ROOT, env=train_env(), capture_output=True, text=True, timeout=600)
    line = ([ln for ln in done.stdout.splitlines() if " passed" in ln or " failed" in ln] or ["no result"])[-1]
    say(f"numerical (tests/test_faults.py): {line}")
    return {"fault": "numerical", "rc": done.returncode, "summary": line.strip("= ")}


# --- the table ------------------------------------------------------------------------------------------------


def lost_cell(values: list) -> str:
    vals = [v for v in values if v is not None]
    return f"{np.mean(vals):.2f} / {max(vals)}" if vals else "-"


def sigkill_row(k: dict) -> str:
    """The table row of the train CLI's kills: where they landed, what they cost (runs that no kill hit, when a
    moment fell after a run's end, are left out)."""
    landed: dict[str, int] = {}
    for r in k["kills"]:
        phase = re.sub(r"^epoch \d+: ", "", r["landed"])
        landed[phase] = landed.get(phase, 0) + 1
    trials = [t for t in k["trials"] if t["kills"]]
    n, equal = len(trials), sum(t["equal"] for t in trials)
    same_files = sum(t["equal"] and not t["other_files_differ"] for t in trials)
    lost = [x for t in trials for x in t["data_lost"]]
    files = sorted({f for t in trials for f in t["other_files_differ"]})
    side = f"; weights equal but out/model/{', '.join(files)} differs in {n - same_files} runs" if files else ""
    where = "its epochs" if k.get("window") == "epochs" else "the run"
    window = "-".join(str(x) for x in k.get("window_s", []))
    return (
        f"| SIGKILL of `elborl train` at a random moment (uniform over {where}, {window} s), rerun | "
        f"{len(k['kills'])} kills over {n} runs to the end | {equal}/{n} ended on the reference's digest, weights "
        f"and history; {same_files}/{n} with every out/model file byte-equal | "
        f"{len(lost)}{' (' + cell('; '.join(lost)) + ')' if lost else ''} | "
        f"{lost_cell([r['epochs_lost'] for r in k['kills']])} | landed: "
        f"{', '.join(f'{p} {c}' for p, c in sorted(landed.items(), key=lambda x: -x[1]))}{side} |"
    )


def table(report: dict) -> str:
    """The markdown table of every fault tried."""
    rows = ["| fault | tries | survived | data lost | epochs of work lost per kill or fault (mean / max) | notes |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    if "sigkill" in report:
        rows.append(sigkill_row(report["sigkill"]))
    if "dvc" in report:
        d = report["dvc"]
        ok = sum(t["rerun_rc"] == 0 and not t["unreadable"] and t["train_digest_equal"] for t in d["tries"])
        n, bad = len(d["tries"]), sum(len(t["unreadable"]) for t in d["tries"])
        clean = sum(t["status_clean"] for t in d["tries"])
        differ = sorted({f for t in d["tries"] for f in t["train_model_files_differ"]})
        rows.append(f"| SIGKILL of `dvc repro`, rerun | {n} | {ok}/{n} finished, every output loads, same train "
                    f"digest; `dvc status` clean {clean}/{n} | {bad} | - | killed in "
                    f"{', '.join(t['landed'] for t in d['tries'])}; reruns replayed "
                    f"{', '.join(str(t['train_epochs_replayed']) for t in d['tries'])} train epochs from the cache"
                    f"{'; data/train/model/' + ', '.join(differ) + ' not byte-equal' if differ else ''}; "
                    f"reference repro {d.get('reference_s')} s |")  # fmt: skip
    for r in report.get("storage", []) + report.get("mlflow", []):
        rows.append(fault_row(r))
    if "numerical" in report:
        n = report["numerical"]
        rows.append(f"| NaN / inf loss or gradient, non-finite weights (unit level) | see tests/test_faults.py | "
                    f"{n['summary']} | - | - | the epoch stops before its optimizer step; a checkpoint with "
                    "non-finite weights is never written; corrupt checkpoints never load |")  # fmt: skip
    return "\n".join(rows)


def cell(text: str, width: int = 160) -> str:
    """Text for a markdown table cell (pipes escaped, cut to `width`)."""
    text = " ".join(str(text).split())
    return (text if len(text) <= width else text[: width - 3] + "...").replace("|", "\\|")


def outcome(r: dict) -> str:
    """The 'survived' cell of a storage or MLflow fault."""
    name = r["fault"]
    if name == "mlflow_down_at_start":
        return "clear error, no work done" if r["clear_error"] and not r["work_before_error"] else "no"
    ends = "ends on the reference" if not r["diffs"] else "DIFFERS"
    if name.startswith(("checkpoint", "result")):
        stop = "clear error, nothing loaded" if r["clear_error"] and r["loaded_nothing"] else "NO clear stop"
        return f"{stop}; after the user's fix {ends}"
    stop = "finished" if r["rc"] == 0 else "clear error" if r.get("clear_error") else "UNCLEAR error"
    return f"{stop}; {ends}"


def fault_row(r: dict) -> str:
    """One table row for a storage or MLflow fault record."""
    title = r.get("title", r["fault"])
    if "rc" not in r:
        return f"| {title} | 1 | not run: {cell(r['error'])} | ? | - | |"
    notes = []
    if r["rc"] != 0:
        after = (
            f" after {r['exit_after_s']} s"
            if "exit_after_s" in r
            else f" in {r['seconds']} s"
            if "seconds" in r
            else ""
        )
        notes.append(f"exit {r['rc']}{after}: `{cell(r['error'])}`")
    if r.get("retries"):
        notes.append(f"{r['retries']} epoch retries")
    if "user_action" in r:
        notes.append(f"after '{r['user_action']}': exit {r['fixed_rc']}, {r['replayed']} replayed, "
                     f"{r['recomputed']} recomputed")  # fmt: skip
    if "resume_rc" in r:
        notes.append(f"rerun: exit {r['resume_rc']}, {r['replayed']} replayed")
    if r.get("diffs"):
        notes.append(f"differs: {r['diffs']}")
    if r.get("other_files_differ"):
        notes.append(f"weights equal but out/model/{', '.join(r['other_files_differ'])} differs")
    lost = r.get("data_lost", [])
    epochs_lost = r.get("epochs_lost")
    return (
        f"| {title} | 1 | {outcome(r)} | {len(lost)}{' (' + cell('; '.join(lost)) + ')' if lost else ''} | "
        f"{'-' if epochs_lost is None else epochs_lost} | {'; '.join(notes)} |"
    )


# --- main ---------------------------------------------------------------------------------------------------


@contextmanager
def prefect_api(work: Path):
    """The Prefect server the CLI reports to: PREFECT_API_URL when set, else one started here."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(work / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    say(f"starting a Prefect server on port {port}")
    with server_process([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                        f"{api}/health", work / "prefect.log", env):  # fmt: skip
        os.environ["PREFECT_API_URL"] = api
        try:
            yield api
        finally:
            os.environ.pop("PREFECT_API_URL", None)


def run_bench(args: argparse.Namespace) -> dict:
    """Every fault the options ask for; returns the report (also written to --out)."""
    rng = np.random.default_rng(args.seed)
    work = Path(tempfile.mkdtemp(prefix="elborl-faults-", dir=args.work))
    started = time.time()
    report: dict = {"command": args.command, "seed": args.seed, "epochs": args.epochs, "work": str(work)}
    try:
        with prefect_api(work):
            env = train_env()
            say(f"reference: an uninterrupted {args.epochs}-epoch run of the train CLI")
            ref = reference(work, args.epochs, env)
            report["reference"] = {"digest": ref.digest, "seconds": round(ref.seconds, 1), "run_key": ref.run_key}
            say(f"reference: {ref.seconds:.1f} s, digest {ref.digest}")
            if "sigkill" in args.only:
                report["sigkill"] = sigkill_fault(ref, args.kills, rng, work, args.epochs, env, args.window)
            if "storage" in args.only:
                report["storage"] = storage_faults(ref, rng, work, args)
            if "mlflow" in args.only:
                report["mlflow"] = mlflow_fault(ref, rng, work, args.epochs)
            if "numerical" in args.only:
                report["numerical"] = numerical_units()
            if "dvc" in args.only and args.dvc_kills:
                report["dvc"] = dvc_fault(args.dvc_kills, rng, work)
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    report["seconds"] = round(time.time() - started)
    return render(report, args.out)


def render(report: dict, out: str | None) -> dict:
    """Print the report's table; with `out`, write faults.json and table.md there."""
    report["table"] = table(report)
    print(report["table"], flush=True)
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "faults.json").write_text(json.dumps(report, indent=2) + "\n")
        (Path(out) / "table.md").write_text(f"`{report['command']}` ({report['seconds']} s)\n\n{report['table']}\n")
    return report


def storage_faults(ref: Reference, rng: np.random.Generator, work: Path, args: argparse.Namespace) -> list[dict]:
    """S3 outages (brief and long) and damaged checkpoint / result files, local and on S3."""
    moto = Moto()
    say(f"moto S3 at {moto.endpoint}")
    records = []
    try:
        for i in range(args.s3_tries):
            records.append(s3_outage(ref, moto, rng, work, args.epochs, f"s3_brief_outage_{i}", outage=4.0))
            records.append(s3_outage(ref, moto, rng, work, args.epochs, f"s3_outage_{i}", outage=None))
        for where in ("local", "s3"):
            for how in ("truncate", "bitflip"):
                records.append(damaged_file_fault(ref, work, args.epochs, where, "checkpoint", how,
                                                  moto if where == "s3" else None))  # fmt: skip
        records.append(damaged_file_fault(ref, work, args.epochs, "local", "result", "empty"))
    finally:
        moto.stop()
    return records


PARTS = ("sigkill", "storage", "mlflow", "numerical", "dvc")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20, help="SIGKILLs of the train CLI")
    ap.add_argument("--window", choices=("run", "epochs"), default="run",
                    help="kill moments uniform over the reference's whole run, or over its epochs (first flow line "
                         "to last epoch line)")  # fmt: skip
    ap.add_argument("--dvc-kills", type=int, default=2, help="SIGKILLs of dvc repro (~3 min each on 2 cores)")
    ap.add_argument("--s3-tries", type=int, default=2, help="runs of each S3 outage (brief / until restarted)")
    ap.add_argument("--epochs", type=int, default=5, help="epochs of the tiny run")
    ap.add_argument("--quick", action="store_true", help="3 kills, 4 epochs, SIGKILL only (what the test runs)")
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts to run ({', '.join(PARTS)})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="folder for table.md and faults.json")
    ap.add_argument("--work", help="parent of the temporary work folder (default: the system's temp)")
    ap.add_argument("--keep-work", action="store_true", help="keep the work folder (logs, projects)")
    ap.add_argument("--from-json", help="only render the table of an earlier run's faults.json (to --out too)")
    args = ap.parse_args(argv)
    if args.from_json:
        return render(json.loads(Path(args.from_json).read_text()), args.out)
    args.only = set(args.only.split(","))
    if args.only - set(PARTS):
        ap.error(f"--only: expected some of {', '.join(PARTS)}, found {', '.join(sorted(args.only - set(PARTS)))}")
    if args.quick:
        args.kills, args.epochs, args.only = min(args.kills, 3), 4, {"sigkill"}
    args.command = "python bench/faults.py " + " ".join(argv if argv is not None else sys.argv[1:])
    return run_bench(args)


if __name__ == "__main__":
    main()
