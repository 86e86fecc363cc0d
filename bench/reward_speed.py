"""Images/s of each training reward through the registry (`RewardMix`), on random-init models of the real
sizes built in code (no weights needed): PickScore's CLIP-H, CLIP ViT-L/14 (clipscore, aesthetic), and
the OCR engine from its wheel. A table, one row per reward.

    python bench/reward_speed.py --images 8 --rewards ocr,clipscore,pickscore,aesthetic   # CPU
    python bench/reward_speed.py --device cuda --images 256 --batch 64                      # a GPU

hpsv2 runs the same CLIP-H forward as pickscore (plus its own resize), so it is not timed separately.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/reward_speed.py` from anywhere

from elborl.config import ClipRewardConfig, ModelRewardConfig, RewardsConfig
from elborl.rewards.registry import RewardContext, RewardMix

# Real sizes: OpenAI CLIP ViT-L/14 and the LAION CLIP-H/14 PickScore fine-tunes.
VIT_L = {"text": (768, 12, 12, 3072), "vision": (1024, 24, 16, 4096), "projection": 768}
VIT_H = {"text": (1024, 24, 16, 4096), "vision": (1280, 32, 16, 5120), "projection": 1024}


def build_clip(path: Path, arch: dict) -> Path:
    """A random-init CLIPModel of `arch` with a word-level tokenizer, saved to `path`."""
    from transformers import CLIPConfig, CLIPModel

    from tests.helpers.tiny_clip_rewards import build_clip_tokenizer

    build_clip_tokenizer(path, max_length=77)
    (tw, tl, th, tf), (vw, vl, vh, vf) = arch["text"], arch["vision"]
    config = CLIPConfig(
        text_config={"vocab_size": 49408, "hidden_size": tw, "num_hidden_layers": tl, "num_attention_heads": th,
                     "intermediate_size": tf, "max_position_embeddings": 77, "hidden_act": "gelu"},
        vision_config={"image_size": 224, "patch_size": 14, "hidden_size": vw, "num_hidden_layers": vl,
                       "num_attention_heads": vh, "intermediate_size": vf, "hidden_act": "gelu"},
        projection_dim=arch["projection"],
    )  # fmt: skip
    CLIPModel(config).save_pretrained(path)
    return path


def settings(root: Path, names: list[str], device: str, batch: int) -> RewardsConfig:
    """The `rewards` section pointing at random-init models of the real sizes."""
    run = {"device": device, "batch_size": batch}
    out: dict = {"ocr": ModelRewardConfig(**run)}
    if {"clipscore", "aesthetic"} & set(names):
        vit_l = build_clip(root / "vit-l", VIT_L)
        out["clipscore"] = ModelRewardConfig(path=str(vit_l), **run)
        mlp = root / "aesthetic.pth"
        torch.save({f"layers.{i}.{p}": torch.randn(*s) * 0.01 for i, shape in
                    {0: (1024, 768), 2: (128, 1024), 4: (64, 128), 6: (16, 64), 7: (1, 16)}.items()
                    for p, s in (("weight", shape), ("bias", shape[:1]))}, mlp)  # fmt: skip
        out["aesthetic"] = ClipRewardConfig(path=str(mlp), clip_path=str(vit_l), **run)
    if "pickscore" in names:
        out["pickscore"] = ModelRewardConfig(path=str(build_clip(root / "vit-h", VIT_H)), **run)
    return RewardsConfig(**out)


def rendered(text: str, size: int) -> np.ndarray:
    """Black text on white, uint8 (size, size, 3): what the OCR engine has to detect and read."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).text((size // 8, size // 3), text, fill="black", font=ImageFont.load_default(size // 8))
    return np.asarray(image)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rewards", default="ocr,clipscore,aesthetic,pickscore")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", type=int, default=512, help="image side (SD3.5 samples: 512)")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args(argv)
    names = args.rewards.split(",")
    metadata = [{"prompt": f'a photo of a sign that says "open {i}"', "tag": "ocr", "text": f"open {i}"}
                for i in range(args.images)]  # fmt: skip
    images = np.stack([rendered(m["text"], args.size) for m in metadata])  # text to read, for the ocr row
    print("| reward | device | images | side | s | images/s |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        ctx = RewardContext(settings(Path(tmp), names, args.device, args.batch))
        for name in names:
            mix = RewardMix(name, ctx)
            mix(images[:1], metadata[:1])  # warm-up (and model load)
            start = time.perf_counter()
            mix(images, metadata)
            s = time.perf_counter() - start
            print(f"| {name} | {args.device} | {args.images} | {args.size} | {s:.2f} | {args.images / s:.2f} |",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
