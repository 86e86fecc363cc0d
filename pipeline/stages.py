"""The single-step stages as Prefect flows (`prompts`, `ceiling`, `base`): each is one task around the
stage's `run_stage`, so every stage of `dvc repro` shows up in the Prefect UI with its logs and state.
(`train` and `evaluate` have flows of their own, with one task per epoch / per model.)"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from elborl.config import load_params


@task(name="prompts")
def _prompts(params_path: str, out: str) -> None:
    from stages.prompts import run_stage

    run_stage(load_params(params_path), Path(out))


@task(name="ceiling")
def _ceiling(params_path: str, prompts: str, out: str) -> dict:
    from stages.ceiling import run_stage

    return run_stage(load_params(params_path), prompts, out)


@task(name="base")
def _base(params_path: str, prompts: str, out: str, device: str | None = None) -> dict:
    from stages.base import run_stage

    return run_stage(load_params(params_path), prompts, out, device)


@flow(name="elborl-prompts", log_prints=True)
def prompts_flow(params_path: str = "params.yaml", out: str = "data/prompts") -> None:
    """The `prompts` stage: disjoint train and test prompt sets."""
    _prompts(params_path, out)


@flow(name="elborl-ceiling", log_prints=True)
def ceiling_flow(params_path: str = "params.yaml", prompts: str = "data/prompts/test.jsonl",
                 out: str = "data/ceiling") -> dict:  # fmt: skip
    """The `ceiling` stage: ground truth of the test prompts, scored."""
    return _ceiling(params_path, prompts, out)


@flow(name="elborl-base", log_prints=True)
def base_flow(params_path: str = "params.yaml", prompts: str = "data/prompts/test.jsonl",
              out: str = "data/base", device: str | None = None) -> dict:  # fmt: skip
    """The `base` stage: the base model (a tiny copy or an SD3 pointer), checked and measured."""
    return _base(params_path, prompts, out, device)
