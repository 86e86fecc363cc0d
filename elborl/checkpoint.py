"""RL training checkpoints at epoch boundaries, on local disk or s3:// (through `elborl.storage`).

A checkpoint holds everything the next epoch reads, so a resumed run continues bitwise: the trained
(`current`) and sampling (`old`) weights, the optimizer state, the EMA shadow weights, and the
loop's counters. Files are written first and `state.json` last: `state.json` is the commit mark, and
a folder without it (a run killed mid-save) is never read.

Layout: <root>/epoch_0003/{current,old,ema,optimizer}.safetensors + state.json.
"""

from __future__ import annotations

import hashlib
import json

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from elborl import storage
from elborl.errors import UserError
from elborl.storage import StorageOptions


class CorruptCheckpoint(UserError):
    """A checkpoint whose files do not match the digest its state.json recorded."""


def epoch_url(root: str, epoch: int) -> str:
    """The checkpoint folder after `epoch` completed epochs."""
    return f"{root.rstrip('/')}/epoch_{epoch:04d}"


def _tensors(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in d.items()}


def flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """An optimizer's state as flat tensors ("<param index>.<name>") plus its param groups."""
    sd = opt.state_dict()
    tensors = {f"{i}.{k}": v for i, st in sd["state"].items() for k, v in st.items()}
    return tensors, sd["param_groups"]


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    """Inverse of `flatten_optimizer` (tensors on the CPU: torch moves each to its parameter's device)."""
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": groups})


def save(url: str, policy, optimizer, ema, state: dict, options: StorageOptions | None = None) -> str:
    """Write a checkpoint folder; returns its digest (sha256 of every tensor file, in order).

    Args:
        url: Folder (local path or s3:// URL), e.g. `epoch_url(root, epoch)`.
        policy: The `Policy` (its `current` and `old` weights are saved).
        optimizer: The optimizer over the trained weights.
        ema: diffusers EMAModel over the same weights.
        state: JSON-able loop counters (epoch, step, ...).
    """
    opt_tensors, groups = flatten_optimizer(optimizer)
    ema_state = ema.state_dict()
    shadow = ema_state.pop("shadow_params")
    files = {
        "current": _tensors(policy.weights.state_dict("current")),
        "old": _tensors(policy.weights.state_dict("old")),
        "ema": _tensors({str(i): p for i, p in enumerate(shadow)}),
        "optimizer": _tensors(opt_tensors),
    }
    for name, tensors in files.items():
        bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:  # never write a checkpoint that a resume would continue from with NaN weights
            raise FloatingPointError(f"{url}: non-finite values in {name} ({', '.join(bad[:3])}); not saved")
    digest = hashlib.sha256()
    for name, tensors in files.items():
        data = save_bytes(tensors)
        digest.update(data)
        storage.write_bytes(f"{url}/{name}.safetensors", data, options)
    meta = {**state, "param_groups": groups, "ema": ema_state, "digest": digest.hexdigest()[:16]}
    storage.write_bytes(f"{url}/state.json", json.dumps(meta).encode(), options)  # the commit mark, last
    return meta["digest"]


def _read(url: str, options: StorageOptions | None) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    """A checkpoint's state and tensors, after checking its files against the digest it recorded."""
    meta = json.loads(storage.read_bytes(f"{url}/state.json", options))
    raw = {n: storage.read_bytes(f"{url}/{n}.safetensors", options) for n in ("current", "old", "ema", "optimizer")}
    digest = hashlib.sha256()
    for data in raw.values():
        digest.update(data)
    if digest.hexdigest()[:16] != meta.get("digest"):  # a truncated or bit-flipped file is never loaded
        fix = "Delete this folder and run the same command again: the epoch that wrote it is recomputed"
        raise CorruptCheckpoint(
            f"{url}: the files' digest {digest.hexdigest()[:16]} differs from state.json's "
            f"{meta.get('digest')} (a file was truncated or altered); not loaded. {fix}"
        )
    return meta, {n: load_bytes(data) for n, data in raw.items()}


def load(url: str, policy, optimizer, ema, options: StorageOptions | None = None) -> dict:
    """Load a checkpoint written by `save` into live objects; returns its state (with `digest`)."""
    meta, read = _read(url, options)
    device = policy.device
    policy.weights.load_state_dict({k: v.to(device) for k, v in read["current"].items()}, "current")
    policy.weights.load_state_dict({k: v.to(device) for k, v in read["old"].items()}, "old")
    load_optimizer(optimizer, read["optimizer"], meta.pop("param_groups"))
    shadow = [read["ema"][str(i)].to(device) for i in range(len(read["ema"]))]
    ema.load_state_dict({**meta.pop("ema"), "shadow_params": shadow})
    return meta


def load_sampling_weights(url: str, policy, digest: str, options: StorageOptions | None = None) -> None:
    """Load only the sampling (`old`) weights of a checkpoint (a rollout worker's need), after checking
    that it is the checkpoint with `digest` and that its files match it."""
    meta, read = _read(url, options)
    if meta["digest"] != digest:
        raise UserError(f"{url}: digest {meta['digest']}, expected {digest} (the checkpoint was replaced)")
    policy.weights.load_state_dict({k: v.to(policy.device) for k, v in read["old"].items()}, "old")


def complete(url: str, options: StorageOptions | None = None) -> bool:
    """Whether a checkpoint folder was fully written (its `state.json` exists)."""
    return storage.exists(f"{url}/state.json", options)


def prune(root: str, keep_from: int, options: StorageOptions | None = None) -> None:
    """Delete checkpoint folders of epochs < `keep_from` (older checkpoints are never read again)."""
    fs, path = storage.filesystem(root, options)
    if not fs.exists(path):
        return
    for entry in fs.ls(path, detail=False):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith("epoch_") and name[6:].isdigit() and int(name[6:]) < keep_from:
            fs.rm(entry, recursive=True)


def save_prompt_cache(root: str, epoch: int, policy, options: StorageOptions | None = None) -> None:
    """Persist the prompt encodings computed since the last call as `<root>/prompt_cache/epoch_NNNN.safetensors`
    (SD3's three text encoders then run once per unique prompt over the whole run, resumes included)."""
    data = policy.prompt_cache_delta()
    if data is not None:
        storage.write_bytes(f"{root.rstrip('/')}/prompt_cache/epoch_{epoch:04d}.safetensors", data, options)


def load_prompt_cache(root: str, policy, options: StorageOptions | None = None) -> int:
    """Load every persisted prompt-cache file of a run into the policy; returns the prompts loaded.

    A file that does not parse (a write cut short) is skipped: the cache only saves encoder work, and
    its prompts are encoded again when needed."""
    fs, path = storage.filesystem(f"{root.rstrip('/')}/prompt_cache", options)
    if not fs.exists(path):
        return 0
    n = 0
    for entry in sorted(fs.ls(path, detail=False)):
        if entry.endswith(".safetensors"):
            try:
                n += policy.load_prompt_cache(fs.cat_file(entry))
            except (ValueError, KeyError, RuntimeError, SafetensorError):  # a cut or altered file
                continue
    return n
