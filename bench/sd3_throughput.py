"""Throughput of the reference RL recipe at the real SD3.5-Medium size: rollout images/s, update
samples/s (LoRA and full fine-tuning), peak memory, model FLOPs per image and per sample, achieved
TFLOP/s and MFU against the machine's measured matmul rate, and the projected GPU-hours of the recipe.

The SD3.5-M transformer (diffusers SD3Transformer2DModel) and the SD3 VAE (AutoencoderKL) are built
from their published configs with random init: no weights, no hub access. The text encoders are not
built: the pipeline encodes each unique prompt once and caches it, so the policy's encoder returns
random conditioning of the real shapes (states (B, 77 CLIP + 256 T5 = 333, 4096), pooled (B, 2048)).
Everything else is the product's own code path: `Policy` (weight sets current / old / ref, LoRA r 32
alpha 64 or full), `VaeCodec`, `elborl.sampling.sample` (dpm2, 10 steps, shift 3, CFG off, `old`
weights) then the VAE decode, and `elborl.update.update` (elbo / epg / adaptive, K = 9 terms per
sample, one optimizer step, soft update, EMA) on a hand-built rewarded `Rollout`. FLOPs are counted
with torch's FlopCounterMode on one batch-1 run of each phase.

    python bench/sd3_throughput.py --tiny                              # CPU, a few seconds (CI check)
    python bench/sd3_throughput.py --device cuda --dtype bfloat16      # the real size on a GPU
    python bench/sd3_throughput.py --device cuda --batch 16 --finetune lora --gradient-checkpointing
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import inspect
import math
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/sd3_throughput.py` from anywhere

from bench.throughput import matmul_gflops
from elborl.config import TrainConfig
from elborl.io import atomic_write_text
from elborl.models.policy import Policy
from elborl.models.sd3 import VaeCodec
from elborl.models.weights import LoraSpec
from elborl.rollout import Rollout
from elborl.sampling import guided, sample
from elborl.seeding import sample_generators
from elborl.update import make_ema, make_optimizer, update

#: stabilityai/stable-diffusion-3.5-medium transformer/config.json ("SD3.5 Medium Public Release",
#: 524 bytes, diffusers 0.31.0.dev0), every value as published.
SD35M_TRANSFORMER = {
    "sample_size": 128,
    "patch_size": 2,
    "in_channels": 16,
    "num_layers": 24,
    "attention_head_dim": 64,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "caption_projection_dim": 1536,
    "pooled_projection_dim": 2048,
    "out_channels": 16,
    "pos_embed_max_size": 384,
    "dual_attention_layers": tuple(range(13)),
    "qk_norm": "rms_norm",
}

#: stabilityai/stable-diffusion-3.5-medium vae/config.json (the SD3 VAE), every value as published.
SD3_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 16,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "scaling_factor": 1.5305,
    "shift_factor": 0.0609,
    "latents_mean": None,
    "latents_std": None,
    "force_upcast": True,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "mid_block_add_attention": True,
}

#: A few-layer, narrow stand-in with the same structure (dual attention, RMS qk-norm, 16 latent channels).
TINY_TRANSFORMER = {
    **SD35M_TRANSFORMER,
    "sample_size": 8,
    "num_layers": 2,
    "attention_head_dim": 16,
    "num_attention_heads": 4,
    "joint_attention_dim": 32,
    "caption_projection_dim": 64,
    "pooled_projection_dim": 32,
    "pos_embed_max_size": 16,
    "dual_attention_layers": (0,),
}

#: A small VAE: 3 blocks (downsampling 4x), narrow.
TINY_VAE = {
    **SD3_VAE,
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "block_out_channels": (16, 32, 32),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 32,
}

#: The reference recipe's epoch and length: 360 epochs x (48 prompts x 24 images).
RECIPE_EPOCHS, RECIPE_PROMPTS, RECIPE_GROUP = 360, 48, 24
TARGET_MFU, TARGET_GPU_HOURS, STUDY_GPU_HOURS = 0.40, 45.0, 90.0
PHASES = ("rollout", "decode", "update")


@dataclass(frozen=True)
class ModelSpec:
    """Which model to build.

    Args:
        name: Shown in the report.
        transformer: SD3Transformer2DModel config.
        vae: AutoencoderKL config.
        text_tokens: Conditioning tokens per prompt (77 CLIP + 256 T5 for SD3).
        resolution: Default image side in pixels.
    """

    name: str
    transformer: dict
    vae: dict
    text_tokens: int
    resolution: int

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae["block_out_channels"]) - 1)


SD35M = ModelSpec("SD3.5-Medium", SD35M_TRANSFORMER, SD3_VAE, 77 + 256, 512)
TINY = ModelSpec("tiny (not SD3.5-M: CI check only)", TINY_TRANSFORMER, TINY_VAE, 16, 32)


def log(msg: str) -> None:
    """One progress line on stderr (the table goes to stdout)."""
    print(f"[sd3_throughput] {msg}", file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """(seconds, result) of fn(), CUDA synchronized on both sides."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def build_models(spec: ModelSpec, device: torch.device, seed: int = 0):
    """(transformer, vae) with random init, built directly on `device`, float32 weights."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel

    torch.manual_seed(seed)
    with torch.device(device):
        transformer = SD3Transformer2DModel(**spec.transformer)
        vae = AutoencoderKL(**spec.vae)
    return transformer, vae


def random_encoder(spec: ModelSpec, device: torch.device) -> Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]:
    """Stand-in for the frozen text encoders: random (states (n, L, D), pooled (n, P)) of the real shapes."""
    cfg = spec.transformer

    def encode(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(prompts)
        states = torch.randn(n, spec.text_tokens, cfg["joint_attention_dim"], device=device)
        return states, torch.randn(n, cfg["pooled_projection_dim"], device=device)

    return encode


def policy_takes_compute_dtype() -> bool:
    """Whether this checkout's Policy runs its forwards under autocast itself (`compute_dtype`)."""
    return "compute_dtype" in inspect.signature(Policy.__init__).parameters


def make_policy(spec: ModelSpec, device: torch.device, resolution: int, finetune: str, dtype: torch.dtype,
                checkpointing: bool) -> Policy:  # fmt: skip
    """A fresh `Policy` over a random-init transformer and the VAE codec, stored as the product stores a
    pipeline loaded in `dtype` (elborl.models.sd3.sd3_policy): the frozen VAE and LoRA's frozen base in
    `dtype`, the trained weights (adapters, or the whole transformer for full fine-tuning) in fp32."""
    transformer, vae = build_models(spec, device)
    if dtype != torch.float32:
        vae.to(dtype)
        if finetune == "lora":
            transformer.to(dtype)
    if checkpointing:
        transformer.enable_gradient_checkpointing()
    side = resolution // spec.vae_factor
    shape = (spec.transformer["in_channels"], side, side)
    kwargs = {"finetune": finetune, "lora": LoraSpec(rank=32, alpha=64)}
    if dtype != torch.float32 and policy_takes_compute_dtype():
        kwargs["compute_dtype"] = dtype
    return Policy(transformer, random_encoder(spec, device), VaeCodec(vae), shape, **kwargs)


def compute_context(device: torch.device, dtype: torch.dtype):
    """Autocast around the measured calls when Policy cannot do it itself (fp32 weights, `dtype` compute)."""
    if dtype == torch.float32 or policy_takes_compute_dtype():
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)  # also covers the VAE decode, which Policy leaves alone


def recipe_config(finetune: str, batch: int) -> TrainConfig:
    """The reference recipe's `train` section (finetune itself lives with the Policy, not here)."""
    return TrainConfig(
        estimator="elbo",
        objective="epg",
        weighting="adaptive",
        elbo_timesteps="grid",
        sampler="dpm2",
        steps=10,
        shift=3.0,
        cfg_scale=1.0,
        optimizer_steps=1,
        micro_batch=batch,
        prompts_per_epoch=RECIPE_PROMPTS,
        group_size=RECIPE_GROUP,
        lr=3e-4 if finetune == "lora" else 2e-5,
    )


def terms_per_sample(cfg: TrainConfig) -> int:
    """K: floor(0.99 N) from an N-step grid unless set (elborl.likelihood.elbo_timesteps)."""
    return cfg.elbo_k if cfg.elbo_k is not None else max(1, int(0.99 * cfg.steps))


def flop_counter() -> FlopCounterMode:
    """FlopCounterMode that also counts CPU flash attention (torch registers only the CUDA kernels)."""
    mapping = {}
    fwd = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if fwd is not None:
        mapping[fwd] = lambda q, k, v, *args, out_shape=None, **kw: sdpa_flop_count(q, k, v)
    if bwd is not None:
        mapping[bwd] = lambda g, q, k, v, *args, out_shape=None, **kw: sdpa_backward_flop_count(g, q, k, v)
    return FlopCounterMode(display=False, custom_mapping=mapping)


def count_flops(fn: Callable[[], object]) -> int:
    """Model FLOPs (matmuls, convolutions, attention) of one call of fn."""
    with flop_counter() as counter:
        fn()
    return counter.get_total_flops()


def prompts_for(batch: int) -> list[str]:
    """Two prompt groups (one when batch is 1), as a rollout's P x G layout."""
    per_group = max(1, math.ceil(batch / 2))
    return [f"prompt {i // per_group}" for i in range(batch)]


def draw_samples(policy: Policy, cfg: TrainConfig, batch: int):
    """The rollout's sampling: `old` weights, the recipe's sampler (CFG off -> the cond velocity)."""
    cond = policy.encode(prompts_for(batch))
    velocity = guided(lambda x, t: policy.velocity(x, t, cond, "old"), None, cfg.cfg_scale)
    noise = torch.randn(batch, *policy.sample_shape, device=policy.device)
    return sample(velocity, noise, cfg.sampler, cfg.steps, cfg.shift)


def rewarded_batch(x0: torch.Tensor, grid: torch.Tensor) -> Rollout:
    """A `Rollout` with random rewards over the given samples (the reward model is not measured)."""
    batch = x0.shape[0]
    prompts = prompts_for(batch)
    groups = torch.tensor([int(p.split()[-1]) for p in prompts])
    images = np.zeros((batch, 1, 1, 3), dtype=np.uint8)
    rewards = torch.rand(batch, device=x0.device)
    metadata = [{"prompt": p} for p in prompts]
    return Rollout(metadata=metadata, groups=groups, x0=x0, grid=grid, states=None, images=images, rewards=rewards)


def peak_memory_gib(device: torch.device) -> float:
    """Peak allocated CUDA memory since the last reset, or the process's peak RSS on CPU (GiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_matmul_tflops(device: torch.device, n: int = 8192, repeats: int = 100) -> tuple[float, str]:
    """The machine's measured matmul rate: bf16 n x n on CUDA, float32 (bench/throughput.py) on CPU."""
    if device.type != "cuda":
        return max(matmul_gflops() for _ in range(3)) / 1e3, "float32"  # the best of 3: a shared CPU is noisy
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    seconds, _ = timed(lambda: [a @ b for _ in range(repeats)], device)
    return 2 * n**3 * repeats / seconds / 1e12, "bf16"


@dataclass
class Phase:
    """One measured phase of one fine-tuning mode."""

    finetune: str
    phase: str
    batch: int
    seconds: float  # per batch
    flops: float  # per item (image or sample)
    memory_gib: float

    @property
    def rate(self) -> float:
        return self.batch / self.seconds

    @property
    def tflops(self) -> float:
        return self.flops * self.rate / 1e12


class Runner:
    """The three measured phases of one policy, each one call of the product's code."""

    def __init__(self, policy: Policy, cfg: TrainConfig):
        self.policy, self.cfg = policy, cfg
        params = policy.trainable_parameters()
        self.optimizer, self.ema = make_optimizer(params, cfg), make_ema(params, cfg)
        self.step = 0

    def rollout(self, batch: int):
        return draw_samples(self.policy, self.cfg, batch)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        return self.policy.from_sample_space(x0)

    def update(self, x0: torch.Tensor, grid: torch.Tensor) -> None:
        batch = rewarded_batch(x0, grid)
        gens = sample_generators((0, self.step), batch.index)  # ELBO draws per sample
        self.step = update(self.policy, self.optimizer, self.ema, batch, self.cfg, self.step, gens)["step"]

    def calls(self, batch: int, x0: torch.Tensor, grid: torch.Tensor) -> dict[str, Callable[[], object]]:
        """Each phase as a no-argument call on `batch` items (decode and update reuse the given samples)."""
        return {
            "rollout": lambda: self.rollout(batch),
            "decode": lambda: self.decode(x0),
            "update": lambda: self.update(x0, grid),
        }


def count_model_flops(runner: Runner, checkpointing: bool) -> dict[str, int]:
    """Per-item FLOPs of each phase, counted at batch 1: model FLOPs, so without the forwards that
    gradient checkpointing recomputes (MFU's convention)."""
    if checkpointing:
        runner.policy.transformer.disable_gradient_checkpointing()
    try:
        one = runner.rollout(1)
        return {name: count_flops(call) for name, call in runner.calls(1, one.x0, one.timesteps).items()}
    finally:
        if checkpointing:
            runner.policy.transformer.enable_gradient_checkpointing()


def measure_mode(spec: ModelSpec, args, finetune: str) -> list[Phase]:
    """Rollout, decode and update of one fine-tuning mode: FLOPs at batch 1, warm-up, then timed repeats."""
    device, batch = args.device, args.batch
    log(f"{finetune}: building {spec.name} (random init) on {device}")
    policy = make_policy(spec, device, args.resolution, finetune, args.dtype, args.gradient_checkpointing)
    runner = Runner(policy, recipe_config(finetune, batch))
    with compute_context(device, args.dtype):
        log(f"{finetune}: counting FLOPs (batch 1)")
        flops = count_model_flops(runner, args.gradient_checkpointing)
        log(f"{finetune}: warm-up (batch {batch})")
        out = runner.rollout(batch)
        calls = runner.calls(batch, out.x0, out.timesteps)
        for call in calls.values():
            call()
        seconds, memory = dict.fromkeys(PHASES, 0.0), {}
        for name in PHASES:
            log(f"{finetune}: timing {name} ({args.repeats} x batch {batch})")
            reset_peak(device)
            for _ in range(args.repeats):
                seconds[name] += timed(calls[name], device)[0]
            memory[name] = peak_memory_gib(device)
    return [Phase(finetune, p, batch, seconds[p] / args.repeats, flops[p], memory[p]) for p in PHASES]


def release(device: torch.device) -> None:
    """Free what the last mode held before the next one builds its models."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def num(x: float) -> str:
    """A number for the table: thousands separated above 100, three significant digits below."""
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.2f}" if x >= 1 else f"{x:.3g}"


PHASE_LABELS = {
    "rollout": "rollout: dpm2 10 steps, `old` (images)",
    "decode": "VAE decode (images)",
    "update": "update: elbo K = 9, 1 step (samples)",
}


def phase_table(rows: list[Phase], peak: float, peak_kind: str, device: torch.device) -> str:
    """The measurements, one row per fine-tuning mode and phase."""
    mem = "peak memory (GiB)" if device.type == "cuda" else "peak RSS (GiB)"
    cols = ["items/s", "s / batch", "GFLOP / item", "TFLOP/s", f"MFU ({peak_kind})", mem, "target"]
    lines = [
        "| finetune | phase | batch | " + " | ".join(cols) + " |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        target = f">= {TARGET_MFU:.0%} bf16 MFU" if r.phase == "update" else "-"
        lines.append(
            f"| {r.finetune} | {PHASE_LABELS[r.phase]} | {r.batch} | {num(r.rate)} | {num(r.seconds)} "
            f"| {num(r.flops / 1e9)} | {num(r.tflops)} | {r.tflops / peak:.1%} | {num(r.memory_gib)} | {target} |"
        )
    return "\n".join(lines)


def projection_table(rows: list[Phase]) -> str:
    """GPU-hours of the recipe from the measured rates, one GPU and eight with linear scaling."""
    images = RECIPE_PROMPTS * RECIPE_GROUP
    lines = [
        "| finetune | s / epoch (1 GPU) | GPU-hours | hours on 8 GPUs | target GPU-hours | study GPU-hours |",
        "|---|---|---|---|---|---|",
    ]
    for mode in dict.fromkeys(r.finetune for r in rows):
        rates = {r.phase: r.rate for r in rows if r.finetune == mode}
        epoch_s = sum(images / rates[p] for p in PHASES)
        gpu_hours = RECIPE_EPOCHS * epoch_s / 3600
        lines.append(
            f"| {mode} | {num(epoch_s)} | {num(gpu_hours)} | {num(gpu_hours / 8)} "
            f"| < {TARGET_GPU_HOURS:.0f} | ~{STUDY_GPU_HOURS:.0f} |"
        )
    return "\n".join(lines)


def header(spec: ModelSpec, args, peak: float, peak_kind: str) -> str:
    """What was built and how it ran."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel

    with torch.device("meta"):
        n_tr = sum(p.numel() for p in SD3Transformer2DModel(**spec.transformer).parameters())
        n_vae = sum(p.numel() for p in AutoencoderKL(**spec.vae).decoder.parameters())
    t = spec.transformer
    side = args.resolution // spec.vae_factor
    tokens = (side // t["patch_size"]) ** 2
    if args.dtype == torch.float32:
        compute = "float32"
    else:
        how = "Policy(compute_dtype=...)" if policy_takes_compute_dtype() else "torch.autocast around the calls"
        compute = (f"{args.dtype_name} autocast via {how}; VAE and LoRA's base stored in {args.dtype_name}, "
                   "trained weights and optimizer fp32")  # fmt: skip
    name = (
        torch.cuda.get_device_name(args.device)
        if args.device.type == "cuda"
        else f"CPU threads: {torch.get_num_threads()}"
    )
    cfg = recipe_config("lora", args.batch)
    return "\n".join([
        f"{spec.name}: transformer {n_tr / 1e6:,.1f} M parameters ({t['num_layers']} layers, width "
        f"{t['num_attention_heads'] * t['attention_head_dim']}, dual attention in {len(t['dual_attention_layers'])}), "
        f"VAE decoder {n_vae / 1e6:,.1f} M; random init",
        f"{args.resolution} px -> latent {side} x {side} x {t['in_channels']}: {tokens} image + {spec.text_tokens} "
        f"text tokens",
        f"conditioning: random tensors of the real shapes (states (B, {spec.text_tokens}, {t['joint_attention_dim']}), "
        f"pooled (B, {t['pooled_projection_dim']})); text encoders not built (prompt embeddings are computed once "
        "per unique prompt and cached); the reward model is not measured",
        f"device {args.device} ({name}), torch {torch.__version__}, compute {compute}"
        f"{', gradient checkpointing' if args.gradient_checkpointing else ''}; measured {peak_kind} matmul "
        f"{num(peak)} TFLOP/s",
        f"recipe: {cfg.estimator} / {cfg.objective} / {cfg.weighting}, {cfg.sampler} {cfg.steps} steps shift "
        f"{cfg.shift:g}, CFG off, K = {terms_per_sample(cfg)} terms per sample (current forward + backward, old "
        f"and ref forwards, beta_kl {cfg.beta_kl:g}), {cfg.optimizer_steps} optimizer step, LoRA r 32 alpha 64; "
        f"model FLOPs counted with FlopCounterMode at batch 1 (recomputation excluded); mean of {args.repeats} "
        "after a warm-up",
    ])  # fmt: skip


def parse_args(argv: list[str] | None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--dtype",
        choices=("bfloat16", "float32"),
        default=None,
        help="Compute dtype (weights stay float32); default bfloat16 on CUDA, float32 on CPU.",
    )
    ap.add_argument("--batch", type=int, default=None, help="Images per rollout and samples per update (8; tiny 4).")
    ap.add_argument("--resolution", type=int, default=None, help="Image side in pixels (512; tiny 32).")
    ap.add_argument("--repeats", type=int, default=3, help="Timed repeats per phase, after one warm-up.")
    ap.add_argument("--finetune", default="lora,full", help="Comma-separated: lora, full.")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--out", default=None, help="Also write the report here (atomically).")
    ap.add_argument("--tiny", action="store_true", help="A tiny stand-in config that runs in seconds on a CPU.")
    args = ap.parse_args(argv)  # fmt: skip
    args.device = torch.device(args.device)
    args.dtype_name = args.dtype or ("bfloat16" if args.device.type == "cuda" else "float32")
    args.dtype = getattr(torch, args.dtype_name)
    spec = TINY if args.tiny else SD35M
    args.resolution = args.resolution or spec.resolution
    args.batch = args.batch or (4 if args.tiny else 8)
    args.finetune = [m.strip() for m in args.finetune.split(",") if m.strip()]
    if not args.finetune or any(m not in ("lora", "full") for m in args.finetune):
        ap.error(f"--finetune: expected a comma-separated subset of lora,full, found {','.join(args.finetune)!r}")
    if args.resolution % (spec.vae_factor * spec.transformer["patch_size"]):
        ap.error(f"--resolution: expected a multiple of {spec.vae_factor * spec.transformer['patch_size']}")
    return args, spec


def main(argv: list[str] | None = None) -> str:
    """Measure, print the report (header and two tables), write it to --out; returns it."""
    args, spec = parse_args(argv)
    threads = torch.get_num_threads()
    if args.tiny:
        torch.set_num_threads(1)  # tiny ops gain nothing from threads, and spin-wait on a shared CPU
    try:
        log(f"measuring the {'bf16' if args.device.type == 'cuda' else 'float32'} matmul rate")
        peak, peak_kind = peak_matmul_tflops(args.device)
        rows = []
        for mode in args.finetune:
            rows += measure_mode(spec, args, mode)
            release(args.device)
        head = header(spec, args, peak, peak_kind)
    finally:
        torch.set_num_threads(threads)
    report = "\n\n".join([
        head,
        phase_table(rows, peak, peak_kind, args.device),
        f"Projected from this device's rates: the reference recipe, {RECIPE_EPOCHS} epochs x ({RECIPE_PROMPTS} "
        f"prompts x {RECIPE_GROUP} images) = rollout + VAE decode + update (8 GPUs: linear scaling, the same "
        "GPU-hours):",
        projection_table(rows),
    ]) + "\n"  # fmt: skip
    print(report, end="")
    if args.out:
        atomic_write_text(args.out, report)
    return report


if __name__ == "__main__":
    main()
