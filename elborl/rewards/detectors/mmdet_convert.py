"""Convert GenEval's detector, mmdetection 2.x Mask2Former Swin-S (COCO instance segmentation), to transformers.

GenEval's official evaluator runs `mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco` (file
`mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth`) through mmdet/mmcv. The same
network exists in transformers as `Mask2FormerForUniversalSegmentation` (Swin backbone, multi-scale deformable
attention pixel decoder, masked-attention decoder), but transformers' hub weights come from detectron2's training,
not mmdet's. This module maps the mmdet state dict onto the transformers model, so GenEval runs without mmcv.

Where the two store a weight differently (read in mmdet 2.x `backbones/swin.py`, `utils/transformer.py`,
`plugins/msdeformattn_pixel_decoder.py`, `dense_heads/mask2former_head.py`, mmcv 1.x `cnn/bricks/transformer.py`
and `ops/multi_scale_deform_attn.py`, and transformers' `modeling_swin.py` / `modeling_mask2former.py`):
- Swin attention: mmdet's fused `qkv` Linear (rows q, k, v; heads contiguous inside each) -> three Linears.
- Swin patch merging: mmdet gathers each 2x2 neighbourhood with `nn.Unfold`, whose channel index is
  `c * 4 + 2 * row + col`; transformers concatenates the four sub-patches, index `p * C + c` with p over
  (row, col) = (0, 0), (1, 0), (0, 1), (1, 1). The reduction's input columns and the norm's weight and bias are
  permuted accordingly.
- Swin relative position: same table layout and the same index (mmdet's `double_step_seq` form equals the
  original meshgrid form); the converter checks the checkpoint's index buffer against the model's.
- Decoder self-attention: mmcv's `nn.MultiheadAttention` fused `in_proj` (rows q, k, v) -> q/k/v Linears.
  The masked cross-attention is an `nn.MultiheadAttention` on both sides: copied as is.
- mmcv layers number their parts by use: decoder layers run (cross_attn, norm, self_attn, norm, ffn, norm), so
  attentions.0 is the cross-attention, attentions.1 the self-attention, norms.0/1/2 follow the same order;
  encoder layers run (self_attn, norm, ffn, norm).
- The pixel decoder's level embedding is an `nn.Embedding` in mmdet, a bare Parameter in transformers; both list
  the levels from low to high resolution (stride 32 first), as do the input projections.
- Multi-scale deformable attention: same Linears and the same output layout (heads, levels, points, xy) for
  `sampling_offsets` and `attention_weights`: copied as is.
- Class head: 80 classes + no-object, no-object last on both sides: copied as is.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

from elborl.errors import UserError
from elborl.io import atomic_dir, write_json

#: mmdet 2.x CocoDataset.CLASSES, the order of the class head's first 80 outputs.
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)  # fmt: skip

MARKER = "elborl_detector.json"

_BACKBONE = "model.pixel_level_module.encoder."
_SWIN = _BACKBONE + "swin."
_PIXEL = "model.pixel_level_module.decoder."
_TRANSFORMER = "model.transformer_module."
_W = r"(weight|bias)"

# transformers < 5 names the Swin parts differently (its own conversion mapping lists them): tried when the
# model lacks the transformers 5 name.
_LEGACY_SWIN = (
    (_SWIN, _BACKBONE),
    ("attention.q_proj", "attention.self.query"),
    ("attention.k_proj", "attention.self.key"),
    ("attention.v_proj", "attention.self.value"),
    ("attention.relative_position_bias.", "attention.self."),
    ("attention.o_proj", "attention.output.dense"),
    ("mlp.fc1", "intermediate.dense"),
    ("mlp.fc2", "output.dense"),
)

# mmdet keys that hold no weight. relative_position_index (a persistent buffer in mmdet's WindowMSA) is not
# listed: it is checked against the model's own index (transformers recomputes it from the window size).
_IGNORED = (re.compile(r".*\.num_batches_tracked"),)


def mask2former_swin_s_config(num_labels: int = 80) -> Mask2FormerConfig:
    """The transformers config of mmdet's `mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco`.

    Values from the config chain swin-s -> swin-t -> r50 (`configs/mask2former/`): Swin-S backbone (embed 96,
    depths 2-2-18-2, heads 3-6-12-24, window 7, mlp ratio 4, qkv bias, drop path 0.3, no absolute position
    embedding, all four stages out); pixel decoder with 256 channels, 6 deformable-attention encoder layers
    (8 heads, 3 levels, 4 points, FFN 1024), GroupNorm(32), mask features 256, strides 4/8/16/32; decoder of
    9 masked-attention layers (8 heads, FFN 2048, post-norm), 100 queries, no input projections. transformers
    counts the initial prediction from the bare queries as a decoder layer, hence `decoder_layers=10`. It shares
    `num_attention_heads` between the pixel decoder and the decoder (8 in both) and hard-codes 3 levels and 4
    points in the pixel decoder, as mmdet's config sets them.

    Args:
        num_labels: Thing classes (the class head has one more output, no-object, last). 80 names the COCO
            classes in `id2label`.

    Returns:
        The config (no hub access: the Swin config is built here).
    """
    backbone = SwinConfig(
        image_size=224, patch_size=4, num_channels=3, embed_dim=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24],
        window_size=7, mlp_ratio=4.0, qkv_bias=True, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        drop_path_rate=0.3, hidden_act="gelu", use_absolute_embeddings=False, layer_norm_eps=1e-5,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )  # fmt: skip
    labels = {}
    if num_labels == len(COCO_CLASSES):
        labels = {"id2label": dict(enumerate(COCO_CLASSES)), "label2id": {n: i for i, n in enumerate(COCO_CLASSES)}}
    return Mask2FormerConfig(
        backbone_config=backbone, num_labels=num_labels, feature_size=256, mask_feature_size=256, hidden_dim=256,
        encoder_feedforward_dim=1024, encoder_layers=6, decoder_layers=10, num_attention_heads=8,
        dim_feedforward=2048, dropout=0.0, pre_norm=False, enforce_input_projection=False, common_stride=4,
        num_queries=100, feature_strides=[4, 8, 16, 32], activation_function="relu", no_object_weight=0.1,
        class_weight=2.0, mask_weight=5.0, dice_weight=5.0, train_num_points=12544, oversample_ratio=3.0,
        importance_sample_ratio=0.75, **labels,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# State dict conversion


@dataclass(frozen=True)
class _Target:
    """What the model expects: state-dict shapes, buffers (persistent or not), legacy-name resolution."""

    shapes: dict[str, torch.Size]
    buffers: dict[str, torch.Tensor]

    def resolve(self, name: str) -> str:
        """The model's name for `name` (written in transformers 5 names); `name` itself when neither exists."""
        if name in self.shapes or name in self.buffers or not name.startswith(_SWIN):
            return name
        legacy = name
        for new, old in _LEGACY_SWIN:
            legacy = legacy.replace(new, old)
        return legacy if legacy in self.shapes or legacy in self.buffers else name


Transform = Callable[[str, torch.Tensor, _Target], list[tuple[str, torch.Tensor]]]


def _copy(name: str, tensor: torch.Tensor, target: _Target) -> list[tuple[str, torch.Tensor]]:
    return [(target.resolve(name), tensor)]


def _split_qkv(name: str, tensor: torch.Tensor, target: _Target) -> list[tuple[str, torch.Tensor]]:
    """A fused projection (rows q, k, v) -> three; `name` has a `{}` for q / k / v."""
    if tensor.shape[0] % 3:
        return [(target.resolve(name.format(part)), tensor) for part in "qkv"]  # reported as a shape mismatch
    return [(target.resolve(name.format(part)), chunk) for part, chunk in zip("qkv", tensor.chunk(3), strict=True)]


def unfold_to_concat(tensor: torch.Tensor) -> torch.Tensor:
    """Reorder the last dim (4C) from mmdet's `nn.Unfold` order to transformers' concat order of 2x2 sub-patches.

    Unfold index: `c * 4 + 2 * row + col`. Concat index: `p * C + c`, p = 0..3 over (row, col) = (0, 0), (1, 0),
    (0, 1), (1, 1) (the original Swin's x0, x1, x2, x3), i.e. Unfold position [0, 2, 1, 3][p].

    Args:
        tensor: Patch merging's reduction weight (out, 4C) or norm weight / bias (4C,), mmdet layout.

    Returns:
        The same values in transformers' layout (unchanged when the last dim is not a multiple of 4).
    """
    n = tensor.shape[-1]
    if n % 4:
        return tensor
    lead = tensor.shape[:-1]
    by_channel = tensor.reshape(*lead, n // 4, 4)[..., [0, 2, 1, 3]]  # [..., c, p]
    return by_channel.transpose(-1, -2).reshape(*lead, n).contiguous()


def _patch_merging(name: str, tensor: torch.Tensor, target: _Target) -> list[tuple[str, torch.Tensor]]:
    return [(target.resolve(name), unfold_to_concat(tensor))]


def _relative_position_index(name: str, tensor: torch.Tensor, target: _Target) -> list[tuple[str, torch.Tensor]]:
    """Check mmdet's index buffer against the model's; emit it only where the model saves it (transformers < 5).

    Raises:
        ValueError: The indices differ (the bias table rows would land on the wrong position pairs).
    """
    key = target.resolve(name)
    own = target.buffers.get(key)
    if own is None:
        return [(key, tensor)]  # reported as a key the model lacks
    comparable = not (own.is_meta or tensor.is_meta)  # a model built on the meta device: shapes only
    if comparable and not torch.equal(own.flatten().long().cpu(), tensor.flatten().long().cpu()):
        raise ValueError(f"{key}: the checkpoint's relative position index differs from the model's")
    return [(key, own.clone())] if key in target.shapes else []


_Name = str | Callable[[re.Match[str]], str]  # a template (with \1 groups) or a function of the match
_Rule = tuple[re.Pattern[str], _Name, Transform]


def _rule(pattern: str, name: _Name, transform: Transform = _copy) -> _Rule:
    return re.compile(pattern), name, transform


def _swin_rules() -> list[_Rule]:
    block = r"backbone\.stages\.(\d+)\.blocks\.(\d+)\."
    out = _SWIN + r"encoder.layers.\1.blocks.\2."
    down = _SWIN + r"encoder.layers.\1.downsample."
    return [
        _rule(r"backbone\.patch_embed\.projection\." + _W, _SWIN + r"embeddings.patch_embeddings.projection.\1"),
        _rule(r"backbone\.patch_embed\.norm\." + _W, _SWIN + r"embeddings.norm.\1"),
        _rule(block + r"norm1\." + _W, out + r"layernorm_before.\3"),
        _rule(block + r"norm2\." + _W, out + r"layernorm_after.\3"),
        _rule(block + r"attn\.w_msa\.qkv\." + _W, out + r"attention.{}_proj.\3", _split_qkv),
        _rule(block + r"attn\.w_msa\.proj\." + _W, out + r"attention.o_proj.\3"),
        _rule(
            block + r"attn\.w_msa\.relative_position_bias_table",
            out + "attention.relative_position_bias.relative_position_bias_table",
        ),
        _rule(
            block + r"attn\.w_msa\.relative_position_index",
            out + "attention.relative_position_bias.relative_position_index",
            _relative_position_index,
        ),
        _rule(block + r"ffn\.layers\.0\.0\." + _W, out + r"mlp.fc1.\3"),
        _rule(block + r"ffn\.layers\.1\." + _W, out + r"mlp.fc2.\3"),
        _rule(r"backbone\.stages\.(\d+)\.downsample\.reduction\.weight", down + "reduction.weight", _patch_merging),
        _rule(r"backbone\.stages\.(\d+)\.downsample\.norm\." + _W, down + r"norm.\2", _patch_merging),
        # mmdet's norm{i} normalises stage i's output before its downsampling, as transformers' stage{i+1} norm.
        _rule(r"backbone\.norm(\d+)\." + _W, lambda m: f"{_BACKBONE}hidden_states_norms.stage{int(m[1]) + 1}.{m[2]}"),
    ]


def _pixel_decoder_rules() -> list[_Rule]:
    src = r"panoptic_head\.pixel_decoder\."
    layer = src + r"encoder\.layers\.(\d+)\."
    out = _PIXEL + r"encoder.layers.\1."
    # mmdet's forward runs lateral_convs[i] / output_convs[i] on backbone level i, transformers' adapter_{i+1} /
    # layer_{i+1} likewise (one FPN level, stride 4, in this model).
    return [
        _rule(src + r"input_convs\.(\d+)\.conv\." + _W, _PIXEL + r"input_projections.\1.0.\2"),
        _rule(src + r"input_convs\.(\d+)\.gn\." + _W, _PIXEL + r"input_projections.\1.1.\2"),
        _rule(src + r"level_encoding\.weight", _PIXEL + "level_embed"),
        _rule(
            layer + r"attentions\.0\.(sampling_offsets|attention_weights|value_proj|output_proj)\." + _W,
            out + r"self_attn.\2.\3",
        ),
        _rule(layer + r"norms\.0\." + _W, out + r"self_attn_layer_norm.\2"),
        _rule(layer + r"norms\.1\." + _W, out + r"final_layer_norm.\2"),
        _rule(layer + r"ffns\.0\.layers\.0\.0\." + _W, out + r"fc1.\2"),
        _rule(layer + r"ffns\.0\.layers\.1\." + _W, out + r"fc2.\2"),
        _rule(src + r"lateral_convs\.(\d+)\.conv\.weight", lambda m: f"{_PIXEL}adapter_{int(m[1]) + 1}.0.weight"),
        _rule(src + r"lateral_convs\.(\d+)\.gn\." + _W, lambda m: f"{_PIXEL}adapter_{int(m[1]) + 1}.1.{m[2]}"),
        _rule(src + r"output_convs\.(\d+)\.conv\.weight", lambda m: f"{_PIXEL}layer_{int(m[1]) + 1}.0.weight"),
        _rule(src + r"output_convs\.(\d+)\.gn\." + _W, lambda m: f"{_PIXEL}layer_{int(m[1]) + 1}.1.{m[2]}"),
        _rule(src + r"mask_feature\." + _W, _PIXEL + r"mask_projection.\1"),
    ]


def _decoder_rules() -> list[_Rule]:
    head = r"panoptic_head\."
    layer = head + r"transformer_decoder\.layers\.(\d+)\."
    out = _TRANSFORMER + r"decoder.layers.\1."
    return [
        _rule(layer + r"attentions\.0\.attn\.(in_proj_weight|in_proj_bias)", out + r"cross_attn.\2"),
        _rule(layer + r"attentions\.0\.attn\.out_proj\." + _W, out + r"cross_attn.out_proj.\2"),
        _rule(layer + r"attentions\.1\.attn\.in_proj_" + _W, out + r"self_attn.{}_proj.\2", _split_qkv),
        _rule(layer + r"attentions\.1\.attn\.out_proj\." + _W, out + r"self_attn.out_proj.\2"),
        _rule(layer + r"norms\.0\." + _W, out + r"cross_attn_layer_norm.\2"),
        _rule(layer + r"norms\.1\." + _W, out + r"self_attn_layer_norm.\2"),
        _rule(layer + r"norms\.2\." + _W, out + r"final_layer_norm.\2"),
        _rule(layer + r"ffns\.0\.layers\.0\.0\." + _W, out + r"fc1.\2"),
        _rule(layer + r"ffns\.0\.layers\.1\." + _W, out + r"fc2.\2"),
        _rule(head + r"transformer_decoder\.post_norm\." + _W, _TRANSFORMER + r"decoder.layernorm.\1"),
        _rule(head + r"query_embed\.weight", _TRANSFORMER + "queries_embedder.weight"),
        _rule(head + r"query_feat\.weight", _TRANSFORMER + "queries_features.weight"),
        _rule(head + r"level_embed\.weight", _TRANSFORMER + "level_embed.weight"),
        # Only present when the pixel decoder's and the decoder's widths differ (not in Swin-S: Identity).
        _rule(head + r"decoder_input_projs\.(\d+)\." + _W, _TRANSFORMER + r"input_projections.\1.\2"),
        _rule(head + r"cls_embed\." + _W, r"class_predictor.\1"),
        # mmdet: Sequential(Linear, ReLU, Linear, ReLU, Linear); transformers: three (Linear, act) blocks.
        _rule(
            head + r"mask_embed\.([024])\." + _W,
            lambda m: f"{_TRANSFORMER}decoder.mask_predictor.mask_embedder.{int(m[1]) // 2}.0.{m[2]}",
        ),
    ]


_RULES: list[_Rule] = [*_swin_rules(), *_pixel_decoder_rules(), *_decoder_rules()]


def _map_key(key: str, tensor: torch.Tensor, target: _Target) -> list[tuple[str, torch.Tensor]] | None:
    """The (model key, tensor) pairs an mmdet key becomes; None when no rule matches."""
    for pattern, name, transform in _RULES:
        match = pattern.fullmatch(key)
        if match:
            resolved = name(match) if callable(name) else match.expand(name)
            return transform(resolved, tensor, target)
    return None


def _model_only(shapes: dict[str, torch.Size], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Model keys with no mmdet counterpart, filled without the checkpoint.

    - `criterion.empty_weight`: the loss's class weights (1 per class, `no_object_weight` = 0.1 for no-object, as
      mmdet's `loss_cls.class_weight`), a buffer built from the config: the model's own value.
    - `...encoder.swin.layernorm`: transformers' SwinModel final norm, which SwinBackbone never applies (its
      outputs go through `hidden_states_norms`): identity (ones / zeros).
    """
    out = {}
    for key in shapes:
        if key == "criterion.empty_weight":
            out[key] = state[key].detach().clone()
        elif key.startswith(_SWIN + "layernorm."):
            out[key] = torch.ones(shapes[key]) if key.endswith("weight") else torch.zeros(shapes[key])
    return out


def _report(problems: dict[str, list[str]]) -> str:
    lines = ["the mmdet checkpoint does not match the transformers model:"]
    for what, items in problems.items():
        lines += [f"  {what}: {item}" for item in items[:20]]
        if len(items) > 20:
            lines.append(f"  ... and {len(items) - 20} more {what}")
    return "\n".join(lines)


def _convert(
    mmdet: dict[str, torch.Tensor], target: _Target, problems: dict[str, list[str]]
) -> dict[str, torch.Tensor]:
    """Map every mmdet key, recording unmapped keys, unknown targets, duplicates and shape mismatches."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in mmdet.items():
        if any(p.fullmatch(key) for p in _IGNORED):
            continue
        pairs = _map_key(key, tensor, target)
        if pairs is None:
            problems["unmapped mmdet key"].append(key)
            continue
        for name, value in pairs:
            if name not in target.shapes:
                problems["mmdet key mapped to a name the model lacks"].append(f"{key} -> {name}")
            elif name in out:
                problems["model key filled twice"].append(f"{name} (again from {key})")
            elif tuple(value.shape) != tuple(target.shapes[name]):
                problems["shape mismatch"].append(f"{key} {tuple(value.shape)} -> {name} {tuple(target.shapes[name])}")
            else:
                out[name] = value
    return out


def convert_state_dict(
    mmdet: dict[str, torch.Tensor], model: Mask2FormerForUniversalSegmentation
) -> dict[str, torch.Tensor]:
    """Map an mmdet 2.x Mask2Former (Swin) state dict onto a transformers model's state-dict keys.

    Args:
        mmdet: The checkpoint's `state_dict` (keys `backbone.*`, `panoptic_head.*`).
        model: The transformers model to fill (its config fixes the sizes); it is not modified.

    Returns:
        A state dict for `model.load_state_dict(..., strict=True)`: every key of `model.state_dict()`.

    Raises:
        ValueError: Naming every mmdet key no rule maps, every model key left unfilled, every shape mismatch (both
            keys and both shapes), and a relative position index that differs from the model's.
    """
    state = model.state_dict()
    target = _Target(shapes={k: v.shape for k, v in state.items()}, buffers=dict(model.named_buffers()))
    problems: dict[str, list[str]] = {
        "unmapped mmdet key": [],
        "mmdet key mapped to a name the model lacks": [],
        "model key filled twice": [],
        "shape mismatch": [],
        "model key not filled": [],
    }
    out = _convert(mmdet, target, problems)
    out.update(_model_only(target.shapes, state))
    problems["model key not filled"] = [k for k in target.shapes if k not in out]
    problems = {what: items for what, items in problems.items() if items}
    if problems:
        raise ValueError(_report(problems))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def load_mmdet_state_dict(ckpt: str | Path) -> dict[str, torch.Tensor]:
    """Read an mmdet checkpoint's tensors (its `state_dict` entry when present), without unpickling code.

    Args:
        ckpt: The `.pth` file.

    Returns:
        Key -> tensor.

    Raises:
        UserError: The file is missing, unreadable as a torch checkpoint with `weights_only=True`, or holds no
            state dict.
    """
    path = Path(ckpt)
    expected = "an mmdetection 2.x Mask2Former checkpoint (.pth, torch.save of {'state_dict': ..., 'meta': ...})"
    if not path.is_file():
        raise UserError(f"{path}: no such file; expected {expected}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(
            f"{path}: cannot be read as a torch checkpoint ({type(e).__name__}: {e}); expected {expected}"
        ) from e
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not _is_state_dict(obj):
        raise UserError(f"{path}: holds no state dict (a dict of tensors); expected {expected}")
    return dict(obj)


def convert_checkpoint(ckpt: str | Path, out: str | Path, config: Mask2FormerConfig | None = None) -> Path:
    """Convert mmdet's Mask2Former checkpoint into a transformers folder (`from_pretrained`-loadable).

    The folder is built beside `out` and renamed into place, so readers see the old folder or the complete new
    one. It also holds `elborl_detector.json`: {"source": "mmdet", "checkpoint": file name, "sha256": first 16 hex
    digits of the file's SHA-256}.

    Args:
        ckpt: The mmdet `.pth` (e.g. `mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth`).
        out: The folder to write (replaced when it exists).
        config: The model's config; None = `mask2former_swin_s_config()` (tests pass a tiny one).

    Returns:
        `out`.

    Raises:
        UserError: The checkpoint is missing, unreadable, or does not match the config (the message names the file
            and the keys or shapes at fault).
    """
    path, out = Path(ckpt), Path(out)
    mmdet = load_mmdet_state_dict(path)
    model = Mask2FormerForUniversalSegmentation(config or mask2former_swin_s_config()).eval()
    try:
        converted = convert_state_dict(mmdet, model)
    except ValueError as e:
        raise UserError(f"{path}: {e}") from e
    model.load_state_dict(converted, strict=True)
    marker = {"source": "mmdet", "checkpoint": path.name, "sha256": _sha256(path)[:16]}
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        write_json(tmp / MARKER, marker)
    return out
