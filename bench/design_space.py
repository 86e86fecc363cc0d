"""Design-space benchmark (docs/ARCHITECTURE.md section 6): compute-to-target of every estimator x objective
x sampler on the embedded world, from the same base, same prompts, same seeds, same machine.

For each configuration with more than one candidate rate (`LRS`): a learning-rate sweep on seed 0
(the full budget each), then the rate with the better second half on the remaining seeds. Every run
trains until its training wall time passes the budget; every `--eval-every` epochs it measures, with
the EMA weights, the strict test GenEval (shapes) and two
off-target checks on the same images (background drift: mean |border pixel - background| / 255, and
the pixel std: a reward hack that paints the canvas shows in both). Wall time counts rollout + reward
+ update only (evaluation excluded); images counts generated training images.

Writes to --out: runs.csv (one row per evaluation of every run), lr_sweep.csv, summary.md (the
tables below, with the command), score_vs_time.png and score_vs_images.png.

    python bench/design_space.py                 # full: the numbers in bench/results/README.md
    python bench/design_space.py --quick --out build/bench-quick   # CI: checks the machinery only
    python bench/design_space.py --device cuda --jobs 33 --eager --deadline 400   # one GPU: all runs at once
    python bench/design_space.py --scheduler tcp://HOST:8786 --device cuda --eager   # an existing Dask cluster
    python bench/design_space.py --from-runs bench/results/gpu --target 0.27 --out /tmp/t   # re-summarize

Where the runs execute (`make_executor`): `--jobs 1` (the default) runs them one after another in this
process. `--jobs N` starts a local Dask cluster (`distributed.LocalCluster`, N spawned worker processes,
cores // N threads each) and submits every run through its `concurrent.futures.Executor`; each worker
runs one run at a time (every run asks for the Dask resource `run=1`, which each worker has once) with
as many torch threads as the worker has threads. `--scheduler tcp://HOST:8786` submits to an existing
Dask scheduler instead (`--jobs` is then ignored: the cluster's workers decide); start its workers
with `--resources run=1` and `--nthreads` = the cores one run should use, from an environment that
imports this repository (`PYTHONPATH=/path/to/elborl`, its package installed) and holds `--base` at the
same path as here, e.g. on each machine:

    PYTHONPATH=$PWD dask worker tcp://HOST:8786 --nworkers 4 --nthreads 8 --resources run=1   # CPU: 4 runs of 8 threads
    CUDA_VISIBLE_DEVICES=0 PYTHONPATH=$PWD dask worker tcp://HOST:8786 --nworkers 16 --nthreads 1 \
        --resources "run=1 GPU=1"                       # GPU 0: 16 runs share it (GPU=1 optional, unused here)

`--eager` starts every swept rate on every seed at once (one wave), so that with `--deadline` every run
gets the same wall clock on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Executor, Future, as_completed
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/design_space.py` from anywhere

from bench.report import rate_scores, read_rows, write_summary
from bench.throughput import matmul_gflops
from elborl.config import Params, route_overrides
from elborl.evaluation import off_target, score_images
from elborl.io import atomic_write_text
from elborl.train import Trainer, fit
from elborl.world.prompts import make_prompt_sets
from elborl.world.spec import WorldSpec
from stages.train import build_trainer, history_csv, sample_test_images

REFERENCE = "elbo/epg/dpm2"
# name -> train overrides. Baselines as their papers run them: FlowGRPO's trajectory recipe clips the
# ratio at 1e-4 with standard advantages and its Gaussian-mean KL at 0.04; the reference code's NFT
# runs without KL.
CONFIGS: dict[str, dict] = {
    REFERENCE: {},
    "elbo/pepg/dpm2": {"objective": "pepg"},
    "elbo/par/dpm2": {"objective": "par"},
    "elbo/grpo/dpm2": {"objective": "grpo", "advantages": "standard"},
    "elbo/epg/flow_sde": {"sampler": "flow_sde"},
    "trajectory/grpo/flow_sde": {
        "estimator": "trajectory",
        "objective": "grpo",
        "sampler": "flow_sde",
        "advantages": "standard",
        "clip_eps": 1e-4,
        "beta_kl": 0.04,
    },
    "trajectory/epg/flow_sde": {"estimator": "trajectory", "sampler": "flow_sde"},
    "nft/dpm2": {"objective": "nft", "beta_kl": 0.0},
}
# Learning rates per configuration (full fine-tuning). The ELBO configurations run the pipeline's rate
# (params.yaml train.lr, 5e-5: from the web-corpus base it climbs twice as fast as 2e-5, and >= 1e-4
# drifts; bench/results/diagnosis); the baselines, whose losses scale differently, get a sweep and keep
# the better rate.
LRS: dict[str, list[float]] = {name: [5e-5] for name in CONFIGS}
LRS.update({name: [2e-5, 1e-4] for name in ("trajectory/grpo/flow_sde", "trajectory/epg/flow_sde", "nft/dpm2")})


def evaluate(trainer: Trainer, test_rows: list[dict], background) -> dict:
    """Strict test GenEval of the EMA weights (the train stage's test images) and the off-target checks."""
    metas, images = sample_test_images(trainer, test_rows)
    score = score_images(images, metas, trainer.detector, trainer.rules)
    return {"score": score["overall"], **{f"tag.{k}": v for k, v in score["per_tag"].items()},
            **off_target(images, background)}  # fmt: skip


_BASE_EVAL: dict = {}
RUN_SLOT = {"run": 1}  # the Dask resource every run asks for; a worker with `run=1` runs one run at a time


class InlineExecutor(Executor):
    """`--jobs 1` without `--scheduler`: each submitted run runs at once, in this process."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


@contextmanager
def make_executor(jobs: int, scheduler: str | None = None) -> Iterator[Executor]:
    """Where the runs execute: inline (`jobs` 1, no scheduler), a local Dask cluster of `jobs` worker
    processes (spawned: CUDA cannot fork; the machine's cores split among them), or the Dask cluster of
    `scheduler`. Every Dask submission asks for `RUN_SLOT`; the cluster (and its workers, if local) is
    closed on exit, whatever happened."""
    if scheduler is None and jobs <= 1:
        yield InlineExecutor()
        return
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler, timeout="30s") as client:
            check_workers(client.scheduler_info()["workers"], scheduler)
            yield client.get_executor(pure=False, resources=RUN_SLOT)
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    # memory_limit 0: no per-worker cap (Dask's default, memory / N, would pause or restart a CUDA worker)
    with (
        LocalCluster(n_workers=jobs, threads_per_worker=threads, processes=True, resources=RUN_SLOT,
                     memory_limit=0, host="127.0.0.1", dashboard_address=None) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):  # fmt: skip
        yield client.get_executor(pure=False, resources=RUN_SLOT)


def check_workers(workers: dict, scheduler: str) -> None:
    """Refuse a scheduler none of whose workers can run a run (they would wait forever)."""
    if not any(w.get("resources", {}).get("run", 0) >= 1 for w in workers.values()):
        raise SystemExit(
            f"--scheduler {scheduler}: no worker with the resource run=1 ({len(workers)} worker(s)); start "
            "them with `dask worker tcp://HOST:8786 --resources run=1 --nthreads N` (N: torch threads per run)"
        )


def use_worker_threads() -> None:
    """On a Dask worker, torch threads = the worker's threads (Dask starts its workers with
    OMP_NUM_THREADS=1); anywhere else, the process's own setting."""
    try:
        from distributed import get_worker

        torch.set_num_threads(get_worker().state.nthreads)
    except (ImportError, ValueError):  # ValueError: not on a worker
        pass


def run(name: str, lr: float, seed: int, args, rows, test_rows, world) -> list[dict]:
    """One RL run; returns its evaluation rows (epoch 0 = the base, evaluated once: every run starts
    from the same weights and evaluates on the same noises)."""
    use_worker_threads()
    train = {**args.train, **CONFIGS[name], "lr": lr, "seed": seed}
    params = Params.model_validate({**route_overrides(train), "world": world})
    trainer = build_trainer(params, args.base, rows, args.device)
    background = tuple(params.world.background)
    common = {"config": name, "lr": lr, "seed": seed}
    if not _BASE_EVAL:
        _BASE_EVAL.update(evaluate(trainer, test_rows, background))
    out = [{**common, "epoch": 0, "wall_s": 0.0, "images": 0, "reward": np.nan, **_BASE_EVAL}]
    acc = {"wall": 0.0, "rollout_s": 0.0, "update_s": 0.0, "images": 0, "last": False}

    def over(epochs: int) -> bool:  # read once per epoch: the loop stops exactly after the epoch evaluated as last
        return acc["wall"] >= args.budget or epochs >= args.max_epochs or time.time() >= args.stop_at

    def after_epoch(epoch: int, m: dict) -> None:
        for k in ("rollout_s", "update_s"):
            acc[k] += m[k]
        acc["wall"] += m["rollout_s"] + m["update_s"]
        acc["images"] += m["images"]
        acc["last"] = over(epoch + 1)
        if (epoch + 1) % args.eval_every == 0 or acc["last"]:
            row = {**common, "epoch": epoch + 1, "wall_s": acc["wall"], "images": acc["images"],
                   "reward": m["reward_mean"], "rollout_img_s": acc["images"] / acc["rollout_s"],
                   "update_samples_s": acc["images"] / acc["update_s"],
                   **evaluate(trainer, test_rows, background)}  # fmt: skip
            out.append(row)
            print(f"  {name} lr {lr:g} seed {seed}: epoch {epoch + 1} {acc['wall']:.0f}s test {row['score']:.3f} "
                  f"drift {row['background_drift']:.3f}", flush=True)  # fmt: skip

    if not over(0):
        fit(trainer, args.max_epochs, after_epoch=after_epoch, stop=lambda e, m: acc["last"], log=None)
    return out


def rates(name: str, args) -> list[float]:
    """The learning rates a configuration runs: its `--lr`, else `--set lr=...`, else its first
    (`--no-sweep`) or all."""
    if name in args.rate:
        return [args.rate[name]]
    if "lr" in args.train:
        return [float(args.train["lr"])]
    return LRS[name][:1] if args.no_sweep else LRS[name]


def sweep_choice(rows: list[dict]) -> float:
    """The swept rate with the best `rate_scores`."""
    scores = rate_scores(rows)
    return max(scores, key=scores.get)


def run_all(names: list[str], args, pool: Executor, data: tuple, save) -> tuple[list, list, dict]:
    """Every run of the benchmark on `pool`. A configuration's sweep runs seed 0 at each rate, then its
    other seeds at the chosen rate; with `args.eager`, every rate runs every seed at once (one wave on a
    big machine; the choice then averages over seeds). A configuration with one rate starts all at once.

    Args:
        data: (train rows, test rows, world section) passed to `run`.
        save: Called with (sweep rows, rows so far) after every finished run.

    Returns:
        (sweep rows: every run of a swept configuration, plus seed 0 of the others; rows of the chosen
        runs in configuration and seed order; chosen rate per configuration)
    """
    futures: dict[tuple[str, float, int], Future] = {}
    chosen: dict[str, float] = {}

    def start(name: str, lr: float, seeds) -> None:
        futures.update({(name, lr, s): pool.submit(run, name, lr, s, args, *data) for s in seeds})

    for name in names:
        lrs = rates(name, args)
        for lr in lrs:
            start(name, lr, range(args.seeds) if args.eager or len(lrs) == 1 else [0])
        if len(lrs) == 1:
            chosen[name] = lrs[0]
    for name in names:
        if name not in chosen:
            swept = [r for k, f in futures.items() if k[0] == name for r in f.result()[1:]]
            chosen[name] = sweep_choice(swept)
            start(name, chosen[name], [s for s in range(args.seeds) if (name, chosen[name], s) not in futures])
    for _ in as_completed(list(futures.values())):
        save(*_collect(futures, chosen))
    return (*_collect(futures, chosen), chosen)


def _collect(futures: dict, chosen: dict[str, float]) -> tuple[list[dict], list[dict]]:
    """The finished runs' rows: (sweep rows, chosen rows in configuration then seed order)."""
    done = {k: f.result() for k, f in futures.items() if f.done()}
    names = list(dict.fromkeys(k[0] for k in futures))
    multi = {n for n in names if len({k[1] for k in futures if k[0] == n}) > 1}
    sweep = [r for k, rs in done.items() if k[0] in multi or k[2] == 0 for r in rs]
    order = sorted((k for k in done if chosen.get(k[0]) == k[1]), key=lambda k: (names.index(k[0]), k[2]))
    return sweep, [r for k in order for r in done[k]]


def parse_rates(items: list[str], ap: argparse.ArgumentParser) -> dict[str, float]:
    """`--lr CONFIG=RATE` items as {configuration: rate}."""
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            ap.error(f"--lr {item!r}: expected CONFIG=RATE, e.g. nft/dpm2=1e-4")
        if name not in CONFIGS:
            ap.error(f"--lr {item!r}: unknown configuration {name!r}; expected one of {list(CONFIGS)}")
    return out


def parse_sets(items: list[str], ap: argparse.ArgumentParser) -> dict:
    """`--set key=value` items as a dict of `train` overrides, each value parsed as YAML."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            ap.error(f"--set {item!r}: expected KEY=VALUE (a key of the train section)")
        out[key] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="assets/base")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", type=float, default=100.0, help="training wall seconds per run")
    ap.add_argument("--max-epochs", type=int, default=10_000)
    ap.add_argument("--eval-every", type=int, default=2, help="epochs between test evaluations")
    ap.add_argument("--target", type=float, default=0.28, help="strict test GenEval to reach")
    ap.add_argument("--no-sweep", action="store_true", help="use each configuration's first rate")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a train param for every run (YAML value; a configuration's own keys win)")  # fmt: skip
    ap.add_argument("--device", default="cpu", help="torch device of every run (cuda on a GPU machine)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="runs at a time: N > 1 starts a local Dask cluster of N processes (cores split)")  # fmt: skip
    ap.add_argument("--scheduler", metavar="tcp://HOST:8786",
                    help="run on this existing Dask scheduler's workers (started with --resources run=1)")  # fmt: skip
    ap.add_argument("--lr", action="append", default=[], metavar="CONFIG=RATE",
                    help="a configuration's rate, no sweep (e.g. the rate an earlier sweep chose)")  # fmt: skip
    ap.add_argument("--eager", action="store_true", help="run every swept rate on every seed at once (one wave)")
    ap.add_argument("--deadline", type=float, default=float("inf"),
                    help="seconds from the start after which no run begins another epoch (a hard stop)")  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="CI: 1 seed, 1 epoch, tiny batches, 12 test prompts")
    ap.add_argument("--from-runs", type=Path, metavar="DIR",
                    help="run nothing: summarize DIR/runs.csv and DIR/lr_sweep.csv at --target into --out")  # fmt: skip
    args = ap.parse_args(argv)
    command = "python bench/design_space.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    if args.from_runs:
        all_rows, sweep_rows = read_rows(args.from_runs / "runs.csv"), read_rows(args.from_runs / "lr_sweep.csv")
        chosen = {r["config"]: r["lr"] for r in all_rows}
        header = (f"Command: `{command}` (the runs of {args.from_runs}, summarized again)\n\n"
                  f"Target: strict test GenEval >= {args.target}.")  # fmt: skip
        return write_summary(
            Path(args.out), header, all_rows, sweep_rows, chosen, args.target, REFERENCE, list(CONFIGS)
        )
    args.base = str(Path(args.base).resolve())  # the same path on every worker, whatever its working directory
    args.train = parse_sets(args.set, ap)
    args.rate = parse_rates(args.lr, ap)
    args.stop_at = time.time() + args.deadline
    if args.quick:
        args.seeds, args.budget, args.max_epochs, args.eval_every, args.no_sweep = 1, float("inf"), 1, 1, True
        args.train = {"prompts_per_epoch": 2, "group_size": 2, "steps": 3, "eval_min_images_per_tag": 0, **args.train}
    names = args.configs.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        ap.error(f"--configs: unknown {unknown}; expected some of {list(CONFIGS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    params = Params()
    world = params.world.model_dump(mode="json")
    rows, test_rows = make_prompt_sets(WorldSpec.from_config(params.world), params.prompts)
    if args.quick:
        test_rows = test_rows[:: max(1, len(test_rows) // 12)][:12]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32 matmul "
          f"{matmul_gflops():.1f} GFLOP/s; {len(rows)} train / {len(test_rows)} test prompts", flush=True)  # fmt: skip

    def save(sweep_rows: list[dict], all_rows: list[dict]) -> None:  # after every finished run
        atomic_write_text(out / "runs.csv", history_csv(all_rows))
        atomic_write_text(out / "lr_sweep.csv", history_csv(sweep_rows))

    with make_executor(args.jobs, args.scheduler) as pool:
        sweep_rows, all_rows, chosen = run_all(names, args, pool, (rows, test_rows, world), save)

    where = f"the Dask cluster at {args.scheduler}" if args.scheduler else f"{args.jobs} run(s) at a time"
    header = (
        f"Command: `{command}`\n\nTarget: strict test GenEval >= {args.target}; {args.seeds} seeds; budget "
        f"{args.budget:.0f} s of training per run; device {args.device}, {where}."
    )
    write_summary(out, header, all_rows, sweep_rows, chosen, args.target, REFERENCE, list(CONFIGS))


if __name__ == "__main__":
    # Through the importable module, so that Dask workers receive `bench.design_space.run` by reference.
    from bench.design_space import main as _main

    _main()
