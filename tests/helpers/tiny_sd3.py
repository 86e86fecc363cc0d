"""A tiny random SD3 pipeline built in code (transformer, VAE, two CLIP encoders, T5, word-level
tokenizers), saved to a folder so tests load it by path like a real SD3.5 checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, PreTrainedTokenizerFast, T5Config, T5EncoderModel

WORDS = ["[PAD]", "[UNK]", "[EOS]", "a", "photo", "of", "red", "blue", "circle", "square", "and", "two"]


def _tokenizer(max_length: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]", model_max_length=max_length
    )


def _clip() -> CLIPTextModelWithProjection:
    config = CLIPTextConfig(
        vocab_size=len(WORDS),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        projection_dim=32,
        max_position_embeddings=16,
        eos_token_id=2,
        pad_token_id=0,
    )
    return CLIPTextModelWithProjection(config)


def build_tiny_sd3(path: str | Path, seed: int = 0) -> Path:
    """Build, save and return the folder of a tiny random SD3 pipeline (4 latent channels, VAE factor 2:
    a 32 x 32 image is a 16 x 16 latent, 64 transformer tokens)."""
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=64,
        caption_projection_dim=32,
        pooled_projection_dim=64,
        pos_embed_max_size=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 8),
        latent_channels=4,
        norm_num_groups=1,
        sample_size=32,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(WORDS),
            d_model=64,
            d_ff=37,
            d_kv=8,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            decoder_start_token_id=0,
        )
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=_clip(),
        tokenizer=_tokenizer(16),
        text_encoder_2=_clip(),
        tokenizer_2=_tokenizer(16),
        text_encoder_3=t5,
        tokenizer_3=_tokenizer(16),
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return Path(path)
