"""The policy interface the RL core works against, for every model (tiny or SD3 / SD3.5).

A policy = a velocity network (diffusers SD3Transformer2DModel) under three weight sets, a frozen
prompt encoder with a per-prompt cache, and a codec between images and the sampling space (identity
for the pixel-space tiny model, the VAE for SD3). Stages get one from `elborl.models.build_policy`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

import torch
from safetensors.torch import load, load_file, save, save_file

from elborl.models.weights import FrozenWeights, FullWeights, LoraSpec, LoraWeights, WeightSet, soft_update_old

Finetune = Literal["lora", "full", "frozen"]

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
        finetune: "lora" (peft adapters), "full", or "frozen" (sampling only: no trainable weights).
        lora: LoRA settings when finetune == "lora".
        compute_dtype: Run every forward under autocast in this dtype (bf16); None = the weights' own.
        export_fn: Writes the `current` weights as a standalone model folder (`export`).
    """

    def __init__(
        self,
        transformer: torch.nn.Module,
        encode_fn: Callable[[list[str]], Cond],
        codec: Codec,
        sample_shape: tuple[int, int, int],
        finetune: Finetune = "lora",
        lora: LoraSpec | None = None,
        compute_dtype: torch.dtype | None = None,
        export_fn: Callable[[Policy, Path], None] | None = None,
    ):
        super().__init__()
        self.transformer = transformer
        self._encode_fn = encode_fn
        self.codec = codec
        self.sample_shape = sample_shape
        self.image_size = sample_shape[-1]  # pixels per side of a decoded sample (SD3: x vae_scale_factor)
        self.compute_dtype = compute_dtype
        self._export_fn = export_fn
        if finetune == "lora":
            self.weights = LoraWeights(transformer, lora or LoraSpec())
        elif finetune == "full":
            self.weights = FullWeights(transformer)
        else:
            self.weights = FrozenWeights(transformer)
        # prompt -> (states, pooled) on the CPU, in the encoder's dtype; `_unsaved` = not yet persisted.
        self._cache: dict[str, Cond] = {}
        self._unsaved: list[str] = []
        self._ddp: torch.nn.Module | None = None  # the transformer in DDP, for the `current` forward

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def size(self) -> int:
        """Sample side in the sampling space (what `generate` draws noise for)."""
        return self.sample_shape[-1]

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> Cond:
        """Conditioning for prompts, each prompt encoded once and cached (on the CPU: SD3's T5 states
        are 333 x 4096 per prompt), moved to the policy's device per call."""
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if missing:
            states, pooled = self._encode_fn(missing)
            for i, p in enumerate(missing):
                self._cache[p] = (states[i].cpu(), pooled[i].cpu())
            self._unsaved += missing
        device = self.device
        states = torch.stack([self._cache[p][0] for p in prompts]).to(device)  # (B, L, D)
        pooled = torch.stack([self._cache[p][1] for p in prompts]).to(device)  # (B, P)
        return states, pooled

    def prompt_cache_delta(self) -> bytes | None:
        """The prompts encoded since the last call, as safetensors bytes (None when there are none):
        what a run persists so that a resumed run does not run the text encoders again."""
        if not self._unsaved:
            return None
        tensors = {}
        for i, p in enumerate(self._unsaved):
            tensors[f"{i}.states"], tensors[f"{i}.pooled"] = (t.contiguous() for t in self._cache[p])
        data = save(tensors, metadata={"prompts": json.dumps(self._unsaved)})
        self._unsaved = []
        return data

    def load_prompt_cache(self, data: bytes) -> int:
        """Add the prompts of a `prompt_cache_delta` to the cache; returns how many."""
        # safetensors' layout: 8-byte little-endian header length, then the JSON header with __metadata__.
        header_len = int.from_bytes(data[:8], "little")
        prompts = json.loads(json.loads(data[8 : 8 + header_len])["__metadata__"]["prompts"])
        tensors = load(data)
        for i, p in enumerate(prompts):
            self._cache.setdefault(p, (tensors[f"{i}.states"], tensors[f"{i}.pooled"]))
        return len(prompts)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, cond: Cond, weights: WeightSet = "current") -> torch.Tensor:
        """v(x_t, t, c) under a weight set, in fp32; t (B,) in [0, 1]."""
        states, pooled = cond
        autocast = torch.autocast(x.device.type, dtype=self.compute_dtype or torch.float32,
                                  enabled=self.compute_dtype is not None)  # fmt: skip
        with self.weights.use(weights) as net, autocast:
            if weights == "current" and self._ddp is not None and torch.is_grad_enabled():
                net = self._ddp  # the update's forward; sampling and evaluation stay local (no collectives)
            v = net(x, states, pooled, t * 1000, return_dict=False)[0]
        return v.float()  # the likelihoods and samplers work in fp32 whatever the compute dtype

    def distribute(self, wrap: Callable[[torch.nn.Module], torch.nn.Module]) -> None:
        """Route the `current` forward through `wrap(transformer)` (DDP, `Ranks.wrap`): its backward
        all-reduces the trained weights' gradients over the ranks. `old` and `ref` stay local (no grad)."""
        self._ddp = wrap(self.transformer)

    def sync_grads(self, sync: bool) -> None:
        """Whether the next `current` forward's backward all-reduces the gradients (accumulated ones
        included): False is DDP's `no_sync()`, for every piece of an optimizer step but its last."""
        if self._ddp is not None:
            self._ddp.require_backward_grad_sync = sync

    def export(self, path: str | Path) -> None:
        """Write the `current` weights as a standalone model folder (the `train` stage's `model`)."""
        if self._export_fn is None:
            raise NotImplementedError("this policy was built without an export function")
        self._export_fn(self, Path(path))

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
