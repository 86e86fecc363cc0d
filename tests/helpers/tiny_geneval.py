"""Tiny random-init GenEval models built in code and saved like the real ones: a COCO-80 Mask2Former
(small Swin backbone) and a CLIP with a word-level tokenizer over GenEval's colour templates."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    CLIPConfig,
    CLIPModel,
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    PreTrainedTokenizerFast,
    SwinConfig,
)

from elborl.rewards.detectors.mask2former import geneval_classes
from elborl.rewards.geneval import COLOR_NAMES


def build_tiny_mask2former(path: str | Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    swin = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4],
                      window_size=7, out_features=["stage1", "stage2", "stage3", "stage4"])  # fmt: skip
    config = Mask2FormerConfig(backbone_config=swin, num_labels=80, feature_size=32, mask_feature_size=32,
                               hidden_dim=32, encoder_feedforward_dim=64, dim_feedforward=64, encoder_layers=1,
                               decoder_layers=2, num_queries=8, num_attention_heads=4)  # fmt: skip
    Mask2FormerForUniversalSegmentation(config).save_pretrained(path, safe_serialization=True)
    return Path(path)


def build_tiny_clip(path: str | Path, seed: int = 0, image_size: int = 32) -> Path:
    torch.manual_seed(seed)
    words = {"a", "photo", "of", "object", *COLOR_NAMES, *(f"{c}-colored" for c in COLOR_NAMES)}
    words |= {w for name in geneval_classes() for w in name.split()}
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[BOS]", "[EOS]", *sorted(words)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="[BOS]", eos_token="[EOS]",
                                        pad_token="[PAD]", unk_token="[UNK]", model_max_length=16)  # fmt: skip
    config = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "eos_token_id": vocab["[EOS]"],
                     "bos_token_id": vocab["[BOS]"], "pad_token_id": vocab["[PAD]"]},
        vision_config={"image_size": image_size, "patch_size": 8, "hidden_size": 32, "intermediate_size": 37,
                       "num_hidden_layers": 1, "num_attention_heads": 2},
        projection_dim=16,
    )  # fmt: skip
    CLIPModel(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return Path(path)
