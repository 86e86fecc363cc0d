"""SD3 / SD3.5 through diffusers, from a local folder only (no hub access).

`load_sd3` checks the folder and loads StableDiffusion3Pipeline with local_files_only; `sd3_policy`
wraps its transformer (LoRA or full fine-tuning), its three text encoders (frozen, with the
policy's per-prompt cache) and its VAE (the sampling space is the VAE's scaled latent space);
`save_lora` writes the `current` adapter in diffusers' LoRA format, so a stock
`StableDiffusion3Pipeline.load_lora_weights(dir)` loads it; `export_sd3` writes a trained policy as
that LoRA folder or, for full fine-tuning, a diffusers transformer folder.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import torch

from elborl.errors import UserError
from elborl.models.policy import Finetune, Policy
from elborl.models.weights import LoraSpec

#: What a diffusers SD3 folder must hold (weights are checked by diffusers when loading).
REQUIRED_FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "transformer/config.json",
    "vae/config.json",
    "text_encoder/config.json",
    "text_encoder_2/config.json",
    "text_encoder_3/config.json",
    "tokenizer",
    "tokenizer_2",
    "tokenizer_3",
)


def check_sd3_folder(path: str | Path) -> Path:
    """Raise a UserError naming the first missing file of a diffusers SD3 folder."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: SD3 model folder not found (expected a local diffusers folder)")
    for name in REQUIRED_FILES:
        if not (path / name).exists():
            raise UserError(f"{path / name}: missing from the SD3 folder (expected a full diffusers layout)")
    for sub in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        if not any((path / sub).glob("*.safetensors")) and not any((path / sub).glob("*.bin")):
            raise UserError(f"{path / sub}: no weights (*.safetensors) in the SD3 folder")
    return path


def fingerprint(path: str | Path) -> str:
    """A cheap identity of an SD3 folder (16 hex digits): the bytes of every small file (configs,
    tokenizers) and the name and size of every weight file (hashing 5+ GB on each stage would cost
    more than the stage's checks)."""
    root, h = Path(path), hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(f.relative_to(root).as_posix().encode())
        big = f.suffix in (".safetensors", ".bin", ".pt", ".gguf")
        h.update(str(f.stat().st_size).encode() if big else f.read_bytes())
    return h.hexdigest()[:16]


def load_sd3(path: str | Path, dtype: torch.dtype = torch.float32):
    """Load a StableDiffusion3Pipeline from a local folder (never the hub)."""
    from diffusers import StableDiffusion3Pipeline

    return StableDiffusion3Pipeline.from_pretrained(check_sd3_folder(path), torch_dtype=dtype, local_files_only=True)


class VaeCodec:
    """Images in [-1, 1] <-> SD3's latent space: z = (E(x) - shift) * scale, x = D(z / scale + shift)."""

    def __init__(self, vae):
        self.vae = vae.requires_grad_(False).eval()
        self.scale = vae.config.scaling_factor
        self.shift = vae.config.shift_factor or 0.0

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        z = self.vae.encode(images.to(self.vae.dtype)).latent_dist.mean
        return ((z - self.shift) * self.scale).float()

    @torch.no_grad()
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.decode((x / self.scale + self.shift).to(self.vae.dtype), return_dict=False)[0].float()


def sd3_policy(
    pipe,
    resolution: int | None = None,
    finetune: Finetune = "lora",
    lora: LoraSpec | None = None,
    max_sequence_length: int = 256,
    compute_dtype: torch.dtype | None = None,
    gradient_checkpointing: bool = False,
    source: str | Path | None = None,
) -> Policy:
    """A `Policy` over a loaded SD3 pipeline.

    With full fine-tuning the transformer is trained in fp32 (cast up here if the pipeline was loaded
    in bf16); with LoRA its base weights keep the pipeline's dtype and only the adapters are fp32.

    Args:
        pipe: StableDiffusion3Pipeline.
        resolution: Image side in pixels (the latent side is resolution / vae_scale_factor); None =
            the transformer's sample size x vae_scale_factor.
        finetune: "lora", "full" or "frozen" (sampling only).
        lora: LoRA settings (defaults: r 32, alpha 64, gaussian init, the attention projections).
        max_sequence_length: T5 tokens.
        compute_dtype: Autocast dtype of every forward (bf16), None = the weights' own.
        gradient_checkpointing: Recompute the transformer's activations in the backward.
        source: The folder the pipeline was loaded from; an export names it in its `elborl_model.json`.
    """
    for enc in (pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3):
        if enc is not None:
            enc.requires_grad_(False).eval()

    def encode_fn(prompts: list[str]):
        states, _, pooled, _ = pipe.encode_prompt(
            prompts, prompts, prompts, do_classifier_free_guidance=False, max_sequence_length=max_sequence_length
        )
        return states, pooled

    if finetune == "full":
        pipe.transformer.float()  # trained weights (and AdamW's moments) in fp32
    if gradient_checkpointing:
        pipe.transformer.enable_gradient_checkpointing()
    side = (resolution or pipe.transformer.config.sample_size * pipe.vae_scale_factor) // pipe.vae_scale_factor
    shape = (pipe.transformer.config.in_channels, side, side)
    export = functools.partial(export_sd3, source=source)
    policy = Policy(pipe.transformer, encode_fn, VaeCodec(pipe.vae), shape, finetune, lora, compute_dtype, export)
    policy.image_size = side * pipe.vae_scale_factor
    policy.pipe = pipe  # the stock pipeline, for callers that want it (e.g. comparing against it)
    return policy


def export_sd3(policy: Policy, path: Path, source: str | Path | None = None) -> None:
    """The `current` weights as diffusers expects them: a LoRA folder (`pytorch_lora_weights.safetensors`,
    for `StableDiffusion3Pipeline.load_lora_weights`) or, with full fine-tuning, a transformer folder
    (`SD3Transformer2DModel.from_pretrained`); with `source`, plus the pointer to the base folder that
    makes it a model folder the stages can load (`elborl.models.factory`)."""
    from elborl.models.factory import write_pointer
    from elborl.models.weights import LoraWeights

    lora = isinstance(policy.weights, LoraWeights)
    if lora:
        save_lora(policy, path)
    else:
        policy.transformer.save_pretrained(path, safe_serialization=True)
    if source is not None:
        write_pointer(path, source, "lora" if lora else "transformer")


def save_lora(policy: Policy, path: str | Path) -> None:
    """Write the `current` adapter in diffusers' LoRA format (pytorch_lora_weights.safetensors)."""
    from diffusers import StableDiffusion3Pipeline

    # The adapter's config travels as metadata, so loaders get alpha (scale alpha / r) right.
    config = policy.transformer.peft_config["current"].to_dict()
    config["target_modules"] = sorted(config["target_modules"])
    StableDiffusion3Pipeline.save_lora_weights(
        path, transformer_lora_layers=policy.weights.state_dict("current"), transformer_lora_adapter_metadata=config
    )
