"""mmdet 2.x Mask2Former -> transformers converter, on a tiny model (offline, seeded, CPU).

The mmdet state dict is written here from mmdet's module structure (SwinTransformer, MSDeformAttnPixelDecoder,
Mask2FormerHead with mmcv's BaseTransformerLayer / FFN / MultiheadAttention / MultiScaleDeformableAttention), not
derived from the converter.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

from elborl.errors import UserError
from elborl.rewards.detectors.mmdet_convert import (
    MARKER,
    convert_checkpoint,
    convert_state_dict,
    mask2former_swin_s_config,
    unfold_to_concat,
)


@dataclass(frozen=True)
class Spec:
    """A Mask2Former in mmdet's config terms (swin backbone, pixel decoder, head)."""

    embed: int = 16
    depths: tuple[int, ...] = (1, 1, 2, 1)
    heads: tuple[int, ...] = (1, 2, 2, 4)
    window: int = 3
    mlp: int = 4
    feat: int = 32
    enc_layers: int = 2
    enc_ffn: int = 64
    attn_heads: int = 2
    dec_layers: int = 3
    dec_ffn: int = 64
    queries: int = 5
    classes: int = 80
    levels: int = 3
    points: int = 4

    @property
    def channels(self) -> list[int]:
        return [self.embed * 2**i for i in range(len(self.depths))]


TINY = Spec()
# configs/mask2former/mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.py and its bases.
SWIN_S = Spec(
    embed=96, depths=(2, 2, 18, 2), heads=(3, 6, 12, 24), window=7, feat=256, enc_layers=6, enc_ffn=1024,
    attn_heads=8, dec_layers=9, dec_ffn=2048, queries=100,
)  # fmt: skip
FEAT, QUERIES, CLASSES, ATTN_HEADS, CHANNELS = TINY.feat, TINY.queries, TINY.classes, TINY.attn_heads, TINY.channels


def tiny_config() -> Mask2FormerConfig:
    swin = SwinConfig(
        embed_dim=TINY.embed, depths=list(TINY.depths), num_heads=list(TINY.heads), window_size=TINY.window,
        mlp_ratio=TINY.mlp, drop_path_rate=0.0, out_features=["stage1", "stage2", "stage3", "stage4"],
    )  # fmt: skip
    return Mask2FormerConfig(
        backbone_config=swin, num_labels=TINY.classes, feature_size=TINY.feat, mask_feature_size=TINY.feat,
        hidden_dim=TINY.feat, encoder_feedforward_dim=TINY.enc_ffn, encoder_layers=TINY.enc_layers,
        decoder_layers=TINY.dec_layers + 1, num_attention_heads=TINY.attn_heads, dim_feedforward=TINY.dec_ffn,
        num_queries=TINY.queries,
    )  # fmt: skip


def mmdet_relative_position_index(window: int) -> torch.Tensor:
    """mmdet's WindowMSA buffer (its `double_step_seq` form)."""
    seq = (torch.arange(0, (2 * window - 1) * window, 2 * window - 1)[:, None] + torch.arange(window)).reshape(1, -1)
    return (seq + seq.T).flip(1).contiguous()


def _linear(shapes: dict, name: str, n_out: int, n_in: int, bias: bool = True) -> None:
    shapes[f"{name}.weight"] = (n_out, n_in)
    if bias:
        shapes[f"{name}.bias"] = (n_out,)


def _norm(shapes: dict, name: str, n: int) -> None:
    shapes[f"{name}.weight"] = shapes[f"{name}.bias"] = (n,)


def _swin_shapes(shapes: dict, s: Spec) -> None:
    shapes["backbone.patch_embed.projection.weight"] = (s.embed, 3, 4, 4)
    shapes["backbone.patch_embed.projection.bias"] = (s.embed,)
    _norm(shapes, "backbone.patch_embed.norm", s.embed)
    for i, (depth, heads) in enumerate(zip(s.depths, s.heads, strict=True)):
        c = s.channels[i]
        for j in range(depth):
            block = f"backbone.stages.{i}.blocks.{j}"
            _norm(shapes, f"{block}.norm1", c)
            shapes[f"{block}.attn.w_msa.relative_position_bias_table"] = ((2 * s.window - 1) ** 2, heads)
            _linear(shapes, f"{block}.attn.w_msa.qkv", 3 * c, c)
            _linear(shapes, f"{block}.attn.w_msa.proj", c, c)
            _norm(shapes, f"{block}.norm2", c)
            _linear(shapes, f"{block}.ffn.layers.0.0", s.mlp * c, c)
            _linear(shapes, f"{block}.ffn.layers.1", c, s.mlp * c)
        if i < len(s.depths) - 1:
            _norm(shapes, f"backbone.stages.{i}.downsample.norm", 4 * c)
            _linear(shapes, f"backbone.stages.{i}.downsample.reduction", 2 * c, 4 * c, bias=False)
        _norm(shapes, f"backbone.norm{i}", c)


def _pixel_decoder_shapes(shapes: dict, s: Spec) -> None:
    pd = "panoptic_head.pixel_decoder"
    for k, c in enumerate(reversed(s.channels[1:])):  # ConvModule(conv + gn), top-down
        shapes[f"{pd}.input_convs.{k}.conv.weight"] = (s.feat, c, 1, 1)
        shapes[f"{pd}.input_convs.{k}.conv.bias"] = (s.feat,)
        _norm(shapes, f"{pd}.input_convs.{k}.gn", s.feat)
    shapes[f"{pd}.level_encoding.weight"] = (s.levels, s.feat)
    for layer in range(s.enc_layers):
        p = f"{pd}.encoder.layers.{layer}"
        _linear(shapes, f"{p}.attentions.0.sampling_offsets", s.attn_heads * s.levels * s.points * 2, s.feat)
        _linear(shapes, f"{p}.attentions.0.attention_weights", s.attn_heads * s.levels * s.points, s.feat)
        _linear(shapes, f"{p}.attentions.0.value_proj", s.feat, s.feat)
        _linear(shapes, f"{p}.attentions.0.output_proj", s.feat, s.feat)
        _linear(shapes, f"{p}.ffns.0.layers.0.0", s.enc_ffn, s.feat)
        _linear(shapes, f"{p}.ffns.0.layers.1", s.feat, s.enc_ffn)
        _norm(shapes, f"{p}.norms.0", s.feat)
        _norm(shapes, f"{p}.norms.1", s.feat)
    shapes[f"{pd}.lateral_convs.0.conv.weight"] = (s.feat, s.channels[0], 1, 1)  # bias=False under a norm
    _norm(shapes, f"{pd}.lateral_convs.0.gn", s.feat)
    shapes[f"{pd}.output_convs.0.conv.weight"] = (s.feat, s.feat, 3, 3)
    _norm(shapes, f"{pd}.output_convs.0.gn", s.feat)
    shapes[f"{pd}.mask_feature.weight"], shapes[f"{pd}.mask_feature.bias"] = (s.feat, s.feat, 1, 1), (s.feat,)


def _head_shapes(shapes: dict, s: Spec) -> None:
    head = "panoptic_head"
    for layer in range(s.dec_layers):
        p = f"{head}.transformer_decoder.layers.{layer}"
        for a in (0, 1):  # nn.MultiheadAttention inside mmcv's MultiheadAttention
            shapes[f"{p}.attentions.{a}.attn.in_proj_weight"] = (3 * s.feat, s.feat)
            shapes[f"{p}.attentions.{a}.attn.in_proj_bias"] = (3 * s.feat,)
            _linear(shapes, f"{p}.attentions.{a}.attn.out_proj", s.feat, s.feat)
        _linear(shapes, f"{p}.ffns.0.layers.0.0", s.dec_ffn, s.feat)
        _linear(shapes, f"{p}.ffns.0.layers.1", s.feat, s.dec_ffn)
        for n in range(3):
            _norm(shapes, f"{p}.norms.{n}", s.feat)
    _norm(shapes, f"{head}.transformer_decoder.post_norm", s.feat)
    shapes[f"{head}.query_embed.weight"] = shapes[f"{head}.query_feat.weight"] = (s.queries, s.feat)
    shapes[f"{head}.level_embed.weight"] = (s.levels, s.feat)
    _linear(shapes, f"{head}.cls_embed", s.classes + 1, s.feat)
    for i in (0, 2, 4):
        _linear(shapes, f"{head}.mask_embed.{i}", s.feat, s.feat)


def mmdet_state_dict(spec: Spec = TINY, seed: int = 0, device: str = "cpu") -> dict[str, torch.Tensor]:
    """An mmdet checkpoint's state dict: mmdet's names and shapes, random values (empty ones on "meta")."""
    shapes: dict[str, tuple[int, ...]] = {}
    _swin_shapes(shapes, spec)
    _pixel_decoder_shapes(shapes, spec)
    _head_shapes(shapes, spec)
    gen = torch.Generator().manual_seed(seed)
    make = (lambda s: torch.empty(s, device="meta")) if device == "meta" else (lambda s: torch.randn(s, generator=gen))
    out = {k: make(s) for k, s in shapes.items()}
    index = mmdet_relative_position_index(spec.window)
    for i, depth in enumerate(spec.depths):
        for j in range(depth):
            out[f"backbone.stages.{i}.blocks.{j}.attn.w_msa.relative_position_index"] = index.clone()
    return out


@pytest.fixture(scope="module")
def model() -> Mask2FormerForUniversalSegmentation:
    torch.manual_seed(0)
    return Mask2FormerForUniversalSegmentation(tiny_config()).eval()


@pytest.fixture(scope="module")
def mmdet() -> dict[str, torch.Tensor]:
    return mmdet_state_dict()


@pytest.fixture(scope="module")
def converted(mmdet, model) -> dict[str, torch.Tensor]:
    return convert_state_dict(mmdet, model)


@pytest.fixture(scope="module")
def loaded(converted) -> Mask2FormerForUniversalSegmentation:
    model = Mask2FormerForUniversalSegmentation(tiny_config()).eval()
    model.load_state_dict(converted, strict=True)
    return model


SWIN = "model.pixel_level_module.encoder.swin."
DEC = "model.transformer_module.decoder."


def test_every_model_key_filled_with_its_shape(mmdet, model, converted):
    state = model.state_dict()
    assert set(converted) == set(state)
    for key, value in converted.items():
        assert value.shape == state[key].shape, key
    model_only = {"criterion.empty_weight", f"{SWIN}layernorm.weight", f"{SWIN}layernorm.bias"}
    weights = {k: v for k, v in mmdet.items() if not k.endswith("relative_position_index")}
    # Every mmdet weight element lands exactly once (splits and permutations keep the count).
    assert sum(v.numel() for v in weights.values()) == sum(
        v.numel() for k, v in converted.items() if k not in model_only
    )
    assert torch.equal(converted["criterion.empty_weight"], torch.tensor([1.0] * CLASSES + [0.1]))
    assert torch.equal(converted[f"{SWIN}layernorm.weight"], torch.ones(CHANNELS[-1]))


def test_swin_qkv_split_and_renames(mmdet, converted):
    c = CHANNELS[2]
    qkv_w = mmdet["backbone.stages.2.blocks.1.attn.w_msa.qkv.weight"]
    qkv_b = mmdet["backbone.stages.2.blocks.1.attn.w_msa.qkv.bias"]
    block = f"{SWIN}encoder.layers.2.blocks.1."
    for n, part in enumerate("qkv"):
        assert torch.equal(converted[f"{block}attention.{part}_proj.weight"], qkv_w[n * c : (n + 1) * c])
        assert torch.equal(converted[f"{block}attention.{part}_proj.bias"], qkv_b[n * c : (n + 1) * c])
    pairs = {
        "attention.o_proj.weight": "attn.w_msa.proj.weight",
        "attention.relative_position_bias.relative_position_bias_table": "attn.w_msa.relative_position_bias_table",
        "layernorm_before.bias": "norm1.bias",
        "layernorm_after.weight": "norm2.weight",
        "mlp.fc1.weight": "ffn.layers.0.0.weight",
        "mlp.fc2.bias": "ffn.layers.1.bias",
    }
    for hf, mm in pairs.items():
        assert torch.equal(converted[block + hf], mmdet[f"backbone.stages.2.blocks.1.{mm}"]), hf
    for i in range(4):  # out norms: mmdet norm{i} -> stage{i+1}
        hf = f"model.pixel_level_module.encoder.hidden_states_norms.stage{i + 1}.weight"
        assert torch.equal(converted[hf], mmdet[f"backbone.norm{i}.weight"])


def mmdet_window_msa(x: torch.Tensor, sd: dict[str, torch.Tensor], prefix: str, heads: int) -> torch.Tensor:
    """mmdet's WindowMSA.forward (no mask): fused qkv reshaped (B, N, 3, heads, d), table[index] bias."""
    b, n, c = x.shape
    qkv = (x @ sd[prefix + "qkv.weight"].T + sd[prefix + "qkv.bias"]).reshape(b, n, 3, heads, c // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    attn = (q * (c // heads) ** -0.5) @ k.transpose(-2, -1)
    index = sd[prefix + "relative_position_index"].view(-1)
    bias = sd[prefix + "relative_position_bias_table"][index].view(n, n, -1).permute(2, 0, 1)
    out = (attn + bias.unsqueeze(0)).softmax(-1) @ v
    return out.transpose(1, 2).reshape(b, n, c) @ sd[prefix + "proj.weight"].T + sd[prefix + "proj.bias"]


def test_swin_window_attention_matches_mmdet(mmdet, loaded):
    """In float64: random N(0, 1) weights give near one-hot softmaxes, whose float32 rounding differs by ~1e-5."""
    c, heads = CHANNELS[2], TINY.heads[2]
    x = torch.randn(4, TINY.window**2, c, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    sd = {k: v.double() if v.is_floating_point() else v for k, v in mmdet.items()}
    reference = mmdet_window_msa(x, sd, "backbone.stages.2.blocks.1.attn.w_msa.", heads)
    swin = loaded.model.pixel_level_module.encoder.swin
    attention = copy.deepcopy(swin.encoder.layers[2].blocks[1].attention).double()
    with torch.no_grad():
        got = attention(x, None)[0]
    torch.testing.assert_close(got, reference)


def test_unfold_order_permutation():
    """Label every position of the 4C vector with (channel, row, col) in both orders, independently."""
    c = 3
    unfold = [(ch, r, k) for ch in range(c) for r in range(2) for k in range(2)]  # nn.Unfold: channel-major
    concat = [(ch, r, k) for (r, k) in [(0, 0), (1, 0), (0, 1), (1, 1)] for ch in range(c)]  # x0, x1, x2, x3
    perm = unfold_to_concat(torch.arange(4 * c)).tolist()
    assert [unfold[i] for i in perm] == concat


def test_patch_merging_matches_mmdet_unfold(mmdet, loaded):
    """mmdet's PatchMerging (nn.Unfold, norm, reduction) on its weights == transformers' on the converted ones."""
    c, h, w = CHANNELS[1], 6, 4
    x = torch.randn(2, h, w, c, generator=torch.Generator().manual_seed(1))
    unfolded = nn.Unfold(kernel_size=2, stride=2)(x.permute(0, 3, 1, 2)).transpose(1, 2)  # (B, h/2*w/2, 4C)
    norm = nn.LayerNorm(4 * c)
    norm.weight.data, norm.bias.data = (
        mmdet["backbone.stages.1.downsample.norm.weight"],
        mmdet["backbone.stages.1.downsample.norm.bias"],
    )
    reference = norm(unfolded) @ mmdet["backbone.stages.1.downsample.reduction.weight"].T
    merging = loaded.model.pixel_level_module.encoder.swin.encoder.layers[1].downsample
    with torch.no_grad():
        got = merging(x.reshape(2, h * w, c), (h, w))
    torch.testing.assert_close(got, reference.detach())


def test_decoder_self_attention_matches_multihead_attention(mmdet, converted, loaded):
    """mmcv's self-attention (nn.MultiheadAttention on q+pos, k+pos, v) == the split q/k/v projections."""
    prefix = "panoptic_head.transformer_decoder.layers.1.attentions.1.attn."
    attn = nn.MultiheadAttention(FEAT, ATTN_HEADS)
    attn.load_state_dict({k[len(prefix) :]: v for k, v in mmdet.items() if k.startswith(prefix)})
    gen = torch.Generator().manual_seed(2)
    x, pos = torch.randn(QUERIES, 2, FEAT, generator=gen), torch.randn(QUERIES, 2, FEAT, generator=gen)
    with torch.no_grad():
        reference = attn(x + pos, x + pos, x)[0]
        got = loaded.model.transformer_module.decoder.layers[1].self_attn(hidden_states=x, position_embeddings=pos)[0]
    torch.testing.assert_close(got, reference)
    # The masked cross-attention is an nn.MultiheadAttention on both sides: fused weights copied.
    cross = mmdet["panoptic_head.transformer_decoder.layers.1.attentions.0.attn.in_proj_weight"]
    assert torch.equal(converted[f"{DEC}layers.1.cross_attn.in_proj_weight"], cross)
    # mmcv numbers norms by use: (cross_attn, norm, self_attn, norm, ffn, norm).
    for n, name in enumerate(["cross_attn_layer_norm", "self_attn_layer_norm", "final_layer_norm"]):
        mm = mmdet[f"panoptic_head.transformer_decoder.layers.1.norms.{n}.weight"]
        assert torch.equal(converted[f"{DEC}layers.1.{name}.weight"], mm)


def test_heads_embeddings_and_pixel_decoder(mmdet, converted):
    head = "panoptic_head."
    pd = "model.pixel_level_module.decoder."
    # 81 outputs, no-object last on both sides: no reordering.
    assert torch.equal(converted["class_predictor.weight"], mmdet[head + "cls_embed.weight"])
    assert torch.equal(converted["class_predictor.bias"], mmdet[head + "cls_embed.bias"])
    for mm, hf in [(0, 0), (2, 1), (4, 2)]:
        assert torch.equal(
            converted[f"{DEC}mask_predictor.mask_embedder.{hf}.0.weight"], mmdet[f"{head}mask_embed.{mm}.weight"]
        )
    pairs = {
        "model.transformer_module.queries_embedder.weight": "query_embed.weight",
        "model.transformer_module.queries_features.weight": "query_feat.weight",
        "model.transformer_module.level_embed.weight": "level_embed.weight",
        f"{DEC}layernorm.bias": "transformer_decoder.post_norm.bias",
        f"{pd}level_embed": "pixel_decoder.level_encoding.weight",
        f"{pd}input_projections.0.0.weight": "pixel_decoder.input_convs.0.conv.weight",  # stride 32 first
        f"{pd}input_projections.2.1.bias": "pixel_decoder.input_convs.2.gn.bias",
        f"{pd}encoder.layers.1.self_attn.sampling_offsets.weight": (
            "pixel_decoder.encoder.layers.1.attentions.0.sampling_offsets.weight"
        ),
        f"{pd}encoder.layers.1.final_layer_norm.weight": "pixel_decoder.encoder.layers.1.norms.1.weight",
        f"{pd}encoder.layers.0.fc2.weight": "pixel_decoder.encoder.layers.0.ffns.0.layers.1.weight",
        f"{pd}adapter_1.0.weight": "pixel_decoder.lateral_convs.0.conv.weight",
        f"{pd}layer_1.1.weight": "pixel_decoder.output_convs.0.gn.weight",
        f"{pd}mask_projection.bias": "pixel_decoder.mask_feature.bias",
    }
    for hf, mm in pairs.items():
        assert torch.equal(converted[hf], mmdet[head + mm]), hf


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda sd: sd.update({"panoptic_head.extra_head.weight": torch.zeros(3)}), "panoptic_head.extra_head.weight"),
        (lambda sd: sd.pop("panoptic_head.query_feat.weight"), "model.transformer_module.queries_features.weight"),
        (
            lambda sd: sd.pop("backbone.stages.0.downsample.norm.bias"),
            "model.pixel_level_module.encoder.swin.encoder.layers.0.downsample.norm.bias",
        ),
        (
            lambda sd: sd.update({"panoptic_head.cls_embed.weight": torch.zeros(134, FEAT)}),
            "panoptic_head.cls_embed.weight (134, 32) -> class_predictor.weight (81, 32)",
        ),
        (
            lambda sd: sd.update({"backbone.stages.0.blocks.0.attn.w_msa.relative_position_index": torch.zeros(9, 9)}),
            "relative position index differs",
        ),
    ],
    ids=["unmapped", "missing", "missing-swin", "shape", "rel-index"],
)
def test_mismatches_raise_naming_the_key(model, edit, named):
    sd = mmdet_state_dict()
    edit(sd)
    with pytest.raises(ValueError, match=re.escape(named)):
        convert_state_dict(sd, model)


def test_convert_checkpoint_round_trip(tmp_path, mmdet, converted):
    ckpt = tmp_path / "m2f_tiny.pth"
    torch.save({"meta": {"CLASSES": ["person"], "epoch": 50}, "state_dict": mmdet}, ckpt)
    out = convert_checkpoint(ckpt, tmp_path / "detector", config=tiny_config())
    assert out == tmp_path / "detector" and (out / "model.safetensors").is_file()
    assert not (tmp_path / "detector.tmp").exists()
    marker = json.loads((out / MARKER).read_text())
    assert marker == {
        "source": "mmdet",
        "checkpoint": "m2f_tiny.pth",
        "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest()[:16],
    }
    reloaded = Mask2FormerForUniversalSegmentation.from_pretrained(out).eval()
    state = reloaded.state_dict()
    assert set(state) == set(converted)
    for key, value in converted.items():
        assert torch.equal(state[key], value), key
    with torch.no_grad():
        logits = reloaded(pixel_values=torch.randn(1, 3, 64, 64)).class_queries_logits
    assert logits.shape == (1, QUERIES, CLASSES + 1)


def test_convert_checkpoint_bad_files(tmp_path, mmdet):
    missing = tmp_path / "nope.pth"
    with pytest.raises(UserError, match=re.escape(str(missing))):
        convert_checkpoint(missing, tmp_path / "out", config=tiny_config())
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot be read as a torch checkpoint"):
        convert_checkpoint(garbage, tmp_path / "out", config=tiny_config())
    empty = tmp_path / "empty.pth"
    torch.save({"meta": {}}, empty)
    with pytest.raises(UserError, match="holds no state dict"):
        convert_checkpoint(empty, tmp_path / "out", config=tiny_config())
    wrong = tmp_path / "wrong.pth"
    torch.save({"state_dict": {k: v for k, v in mmdet.items() if "cls_embed" not in k}}, wrong)
    with pytest.raises(UserError, match=r"(?s)wrong\.pth.*model key not filled: class_predictor\.weight"):
        convert_checkpoint(wrong, tmp_path / "out", config=tiny_config())
    assert not (tmp_path / "out").exists()


def test_swin_s_config_matches_mmdet_model():
    config = mask2former_swin_s_config()
    with torch.device("meta"):
        model = Mask2FormerForUniversalSegmentation(config)
    total = sum(p.numel() for p in model.parameters())
    assert 68e6 < total < 70e6  # Mask2Former Swin-S COCO instance: ~69 M (the paper's table)
    assert len(model.model.transformer_module.decoder.layers) == 9
    assert len(model.model.pixel_level_module.decoder.encoder.layers) == 6
    assert model.class_predictor.out_features == 81 and config.id2label[0] == "person"
    assert config.backbone_config.depths == [2, 2, 18, 2] and config.backbone_config.embed_dim == 96
    assert config.backbone_config.num_heads == [3, 6, 12, 24] and config.backbone_config.window_size == 7
    assert config.backbone_config.drop_path_rate == 0.3
    assert model.model.pixel_level_module.encoder.channels == [96, 192, 384, 768]


def test_swin_s_mmdet_keys_cover_the_model():
    """Names and shapes of the real checkpoint's layout (mmdet's config) fill the Swin-S model (meta device)."""
    with torch.device("meta"):
        model = Mask2FormerForUniversalSegmentation(mask2former_swin_s_config())
    mmdet = mmdet_state_dict(SWIN_S, device="meta")
    assert len(mmdet) == sum(1 for k in mmdet if k.startswith(("backbone.", "panoptic_head.")))
    converted = convert_state_dict(mmdet, model)
    assert set(converted) == set(model.state_dict())
