"""Scale-out on this machine: the reference epoch (params.yaml's train section, the shipped base) in one
process, on N ranks (accelerate launch, DDP), and with rollouts + rewards on N Dask workers (Prefect's
DaskTaskRunner, a LocalCluster), each beside the ideal: the one-process epoch with the same per-process
threads, divided by N. Prints a markdown table; the first epoch of each run is a warm-up and not counted.

    python bench/scaling.py                         # 1 and 2 processes / workers, 4 timed epochs each
    python bench/scaling.py --procs 1 2 4 --epochs 6 --device cuda   # on a GPU machine (ranks = GPUs)

On a 2-core CPU box the processes share the cores, so the ideal is the one-thread epoch / N: what DDP
would give with one core per rank and free communication.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/scaling.py` from anywhere

from prefect import flow  # noqa: E402

from stages.train import folder_digest  # noqa: E402


def _setup(device: str | None, ranks=None):
    from elborl.config import Params
    from elborl.distributed import SINGLE
    from elborl.world.prompts import make_prompt_sets
    from elborl.world.spec import WorldSpec
    from stages.train import build_trainer

    params = Params.model_validate({"train": {"eval_every": 0}})
    rows = make_prompt_sets(WorldSpec.from_config(params.world), params.prompts)[0]
    return params, rows, build_trainer(params, ROOT / "assets" / "base", rows, device, ranks or SINGLE)


def run_epochs(epochs: int, device: str | None) -> None:
    """This process's part (one process, or one rank under accelerate launch): prints rank 0's epoch times."""
    from elborl.distributed import from_env

    ranks = from_env()
    _, _, trainer = _setup(device, ranks)
    times = []
    for epoch in range(epochs):
        start = time.perf_counter()
        trainer.epoch(epoch)
        times.append(time.perf_counter() - start)
    if ranks.is_main:
        print("EPOCHS " + json.dumps(times), flush=True)


_DASK: dict = {}  # what the flow below uses: module-level, so that no task submission pickles the trainer


@flow
def _epochs_on_dask(epochs: int) -> list[float]:
    trainer, shards = _DASK["trainer"], _DASK["shards"]
    source, times = (None, folder_digest(ROOT / "assets" / "base")), []
    with tempfile.TemporaryDirectory() as tmp:
        for epoch in range(epochs):
            start = time.perf_counter()
            trainer.epoch(epoch, partial(shards, checkpoint_url=source[0], digest=source[1]))
            times.append(time.perf_counter() - start)
            url = f"{tmp}/epoch_{epoch + 1:04d}"  # the next epoch's sampling weights, for the workers
            source = (url, trainer.save(url))
    return times


def run_dask(epochs: int, workers: int, device: str | None) -> list[float]:
    """Epoch times with rollouts and rewards on a local Dask cluster of `workers` processes (the update
    in this process, with every core: the workers idle while it runs)."""
    from pipeline.shards import Shards, task_runner

    params, rows, trainer = _setup(device)
    runner = params.runner.model_copy(update={"kind": "dask", "n_workers": workers})
    params = params.model_copy(update={"runner": runner})
    _DASK.update(trainer=trainer, shards=Shards(params, str(ROOT / "assets" / "base"), rows, trainer.policy.device))
    return _epochs_on_dask.with_options(task_runner=task_runner(runner))(epochs)  # the train flow's own runner


def _launch(args: list[str], env: dict) -> list[float]:
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("EPOCHS "))
    return json.loads(line.removeprefix("EPOCHS "))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process / worker counts")
    ap.add_argument("--epochs", type=int, default=4, help="timed epochs per run (plus one warm-up)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--setups", default="ddp,dask", help="which N-process setups to run (ddp, dask)")
    ap.add_argument("--run-epochs", type=int, default=None, help=argparse.SUPPRESS)  # a launched process
    args = ap.parse_args(argv)
    if args.run_epochs is not None:
        return run_epochs(args.run_epochs, args.device)

    cores = os.cpu_count() or 1
    me = [sys.executable, str(Path(__file__).resolve()), "--run-epochs", str(args.epochs + 1)]
    me += ["--device", args.device] if args.device else []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cpu = args.device in (None, "cpu")
    rows = []

    def median(times: list[float]) -> float:
        return statistics.median(times[1:])  # the first epoch warms up

    threads_needed = sorted({cores, max(1, cores // max(args.procs))})
    one = {t: median(_launch(me, {**env, "OMP_NUM_THREADS": str(t)})) for t in threads_needed}
    rows.append(("1 process", 1, cores, one[cores], one[cores]))
    for n in (p for p in args.procs if p > 1):
        threads = max(1, cores // n) if cpu else cores
        base = one.get(threads) or median(_launch(me, {**env, "OMP_NUM_THREADS": str(threads)}))
        launch = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
                  str(ROOT / "configs" / "accelerate" / "ddp.yaml"), "--num_processes", str(n)]  # fmt: skip
        ddp_env = {**env, "OMP_NUM_THREADS": str(threads), **({"ACCELERATE_USE_CPU": "1"} if cpu else {})}
        if "ddp" in args.setups:
            t = median(_launch([*launch, *me[1:]], ddp_env))
            rows.append((f"DDP update, {n} ranks", n, threads, t, base / n))
        if "dask" in args.setups:
            t = median(run_dask(args.epochs + 1, n, args.device))
            rows.append((f"Dask rollouts + rewards, {n} workers (update here)", n, threads, t, None))

    print(
        f"\nReference epoch (16 prompts x 8 images, dpm2 10 steps, 9 ELBO terms), {cores} cores, "
        f"device {args.device or 'cpu'}, median of {args.epochs} epochs after a warm-up.\n"
    )
    print("| setup | processes | threads each | epoch s | ideal s | speedup vs 1 process |")
    print("|---|---|---|---|---|---|")
    for name, n, threads, t, ideal in rows:
        shown = f"{ideal:.2f}" if ideal is not None else "-"
        print(f"| {name} | {n} | {threads} | {t:.2f} | {shown} | {one[cores] / t:.2f}x |")


if __name__ == "__main__":
    # Through the importable module: Prefect / Dask then pickle the flow by reference, not with the trainer.
    from bench.scaling import main as _main

    _main()
