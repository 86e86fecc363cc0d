"""One factory from the `model` params section to a `Policy`, for every model kind and every folder a
stage meets.

A model folder is one of:
- a tiny-model folder (tokenizer/, text_encoder/, transformer/): the shipped base, the `base` stage's
  copy, or the `train` stage's export (LoRA fused in);
- a diffusers SD3 / SD3.5 folder (model_index.json, ...): `model.path` for sd3;
- a folder with `elborl_model.json` (`POINTER`), which names an SD3 folder instead of copying 5+ GB:
  the `base` stage's output for sd3 ({"kind", "base", "fingerprint"}), or the `train` stage's sd3
  export, where the weights sit beside the pointer ({"weights": "lora"}: a diffusers LoRA folder;
  {"weights": "transformer"}: a diffusers transformer folder).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from elborl.config import ModelConfig
from elborl.errors import UserError
from elborl.io import atomic_write_text

POINTER = "elborl_model.json"
DTYPES = {"float32": None, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ModelRef:
    """What a model folder holds.

    Args:
        kind: "tiny" or "sd3".
        base: The tiny folder, or the SD3 diffusers folder.
        weights: Trained SD3 weights beside a pointer: "lora" or "transformer" (None: the base itself).
        folder: The folder that was resolved.
    """

    kind: Literal["tiny", "sd3"]
    base: Path
    weights: Literal["lora", "transformer"] | None
    folder: Path


def write_pointer(folder: str | Path, base: str | Path, weights: str | None = None) -> None:
    """Write `POINTER` in `folder`: the SD3 folder it stands for, with its fingerprint."""
    from elborl.models.sd3 import fingerprint

    base = Path(base).resolve()
    meta = {"kind": "sd3", "base": str(base), "fingerprint": fingerprint(base)}
    if weights:
        meta["weights"] = weights
    atomic_write_text(Path(folder) / POINTER, json.dumps(meta, indent=2) + "\n")


def resolve(path: str | Path) -> ModelRef:
    """Identify and check a model folder.

    Raises:
        UserError: The folder or a file it needs is missing (the message names the file).
    """
    from elborl.models.sd3 import check_sd3_folder
    from elborl.models.tiny import check_tiny_folder

    path = Path(path)
    pointer = path / POINTER
    if pointer.is_file():
        try:
            meta = json.loads(pointer.read_text())
            base, weights = Path(meta["base"]), meta.get("weights")
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(
                f"{pointer}: expected JSON with 'kind' and 'base', found an unreadable file ({err})"
            ) from None
        if weights not in (None, "lora", "transformer"):
            raise UserError(f"{pointer}: weights: expected 'lora' or 'transformer', found {weights!r}")
        check_sd3_folder(base)
        if weights == "lora" and not (path / "pytorch_lora_weights.safetensors").is_file():
            raise UserError(f"{path / 'pytorch_lora_weights.safetensors'}: missing beside {POINTER}")
        if weights == "transformer" and not (path / "config.json").is_file():
            raise UserError(f"{path / 'config.json'}: missing beside {POINTER} (a diffusers transformer folder)")
        return ModelRef("sd3", base, weights, path)
    if (path / "model_index.json").is_file():
        return ModelRef("sd3", check_sd3_folder(path), None, path)
    return ModelRef("tiny", check_tiny_folder(path), None, path)


def check_model(path: str | Path, cfg: ModelConfig, key: str = "model.path") -> ModelRef:
    """`resolve`, and check that the folder is of the kind `cfg.kind` names (before any work)."""
    if not Path(path).exists():
        raise UserError(f"{path}: {key}: model folder not found (expected a local {cfg.kind} model folder)")
    ref = resolve(path)
    if ref.kind != cfg.kind:
        raise UserError(f"{path}: a {ref.kind} model folder, but model.kind is {cfg.kind!r}")
    return ref


def build_policy(
    cfg: ModelConfig,
    path: str | Path | None = None,
    device: str | torch.device | None = None,
    finetune: Literal["lora", "full", "frozen"] | None = None,
):
    """The policy of a model folder, as the `model` section configures it.

    Args:
        cfg: The `model` params section (kind, dtype, LoRA, resolution, ...).
        path: The model folder (default `cfg.path`); any folder `resolve` accepts.
        device: Torch device of the policy.
        finetune: Override of `cfg.finetune`; "frozen" for sampling only (evaluation, `elborl sample`).

    Returns:
        A `Policy` whose `current` weights are the folder's (a trained export loads as its base plus
        its weights).
    """
    from elborl.models.weights import LoraSpec

    ref = check_model(path or cfg.path, cfg)
    finetune = finetune or cfg.finetune
    if ref.weights and finetune != "frozen":
        raise UserError(f"{ref.folder}: trained weights over a base; training starts from a base model folder")
    lora = LoraSpec(cfg.lora_rank, cfg.lora_alpha, targets=tuple(cfg.lora_targets))
    compute_dtype = DTYPES[cfg.dtype]
    if ref.kind == "tiny":
        from elborl.models.tiny import TinyT2I, tiny_policy

        model = TinyT2I.from_pretrained(ref.base)
        if cfg.resolution not in (None, model.size):
            raise UserError(f"{ref.base}: model.resolution: expected the tiny model's {model.size}, "
                            f"found {cfg.resolution}")  # fmt: skip
        policy = tiny_policy(model.to(device) if device else model, finetune, lora, compute_dtype)
        return policy.eval() if finetune == "frozen" else policy
    from elborl.models.sd3 import load_sd3, sd3_policy

    pipe = load_sd3(ref.base, compute_dtype or torch.float32)
    if ref.weights == "lora":
        pipe.load_lora_weights(ref.folder)  # diffusers' own loader: what a user of the export runs
    elif ref.weights == "transformer":
        from diffusers import SD3Transformer2DModel

        pipe.transformer = SD3Transformer2DModel.from_pretrained(ref.folder, torch_dtype=compute_dtype or torch.float32)
    if device:
        pipe.to(device)
    return sd3_policy(pipe, cfg.resolution, finetune, lora, cfg.max_sequence_length, compute_dtype,
                      cfg.gradient_checkpointing and finetune != "frozen", source=ref.base)  # fmt: skip


def sampling_policy(path: str | Path, cfg: ModelConfig | None = None, device: str | torch.device | None = None):
    """A frozen policy of any model folder (kind detected from the folder), for sampling."""
    ref = resolve(path)
    cfg = (cfg or ModelConfig()).model_copy(update={"kind": ref.kind})
    return build_policy(cfg, path, device, finetune="frozen")
