"""SD3 / SD3.5 through diffusers, from a local folder only (no hub access).

`load_sd3` checks the folder and loads StableDiffusion3Pipeline with local_files_only; `sd3_policy`
wraps its transformer (LoRA or full fine-tuning), its three text encoders (frozen, with the
policy's per-prompt cache) and its VAE (the sampling space is the VAE's scaled latent space);
`save_lora` writes the `current` adapter in diffusers' LoRA format, so a stock
`StableDiffusion3Pipeline.load_lora_weights(dir)` loads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from elborl.errors import UserError
from elborl.models.policy import Policy
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
        return (self.vae.encode(images).latent_dist.mean - self.shift) * self.scale

    @torch.no_grad()
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(x / self.scale + self.shift, return_dict=False)[0]


def sd3_policy(
    pipe,
    resolution: int = 512,
    finetune: Literal["lora", "full"] = "lora",
    lora: LoraSpec | None = None,
    max_sequence_length: int = 256,
) -> Policy:
    """A `Policy` over a loaded SD3 pipeline.

    Args:
        pipe: StableDiffusion3Pipeline.
        resolution: Image side in pixels (the latent side is resolution / vae_scale_factor).
        finetune: "lora" or "full".
        lora: LoRA settings (defaults: r 32, alpha 64, gaussian init, the attention projections).
        max_sequence_length: T5 tokens.
    """
    for enc in (pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3):
        if enc is not None:
            enc.requires_grad_(False).eval()

    def encode_fn(prompts: list[str]):
        states, _, pooled, _ = pipe.encode_prompt(
            prompts, prompts, prompts, do_classifier_free_guidance=False, max_sequence_length=max_sequence_length
        )
        return states, pooled

    side = resolution // pipe.vae_scale_factor
    shape = (pipe.transformer.config.in_channels, side, side)
    return Policy(pipe.transformer, encode_fn, VaeCodec(pipe.vae), shape, finetune, lora)


def save_lora(policy: Policy, path: str | Path) -> None:
    """Write the `current` adapter in diffusers' LoRA format (pytorch_lora_weights.safetensors)."""
    from diffusers import StableDiffusion3Pipeline

    # The adapter's config travels as metadata, so loaders get alpha (scale alpha / r) right.
    config = policy.transformer.peft_config["current"].to_dict()
    config["target_modules"] = sorted(config["target_modules"])
    StableDiffusion3Pipeline.save_lora_weights(
        path, transformer_lora_layers=policy.weights.state_dict("current"), transformer_lora_adapter_metadata=config
    )
