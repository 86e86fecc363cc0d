"""Per-sample random streams: every random draw of a training sample comes from its own generator,
seeded by (train seed, epoch, stream, global sample index). A sample's draws therefore do not depend on
which rank, worker or micro-batch computes it: a sharded epoch equals an unsharded one."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: Streams of an epoch's per-sample draws (noise seeds are `models.generate.image_seed`).
SDE_NOISE, ELBO_DRAWS = 3, 4

Generators = torch.Generator | Sequence[torch.Generator] | None


def sample_generators(key: Sequence[int], indices: Sequence[int] | torch.Tensor) -> list[torch.Generator]:
    """One CPU generator per sample, seeded from `key` + the sample's global index.

    Args:
        key: e.g. (seed, epoch, stream).
        indices: Global sample indices (B,).
    """
    idx = indices.tolist() if isinstance(indices, torch.Tensor) else list(indices)
    seeds = [int(np.random.SeedSequence([*key, i]).generate_state(1, np.uint64)[0] >> 1) for i in idx]
    return [torch.Generator().manual_seed(s) for s in seeds]


def _draw(fn, shape: tuple[int, ...], generator: Generators, dtype: torch.dtype) -> torch.Tensor:
    if generator is None or isinstance(generator, torch.Generator):
        return fn(shape, generator=generator, dtype=dtype)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
    return torch.stack([fn(shape[1:], generator=g, dtype=dtype) for g in generator])  # (B, ...)


def randn(shape: tuple[int, ...], generator: Generators, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """N(0, 1) of `shape` (batch first) on the CPU: from one generator, or row b from `generator[b]`."""
    return _draw(torch.randn, tuple(shape), generator, dtype)


def rand(shape: tuple[int, ...], generator: Generators, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """U[0, 1) of `shape` (batch first) on the CPU: from one generator, or row b from `generator[b]`."""
    return _draw(torch.rand, tuple(shape), generator, dtype)
