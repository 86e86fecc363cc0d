"""Tiny stand-ins for the CLIP-family rewards' weights, built in code, and references independent of
transformers: a word-level tokenizer laid out like CLIP's BPE (pad "!" = 0, start / end of text the two
highest ids), an open_clip ViT state dict under open_clip's own key names, open_clip's forward written
out with torch.nn.MultiheadAttention (fused in_proj), open_clip's `tokenize`, and the LAION aesthetic
predictor's original MLP."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from torch import nn
from transformers import PreTrainedTokenizerFast

WORDS = ("a", "an", "photo", "of", "the", "red", "green", "blue", "dog", "cat", "car", "on", "next", "to", "two")
VOCAB = ["!", "[UNK]", *WORDS, "<|startoftext|>", "<|endoftext|>"]

#: An open_clip model config (model_configs JSON layout), tiny.
TINY_OPEN_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": len(VOCAB), "width": 24, "heads": 2, "layers": 2},
}


def build_clip_tokenizer(path: str | Path, max_length: int = 16) -> Path:
    """A fast tokenizer with CLIP's id layout: pad "!" = 0, <|startoftext|> and <|endoftext|> the highest."""
    vocab = {w: i for i, w in enumerate(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    bos, eos = "<|startoftext|>", "<|endoftext|>"
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token="!",
                                        unk_token="[UNK]", model_max_length=max_length)  # fmt: skip
    tokenizer.save_pretrained(path)
    return Path(path)


def open_clip_state_dict(arch: dict = TINY_OPEN_CLIP, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under open_clip's CLIP key names (ViT image tower, built-in text tower)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    def norm(name: str, width: int) -> None:
        sd[f"{name}.weight"], sd[f"{name}.bias"] = 1.0 + r(width, scale=0.1), r(width, scale=0.1)

    def blocks(prefix: str, width: int, layers: int) -> None:
        for i in range(layers):
            p = f"{prefix}.transformer.resblocks.{i}." if prefix else f"transformer.resblocks.{i}."
            norm(p + "ln_1", width)
            sd[p + "attn.in_proj_weight"], sd[p + "attn.in_proj_bias"] = r(3 * width, width), r(3 * width)
            sd[p + "attn.out_proj.weight"], sd[p + "attn.out_proj.bias"] = r(width, width), r(width)
            norm(p + "ln_2", width)
            sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"] = r(4 * width, width), r(4 * width)
            sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"] = r(width, 4 * width), r(width)

    v, t, embed = arch["vision_cfg"], arch["text_cfg"], arch["embed_dim"]
    w, grid = v["width"], v["image_size"] // v["patch_size"]
    sd: dict[str, torch.Tensor] = {
        "visual.class_embedding": r(w),
        "visual.positional_embedding": r(grid * grid + 1, w),
        "visual.conv1.weight": r(w, 3, v["patch_size"], v["patch_size"]),
    }
    norm("visual.ln_pre", w)
    blocks("visual", w, v["layers"])
    norm("visual.ln_post", w)
    sd["visual.proj"] = r(w, embed)
    sd["token_embedding.weight"] = r(t["vocab_size"], t["width"])
    sd["positional_embedding"] = r(t["context_length"], t["width"])
    blocks("", t["width"], t["layers"])
    norm("ln_final", t["width"])
    sd["text_projection"] = r(t["width"], embed)
    sd["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    return sd


def _ln(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-5)


def _resblocks(x: torch.Tensor, sd: dict, prefix: str, layers: int, heads: int, mask=None) -> torch.Tensor:
    """open_clip's ResidualAttentionBlock stack: x + attn(ln_1 x); x + c_proj(GELU(c_fc(ln_2 x)))."""
    width = x.shape[-1]
    for i in range(layers):
        p = f"{prefix}transformer.resblocks.{i}."
        attn = nn.MultiheadAttention(width, heads, batch_first=True)
        attn.load_state_dict({k: sd[p + "attn." + k] for k in
                              ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")})  # fmt: skip
        h = _ln(x, sd, p + "ln_1")
        x = x + attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        h = F.gelu(F.linear(_ln(x, sd, p + "ln_2"), sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"]))
        x = x + F.linear(h, sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"])
    return x


@torch.no_grad()
def open_clip_encode_image(sd: dict, pixels: torch.Tensor, arch: dict = TINY_OPEN_CLIP) -> torch.Tensor:
    """open_clip VisionTransformer.forward (unnormalised features (B, embed))."""
    v = arch["vision_cfg"]
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=v["patch_size"]).flatten(2).transpose(1, 2)
    cls = sd["visual.class_embedding"].expand(x.shape[0], 1, -1)
    x = _ln(torch.cat([cls, x], dim=1) + sd["visual.positional_embedding"], sd, "visual.ln_pre")
    x = _resblocks(x, sd, "visual.", v["layers"], v["width"] // v["head_width"])
    return _ln(x[:, 0], sd, "visual.ln_post") @ sd["visual.proj"]


@torch.no_grad()
def open_clip_encode_text(sd: dict, ids: torch.Tensor, arch: dict = TINY_OPEN_CLIP) -> torch.Tensor:
    """open_clip CLIP.encode_text: causal mask, ln_final, features at text.argmax(-1) (the EOT), @ projection."""
    t = arch["text_cfg"]
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"]
    mask = torch.full((ids.shape[1], ids.shape[1]), float("-inf")).triu(1)
    x = _ln(_resblocks(x, sd, "", t["layers"], t["heads"], mask), sd, "ln_final")
    return x[torch.arange(len(ids)), ids.argmax(dim=-1)] @ sd["text_projection"]


def open_clip_tokenize(tokenizer, prompts: list[str], context_length: int) -> torch.Tensor:
    """open_clip's `tokenize`: [SOT] tokens [EOT], zero-padded to the context, truncated with EOT last."""
    out = torch.zeros(len(prompts), context_length, dtype=torch.long)
    for i, ids in enumerate(tokenizer(prompts)["input_ids"]):
        if len(ids) > context_length:
            ids = [*ids[: context_length - 1], tokenizer.eos_token_id]
        out[i, : len(ids)] = torch.tensor(ids)
    return out


class OriginalAestheticMLP(nn.Module):
    """christophschuhmann/improved-aesthetic-predictor's MLP (its Lightning hooks left out)."""

    def __init__(self, input_size: int):
        super().__init__()
        self.input_size = input_size
        # The original's module order (its state-dict keys are layers.0/2/4/6/7): linear layers with
        # dropouts after the first three and no activations between them.
        sizes, drops = (self.input_size, 1024, 128, 64, 16, 1), (0.2, 0.2, 0.1)
        modules: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
            modules.append(nn.Linear(n_in, n_out))
            if i < len(drops):
                modules.append(nn.Dropout(drops[i]))
        self.layers = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
