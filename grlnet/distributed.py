"""Several processes (``torchrun --nproc_per_node N train.py ...``): set-up, and gathering results.

Without torchrun's environment everything here is a single process of rank 0 and costs nothing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class Process:
    """This process's place among the run's processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


SINGLE_PROCESS = Process()


def init_process(device_type: str) -> Process:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on CPU), if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return SINGLE_PROCESS
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    process = Process(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device_type == "cuda":
        torch.cuda.set_device(process.local_rank)
    return process


def broadcast_value(value: T, process: Process) -> T:
    """Rank 0's value of a picklable object, on every rank."""
    if not process.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_values(values: T, process: Process) -> list[T]:
    """Every rank's value of a picklable object, in rank order, on every rank."""
    if not process.distributed:
        return [values]
    gathered = [None] * process.world_size
    dist.all_gather_object(gathered, values)
    return gathered


def average_tensor(tensor: torch.Tensor, process: Process) -> torch.Tensor:
    """The mean of a tensor over the ranks."""
    if not process.distributed:
        return tensor
    total = tensor.clone()
    dist.all_reduce(total)
    return total / process.world_size


def share_buffers(module: torch.nn.Module, process: Process) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics), which each rank otherwise
    updates from its own batches, so evaluation on any rank uses the checkpointed model."""
    if process.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def wait_for_all(process: Process) -> None:
    """Block until every rank gets here (the others wait while rank 0 writes the run's files)."""
    if process.distributed:
        dist.barrier()


def shutdown(process: Process) -> None:
    """Leave the process group. Call it once nothing that holds the group (DistributedDataParallel
    wrappers) is alive: gloo's worker threads then stop while the interpreter can still join them."""
    if process.distributed and dist.is_initialized():
        dist.destroy_process_group()
