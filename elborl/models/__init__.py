"""Policies: the tiny embedded model and SD3 / SD3.5 behind one interface (`Policy`)."""

from __future__ import annotations

from pathlib import Path


def load_model(path: str | Path, resolution: int = 512):
    """Load a model folder for sampling: a diffusers SD3 folder (model_index.json) as a `Policy`
    (LoRA-free: the base weights), otherwise a tiny-model folder as `TinyT2I`.

    Raises:
        UserError: Missing folder or files (the message names the missing file).
    """
    path = Path(path)
    if (path / "model_index.json").is_file():
        from elborl.models.sd3 import load_sd3, sd3_policy

        return sd3_policy(load_sd3(path), resolution=resolution, finetune="lora")
    from elborl.models.tiny import TinyT2I

    return TinyT2I.from_pretrained(path).eval()
