"""Shapes-detector benchmark: strict GenEval of rendered ground truth, and detection speed.

Prints one row per condition: clean truth, truth with blur + pixel noise (what a generator's output
looks like), and truth scored against shuffled metadata (must be low: the detector is not a rubber
stamp). Usage: python bench/detector.py [--prompts 500] [--images 4] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from elborl.config import PromptsConfig
from elborl.rewards.detectors.shapes import ShapesDetector
from elborl.rewards.geneval import TAGS, evaluate, select, summarize
from elborl.world.degrade import degrade
from elborl.world.prompts import make_prompt_sets
from elborl.world.render import draw, layout
from elborl.world.spec import WorldSpec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=500)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    spec = WorldSpec.from_config()
    _, test = make_prompt_sets(spec, PromptsConfig(test_size=args.prompts, max_test_fraction=0.5))
    rng = np.random.default_rng(args.seed)
    images = [[draw(layout(m, spec, rng), spec) for _ in range(args.images)] for m in test]
    detector = ShapesDetector(spec)
    perm = rng.permutation(len(test))
    conditions = {
        "truth": (lambda i: i, lambda im: im),
        "truth + blur 1 px + noise 0.1": (lambda i: i, lambda im: degrade(im, rng, blur=1.0, noise=0.1)),
        "truth vs shuffled metadata": (lambda i: perm[i], lambda im: im),
    }
    print(f"{len(test)} prompts x {args.images} images, {spec.size}x{spec.size}, classes {', '.join(spec.classes)}\n")
    print("| condition | overall | " + " | ".join(TAGS) + " | images/s |")
    print("|---" * (len(TAGS) + 3) + "|")
    for name, (meta_of, transform) in conditions.items():
        inputs = [(test[meta_of(i)], transform(im)) for i, imgs in enumerate(images) for im in imgs]
        start = time.perf_counter()
        rows = []
        for m, im in inputs:
            correct, _ = evaluate(select(detector.detect(im), m["tag"]), m)
            rows.append({"tag": m["tag"], "correct": correct})
        rate = len(inputs) / (time.perf_counter() - start)
        s = summarize(rows)
        tags = " | ".join(f"{s['per_tag'].get(t, float('nan')):.3f}" for t in TAGS)
        print(f"| {name} | {s['overall']:.3f} | {tags} | {rate:.0f} |")


if __name__ == "__main__":
    main()
