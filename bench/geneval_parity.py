"""Parity of our GenEval with the official evaluator (djghosh13/geneval, mmdet + open_clip) on the same
images: per tag, the share of images where both give the same verdict, and both overall scores.

    python evaluation/evaluate_images.py DIR --outfile official.jsonl   # the official tool (mmdet)
    python bench/geneval_parity.py --images DIR --official official.jsonl [--params params.yaml]
    python bench/geneval_parity.py --official official.jsonl --ours results.jsonl   # two results files

Images are matched by their path below the folder (`<prompt index>/samples/<image>.png`), so the two
tools may have seen the folder at different places. Without `--ours`, the folder is scored with the
params' `geneval` section (use `geneval.detector: mask2former` for real images).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/geneval_parity.py` from anywhere

from elborl.rewards.geneval import TAGS, summarize


def _key(filename: str) -> str:
    """`.../<index>/samples/<image>.png` -> `<index>/samples/<image>.png`."""
    return "/".join(Path(filename).parts[-3:])


def read_results(path: str | Path) -> dict[str, dict]:
    """results.jsonl rows by image key."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return {_key(r["filename"]): r for r in rows}


def parity(official: dict[str, dict], ours: dict[str, dict]) -> dict:
    """Per-tag and overall agreement of verdicts on the images both scored, with both GenEval scores.

    Returns:
        {"per_tag": {tag: {"n", "agree", "official", "ours"}}, "overall": {...}, "missing": [keys]}
    """
    shared = sorted(official.keys() & ours.keys())
    per_tag = {}
    for tag in TAGS:
        keys = [k for k in shared if official[k]["tag"] == tag]
        if keys:
            same = sum(bool(official[k]["correct"]) == bool(ours[k]["correct"]) for k in keys)
            per_tag[tag] = {"n": len(keys), "agree": same / len(keys),
                            "official": sum(bool(official[k]["correct"]) for k in keys) / len(keys),
                            "ours": sum(bool(ours[k]["correct"]) for k in keys) / len(keys)}  # fmt: skip
    scores = {name: summarize([{"tag": r[k]["tag"], "correct": bool(r[k]["correct"])} for k in shared])["overall"]
              for name, r in (("official", official), ("ours", ours))}  # fmt: skip
    agree = sum(bool(official[k]["correct"]) == bool(ours[k]["correct"]) for k in shared) / max(len(shared), 1)
    return {
        "per_tag": per_tag,
        "overall": {"n": len(shared), "agree": agree, **scores},
        "missing": sorted(official.keys() ^ ours.keys()),
    }


def table(result: dict) -> str:
    lines = ["| tag | images | same verdict | official | ours |", "|---|---|---|---|---|"]
    for tag, r in result["per_tag"].items():
        lines.append(f"| {tag} | {r['n']} | {r['agree']:.1%} | {r['official']:.3f} | {r['ours']:.3f} |")
    o = result["overall"]
    lines.append(f"| overall (mean of tags) | {o['n']} | {o['agree']:.1%} | {o['official']:.3f} | {o['ours']:.3f} |")
    if result["missing"]:
        lines.append(f"\n{len(result['missing'])} images scored by only one side (first: {result['missing'][0]})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", required=True, help="the official evaluator's results.jsonl")
    ap.add_argument("--ours", help="our results.jsonl (else: score --images with --params)")
    ap.add_argument("--images", help="the GenEval folder both scored")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", help="also write our results.jsonl and summary.json here")
    args = ap.parse_args(argv)
    if args.ours:
        ours = read_results(args.ours)
    else:
        if not args.images:
            ap.error("--images is needed without --ours")
        from elborl.config import load_params
        from elborl.rewards.detectors import build_detector
        from elborl.rewards.geneval import Rules
        from elborl.rewards.scoring import score_folder, write_scores
        from elborl.world.spec import WorldSpec

        p = load_params(args.params)
        detector = build_detector(p.geneval.detector, WorldSpec.from_config(p.world), p.geneval)
        rows, summary = score_folder(args.images, detector, Rules.from_config(p.geneval))
        if args.out:
            write_scores(Path(args.out), rows, summary)
        ours = {_key(r["filename"]): r for r in rows}
    print(table(parity(read_results(args.official), ours)))


if __name__ == "__main__":
    main()
