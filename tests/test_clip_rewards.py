"""The CLIP-family rewards on tiny random-init models, each against an independent computation of its
formula: transformers' own CLIP image processor and CLIPModel forward (logits_per_image) for PickScore and
CLIPScore, the original aesthetic MLP for aesthetic, and open_clip's forward re-written with
torch.nn.MultiheadAttention for HPS v2 (and the open_clip -> transformers conversion)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import AutoTokenizer, CLIPModel
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from elborl.config import RewardsConfig
from elborl.errors import UserError
from elborl.rewards import hps
from elborl.rewards.clip_rewards import AestheticMLP, clip_pixels
from elborl.rewards.detectors.mask2former import OPENAI_MEAN, OPENAI_STD
from elborl.rewards.hps import convert_open_clip_state_dict, hps_pixels, open_clip_config
from elborl.rewards.registry import REWARDS, RewardContext, RewardMix
from tests.helpers.tiny_clip_rewards import (
    TINY_OPEN_CLIP,
    OriginalAestheticMLP,
    build_clip_tokenizer,
    open_clip_encode_image,
    open_clip_encode_text,
    open_clip_state_dict,
    open_clip_tokenize,
)
from tests.helpers.tiny_geneval import build_tiny_clip

PROMPTS = [
    "a photo of a red dog",
    "a blue cat",
    "a photo of a green car next to a cat",
    "two dog",
    "a photo of a red dog next to a blue cat next to a green car on the red car next to two dog",  # > 16 tokens
]
META = [{"prompt": p, "tag": "single_object"} for p in PROMPTS]
SIZE = 32  # the tiny models' image size


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "clip", seed=1, image_size=SIZE)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, size=(len(PROMPTS), 48, 48, 3), dtype=np.uint8)


def ctx_for(**sections) -> RewardContext:
    return RewardContext(settings=RewardsConfig(**sections))


def reference_logits(clip_dir, images) -> torch.Tensor:
    """transformers' CLIP processor + CLIPModel forward: logits_per_image = exp(logit_scale) · cos, diagonal."""
    model = CLIPModel.from_pretrained(clip_dir).eval()
    tok = AutoTokenizer.from_pretrained(clip_dir)
    proc = CLIPImageProcessorPil(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE})
    pixels = proc(images=list(images), return_tensors="pt")["pixel_values"]
    text = tok(PROMPTS, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=text["input_ids"], attention_mask=text["attention_mask"], pixel_values=pixels)
    return out.logits_per_image.diagonal()


def test_clip_pixels_is_the_clip_image_processor(images):
    for batch in (images, np.random.default_rng(1).integers(0, 256, size=(2, 48, 64, 3), dtype=np.uint8)):
        proc = CLIPImageProcessorPil(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE})
        expected = proc(images=list(batch), return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(clip_pixels(batch, SIZE), expected, atol=1e-5, rtol=0)


def test_pickscore_and_clipscore_match_their_formulas(clip_dir, images):
    logits = reference_logits(clip_dir, images).numpy()
    section = {"path": str(clip_dir), "batch_size": 3, "device": "cpu"}  # 3 + 1: two forwards
    ctx = ctx_for(pickscore=section, clipscore=section)
    pick = REWARDS["pickscore"](ctx)(images, META)
    clip = REWARDS["clipscore"](ctx)(images, META)
    np.testing.assert_allclose(pick.scores, logits / 26, atol=1e-5)  # exp(logit_scale) · cos / 26
    np.testing.assert_allclose(clip.scores, logits / 100, atol=1e-5)  # exp(logit_scale) · cos / 100
    assert pick.scores.shape == (len(images),) and pick.scores.dtype == np.float64
    assert np.ptp(pick.scores) > 1e-3  # the prompts and images matter
    assert len(ctx.cache) == 1  # one folder, device and dtype: one model

    bf16 = REWARDS["pickscore"](ctx_for(pickscore={**section, "dtype": "bfloat16"}))(images, META)
    np.testing.assert_allclose(bf16.scores, pick.scores, atol=0.05)

    total, parts = RewardMix({"pickscore": 1.0, "clipscore": 2.0}, ctx)(images, META)
    np.testing.assert_allclose(total, pick.scores + 2 * clip.scores, atol=1e-9)
    assert set(parts) == {"pickscore", "clipscore"}


def test_aesthetic_is_the_original_mlp_on_the_normalised_embedding(clip_dir, images, tmp_path):
    torch.manual_seed(3)
    original = OriginalAestheticMLP(16).eval()  # the tiny CLIP projects to 16 (ViT-L/14: 768)
    torch.save(original.state_dict(), tmp_path / "mlp.pth")
    save_file(original.state_dict(), tmp_path / "mlp.safetensors")
    assert set(original.state_dict()) == set(AestheticMLP(16).state_dict())  # layers.{0,2,4,6,7}

    model = CLIPModel.from_pretrained(clip_dir).eval()
    proc = CLIPImageProcessorPil(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE})
    with torch.no_grad():
        emb = model.get_image_features(pixel_values=proc(images=list(images), return_tensors="pt")["pixel_values"])
        emb = emb.pooler_output.numpy()
        emb = emb / np.linalg.norm(emb, axis=-1, keepdims=True)  # the original's `normalized`
        expected = original(torch.from_numpy(emb)).numpy()[:, 0]

    ctx = ctx_for(clipscore={"path": str(clip_dir), "device": "cpu"})
    REWARDS["clipscore"](ctx)
    for weights in ("mlp.pth", "mlp.safetensors"):
        section = {"path": str(tmp_path / weights), "clip_path": str(clip_dir), "batch_size": 2, "device": "cpu"}
        got = REWARDS["aesthetic"](RewardContext(settings=RewardsConfig(aesthetic=section), cache=ctx.cache))
        np.testing.assert_allclose(got(images, META).scores, expected, atol=1e-5)
    assert len(ctx.cache) == 1  # clipscore and aesthetic share the ViT-L/14 folder's model


def tiny_hps_model(tokenizer):
    return CLIPModel(open_clip_config(TINY_OPEN_CLIP, tokenizer)).eval()


def test_open_clip_conversion_covers_every_key_and_reproduces_open_clip(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(build_clip_tokenizer(tmp_path / "tok"))
    sd = open_clip_state_dict()
    model = tiny_hps_model(tokenizer)
    converted = convert_open_clip_state_dict(sd, model)
    target = model.state_dict()
    assert set(converted) == set(target)
    assert all(converted[k].shape == target[k].shape for k in target)
    model.load_state_dict(converted, strict=True)
    assert model.config.vision_config.hidden_act == model.config.text_config.hidden_act == "gelu"

    pixels = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        image = model.get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(image, open_clip_encode_image(sd, pixels), atol=1e-5, rtol=1e-4)

    ids = open_clip_tokenize(tokenizer, PROMPTS, 16)  # zero-padded, EOT = the highest id
    with torch.no_grad():
        text = model.get_text_features(input_ids=ids).pooler_output
    torch.testing.assert_close(text, open_clip_encode_text(sd, ids), atol=1e-5, rtol=1e-4)

    broken = {("module." + k): v for k, v in sd.items() if k != "visual.ln_post.bias"}  # DDP prefix is dropped
    broken["module.visual.transformer.resblocks.0.attn.extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"unmapped keys: .*resblocks\.0\.attn\.extra") as err:
        convert_open_clip_state_dict(broken, model)
    assert "missing keys: vision_model.post_layernorm.bias" in str(err.value)
    sd["visual.proj"] = sd["visual.proj"][:, :8]
    with pytest.raises(ValueError, match=r"shape mismatches: visual_projection\.weight \(8, 32\) != \(16, 32\)"):
        convert_open_clip_state_dict(sd, model)


def test_hpsv2_is_the_open_clip_cosine(tmp_path, monkeypatch):
    monkeypatch.setattr(hps, "HPS_ARCH", TINY_OPEN_CLIP)
    tok_dir = build_clip_tokenizer(tmp_path / "tok")
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    sd = open_clip_state_dict(seed=4)
    torch.save({"state_dict": {k: v.half() for k, v in sd.items()}}, tmp_path / "hps.pt")  # fp16, as "compressed"
    sd = {k: v.half().float() for k, v in sd.items()}
    rng = np.random.default_rng(2)
    section = {"path": str(tmp_path / "hps.pt"), "clip_path": str(tok_dir), "batch_size": 3, "device": "cpu"}
    reward = REWARDS["hpsv2"](ctx_for(hpsv2=section))

    mean, std = torch.tensor(OPENAI_MEAN)[:, None, None], torch.tensor(OPENAI_STD)[:, None, None]
    text = F.normalize(open_clip_encode_text(sd, open_clip_tokenize(tokenizer, PROMPTS, 16)), dim=-1)
    for shape, resized, pad in (((48, 48), (32, 32), (0, 0, 0, 0)), ((40, 64), (20, 32), (0, 0, 6, 6))):
        batch = rng.integers(0, 256, size=(len(PROMPTS), *shape, 3), dtype=np.uint8)
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255  # ToTensor
        x = F.interpolate(x, size=resized, mode="bicubic", antialias=True)  # ResizeMaxSize: longer side 32
        pixels = (F.pad(x, pad) - mean) / std  # zeros around (black), then Normalize
        torch.testing.assert_close(hps_pixels(batch, SIZE), pixels)
        image = F.normalize(open_clip_encode_image(sd, pixels), dim=-1)
        expected = torch.diagonal(image @ text.T).numpy()  # hpsv2's score: no logit_scale
        np.testing.assert_allclose(reward(batch, META).scores, expected, atol=1e-5)

    torch.save({k: v for k, v in sd.items() if k != "ln_final.weight"}, tmp_path / "top.pt")  # top-level dict
    with pytest.raises(UserError, match=r"rewards\.hpsv2\.path: .*missing keys: text_model\.final_layer_norm"):
        REWARDS["hpsv2"](ctx_for(hpsv2={**section, "path": str(tmp_path / "top.pt")}))


def test_missing_or_incomplete_weights_name_the_param(clip_dir, tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    cases = [
        ({"pickscore": {}}, "pickscore", r"^rewards\.pickscore\.path: expected a local folder with config\.json"),
        ({"clipscore": {"path": str(tmp_path)}}, "clipscore", r"rewards\.clipscore\.path: no config\.json"),
        ({"aesthetic": {"clip_path": str(clip_dir)}}, "aesthetic", r"^rewards\.aesthetic\.path: expected a local "),
        ({"aesthetic": {"path": str(junk)}}, "aesthetic", r"^rewards\.aesthetic\.clip_path: expected"),
        ({"hpsv2": {"clip_path": str(clip_dir)}}, "hpsv2", r"^rewards\.hpsv2\.path: expected a local weights file"),
    ]
    (tmp_path / "only_config").mkdir()
    (tmp_path / "only_config" / "config.json").write_text("{}")
    cases.append(({"pickscore": {"path": str(tmp_path / "only_config")}}, "pickscore", r"pickscore\.path: no weights"))
    for sections, name, pattern in cases:
        with pytest.raises(UserError, match=pattern):
            REWARDS[name](ctx_for(**sections))

    torch.save({"layers.0.weight": torch.zeros(1024, 16)}, tmp_path / "partial.pth")
    with pytest.raises(
        UserError, match=r"rewards\.aesthetic\.path: expected the LAION .*found missing layers\.0\.bias"
    ):
        REWARDS["aesthetic"](ctx_for(aesthetic={"path": str(tmp_path / "partial.pth"), "clip_path": str(clip_dir)}))
    torch.save(OriginalAestheticMLP(768).state_dict(), tmp_path / "l14.pth")
    with pytest.raises(UserError, match=r"expected an MLP over 16-d CLIP embeddings .* found input size 768"):
        REWARDS["aesthetic"](ctx_for(aesthetic={"path": str(tmp_path / "l14.pth"), "clip_path": str(clip_dir)}))

    with pytest.raises(UserError, match=r"rewards\.hpsv2\.path: cannot read"):
        REWARDS["hpsv2"](ctx_for(hpsv2={"path": str(junk), "clip_path": str(clip_dir)}))
    with pytest.raises(UserError, match=r"rewards\.hpsv2\.clip_path: no tokenizer"):
        REWARDS["hpsv2"](ctx_for(hpsv2={"path": str(junk), "clip_path": str(tmp_path / "only_config")}))

    partial = tmp_path / "partial_clip"
    build_tiny_clip(partial, image_size=SIZE)
    weights = partial / "model.safetensors"
    from safetensors.torch import load_file

    tensors = load_file(weights)
    del tensors["visual_projection.weight"]
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(UserError, match=r"clipscore\.path: incomplete weights .*visual_projection\.weight"):
        REWARDS["clipscore"](ctx_for(clipscore={"path": str(partial), "device": "cpu"}))
