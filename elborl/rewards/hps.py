"""HPS v2.1 (the `hpsv2` reward): HPS's fine-tuned open_clip ViT-H-14, run as a transformers `CLIPModel`.

score = cos(image, text), NOT scaled by logit_scale (tgxs002/HPSv2 `hpsv2/img_score.py`, DiffusionNFT
`flow_grpo/hpsv2_scorer.py`: open_clip's `CLIP.forward` returns L2-normalised features and the score is
`diag(image_features @ text_features.T)`). The checkpoint (`rewards.hpsv2.path`, HPS_v2.1_compressed.pt)
is converted onto transformers' CLIP (`convert_open_clip_state_dict`): the `hpsv2` / open_clip packages
pin pytest 7 and protobuf < 4, lack their BPE file and need torchvision. The image transform is HPS's own
(`hps_pixels`); the tokenizer comes from `rewards.hpsv2.clip_path` (any CLIP tokenizer folder).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from elborl.errors import UserError
from elborl.rewards.clip_rewards import (
    ClipRunner,
    _cache_key,
    _check_file,
    _check_folder,
    _load_tensors,
    _runtime,
    _similarity_reward,
    _some,
)
from elborl.rewards.detectors.mask2former import OPENAI_MEAN, OPENAI_STD
from elborl.rewards.registry import RewardContext, RewardFn

#: open_clip's `model_configs/ViT-H-14.json` (mlp_ratio 4, nn.GELU, LayerNorm eps 1e-5 by default).
HPS_ARCH: dict[str, Any] = {
    "embed_dim": 1024,
    "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24},
}


def hps_pixels(images: np.ndarray, size: int) -> torch.Tensor:
    """HPS v2's evaluation transform of uint8 images (B, H, W, 3) -> (B, 3, size, size): ToTensor, open_clip's
    ResizeMaxSize (scale = size / max(H, W), each side rounded, bicubic with antialias on the float tensor,
    zeros padded around to a square), OpenAI mean / std."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    h, w = x.shape[-2:]
    scale = size / float(max(h, w))
    if scale != 1.0:
        nh, nw = round(h * scale), round(w * scale)
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
        pad_h, pad_w = size - nh, size - nw
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0)
    mean, std = torch.tensor(OPENAI_MEAN)[:, None, None], torch.tensor(OPENAI_STD)[:, None, None]
    return (x - mean) / std


def open_clip_config(arch: dict[str, Any], tokenizer: Any) -> Any:
    """A transformers `CLIPConfig` of an open_clip architecture (its model_configs JSON): GELU (not
    quick_gelu), LayerNorm eps 1e-5, MLP width 4x, vision heads = width / head_width; the text model pools
    the first `eos_token_id` = the tokenizer's EOT, which is where open_clip's `text.argmax(-1)` points (EOT
    has CLIP's highest id)."""
    from transformers import CLIPConfig

    v, t = arch["vision_cfg"], arch["text_cfg"]
    vision = {"hidden_size": v["width"], "intermediate_size": int(v["width"] * v.get("mlp_ratio", 4.0)),
              "num_hidden_layers": v["layers"], "num_attention_heads": v["width"] // v.get("head_width", 64),
              "image_size": v["image_size"], "patch_size": v["patch_size"], "hidden_act": "gelu",
              "layer_norm_eps": 1e-5}  # fmt: skip
    text = {"vocab_size": t["vocab_size"], "hidden_size": t["width"],
            "intermediate_size": int(t["width"] * t.get("mlp_ratio", 4.0)), "num_hidden_layers": t["layers"],
            "num_attention_heads": t["heads"], "max_position_embeddings": t["context_length"], "hidden_act": "gelu",
            "layer_norm_eps": 1e-5, "eos_token_id": tokenizer.eos_token_id, "bos_token_id": tokenizer.bos_token_id,
            "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0}  # fmt: skip
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=arch["embed_dim"])


_OPEN_CLIP_KEYS = {
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "visual.proj": "visual_projection.weight",  # (width, embed) -> transposed
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "text_projection": "text_projection.weight",  # (width, embed) -> transposed
    "logit_scale": "logit_scale",
}
_TRANSPOSED = {"visual.proj", "text_projection"}
_BLOCK_MODULES = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
                  "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}  # fmt: skip
_BLOCK = re.compile(r"(visual\.)?transformer\.resblocks\.(\d+)\.(.+)")
_IGNORED = {"attn_mask"}  # open_clip's causal mask buffer (non-persistent; rebuilt by transformers)


def convert_open_clip_state_dict(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """open_clip CLIP (ViT image tower, built-in text tower) keys -> transformers `CLIPModel` keys.

    Per residual block N of `visual.transformer` (-> vision_model.encoder.layers.N) and `transformer`
    (-> text_model.encoder.layers.N): ln_1 / ln_2 -> layer_norm1 / layer_norm2, mlp.c_fc / mlp.c_proj ->
    mlp.fc1 / mlp.fc2, attn.out_proj -> self_attn.out_proj, and the fused attn.in_proj_weight / in_proj_bias
    (nn.MultiheadAttention's rows q, k, v) split into self_attn.{q,k,v}_proj. `visual.proj` and
    `text_projection` (used as x @ P) are transposed into Linear weights. A "module." prefix is dropped.

    Args:
        sd: The open_clip state dict.
        model: The transformers CLIPModel it is meant for (its keys and shapes are checked).

    Raises:
        ValueError: Keys that map nowhere, target keys left without a value, or shape mismatches (named).
    """
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    for raw, value in sd.items():
        key = raw.removeprefix("module.")
        if key in _IGNORED:
            continue
        if key in _OPEN_CLIP_KEYS:
            out[_OPEN_CLIP_KEYS[key]] = value.t() if key in _TRANSPOSED else value
            continue
        m = _BLOCK.fullmatch(key)
        if m is None:
            unmapped.append(raw)
            continue
        visual, index, rest = m.groups()
        prefix = f"{'vision_model' if visual else 'text_model'}.encoder.layers.{index}"
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            if value.shape[0] % 3:
                raise ValueError(f"{raw}: expected 3 x width rows (q, k, v), found shape {tuple(value.shape)}")
            kind = rest.rsplit("_", 1)[1]
            for name, part in zip("qkv", value.chunk(3, dim=0), strict=True):
                out[f"{prefix}.self_attn.{name}_proj.{kind}"] = part
            continue
        module, _, kind = rest.rpartition(".")
        if module in _BLOCK_MODULES and kind in ("weight", "bias"):
            out[f"{prefix}.{_BLOCK_MODULES[module]}.{kind}"] = value
        else:
            unmapped.append(raw)
    unmapped += [k for k in out if k not in target]  # e.g. a block beyond the configured depth
    problems = []
    if unmapped:
        problems.append(f"unmapped keys: {_some(unmapped)}")
    missing = [k for k in target if k not in out]
    if missing:
        problems.append(f"missing keys: {_some(missing)}")
    shapes = [f"{k} {tuple(v.shape)} != {tuple(target[k].shape)}" for k, v in out.items()
              if k in target and v.shape != target[k].shape]  # fmt: skip
    if shapes:
        problems.append(f"shape mismatches: {_some(shapes)}")
    if problems:
        raise ValueError("; ".join(problems))
    return out


def _empty_clip(config: Any, device: str) -> nn.Module:
    """A CLIPModel without the cost of a random init (every weight is loaded next)."""
    from transformers import CLIPModel

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers: initialise (slower, same result)
        no_init_weights = contextlib.nullcontext
    with torch.device(device), no_init_weights():
        return CLIPModel(config)


def hpsv2(ctx: RewardContext) -> RewardFn:
    """HPS v2.1: cos(ê_I, ê_T) of HPS's fine-tuned open_clip ViT-H-14 (no logit_scale).

    Source: tgxs002/HPSv2 `hpsv2/img_score.py` and NVlabs/DiffusionNFT `flow_grpo/hpsv2_scorer.py`
    (`logits_per_image = image_features @ text_features.T` on open_clip's normalised features, diagonal),
    with HPS's `ResizeMaxSize` evaluation transform (`hps_pixels`). `rewards.hpsv2.path`: the HPS checkpoint
    (HPS_v2.1_compressed.pt, loaded weights-only; state dict under "state_dict" or at the top), converted to
    transformers by `convert_open_clip_state_dict` into the `HPS_ARCH` configuration;
    `rewards.hpsv2.clip_path`: a folder with CLIP's BPE tokenizer (e.g. the PickScore or CLIP-H folder).
    Tokenisation differs from open_clip's only in its text cleaning (no ftfy pass).
    """
    from transformers import AutoTokenizer

    cfg = ctx.settings.hpsv2
    what = "HPS v2.1's open_clip ViT-H-14 checkpoint, HPS_v2.1_compressed.pt"
    file = _check_file(cfg.path, "rewards.hpsv2.path", what)
    tok_folder = _check_folder(cfg.clip_path, "rewards.hpsv2.clip_path", "CLIP's BPE, e.g. the CLIP-H folder",
                               weights=False)  # fmt: skip
    device, dtype = _runtime(cfg)
    key = _cache_key("hpsv2", file, device, dtype)
    if key not in ctx.cache:
        sd = _load_tensors(file, "rewards.hpsv2.path", what)
        tokenizer = AutoTokenizer.from_pretrained(tok_folder)
        config = open_clip_config(HPS_ARCH, tokenizer)
        if tokenizer.eos_token_id is None or len(tokenizer) > config.text_config.vocab_size:
            found = f"{len(tokenizer)} tokens, EOT id {tokenizer.eos_token_id}"
            expected = f"at most {config.text_config.vocab_size} tokens, with an EOT"
            raise UserError(
                f"{tok_folder}: rewards.hpsv2.clip_path: expected CLIP's tokenizer ({expected}), found {found}"
            )
        model = _empty_clip(config, device)
        try:
            converted = convert_open_clip_state_dict(sd, model)
        except ValueError as err:
            raise UserError(f"{file}: rewards.hpsv2.path: expected {what}: {err}") from None
        model.load_state_dict(converted, strict=True)
        ctx.cache[key] = ClipRunner(model.to(dtype=dtype).eval(), tokenizer, device, dtype)
    clip: ClipRunner = ctx.cache[key]
    return _similarity_reward(clip, cfg.batch_size, hps_pixels, 1.0)
