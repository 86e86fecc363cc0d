"""The ranks of a multi-process update (launched by `accelerate launch` or `torchrun`, docs/ARCHITECTURE.md
section 8): which samples of an epoch each rank holds, and the few collectives an epoch needs.

Every rank draws the same global batch from (seed, epoch) and keeps its shard: each of the update's
`optimizer_steps` chunks of the batch is split evenly over the ranks, so an optimizer step averages the
same samples on N ranks as on one (a prompt's group may span ranks). Rewards and group ids are gathered
so that advantages are computed on the whole batch; the trained network is wrapped in DDP, whose
gradient all-reduce runs once per optimizer step (`Policy.sync_grads`: the flag DDP's `no_sync()` sets).
One process is `SINGLE`: no torch.distributed at all.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from elborl.errors import UserError

#: How long a rank waits for the others (the main rank's test evaluation runs while the others wait).
TIMEOUT = timedelta(hours=2)


@dataclass
class Ranks:
    """This process's place in the run.

    Args:
        rank: Global rank.
        world: Number of processes.
        device: The device this rank trains on (None: the caller's choice).
        accelerator: accelerate's `Accelerator` (None in a single process).
    """

    rank: int = 0
    world: int = 1
    device: torch.device | None = None
    accelerator: Any = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def _comm(self) -> torch.device | str:
        """Where collective tensors live: the rank's GPU under nccl, else the CPU (gloo)."""
        return self.device if dist.get_backend() == "nccl" else "cpu"

    def shard(self, size: int, chunks: int) -> torch.Tensor:
        """Global indices of this rank's samples among `size`: the rank's even slice of each of `chunks`
        contiguous chunks, in order, (size / world,).

        Raises:
            ValueError: `size` is not divisible by chunks x world.
        """
        if size % (chunks * self.world):
            raise ValueError(f"a batch of {size} samples does not split into {chunks} optimizer steps x "
                             f"{self.world} ranks: make train.prompts_per_epoch x train.group_size a multiple "
                             f"of {chunks * self.world}")  # fmt: skip
        parts = torch.arange(size).view(chunks, self.world, -1)  # (steps, ranks, per rank per step)
        return parts[:, self.rank].reshape(-1)

    def gather(self, values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
        """The whole batch's `values` (size, ...) in global order, from each rank's `values` at `index`."""
        if self.world == 1:
            out = values.new_empty((size, *values.shape[1:]))
            out[index.to(values.device)] = values
            return out
        local, index = values.to(self._comm), index.to(self._comm)
        parts = [torch.empty_like(local) for _ in range(self.world)]
        indices = [torch.empty_like(index) for _ in range(self.world)]
        dist.all_gather(parts, local)
        dist.all_gather(indices, index)
        out = local.new_empty((size, *values.shape[1:]))
        out[torch.cat(indices)] = torch.cat(parts)
        return out.to(values.device)

    def broadcast(self, obj: Any = None) -> Any:
        """The main rank's `obj` on every rank (pickled: only between the run's own processes)."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self._comm)
        return box[0]

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is True on some rank."""
        if self.world == 1:
            return flag
        t = torch.tensor([float(flag)], device=self._comm)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Each value averaged over the ranks."""
        if self.world == 1 or not values:
            return values
        t = torch.tensor(list(values.values()), dtype=torch.float64, device=self._comm)
        dist.all_reduce(t)
        return dict(zip(values, (t / self.world).tolist(), strict=True))

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """`module` in DDP through accelerate (broadcasts rank 0's weights and buffers)."""
        if self.world == 1:
            return module
        return self.accelerator.prepare_model(module, device_placement=False)


SINGLE = Ranks()


@functools.cache
def from_env() -> Ranks:
    """The ranks of this process: `SINGLE`, or, under `accelerate launch` / `torchrun` with more than
    one process (WORLD_SIZE > 1), accelerate's process group (gloo on CPUs, nccl on GPUs; CPU when
    ACCELERATE_USE_CPU is set or no GPU is visible).

    Raises:
        UserError: accelerate is configured for FSDP or DeepSpeed (the update shards nothing: DDP only).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return SINGLE
    from accelerate import Accelerator, InitProcessGroupKwargs
    from accelerate.utils import DistributedType

    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    accelerator = Accelerator(cpu=cpu, kwargs_handlers=[InitProcessGroupKwargs(timeout=TIMEOUT)])
    kind = accelerator.distributed_type
    if kind not in (DistributedType.MULTI_CPU, DistributedType.MULTI_GPU):
        raise UserError(f"accelerate: distributed type {kind} is not supported; use configs/accelerate/ddp.yaml "
                         "(DDP on GPUs, or on CPUs with ACCELERATE_USE_CPU=1)")  # fmt: skip
    return Ranks(accelerator.process_index, accelerator.num_processes, accelerator.device, accelerator)
