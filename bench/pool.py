"""Where the benchmark's runs execute: in this process one after another, or N at a time in spawned
worker processes (CUDA cannot fork) with the machine's cores split among them."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Executor, Future, ProcessPoolExecutor

import torch


class InlinePool(Executor):
    """`--jobs 1`: each submitted run runs at once, in this process."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def make_pool(jobs: int) -> Executor:
    """`jobs` worker processes (spawned: CUDA cannot fork), the machine's cores split among them."""
    if jobs <= 1:
        return InlinePool()
    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=(threads,))
