"""Flow-matching pretraining of the tiny model on scenes rendered from the train prompts.

Resumable: a checkpoint (weights, EMA, optimizer, step) is written atomically every
`checkpoint_every` steps, and every random draw of step k comes from a generator seeded with
(seed, k), so a resumed run continues exactly where an uninterrupted one would be.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from elborl.checkpoint import flatten_optimizer, load_optimizer
from elborl.config import BaseConfig
from elborl.io import atomic_dir
from elborl.models.tiny import TinyConfig, TinyT2I
from elborl.rewards.geneval import TAGS
from elborl.world.corpus import web_batch
from elborl.world.prompts import draw_tag_balanced
from elborl.world.render import render
from elborl.world.spec import WorldSpec


def tiny_config(cfg: BaseConfig, spec: WorldSpec) -> TinyConfig:
    return TinyConfig(spec.size, cfg.patch_size, cfg.num_layers, cfg.num_heads, cfg.head_dim, cfg.text_hidden,
                      cfg.text_layers)  # fmt: skip


def render_batch(
    rows: list[dict], spec: WorldSpec, n: int, rng: np.random.Generator, cfg: BaseConfig | None = None
) -> tuple[torch.Tensor, list[str]]:
    """`n` pretraining scenes rendered to (n, 3, H, W) in [-1, 1] with their captions: tag-balanced
    train prompts (`corpus: prompts`), or the world's web-like corpus (`corpus: web`)."""
    if cfg is not None and cfg.corpus == "web":
        images, captions = web_batch(spec, cfg, n, rng)  # (n, H, W, 3) uint8
    else:
        metas = draw_tag_balanced(rows, n, rng)
        images = np.stack([render(m, spec, rng) for m in metas])  # (n, H, W, 3) uint8
        captions = [m["prompt"] for m in metas]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (n, 3, H, W)
    return x, captions


def flow_matching_loss(
    model: TinyT2I, x0: torch.Tensor, prompts: list[str], cfg: BaseConfig, gen: torch.Generator
) -> torch.Tensor:
    """Rectified flow: x_t = (1 - t) x0 + t eps, loss = mean ||v_theta(x_t, t, c) - (eps - x0)||^2,
    t ~ logit-normal(logit_mean, logit_std); a `caption_dropout` share of prompts is emptied."""
    b = x0.shape[0]
    # Draws on the CPU generator, then moved: the same run on any device.
    t = torch.sigmoid(cfg.logit_mean + cfg.logit_std * torch.randn(b, generator=gen)).to(x0.device)  # (B,)
    eps = torch.randn(x0.shape, generator=gen).to(x0.device)
    drop = torch.rand(b, generator=gen) < cfg.caption_dropout
    prompts = ["" if d else p for p, d in zip(prompts, drop.tolist(), strict=True)]
    tb = t.view(b, 1, 1, 1)
    x_t = (1 - tb) * x0 + tb * eps
    v = model.velocity(x_t, t, model.encode(prompts))
    return torch.mean((v - (eps - x0)) ** 2)


class Checkpoint:
    """Resumable training state in a folder: model, EMA and optimizer tensors (safetensors) + state.json."""

    def __init__(self, path: Path):
        self.path = path

    def exists(self) -> bool:
        return (self.path / "state.json").is_file()

    def save(self, model: torch.nn.Module, ema: dict[str, torch.Tensor], opt: torch.optim.Optimizer, state: dict):
        cpu = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        tmp = self.path.with_name(self.path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(cpu, tmp / "model.safetensors")
        save_file({k: v.cpu().contiguous() for k, v in ema.items()}, tmp / "ema.safetensors")
        tensors, groups = flatten_optimizer(opt)
        save_file({k: v.cpu().contiguous() for k, v in tensors.items()}, tmp / "optimizer.safetensors")
        (tmp / "state.json").write_text(json.dumps({**state, "param_groups": groups}))
        old = self.path.with_name(self.path.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if self.path.exists():
            self.path.rename(old)
        tmp.rename(self.path)  # the swap: a reader sees the old or the new checkpoint, never half of one
        shutil.rmtree(old, ignore_errors=True)

    def load(self, model: torch.nn.Module, ema: dict[str, torch.Tensor], opt: torch.optim.Optimizer) -> dict:
        device = next(model.parameters()).device
        model.load_state_dict(load_file(self.path / "model.safetensors"))
        ema.update({k: v.to(device) for k, v in load_file(self.path / "ema.safetensors").items()})
        state = json.loads((self.path / "state.json").read_text())
        # Loaded on the CPU: Optimizer.load_state_dict moves each state to its parameter's device
        # (and keeps AdamW's `step` counters on the CPU, as it wants them).
        load_optimizer(opt, load_file(self.path / "optimizer.safetensors"), state.pop("param_groups"))
        return state


def export_warm_start(checkpoint: Path, dst: Path) -> None:
    """Write a compact warm start of a checkpoint: model and EMA in fp16 plus the step (no optimizer
    state), small enough to commit so a later session continues a long pretraining instead of redoing it."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("model", "ema"):
        tensors = load_file(checkpoint / f"{name}.safetensors")
        save_file(
            {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, dst / f"{name}.safetensors"
        )
    state = json.loads((checkpoint / "state.json").read_text())
    (dst / "state.json").write_text(json.dumps({"step": state["step"], "elapsed": state["elapsed"]}) + "\n")


def load_warm_start(src: Path, model: torch.nn.Module, ema: dict[str, torch.Tensor]) -> dict:
    """Load what `export_warm_start` wrote, or a model folder (`save_pretrained`, e.g. the shipped base:
    weights and EMA both its weights, step 0); the optimizer starts fresh (with a new LR warm-up)."""
    device = next(model.parameters()).device
    if (Path(src) / "transformer").is_dir():
        weights = TinyT2I.from_pretrained(src).state_dict()
        model.load_state_dict(weights)
        for k, v in weights.items():
            ema[k].copy_(v.to(device))
        return {"step": 0, "elapsed": 0.0, "warm_start_step": 0}
    model.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in load_file(src / "model.safetensors").items()}
    )
    for k, v in load_file(src / "ema.safetensors").items():
        ema[k].copy_(v.to(device))
    state = json.loads((src / "state.json").read_text())
    return {"step": state["step"], "elapsed": state["elapsed"], "warm_start_step": state["step"]}


def pretrain(
    rows: list[dict],
    spec: WorldSpec,
    cfg: BaseConfig,
    out: Path,
    evaluate: Callable[[TinyT2I], dict] | None = None,
    log: Callable[[str], None] = print,
    device: str | torch.device = "cpu",
    warm_start: Path | None = None,
) -> TinyT2I:
    """Pretrain (or resume pretraining) the tiny model; returns the EMA model.

    Args:
        rows: Train prompts (GenEval metadata).
        spec: The world.
        cfg: The `base` params section.
        out: Folder for checkpoint/, history.csv and the final EMA model/ (fp16 save_pretrained folder).
        evaluate: Optional EMA model -> GenEval summary, run every `eval_every` steps.
        log: One line per evaluation.
        device: Where to train ("cuda" on a GPU machine); checkpoints are written from the CPU.
        warm_start: A folder from `export_warm_start`, used when `out` has no checkpoint yet.
    """
    model = TinyT2I.create(tiny_config(cfg, spec), seed=cfg.seed).to(device)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ckpt = Checkpoint(out / "checkpoint")
    if ckpt.exists():
        state = ckpt.load(model, ema, opt)
    elif warm_start is not None:
        state = load_warm_start(Path(warm_start), model, ema)
    else:
        state = {"step": 0, "elapsed": 0.0}
    warm_step = state.get("warm_start_step", 0)  # a warm start's fresh optimizer warms up again
    history = out / "history.csv"
    if not history.exists():
        history.parent.mkdir(parents=True, exist_ok=True)
        history.write_text("step,elapsed_s,loss,overall," + ",".join(TAGS) + "\n")
    bar = tqdm(total=cfg.steps, initial=state["step"], desc="base", unit="step", disable=not sys.stderr.isatty())
    losses: list[float] = []
    start = time.perf_counter() - state["elapsed"]
    for step in range(state["step"] + 1, cfg.steps + 1):
        for group in opt.param_groups:  # linear warm-up, then constant
            group["lr"] = cfg.lr * min(1.0, (step - warm_step) / max(cfg.warmup, 1))
        rng = np.random.default_rng([cfg.seed, step])
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        x0, prompts = render_batch(rows, spec, cfg.batch_size, rng, cfg)
        x0 = x0.to(device)
        loss = flow_matching_loss(model, x0, prompts, cfg, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        # EMA over every tensor of the state dict, with a warm-up: a plain 0.999 EMA still weighs the
        # random init at 0.999^k (37% after 1000 steps, measured: pure-noise samples).
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in model.state_dict().items():
                ema[k].lerp_(v, 1 - decay) if v.is_floating_point() else ema[k].copy_(v)
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if step % cfg.eval_every == 0 or step == cfg.steps:
            summary = evaluate(ema_model(model, ema)) if evaluate else None
            elapsed = time.perf_counter() - start
            _append_history(history, step, elapsed, float(np.mean(losses[-cfg.eval_every :])), summary)
            score = f", test GenEval {summary['overall']:.3f}" if summary else ""
            log(f"base: step {step}/{cfg.steps}, {elapsed / 60:.1f} min, loss {np.mean(losses[-200:]):.4f}{score}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            ckpt.save(
                model, ema, opt, {"step": step, "elapsed": time.perf_counter() - start, "warm_start_step": warm_step}
            )
    bar.close()
    final = ema_model(model, ema)
    final.save_pretrained(out / "model", dtype=torch.float16)  # the shipping format: fp16 safetensors
    return final


def export_ema_model(src: Path, cfg: BaseConfig, spec: WorldSpec, dst: Path) -> TinyT2I:
    """Write the EMA weights of a training checkpoint (or warm start) as an fp16 model folder: the
    shipped base (`assets/base`) is made this way."""
    model = TinyT2I.create(tiny_config(cfg, spec), seed=cfg.seed)
    tensors = load_file(Path(src) / "ema.safetensors")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()})
    with atomic_dir(dst) as tmp:
        model.save_pretrained(tmp, dtype=torch.float16)
    return model


def ema_model(model: TinyT2I, ema: dict[str, torch.Tensor]) -> TinyT2I:
    """A copy of `model` carrying the EMA weights."""
    copy = TinyT2I(model.tokenizer, type(model.text_encoder)(model.text_encoder.config),
                   type(model.transformer).from_config(model.transformer.config))  # fmt: skip
    copy.load_state_dict(ema)
    return copy.to(model.device).eval()


def _append_history(path: Path, step: int, elapsed: float, loss: float, summary: dict | None) -> None:
    tags = [summary["per_tag"].get(t, math.nan) if summary else math.nan for t in TAGS]
    overall = summary["overall"] if summary else math.nan
    with path.open("a", newline="") as f:
        csv.writer(f).writerow([step, round(elapsed, 1), round(loss, 5), overall, *tags])
