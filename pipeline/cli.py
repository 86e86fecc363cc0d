"""The `elborl` command line. Bad input prints one `error:` message and exits with code 2.

It lives beside the Prefect flows it starts (`pipeline/`); the library (`elborl/`) never imports it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from elborl.config import Params, load_params
from elborl.errors import UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="RL fine-tuning for flow-matching models.",
)
config_app = typer.Typer(no_args_is_help=True, help="Inspect and validate params.yaml.")
world_app = typer.Typer(no_args_is_help=True, help="The embedded shapes world.")
geneval_app = typer.Typer(no_args_is_help=True, help="GenEval on real images (Mask2Former + CLIP).")
app.add_typer(config_app, name="config")
app.add_typer(world_app, name="world")
app.add_typer(geneval_app, name="geneval")

ParamsOpt = Annotated[Path, typer.Option("--params", help="The params file.")]


def _spec(params: Params):
    from elborl.world.spec import WorldSpec

    try:
        return WorldSpec.from_config(params.world)
    except ValueError as err:
        raise UserError(str(err)) from None


@config_app.command("check")
def config_check(params: ParamsOpt = Path("params.yaml")) -> None:
    """Validate the params file and print the resolved config (defaults filled in)."""
    p = load_params(params)
    _spec(p)
    typer.echo(json.dumps(p.model_dump(mode="json"), indent=2))


@world_app.command("spec")
def world_spec(params: ParamsOpt = Path("params.yaml")) -> None:
    """Print the world's spec as JSON."""
    typer.echo(json.dumps(_spec(load_params(params)).to_json(), indent=2))


@geneval_app.command("convert-mmdet")
def geneval_convert_mmdet(
    checkpoint: Annotated[Path, typer.Argument(help="The official mmdet checkpoint (.pth) GenEval uses.")],
    out: Annotated[Path, typer.Option(help="Folder for the transformers model (geneval.detector_path).")],
) -> None:
    """Convert GenEval's mmdet Mask2Former Swin-S checkpoint onto transformers' Mask2Former."""
    from elborl.rewards.detectors.mmdet_convert import convert_checkpoint

    typer.echo(f"converted {checkpoint} to {convert_checkpoint(checkpoint, out)}")


@app.command()
def prompts(
    out: Annotated[Path, typer.Option(help="Folder for train.jsonl and test.jsonl.")],
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Write disjoint GenEval-format train and test prompt sets over the world's classes."""
    load_params(params)  # a bad params file stops here, before Prefect starts
    from pipeline.stages import prompts_flow

    prompts_flow(str(params), str(out))


@app.command()
def render(
    metadata: Annotated[Path, typer.Option(help="GenEval metadata JSONL.")],
    out: Annotated[Path, typer.Option(help="Output folder (GenEval layout).")],
    images_per_prompt: Annotated[int, typer.Option(min=1, help="Images per prompt.")] = 4,
    seed: Annotated[int, typer.Option(help="Layout seed.")] = 0,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Render ground-truth images that satisfy each prompt, in GenEval's folder layout."""
    from elborl.geneval_io import metadata_classes, read_metadata_jsonl, write_layout
    from elborl.rewards.geneval import TAGS
    from elborl.world.render import render_images

    spec = _spec(load_params(params))
    rows = read_metadata_jsonl(metadata)
    unknown = metadata_classes(rows) - set(spec.classes)
    if unknown:
        raise UserError(f"{metadata}: classes not in the world: {', '.join(sorted(unknown))} "
                        f"(world.classes: {', '.join(spec.classes)})")  # fmt: skip
    for i, meta in enumerate(rows):  # prompt-only rows (e.g. ocr) have no clauses to draw
        if meta["tag"] not in TAGS:
            raise UserError(f"{metadata}: prompt {i}: tag: expected one of {', '.join(TAGS)} (render draws "
                            f"GenEval clauses), found {meta['tag']!r}")  # fmt: skip

    def images(i: int, meta: dict):
        try:
            return render_images(meta, spec, images_per_prompt, seed, i)
        except RuntimeError:  # the layout search gave up: more or bigger objects than the world holds
            raise UserError(f"{metadata}: prompt {i} (folder {i:05d}): include: no layout of its objects fits the "
                            f"{spec.size}x{spec.size} world") from None  # fmt: skip

    write_layout(out, rows, images_per_prompt, images)
    typer.echo(f"rendered {len(rows)} prompts x {images_per_prompt} images to {out}")


@app.command()
def score(
    images: Annotated[Path, typer.Option(help="GenEval-layout folder to score.")],
    out: Annotated[Path, typer.Option(help="Folder for results.jsonl and summary.json.")],
    detector: Annotated[str | None, typer.Option(help="Detector (default: geneval.detector).")] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Score a GenEval-layout folder with GenEval's rules; print the summary."""
    from elborl.rewards.detectors import DETECTORS, build_detector
    from elborl.rewards.geneval import Rules
    from elborl.rewards.scoring import score_folder, write_scores

    p = load_params(params)
    name = detector or p.geneval.detector
    if name not in DETECTORS:
        raise UserError(f"--detector: expected one of {', '.join(DETECTORS)}, found {name!r}")
    rows, summary = score_folder(images, build_detector(name, _spec(p), p.geneval), Rules.from_config(p.geneval))
    write_scores(out, rows, summary)
    typer.echo(json.dumps(summary, indent=2))


@app.command()
def ceiling(
    prompts: Annotated[Path, typer.Option(help="Test prompts (GenEval metadata JSONL).")] = Path(
        "data/prompts/test.jsonl"
    ),
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("data/ceiling"),
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Render ground truth for the test prompts and score it: the detector's ceiling."""
    p = load_params(params)
    _spec(p)
    if not prompts.is_file():
        raise UserError(f"{prompts}: not found (run the `prompts` stage first)")
    from pipeline.stages import ceiling_flow

    ceiling_flow(str(params), str(prompts), str(out))


@app.command("sample")
def sample_cmd(
    model: Annotated[Path, typer.Option(help="Model folder: tiny, a local diffusers SD3 folder, or a stage's output.")],
    metadata: Annotated[Path, typer.Option(help="GenEval metadata JSONL.")],
    out: Annotated[Path, typer.Option(help="Output folder (GenEval layout).")],
    images_per_prompt: Annotated[int, typer.Option(min=1, help="Images per prompt.")] = 4,
    sampler: Annotated[str, typer.Option(help="euler, dpm2 or flow_sde.")] = "dpm2",
    steps: Annotated[int, typer.Option(min=1, help="Sampler steps.")] = 10,
    seed: Annotated[int, typer.Option(help="Noise seed.")] = 0,
    cfg: Annotated[float, typer.Option(help="CFG scale (1.0 = off).")] = 1.0,
    shift: Annotated[float, typer.Option(help="Timestep shift.")] = 1.0,
    noise_level: Annotated[float, typer.Option(help="flow_sde noise level a.")] = 0.7,
    resolution: Annotated[int | None, typer.Option(help="Image side for SD3 models [model.resolution].")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 64,
    device: Annotated[str | None, typer.Option(help="Torch device (default: cuda when available).")] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Sample images for GenEval metadata with a model, in GenEval's folder layout."""

    from elborl.evaluation import sample_layout
    from elborl.geneval_io import read_metadata_jsonl
    from elborl.models.factory import sampling_policy
    from elborl.sampling import SAMPLERS

    if sampler not in SAMPLERS:
        raise UserError(f"--sampler: expected one of {', '.join(SAMPLERS)}, found {sampler!r}")
    model_cfg = (load_params(params) if params.is_file() else Params()).model
    if resolution is not None:
        model_cfg = model_cfg.model_copy(update={"resolution": resolution})
    rows = read_metadata_jsonl(metadata)
    policy = sampling_policy(model, model_cfg, _device(device))

    sample_layout(policy, rows, out, images_per_prompt, seed, batch_size, sampler=sampler, steps=steps, shift=shift,
                  cfg_scale=cfg, noise_level=noise_level)  # fmt: skip
    typer.echo(f"sampled {len(rows)} prompts x {images_per_prompt} images to {out}")


@app.command()
def base(
    train: Annotated[bool, typer.Option("--train", help="Pretrain the tiny model from scratch (resumable).")] = False,
    out: Annotated[Path | None, typer.Option(help="Output folder [data/base; build/base with --train].")] = None,
    prompts: Annotated[Path, typer.Option(help="Test prompts, for the stage.")] = Path("data/prompts/test.jsonl"),
    steps: Annotated[int | None, typer.Option(help="Override base.steps (with --train).")] = None,
    corpus: Annotated[str | None, typer.Option(help="Override base.corpus (with --train): prompts or web.")] = None,
    device: Annotated[str | None, typer.Option(help="Training device (default: cuda when available).")] = None,
    warm_start: Annotated[Path | None, typer.Option(help="With --train: continue from an exported warm start.")] = None,
    export_warm_start: Annotated[
        Path | None, typer.Option(help="Write a compact warm start of the --out training checkpoint here.")
    ] = None,
    export_model: Annotated[
        Path | None,
        typer.Option(help="Write the EMA weights of the --out checkpoint (or --warm-start) as an fp16 model here."),
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """The `base` stage (copy and measure the shipped base), or with --train, pretrain a new base."""
    p = load_params(params)
    spec = _spec(p)
    if export_model is not None:
        from elborl.models.pretrain import export_ema_model

        src = warm_start or (out or Path("build/base")) / "checkpoint"
        if not (src / "ema.safetensors").is_file():
            raise UserError(f"{src / 'ema.safetensors'}: not found (expected a training checkpoint or warm start)")
        export_ema_model(src, p.base, spec, export_model)
        typer.echo(f"base: EMA model of {src} written to {export_model}")
        return
    if export_warm_start is not None:
        from elborl.models.pretrain import export_warm_start as export

        checkpoint = (out or Path("build/base")) / "checkpoint"
        if not (checkpoint / "state.json").is_file():
            raise UserError(f"{checkpoint}: no training checkpoint to export")
        export(checkpoint, export_warm_start)
        typer.echo(f"base: warm start written to {export_warm_start}")
        return
    if train:
        _pretrain(p, out or Path("build/base"), steps, corpus, device, warm_start)
        return
    from elborl.models.factory import check_model

    check_model(p.model.path, p.model)  # missing weights stop here, before Prefect starts
    _check_prompts(p, prompts)
    from pipeline.stages import base_flow

    base_flow(str(params), str(prompts), str(out or Path("data/base")), _device(device))


def _pretrain(
    p: Params, out: Path, steps: int | None, corpus: str | None, device: str | None, warm_start: Path | None
) -> None:
    import torch

    from elborl.evaluation import geneval_of_model
    from elborl.models.pretrain import pretrain
    from elborl.rewards.detectors import build_detector
    from elborl.rewards.geneval import Rules
    from elborl.world.prompts import make_prompt_sets

    spec = _spec(p)
    if corpus not in (None, "prompts", "web"):
        raise UserError(f"--corpus: expected prompts or web, found {corpus!r}")
    overrides = {k: v for k, v in {"steps": steps, "corpus": corpus}.items() if v is not None}
    cfg = p.base.model_copy(update=overrides)
    train_rows, test_rows = make_prompt_sets(spec, p.prompts)
    detector = build_detector(p.geneval.detector, spec, p.geneval)
    rules = Rules.from_config(p.geneval)

    def evaluate(model) -> dict:
        with torch.inference_mode():
            return geneval_of_model(model, test_rows, detector, cfg.eval_images_per_prompt, seed=0, rules=rules,
                                    min_images_per_tag=cfg.eval_min_images_per_tag, sampler=cfg.eval_sampler,
                                    steps=cfg.eval_steps)  # fmt: skip

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if warm_start is not None and not ((warm_start / "state.json").is_file() or (warm_start / "transformer").is_dir()):
        raise UserError(
            f"{warm_start}: not a warm start (expected state.json, model and ema safetensors) nor a model folder"
        )
    pretrain(train_rows, spec, cfg, out, evaluate, device=device, warm_start=warm_start)
    typer.echo(f"base: saved {out / 'model'}")


@app.command("train")
def train_cmd(
    prompts: Annotated[Path, typer.Option(help="Folder with train.jsonl and test.jsonl.")] = Path("data/prompts"),
    base: Annotated[Path, typer.Option(help="Base model folder.")] = Path("data/base/model"),
    out: Annotated[Path, typer.Option(help="Output folder (model, history.csv, metrics.json).")] = Path("data/train"),
    epochs: Annotated[int | None, typer.Option(help="Override train.epochs.")] = None,
    device: Annotated[str | None, typer.Option(help="Torch device (default: cuda when available).")] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """The `train` stage: RL fine-tuning as a Prefect flow (cached, checkpointed epochs; rerun to resume).

    Under `accelerate launch` (or torchrun) with N processes, the update runs on N ranks: rank 0 runs
    the flow (checkpoints, MLflow, Prefect state) and the others follow its epochs."""
    p = load_params(params)  # a bad params file stops here, before any work
    _spec(p)
    for path in (prompts / "train.jsonl", prompts / "test.jsonl"):
        if not path.is_file():
            raise UserError(f"{path}: not found (run the `prompts` stage first)")
    from elborl.models.factory import check_model

    check_model(base, p.model, "--base")
    _check_prompts(p, prompts / "train.jsonl")
    if "://" in p.train.checkpoints:  # an unreachable S3 endpoint fails here, before Prefect starts
        from elborl import storage

        storage.exists(p.train.checkpoints, p.storage.options())
    if epochs is not None:
        params = _override(params, out, "train", {"epochs": epochs})
    from elborl.distributed import from_env
    from pipeline.shards import task_runner
    from pipeline.train import follow_epochs, train_flow

    ranks = from_env()
    if ranks.world > 1 and p.runner.kind != "inline":
        raise UserError(f"{params}: runner.kind: {p.runner.kind} with {ranks.world} ranks is not supported (each "
                        "rank samples its own shard); use runner.kind: inline under accelerate launch")  # fmt: skip
    if not ranks.is_main:
        follow_epochs(str(params), str(prompts), str(base), _device(device))
        return
    runner = task_runner(p.runner)
    flow = train_flow.with_options(task_runner=runner) if runner is not None else train_flow
    try:
        flow(str(params), str(prompts), str(base), str(out), _device(device))
    finally:
        ranks.broadcast(None)  # the other ranks stop (after the run, or after an error here)


@app.command()
def evaluate(
    prompts: Annotated[Path, typer.Option(help="Test prompts.")] = Path("data/prompts/test.jsonl"),
    model: Annotated[Path, typer.Option(help="Trained model folder (EMA weights).")] = Path("data/train/model"),
    base: Annotated[Path, typer.Option(help="Base model folder, scored for comparison.")] = Path("data/base/model"),
    run: Annotated[Path, typer.Option(help="The train run.json (MLflow run id).")] = Path("data/train/run.json"),
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("data/eval"),
    device: Annotated[str | None, typer.Option(help="Torch device (default: cuda when available).")] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """The `evaluate` stage: strict GenEval of the trained and base models, plots, registry."""
    p = load_params(params)
    _spec(p)
    from elborl.models.factory import check_model

    check_model(base, p.model, "--base")
    check_model(model, p.model, "--model")
    _check_prompts(p, prompts)
    from pipeline.evaluate import evaluate_flow

    evaluate_flow(str(params), str(prompts), str(model), str(base), str(run), str(out), _device(device))


@app.command()
def serve(params: ParamsOpt = Path("params.yaml")) -> None:
    """Serve the pipeline as a Prefect deployment on the `schedule` cron (needs PREFECT_API_URL)."""
    p = load_params(params)
    from pipeline.deploy import serve as serve_deployment

    serve_deployment(p.schedule)


def _check_prompts(p: Params, path: Path) -> None:
    """Prompts the configured detector cannot judge stop a stage here, before Prefect starts."""
    from types import SimpleNamespace

    from elborl.geneval_io import read_metadata_jsonl
    from elborl.rewards.detectors import check_classes, detector_classes

    if not path.is_file():
        raise UserError(f"{path}: not found (run the `prompts` stage first)")
    name = p.geneval.detector
    check_classes(SimpleNamespace(name=name, classes=detector_classes(name, _spec(p))), read_metadata_jsonl(path),
                  str(path))  # fmt: skip


def _device(device: str | None) -> str | None:
    """The torch device a command runs on: the option, else cuda when there is one, else the CPU."""
    import torch

    return device or ("cuda" if torch.cuda.is_available() else None)


def _override(params: Path, out: Path, section: str, values: dict) -> Path:
    """A copy of the params file with `values` set in `section` (next to the outputs)."""
    import yaml

    data = yaml.safe_load(params.read_text()) or {}
    data.setdefault(section, {}).update(values)
    path = out.parent / f".{out.name}.params.yaml"
    from elborl.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(data))  # every rank of a multi-process run writes the same file
    load_params(path)
    return path


@app.command()
def compare(
    model: Annotated[str | None, typer.Option(help="Registered model name (default: tracking.model_name).")] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Print the registered versions of a model side by side: GenEval overall and per tag, key params."""
    from elborl.tracking import client
    from elborl.tracking import compare as compare_versions

    p = load_params(params)
    name = model or p.tracking.model_name
    rows = compare_versions(client(p.tracking.uri), name, p.tracking.alias)
    if not rows:
        typer.echo(f"no registered versions of {name!r} at {p.tracking.uri}")
        return
    scores = sorted({k for r in rows for k in r if k not in ("version", "params", p.tracking.alias)})
    keys = ["train.estimator", "train.objective", "train.sampler", "train.lr"]
    typer.echo(" | ".join(["version", p.tracking.alias, *scores, *keys]))
    for r in rows:
        cells = [r["version"], "*" if r[p.tracking.alias] else "", *(f"{r.get(k, float('nan')):.3f}" for k in scores)]
        typer.echo(" | ".join([*cells, *(r["params"].get(k, "") for k in keys)]))


def main() -> None:
    """Entry point: run the app, turning `UserError` into `error: ...` and exit code 2."""
    try:
        app(standalone_mode=False)
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except Exception as err:  # click's usage errors
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        raise


if __name__ == "__main__":
    main()
