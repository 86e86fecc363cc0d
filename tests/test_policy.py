"""The policy interface: weight sets (LoRA and full), the prompt cache, save/load, the SD3 adapter."""

import pytest
import torch
from diffusers import StableDiffusion3Pipeline

from elborl.errors import UserError
from elborl.models.sd3 import load_sd3, save_lora, sd3_policy
from elborl.models.tiny import TinyConfig, TinyT2I, tiny_policy
from elborl.models.weights import LoraSpec
from elborl.sampling import sample
from tests.helpers.tiny_sd3 import build_tiny_sd3

SMALL = TinyConfig(size=32, patch_size=4, num_layers=2, num_heads=2, head_dim=16, text_hidden=32, text_layers=1)
PROMPTS = ["a photo of a red circle", "a photo of two squares"]


def _inputs(policy, n=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, *policy.sample_shape, generator=gen), torch.rand(n, generator=gen), policy.encode(PROMPTS[:n])


def _perturb(params, scale=0.1, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(scale * torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_weight_sets_switch_and_soft_update(finetune):
    policy = tiny_policy(TinyT2I.create(SMALL), finetune, LoraSpec(rank=4, alpha=8, init=True))
    x, t, cond = _inputs(policy)
    with torch.no_grad():
        v = {w: policy.velocity(x, t, cond, w) for w in ("current", "old", "ref")}
    assert torch.equal(v["current"], v["old"]) and torch.allclose(v["current"], v["ref"], atol=1e-6)

    _perturb(policy.trainable_parameters())  # an optimizer step's worth of change to current only
    with torch.no_grad():
        v2 = {w: policy.velocity(x, t, cond, w) for w in ("current", "old", "ref")}
    assert not torch.allclose(v2["current"], v["current"])
    assert torch.equal(v2["old"], v["old"]) and torch.equal(v2["ref"], v["ref"])
    # Gradients flow to current only, also after switching to old and ref and back.
    policy.velocity(x, t, cond, "current").pow(2).mean().backward()
    trainable = policy.trainable_parameters()
    assert all(p.grad is not None for p in trainable)
    assert {id(p) for p in policy.parameters() if p.requires_grad} == {id(p) for p in trainable}

    policy.soft_update_old(0.0)  # decay 0: old <- current
    with torch.no_grad():
        assert torch.allclose(policy.velocity(x, t, cond, "old"), v2["current"], atol=1e-6)
        assert torch.equal(policy.velocity(x, t, cond, "ref"), v["ref"])


def test_lora_switch_copies_nothing():
    policy = tiny_policy(TinyT2I.create(SMALL), "lora", LoraSpec(rank=4, alpha=8))
    before = {id(p) for p in policy.parameters()}
    n_before = sum(p.numel() for p in policy.parameters())
    x, t, cond = _inputs(policy)
    with torch.no_grad():
        for w in ("old", "ref", "current", "old"):
            policy.velocity(x, t, cond, w)
    assert {id(p) for p in policy.parameters()} == before
    assert sum(p.numel() for p in policy.parameters()) == n_before


def test_prompt_cache_encodes_once():
    model = TinyT2I.create(SMALL)
    calls = []
    policy = tiny_policy(model, "full")
    encode = policy._encode_fn
    policy._encode_fn = lambda prompts: calls.append(list(prompts)) or encode(prompts)
    a = policy.encode(PROMPTS)
    b = policy.encode([PROMPTS[1], PROMPTS[0], PROMPTS[1]])
    assert calls == [PROMPTS]
    assert torch.equal(b[0][1], a[0][0]) and torch.equal(b[1][0], a[1][1])


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_policy_save_load_safetensors(tmp_path, finetune):
    model = TinyT2I.create(SMALL)
    policy = tiny_policy(model, finetune, LoraSpec(rank=4, alpha=8))
    _perturb(policy.trainable_parameters())
    policy.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current.safetensors", "old.safetensors"]
    fresh = tiny_policy(TinyT2I.create(SMALL), finetune, LoraSpec(rank=4, alpha=8))
    fresh.load(tmp_path)
    x, t, cond = _inputs(policy)
    with torch.no_grad():
        for w in ("current", "old"):
            assert torch.allclose(policy.velocity(x, t, cond, w), fresh.velocity(x, t, cond, w), atol=1e-6)


def test_tiny_model_save_pretrained_round_trip(tmp_path):
    model = TinyT2I.create(SMALL)
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"tokenizer", "text_encoder", "transformer"}
    assert list((tmp_path / "transformer").glob("*.safetensors"))
    loaded = TinyT2I.from_pretrained(tmp_path)
    x, t = torch.randn(2, 3, 32, 32), torch.rand(2)
    with torch.no_grad():
        assert torch.equal(model.velocity(x, t, model.encode(PROMPTS)), loaded.velocity(x, t, loaded.encode(PROMPTS)))
    ids = model.tokenizer("a photo of an orange circle left of a cross").input_ids
    assert model.tokenizer.unk_token_id not in ids and ids[0] == model.tokenizer.bos_token_id


@pytest.fixture(scope="module")
def sd3_folder(tmp_path_factory):
    return build_tiny_sd3(tmp_path_factory.mktemp("sd3"))


def test_sd3_lora_round_trip_through_stock_pipeline(sd3_folder, tmp_path):
    policy = sd3_policy(load_sd3(sd3_folder), resolution=16, lora=LoraSpec(rank=4, alpha=8))
    _perturb(policy.trainable_parameters(), scale=0.2)
    save_lora(policy, tmp_path / "lora")
    assert (tmp_path / "lora" / "pytorch_lora_weights.safetensors").is_file()

    stock = StableDiffusion3Pipeline.from_pretrained(sd3_folder, local_files_only=True)
    stock.load_lora_weights(tmp_path / "lora")
    x, t, _ = _inputs(policy)
    with torch.no_grad():
        ours = policy.velocity(x, t, policy.encode(PROMPTS))
        states, _, pooled, _ = stock.encode_prompt(PROMPTS, PROMPTS, PROMPTS, do_classifier_free_guidance=False)
        theirs = stock.transformer(x, states, pooled, t * 1000, return_dict=False)[0]
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()

    # Whole sampling loop: our Euler == the stock pipeline's scheduler on the same grid (the reference
    # code's and FlowGRPO's: linspace(1, 1/N, N) then 0, shifted; stock diffusers' default differs).
    noise = torch.randn(2, *policy.sample_shape, generator=torch.Generator().manual_seed(3))
    cond = policy.encode(PROMPTS)
    with torch.no_grad():
        ours = sample(lambda z, tt: policy.velocity(z, tt, cond), noise, "euler", steps=4, shift=3.0).x0
        theirs = stock(PROMPTS, height=16, width=16, num_inference_steps=4, guidance_scale=1.0, latents=noise,
                       sigmas=[1.0, 0.75, 0.5, 0.25], output_type="latent").images  # fmt: skip
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def test_sd3_codec_round_trip_shapes(sd3_folder):
    policy = sd3_policy(load_sd3(sd3_folder), resolution=16, finetune="lora")
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    z = policy.to_sample_space(images)
    assert z.shape == (2, *policy.sample_shape)
    assert policy.from_sample_space(z).shape == images.shape


def test_sd3_folder_missing_file_is_named(sd3_folder, tmp_path):
    import shutil

    broken = tmp_path / "sd3"
    shutil.copytree(sd3_folder, broken)
    shutil.rmtree(broken / "text_encoder_3")
    with pytest.raises(UserError, match=r"sd3/text_encoder_3/config.json: missing from the SD3 folder"):
        load_sd3(broken)
    with pytest.raises(UserError, match="SD3 model folder not found"):
        load_sd3(tmp_path / "nowhere")


def test_a_saved_tiny_model_does_not_depend_on_whether_its_tokenizer_was_called(tmp_path):
    model = TinyT2I.create(SMALL)
    model.save_pretrained(tmp_path / "a")
    model.encode(PROMPTS)  # a fast tokenizer keeps its last call's padding / truncation
    model.save_pretrained(tmp_path / "b")
    for f in sorted((tmp_path / "a").rglob("*.*")):
        assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes(), f.name
