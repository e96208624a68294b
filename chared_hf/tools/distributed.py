"""Spreading a command's work over the processes of a ``torchrun`` (or ``accelerate launch``)
job: data parallelism for ``chared score`` and ``chared eval``.

What it does: ``world()`` reads the job from the environment ``torchrun`` sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``) and joins its process group over gloo (the results gathered
are a few numbers per text piece or problem, so the CPU backend serves GPU jobs too). Each
process takes every ``size``-th item (``World.mine``); ``World.gather`` brings every process'
results to rank 0, which puts them back in the items' order, so that sums come out as in one
process. A process on a machine with GPUs uses the one its ``LOCAL_RANK`` names
(``World.device``). Without ``torchrun`` (``WORLD_SIZE`` unset or 1) there is one process and
nothing is initialised.

What it does not do: split one member over processes (``device_map`` places members within a
process), balance items by cost (round robin), or recover a process that dies (the job
fails; ``--output`` keeps each process' finished items, and a rerun skips them).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class World:
    """This process' place in the job: ``rank`` of ``size`` (``local_rank`` on its machine)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process reports (rank 0)."""
        return self.rank == 0

    def mine(self, items: Sequence) -> list[int]:
        """The indices of the items this process handles: every ``size``-th, from ``rank``."""
        return list(range(self.rank, len(items), self.size))

    def gather(self, results: dict) -> dict | None:
        """Every process' ``{item index: result}`` merged on rank 0 (None elsewhere)."""
        if self.size == 1:
            return dict(results)
        import torch.distributed as dist

        found: list = [None] * self.size if self.main else None
        dist.gather_object(results, found, dst=0)
        if not self.main:
            return None
        merged: dict = {}
        for part in found:
            merged.update(part)
        return merged

    def device(self) -> str | None:
        """The GPU this process uses in a job on a machine with GPUs (``cuda:LOCAL_RANK``);
        None for one process or a machine without CUDA."""
        if self.size == 1 or not torch.cuda.is_available():
            return None
        return f"cuda:{self.local_rank % torch.cuda.device_count()}"

    def output(self, path: str | None) -> str | None:
        """This process' ``--output`` file: ``path`` itself for one process, else
        ``path.rank<R>`` (each process resumes its own)."""
        if path is None or self.size == 1:
            return path
        return f"{path}.rank{self.rank}"


def world() -> World:
    """This process' place in a ``torchrun`` job (joining its gloo group once), or one
    process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
        atexit.register(dist.destroy_process_group)  # left alone, torch warns at exit
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
