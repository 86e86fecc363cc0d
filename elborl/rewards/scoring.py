"""Score a GenEval-layout folder with a detector: results.jsonl rows and the summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tqdm import tqdm

from elborl.errors import UserError
from elborl.geneval_io import iter_layout, load_image
from elborl.io import write_json, write_jsonl
from elborl.rewards.detectors import Detector, check_classes
from elborl.rewards.geneval import DEFAULT_RULES, TAGS, Rules, evaluate, select, summarize


def judge(detections: list, metadata: dict, rules: Rules) -> tuple[bool, str, dict]:
    """Strict GenEval verdict of one image's detections: (correct, reason, detections kept per class)."""
    detected = select(detections, metadata["tag"], rules)
    correct, reason = evaluate(detected, metadata, rules)
    return correct, reason, detected


def score_image(image, metadata: dict, detector: Detector, rules: Rules) -> tuple[bool, str, dict]:
    """Strict GenEval verdict for one image array: (correct, reason, detections kept per class)."""
    return judge(detector.detect(image), metadata, rules)


def score_folder(images: str | Path, detector: Detector, rules: Rules = DEFAULT_RULES) -> tuple[list[dict], dict]:
    """Score every image of a GenEval layout.

    Args:
        images: Root of the layout (00000/metadata.jsonl, 00000/samples/0000.png, ...).
        detector: Detector to use; every class the metadata names must be one it detects.
        rules: GenEval options.

    Returns:
        (rows, summary): GenEval's results.jsonl rows and {"overall", "per_tag", "n_images"}.

    Raises:
        UserError: Bad layout, classes the detector cannot detect, unreadable or wrong-size images.
    """
    folders = [f for f in iter_layout(images) if f.metadata["tag"] in TAGS]  # other rewards' prompts are skipped
    check_classes(detector, [f.metadata for f in folders], str(images))
    paths = [(f, p) for f in folders for p in f.images]
    if not paths:
        raise UserError(f"{images}: no images (expected <prompt>/samples/0000.png, ...)")
    rows = []
    for folder, path in tqdm(paths, desc="score", unit="img", disable=not sys.stderr.isatty()):
        image = load_image(path, detector.image_size)
        correct, reason, detected = score_image(image, folder.metadata, detector, rules)
        rows.append({
            "filename": str(path),
            "tag": folder.metadata["tag"],
            "prompt": folder.metadata["prompt"],
            "correct": correct,
            "reason": reason,
            "metadata": json.dumps(folder.metadata),
            "details": json.dumps({c: [[*d.box, d.score] for d in dets] for c, dets in detected.items()}),
        })  # fmt: skip
    return rows, summarize(rows)


def write_scores(out: str | Path, rows: list[dict], summary: dict) -> None:
    """Write `out/results.jsonl` and `out/summary.json` atomically."""
    write_jsonl(Path(out) / "results.jsonl", rows)
    write_json(Path(out) / "summary.json", summary)
