"""The tiny embedded text-to-image model: a word-level tokenizer built from the world's vocabulary, a
small CLIP-style text encoder and a diffusers `SD3Transformer2DModel` in pixel space.

Saved as a `save_pretrained`-style folder: tokenizer/, text_encoder/, transformer/ (safetensors).
Pixels live in [-1, 1]; the sampling space is pixel space (no VAE).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import SD3Transformer2DModel
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from elborl.errors import UserError
from elborl.rewards.geneval import RELATIONS
from elborl.world.prompts import NUMBERS
from elborl.world.shapes import SHAPES, plural
from elborl.world.spec import COLORS

SPECIAL = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
MAX_TOKENS = 16


def world_vocabulary() -> list[str]:
    """Every word a world prompt can use (all shape names, so one tokenizer serves any class subset)."""
    words = {"a", "an", "photo", "of", "and"}
    words |= set(COLORS) | set(NUMBERS.values())
    words |= set(SHAPES) | {plural(s) for s in SHAPES}
    words |= {w for r in RELATIONS for w in r.split()}
    return SPECIAL + sorted(words)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer: whitespace split, [BOS] text [EOS], padded to `MAX_TOKENS`."""
    vocab = {w: i for i, w in enumerate(world_vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="[BOS]",
        eos_token="[EOS]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        model_max_length=MAX_TOKENS,
    )


@dataclass(frozen=True)
class TinyConfig:
    """Architecture of the tiny model.

    Args:
        size: Image side in pixels.
        patch_size: Transformer patch side (tokens = (size / patch)^2).
        num_layers: Joint transformer blocks.
        num_heads: Attention heads.
        head_dim: Width per head (model width = heads x head_dim).
        text_hidden: Text encoder width (also the joint attention and pooled dims).
        text_layers: Text encoder layers.
    """

    size: int = 32
    patch_size: int = 4
    num_layers: int = 6
    num_heads: int = 4
    head_dim: int = 32
    text_hidden: int = 128
    text_layers: int = 2


def build_text_encoder(tokenizer: PreTrainedTokenizerFast, cfg: TinyConfig) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.text_hidden,
        intermediate_size=2 * cfg.text_hidden,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return CLIPTextModel(config)


def build_transformer(cfg: TinyConfig) -> SD3Transformer2DModel:
    return SD3Transformer2DModel(
        sample_size=cfg.size,
        patch_size=cfg.patch_size,
        in_channels=3,
        out_channels=3,
        num_layers=cfg.num_layers,
        attention_head_dim=cfg.head_dim,
        num_attention_heads=cfg.num_heads,
        joint_attention_dim=cfg.text_hidden,
        caption_projection_dim=cfg.num_heads * cfg.head_dim,
        pooled_projection_dim=cfg.text_hidden,
        pos_embed_max_size=cfg.size // cfg.patch_size,
    )


TINY_FILES = ("tokenizer/tokenizer.json", "text_encoder/config.json", "transformer/config.json")


def check_tiny_folder(path: str | Path) -> Path:
    """Raise a UserError naming the first missing file of a tiny-model folder."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: model folder not found")
    for name in TINY_FILES:
        if not (path / name).is_file():
            raise UserError(f"{path / name}: missing from the tiny model folder")
    for sub in ("text_encoder", "transformer"):
        if not any((path / sub).glob("*.safetensors")):
            raise UserError(f"{path / sub}: no weights (*.safetensors)")
    return path


class TinyT2I(torch.nn.Module):
    """Tokenizer + text encoder + pixel-space SD3 transformer.

    Args:
        tokenizer: The world's word-level tokenizer.
        text_encoder: CLIP-style text encoder (token states and pooled EOS state).
        transformer: The velocity model.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerFast, text_encoder: CLIPTextModel, transformer):
        super().__init__()
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.transformer = transformer

    @classmethod
    def create(cls, cfg: TinyConfig, seed: int = 0) -> TinyT2I:
        """A freshly initialised model (seeded)."""
        torch.manual_seed(seed)
        tokenizer = build_tokenizer()
        return cls(tokenizer, build_text_encoder(tokenizer, cfg), build_transformer(cfg))

    @property
    def size(self) -> int:
        return int(self.transformer.config.sample_size)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return (3, self.size, self.size)

    def from_sample_space(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel space: the identity."""
        return x

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (token states (B, L, D), pooled (B, D)). Unknown words map to [UNK]."""
        ids = self.tokenizer(prompts, padding="max_length", truncation=True, return_tensors="pt")
        device = self.text_encoder.device
        out = self.text_encoder(input_ids=ids.input_ids.to(device), attention_mask=ids.attention_mask.to(device))
        return out.last_hidden_state, out.pooler_output

    def velocity(self, x: torch.Tensor, t: torch.Tensor, cond: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """v(x_t, t, c); x (B, 3, H, W) in pixel space, t (B,) in [0, 1] (the transformer sees 1000 t)."""
        states, pooled = cond
        return self.transformer(x, states, pooled, t * 1000, return_dict=False)[0]

    def save_pretrained(self, path: str | Path, dtype: torch.dtype | None = None) -> None:
        """Write tokenizer/, text_encoder/ and transformer/ (safetensors) under `path`, optionally cast
        to `dtype` (fp16 for shipping; loading upcasts)."""
        path = Path(path)
        # A fast tokenizer keeps the padding / truncation of its last call and would save it: whether the
        # tokenizer was called in this process (or every prompt came from a cache) must not change the bytes.
        self.tokenizer.backend_tokenizer.no_padding()
        self.tokenizer.backend_tokenizer.no_truncation()
        self.tokenizer.save_pretrained(path / "tokenizer")
        for name in ("text_encoder", "transformer"):
            module = getattr(self, name)
            if dtype is not None:
                module = copy.deepcopy(module).to(dtype)
            module.save_pretrained(path / name, safe_serialization=True)

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype = torch.float32) -> TinyT2I:
        """Load a folder written by `save_pretrained` (fp16 weights are upcast to `dtype`)."""
        path = check_tiny_folder(path)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(path / "tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(path / "text_encoder", torch_dtype=dtype)
        transformer = SD3Transformer2DModel.from_pretrained(path / "transformer", torch_dtype=dtype)
        return cls(tokenizer, text_encoder, transformer)


def tiny_policy(model: TinyT2I, finetune: str = "full", lora=None, compute_dtype: torch.dtype | None = None):
    """A `Policy` over the tiny model: pixel space, frozen text encoder, LoRA, full fine-tuning or frozen."""
    from elborl.models.policy import PixelCodec, Policy

    model.text_encoder.requires_grad_(False).eval()

    def encode_fn(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return model.encode(prompts)

    shape = (3, model.size, model.size)
    policy = Policy(model.transformer, encode_fn, PixelCodec(), shape, finetune, lora, compute_dtype, export_tiny)
    policy.model = model  # the tokenizer and text encoder travel with an export
    return policy


def export_tiny(policy, path: Path) -> None:
    """The `current` weights as a standalone tiny-model folder (LoRA fused into the base weights)."""
    from elborl.models.weights import LoraWeights

    with torch.no_grad():
        transformer = copy.deepcopy(policy.transformer).cpu()
    if isinstance(policy.weights, LoraWeights):
        transformer.fuse_lora(adapter_names=["current"])
        transformer.unload_lora()
    model = policy.model
    TinyT2I(model.tokenizer, copy.deepcopy(model.text_encoder).cpu(), transformer).save_pretrained(path)
