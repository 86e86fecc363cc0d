"""Speed of the mask2former GenEval detector (Mask2Former + CLIP colour), images/s, on random-init models
built in code (no weights needed): `--tiny` (the tests' tiny configs) or the real sizes (Mask2Former
Swin-S COCO as `elborl geneval convert-mmdet` builds it, CLIP ViT-L/14).

    python bench/geneval_speed.py --tiny --images 8            # CPU, seconds
    python bench/geneval_speed.py --device cuda --images 64    # the real sizes on a GPU

Every detection above `--threshold` gets its colour classified (random weights detect at random, so the
threshold sets how much CLIP work there is; real GenEval images have a handful of such detections).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/geneval_speed.py` from anywhere

from elborl.config import GenEvalConfig
from elborl.rewards.detectors.mask2former import Mask2FormerDetector


def build_real_size(root: Path) -> tuple[Path, Path]:
    """Random-init Mask2Former Swin-S (COCO-80) and CLIP ViT-L/14 folders, with a word-level tokenizer."""
    from transformers import CLIPConfig, CLIPModel, Mask2FormerForUniversalSegmentation

    from elborl.rewards.detectors.mmdet_convert import mask2former_swin_s_config
    from tests.helpers.tiny_geneval import build_tiny_clip

    Mask2FormerForUniversalSegmentation(mask2former_swin_s_config()).save_pretrained(root / "mask2former")
    build_tiny_clip(root / "clip")  # its tokenizer; the model is replaced by a real-size one
    config = CLIPConfig(
        text_config={"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                     "num_attention_heads": 12, "max_position_embeddings": 77, "eos_token_id": 3},
        vision_config={"image_size": 224, "patch_size": 14, "hidden_size": 1024, "intermediate_size": 4096,
                       "num_hidden_layers": 24, "num_attention_heads": 16},
        projection_dim=768,
    )  # fmt: skip
    CLIPModel(config).save_pretrained(root / "clip")
    return root / "mask2former", root / "clip"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="the tests' tiny configs (CPU, seconds)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", type=int, default=512, help="image side (SD3.5 samples: 512)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threshold", type=float, default=0.3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            from tests.helpers.tiny_geneval import build_tiny_clip, build_tiny_mask2former

            paths = build_tiny_mask2former(Path(tmp) / "m2f"), build_tiny_clip(Path(tmp) / "clip")
        else:
            paths = build_real_size(Path(tmp))
        cfg = GenEvalConfig(detector="mask2former", detector_path=str(paths[0]), clip_path=str(paths[1]),
                            device=args.device, batch_size=args.batch, threshold=args.threshold)  # fmt: skip
        det = Mask2FormerDetector(cfg)
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8) for _ in range(args.images)]
        det.detect_batch(images[: min(2, len(images))])  # warm-up
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        found = det.detect_batch(images)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    colored = sum(d.color != "none" for ds in found for d in ds)
    kind = "tiny" if args.tiny else "real size (Swin-S, ViT-L/14)"
    print("| models | device | images | side | batch | colour crops | s | images/s |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {kind} | {args.device} | {args.images} | {args.size} | {args.batch} | {colored} | {seconds:.2f} | "
          f"{args.images / seconds:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
