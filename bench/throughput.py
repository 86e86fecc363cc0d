"""Rollout throughput of the tiny model: images/s per sampler at 10 steps, batch 32, beside the
machine's measured float32 matmul rate.

Usage: python bench/throughput.py [--model assets/base] [--batch 32] [--steps 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from elborl.models.factory import sampling_policy
from elborl.models.generate import generate
from elborl.models.tiny import TinyConfig, TinyT2I, tiny_policy


def matmul_gflops(n: int = 1024, repeats: int = 20) -> float:
    """Measured float32 GFLOP/s of an n x n matmul (2 n^3 flops each)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="assets/base", help="Tiny model folder ('' = random init, default config).")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    model = sampling_policy(args.model) if args.model else tiny_policy(TinyT2I.create(TinyConfig()), "frozen")
    prompts = ["a photo of a red circle and a blue square"] * args.batch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{sum(p.numel() for p in model.transformer.parameters()) / 1e6:.2f} M transformer parameters")  # fmt: skip
    print(f"float32 matmul: {matmul_gflops():.1f} GFLOP/s\n")
    print("| sampler | steps | batch | images/s | s/batch |")
    print("|---|---|---|---|---|")
    for sampler in ("euler", "dpm2", "flow_sde"):
        generate(model, prompts, list(range(args.batch)), sampler, args.steps, progress=False)  # warm-up
        start = time.perf_counter()
        for r in range(args.repeats):
            generate(model, prompts, list(range(r, r + args.batch)), sampler, args.steps, progress=False)
        per_batch = (time.perf_counter() - start) / args.repeats
        print(f"| {sampler} | {args.steps} | {args.batch} | {args.batch / per_batch:.1f} | {per_batch:.3f} |")


if __name__ == "__main__":
    main()
