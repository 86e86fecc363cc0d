"""The policy interface the RL core works against, for every model (tiny or SD3 / SD3.5).

A policy = a velocity network (diffusers SD3Transformer2DModel) under three weight sets, a frozen
prompt encoder with a per-prompt cache, and a codec between images and the sampling space (identity
for the pixel-space tiny model, the VAE for SD3).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

import torch
from safetensors.torch import load_file, save_file

from elborl.models.weights import FullWeights, LoraSpec, LoraWeights, WeightSet, soft_update_old

Cond = tuple[torch.Tensor, torch.Tensor]  # (token states (B, L, D), pooled (B, P))


class Codec(Protocol):
    """Images (B, 3, H, W) in [-1, 1] <-> the sampling space."""

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...

    def decode(self, x: torch.Tensor) -> torch.Tensor: ...


class PixelCodec:
    """The tiny model samples in pixel space: identity both ways."""

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Policy(torch.nn.Module):
    """Velocity network + weight sets + cached prompt encoder + codec.

    Args:
        transformer: The velocity network; called as transformer(x, states, pooled, 1000 t).
        encode_fn: Prompts -> (states, pooled), no grad (encoders stay frozen).
        codec: Images <-> sampling space.
        sample_shape: Shape of one sample in the sampling space, (C, h, w).
        finetune: "lora" (peft adapters) or "full".
        lora: LoRA settings when finetune == "lora".
    """

    def __init__(
        self,
        transformer: torch.nn.Module,
        encode_fn: Callable[[list[str]], Cond],
        codec: Codec,
        sample_shape: tuple[int, int, int],
        finetune: Literal["lora", "full"] = "lora",
        lora: LoraSpec | None = None,
    ):
        super().__init__()
        self.transformer = transformer
        self._encode_fn = encode_fn
        self.codec = codec
        self.sample_shape = sample_shape
        self.weights = LoraWeights(transformer, lora or LoraSpec()) if finetune == "lora" else FullWeights(transformer)
        self._cache: dict[str, Cond] = {}

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def size(self) -> int:
        """Sample side in the sampling space (what `generate` draws noise for)."""
        return self.sample_shape[-1]

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> Cond:
        """Conditioning for prompts, each prompt encoded once and cached."""
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if missing:
            states, pooled = self._encode_fn(missing)
            for i, p in enumerate(missing):
                self._cache[p] = (states[i], pooled[i])
        return (torch.stack([self._cache[p][0] for p in prompts]), torch.stack([self._cache[p][1] for p in prompts]))

    def velocity(self, x: torch.Tensor, t: torch.Tensor, cond: Cond, weights: WeightSet = "current") -> torch.Tensor:
        """v(x_t, t, c) under a weight set; t (B,) in [0, 1]."""
        states, pooled = cond
        with self.weights.use(weights) as net:
            return net(x, states, pooled, t * 1000, return_dict=False)[0]

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return self.weights.trainable()

    def soft_update_old(self, decay: float) -> None:
        """theta_old <- decay theta_old + (1 - decay) theta."""
        soft_update_old(self.weights, decay)

    def to_sample_space(self, images: torch.Tensor) -> torch.Tensor:
        return self.codec.encode(images)

    def from_sample_space(self, x: torch.Tensor) -> torch.Tensor:
        return self.codec.decode(x)

    def save(self, path: str | Path) -> None:
        """Trainable weights (`current.safetensors`) and sampling weights (`old.safetensors`)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name in ("current", "old"):
            tensors = {k: v.detach().contiguous() for k, v in self.weights.state_dict(name).items()}
            save_file(tensors, path / f"{name}.safetensors")

    def load(self, path: str | Path) -> None:
        """Load what `save` wrote."""
        for name in ("current", "old"):
            self.weights.load_state_dict(load_file(Path(path) / f"{name}.safetensors"), name)
