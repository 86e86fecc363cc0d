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

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from elborl.errors import UserError
from elborl.rewards.detectors.mask2former import _features, clip_crop
from elborl.rewards.registry import RewardContext, RewardFn, RewardResult

if TYPE_CHECKING:
    from elborl.config import ModelRewardConfig

PICKSCORE_DIVISOR = 26.0  # FlowGRPO's normalisation of PickScore
CLIPSCORE_DIVISOR = 100.0  # DiffusionNFT's logits_per_image / 100
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


def _some(items: list[str], n: int = 10) -> str:
    return ", ".join(sorted(items)[:n]) + (f" ... ({len(items)} in all)" if len(items) > n else "")
