"""The CLIP-family rewards: PickScore, CLIPScore, HPS v2.1 and the LAION aesthetic predictor.

Each is built once per process from local weights (`rewards.<name>` params: path, batch_size, device,
dtype) and scores a batch of uint8 images (B, H, W, 3) against the metadata rows' `prompt`. The CLIP
models are kept in `RewardContext.cache` keyed by folder, device and dtype, so `clipscore` and
`aesthetic` pointed at one ViT-L/14 folder share it. Missing or incomplete weights raise `UserError`
naming the param when the reward is built, before any image.

Notation: e_I, e_T are the projected image / text embeddings, ê = e / ‖e‖, cos = ⟨ê_I, ê_T⟩, and
`logit_scale` is the model's learned temperature parameter (CLIP multiplies by its exp).

- `pickscore` = exp(logit_scale) · cos / 26 (yifan123/flow_grpo `flow_grpo/pickscore_scorer.py`, the
  same file in NVlabs/DiffusionNFT: `logit_scale.exp() * (text_embs @ image_embs.T)`, diagonal, "/ 26"
  to bring it near [0, 1]).
- `clipscore` = exp(logit_scale) · cos / 100 (NVlabs/DiffusionNFT `flow_grpo/clip_scorer.py`:
  `logits_per_image.diagonal() / 100`). OpenAI's ViT-L/14 has exp(logit_scale) = 100 (the clamp its
  training reached), so this is the plain cosine: not clipped at 0 and not Hessel et al.'s
  2.5 · max(cos, 0).
- `aesthetic` = MLP(ê_I), ê_I from CLIP ViT-L/14 (christophschuhmann/improved-aesthetic-predictor
  `simple_inference.py`; flow_grpo `flow_grpo/aesthetic_scorer.py`; jaemoo-choi/rethinking-diffusion-rl
  `src/reward/aesthetic_scorer.py`): Linear 768-1024, Dropout, Linear 1024-128, Dropout, Linear
  128-64, Dropout, Linear 64-16, Linear 16-1, no activations (the original's are commented out).
- `hpsv2` = cos, NOT scaled by logit_scale (tgxs002/HPSv2 `hpsv2/img_score.py` and DiffusionNFT
  `flow_grpo/hpsv2_scorer.py`: open_clip's `CLIP.forward` returns L2-normalised features and the score is
  `diag(image_features @ text_features.T)`), from HPS v2.1's fine-tuned open_clip ViT-H-14, run here
  as a transformers `CLIPModel` (`convert_open_clip_state_dict`).

Preprocessing. PickScore, CLIPScore and aesthetic use CLIP's: bicubic resize of the uint8 image's
shorter side to the model's size, centre crop, OpenAI mean / std (`clip_pixels`, the GenEval colour
classifier's `clip_crop` on the whole image). It equals transformers' `CLIPImageProcessor` that the peers
call for PickScore and aesthetic, up to the crop offset of non-square images (torchvision rounds
(h - 224) / 2, transformers floors it). DiffusionNFT's `clip_scorer.py` instead feeds float tensors to
torchvision's `Resize(224)` (bilinear with antialias); we keep CLIP's bicubic processor. HPS uses its own
evaluation transform (`hps_pixels`): open_clip's `ResizeMaxSize` (longer side to 224, bicubic with
antialias on the float [0, 1] tensor, zero padding to a square), then OpenAI mean / std; on square images
this is also what rethinking-diffusion-rl's Resize + CenterCrop computes. The image size is the model's
(224); a folder's preprocessor_config.json is not read (PickScore's, CLIP-H's and ViT-L/14's hold exactly
these settings). Prompts are tokenised with padding and truncation to 77 tokens (the text positions).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from elborl.errors import UserError
from elborl.rewards.detectors.mask2former import OPENAI_MEAN, OPENAI_STD, _features, clip_crop
from elborl.rewards.registry import RewardContext, RewardFn, RewardResult

if TYPE_CHECKING:
    from elborl.config import ModelRewardConfig

PICKSCORE_DIVISOR = 26.0  # FlowGRPO's normalisation of PickScore
CLIPSCORE_DIVISOR = 100.0  # DiffusionNFT's logits_per_image / 100
#: open_clip's `model_configs/ViT-H-14.json` (mlp_ratio 4, nn.GELU, LayerNorm eps 1e-5 by default).
HPS_ARCH: dict[str, Any] = {
    "embed_dim": 1024,
    "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24},
}
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json")  # fast tokenizer, or CLIP's BPE vocab (+ merges.txt)


# ----------------------------------------------------------------------------------------------- loading
def _runtime(cfg: ModelRewardConfig) -> tuple[str, torch.dtype]:
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return device, {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in _TOKENIZER_FILES)


def _check_folder(path: str | None, param: str, what: str, weights: bool = True, tokenizer: bool = True) -> Path:
    """A local folder with what a reward loads from it, or one UserError naming the param and the content."""
    need = [*(["config.json", "*.safetensors (or *.bin)"] if weights else []), *(["a CLIP tokenizer"] * tokenizer)]
    expected = f"expected a local folder with {', '.join(need)} ({what})"
    if path is None:
        raise UserError(f"{param}: {expected}, found none (set it in the params file)")
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"{path}: {param}: {expected}, found no such folder")
    if weights and not (folder / "config.json").is_file():
        raise UserError(f"{path}: {param}: no config.json; {expected}")
    if weights and not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise UserError(f"{path}: {param}: no weights; {expected}")
    if tokenizer and not _has_tokenizer(folder):
        raise UserError(f"{path}: {param}: no tokenizer (tokenizer.json or vocab.json + merges.txt); {expected}")
    return folder


def _check_file(path: str | None, param: str, what: str) -> Path:
    expected = f"expected a local weights file ({what})"
    if path is None:
        raise UserError(f"{param}: {expected}, found none (set it in the params file)")
    if not Path(path).is_file():
        raise UserError(f"{path}: {param}: {expected}, found no such file")
    return Path(path)


def _load_tensors(path: Path, param: str, what: str) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch pickle (weights only); a {"state_dict": ...} wrapper is opened."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign files: one error naming the param
        raise UserError(f"{path}: {param}: cannot read {what}: {type(err).__name__}: {err}") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"{path}: {param}: expected a state dict of tensors ({what}), found {type(sd).__name__}")
    return sd


@dataclass
class ClipRunner:
    """A CLIP model on its device and dtype, with its tokenizer, giving unit-norm float32 features."""

    model: Any  # transformers CLIPModel
    tokenizer: Any | None
    device: str
    dtype: torch.dtype

    @property
    def image_size(self) -> int:
        return int(self.model.config.vision_config.image_size)

    @torch.no_grad()
    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """ê_I (B, D) of preprocessed pixels (B, 3, S, S)."""
        out = self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype))
        return F.normalize(_features(out).float(), dim=-1)

    @torch.no_grad()
    def text_features(self, prompts: list[str]) -> torch.Tensor:
        """ê_T (B, D): padded to the batch's longest prompt, truncated to the text model's 77 positions."""
        max_length = int(self.model.config.text_config.max_position_embeddings)
        ids = self.tokenizer(prompts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        out = self.model.get_text_features(input_ids=ids["input_ids"].to(self.device),
                                           attention_mask=ids["attention_mask"].to(self.device))  # fmt: skip
        return F.normalize(_features(out).float(), dim=-1)

    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().float().exp())


def _cache_key(kind: str, path: Path, device: str, dtype: torch.dtype) -> str:
    return f"{kind}:{path.resolve()}:{device}:{dtype}"


def load_clip(ctx: RewardContext, cfg: ModelRewardConfig, path: str | None, param: str, what: str,
              tokenizer: bool = True) -> ClipRunner:  # fmt: skip
    """The transformers CLIP in `path` (checked, loaded once per folder / device / dtype in `ctx.cache`)."""
    from transformers import AutoTokenizer, CLIPModel

    folder = _check_folder(path, param, what, tokenizer=tokenizer)
    device, dtype = _runtime(cfg)
    key = _cache_key("clip", folder, device, dtype)
    if key not in ctx.cache:
        try:
            model, info = CLIPModel.from_pretrained(folder, output_loading_info=True)
        except Exception as err:
            raise UserError(f"{folder}: {param}: cannot load a transformers CLIP ({what}): "
                            f"{type(err).__name__}: {err}") from None  # fmt: skip
        incomplete = [*map(str, info.get("missing_keys", ())), *map(str, info.get("mismatched_keys", ()))]
        if incomplete:
            raise UserError(
                f"{folder}: {param}: incomplete weights ({what}): missing or mismatched {_some(incomplete)}"
            )
        tok = AutoTokenizer.from_pretrained(folder) if _has_tokenizer(folder) else None
        ctx.cache[key] = ClipRunner(model.to(device=device, dtype=dtype).eval(), tok, device, dtype)
    return ctx.cache[key]


# ------------------------------------------------------------------------------------------ preprocessing
def clip_pixels(images: np.ndarray, size: int) -> torch.Tensor:
    """CLIP's preprocessing of uint8 images (B, H, W, 3) -> (B, 3, size, size): bicubic shorter side ->
    `size`, centre crop, OpenAI mean / std (the colour classifier's `clip_crop` over the whole image)."""
    full = np.ones(images.shape[1:3], dtype=bool)
    box = (0.0, 0.0, float(images.shape[2]), float(images.shape[1]))
    return torch.stack([clip_crop(np.ascontiguousarray(image), full, box, size) for image in images])


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


# ------------------------------------------------------------------------------------------------ scoring
def _prompts(images: np.ndarray, metadata: list[dict]) -> list[str]:
    if len(metadata) != len(images):
        raise ValueError(f"expected one metadata row per image, found {len(metadata)} rows for {len(images)} images")
    return [str(row["prompt"]) for row in metadata]


def _similarity_reward(clip: ClipRunner, batch_size: int, preprocess: Callable[[np.ndarray, int], torch.Tensor],
                       scale: float) -> RewardFn:  # fmt: skip
    """scale · cos(image, prompt) per image, `batch_size` images per forward."""

    def reward(images: np.ndarray, metadata: list[dict]) -> RewardResult:
        prompts = _prompts(images, metadata)
        scores = []
        for start in range(0, len(images), batch_size):
            chunk = slice(start, start + batch_size)
            image = clip.image_features(preprocess(images[chunk], clip.image_size))
            text = clip.text_features(prompts[chunk])
            scores.append((scale * (image * text).sum(-1)).cpu().numpy())
        return RewardResult(np.concatenate(scores).astype(np.float64) if scores else np.zeros(0))

    return reward


def pickscore(ctx: RewardContext) -> RewardFn:
    """PickScore_v1: exp(logit_scale) · cos(ê_I, ê_T) / 26.

    Source: yifan123/flow_grpo `flow_grpo/pickscore_scorer.py` (also NVlabs/DiffusionNFT): the processor's
    image preprocessing (bicubic shorter side 224, centre crop, OpenAI mean / std), text padded and
    truncated to 77 tokens, `scores = logit_scale.exp() * (text_embs @ image_embs.T)`, diagonal, `/ 26`.
    `rewards.pickscore.path`: the PickScore_v1 folder (transformers CLIP-H, with its tokenizer).
    """
    cfg = ctx.settings.pickscore
    clip = load_clip(ctx, cfg, cfg.path, "rewards.pickscore.path", "PickScore_v1, a transformers CLIP-H")
    return _similarity_reward(clip, cfg.batch_size, clip_pixels, clip.logit_scale() / PICKSCORE_DIVISOR)


def clipscore(ctx: RewardContext) -> RewardFn:
    """CLIP ViT-L/14 image-text score: exp(logit_scale) · cos(ê_I, ê_T) / 100 (= cos for OpenAI's weights).

    Source: NVlabs/DiffusionNFT `flow_grpo/clip_scorer.py` (`outputs.logits_per_image.diagonal() / 100`,
    text padded to 77 tokens). Not clipped at 0 and without CLIP-S's 2.5 weight. Its image route
    (torchvision bilinear Resize on float tensors) is replaced by CLIP's own bicubic processor.
    `rewards.clipscore.path`: the CLIP ViT-L/14 folder (transformers, with its tokenizer).
    """
    cfg = ctx.settings.clipscore
    clip = load_clip(ctx, cfg, cfg.path, "rewards.clipscore.path", "CLIP ViT-L/14, transformers format")
    return _similarity_reward(clip, cfg.batch_size, clip_pixels, clip.logit_scale() / CLIPSCORE_DIVISOR)


# ---------------------------------------------------------------------------------------------- aesthetic
class AestheticMLP(nn.Module):
    """The LAION improved aesthetic predictor's head, in the original's layout (state-dict keys
    layers.{0,2,4,6,7}.{weight,bias}; dropouts inactive in eval; no activations)."""

    def __init__(self, input_size: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embed: torch.Tensor) -> torch.Tensor:
        return self.layers(embed)


def load_aesthetic_mlp(path: str | None, input_size: int, param: str = "rewards.aesthetic.path") -> AestheticMLP:
    """The MLP from the original weights file (e.g. sac+logos+ava1-l14-linearMSE.pth, or its .safetensors)."""
    what = "the LAION aesthetic MLP state dict, e.g. sac+logos+ava1-l14-linearMSE.pth"
    file = _check_file(path, param, what)
    sd = _load_tensors(file, param, what)
    found = sd.get("layers.0.weight")
    if found is not None and found.ndim == 2 and found.shape[1] != input_size:
        raise UserError(f"{file}: {param}: expected an MLP over {input_size}-d CLIP embeddings (the CLIP in "
                        f"rewards.aesthetic.clip_path), found input size {found.shape[1]}")  # fmt: skip
    mlp = AestheticMLP(input_size)
    target = mlp.state_dict()
    problems = [f"{label} {_some(keys)}" for label, keys in (
        ("missing", [k for k in target if k not in sd]),
        ("unexpected", [k for k in sd if k not in target]),
        ("mismatched", [f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}" for k, v in target.items()
                        if k in sd and sd[k].shape != v.shape]),
    ) if keys]  # fmt: skip
    if problems:
        raise UserError(f"{file}: {param}: expected {what} (keys layers.{{0,2,4,6,7}}.weight/bias), "
                        f"found {'; '.join(problems)}")  # fmt: skip
    mlp.load_state_dict(sd)
    return mlp.eval()


def aesthetic(ctx: RewardContext) -> RewardFn:
    """LAION aesthetic score: MLP(ê_I), ê_I the L2-normalised CLIP ViT-L/14 image embedding.

    Source: christophschuhmann/improved-aesthetic-predictor `simple_inference.py` and yifan123/flow_grpo
    `flow_grpo/aesthetic_scorer.py` (`embed / ‖embed‖`, then `MLP` 768-1024-128-64-16-1 without
    activations). `rewards.aesthetic.path`: the MLP weights (.pth / .pt, loaded weights-only, or
    .safetensors); `rewards.aesthetic.clip_path`: the CLIP ViT-L/14 folder (shared with `clipscore` when
    it is the same folder). The MLP runs in float32 whatever `dtype` is.
    """
    cfg = ctx.settings.aesthetic
    _check_file(cfg.path, "rewards.aesthetic.path", "the LAION aesthetic MLP state dict")  # before loading CLIP
    clip = load_clip(ctx, cfg, cfg.clip_path, "rewards.aesthetic.clip_path", "CLIP ViT-L/14, transformers format",
                     tokenizer=False)  # fmt: skip
    mlp = load_aesthetic_mlp(cfg.path, int(clip.model.config.projection_dim)).to(clip.device)

    @torch.no_grad()
    def reward(images: np.ndarray, metadata: list[dict]) -> RewardResult:
        _prompts(images, metadata)
        scores = [mlp(clip.image_features(clip_pixels(images[s : s + cfg.batch_size], clip.image_size)))[:, 0]
                  for s in range(0, len(images), cfg.batch_size)]  # fmt: skip
        return RewardResult(torch.cat(scores).cpu().numpy().astype(np.float64) if scores else np.zeros(0))

    return reward


# -------------------------------------------------------------------------------------------------- HPS v2
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


def _some(items: list[str], n: int = 10) -> str:
    return ", ".join(sorted(items)[:n]) + (f" ... ({len(items)} in all)" if len(items) > n else "")


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
