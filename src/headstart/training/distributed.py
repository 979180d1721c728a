"""Many processes, one training: PyTorch DistributedDataParallel, launched by ``torchrun``.

``torchrun --nproc_per_node 2 -m headstart fit photos/`` runs the same ``headstart fit`` in
every process. :func:`init_from_environment` joins the process group that torchrun describes
in the environment (NCCL between CUDA devices, gloo on CPUs); from then on the fine-tuning loop
gives each process its share of every batch and DDP averages the gradients, so the model is the
one a single process would train on the whole batch. Everything else (features, the probe, the
plan) is computed the same way in every process; only the main process writes the run folder.
"""

from __future__ import annotations

import atexit
import inspect
import os
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")

__all__ = [
    "agree",
    "any_rank",
    "barrier",
    "init_from_environment",
    "is_main",
    "local_device",
    "rank_and_size",
    "wrap",
]


def init_from_environment() -> bool:
    """Join torchrun's process group when launched by torchrun; False for a plain process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
        # Left to the interpreter's exit, gloo's threads can be torn down while still
        # joinable, and the process aborts ("terminate called without an active exception")
        # after its work is done: torchrun then reports a failed run.
        atexit.register(_leave)
    return True


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_and_size() -> tuple[int, int]:
    """This process's rank and the number of processes (0 and 1 without a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process writes files (the run folder, checkpoints)."""
    return rank_and_size()[0] == 0


def local_device() -> torch.device:
    """This process's CUDA device under torchrun, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def barrier() -> None:
    if rank_and_size()[1] > 1:
        dist.barrier()


def wrap(model: nn.Module) -> nn.Module:
    """``model`` in DistributedDataParallel over its trainable parameters.

    Buffers are not synchronised before each forward pass: batch-norm statistics are either
    frozen (the same everywhere) or, when they adapt, each process's own, as in any DDP
    training without SyncBatchNorm. (They start equal: every process loads the same weights.)
    """
    device = next(model.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    parallel = nn.parallel.DistributedDataParallel
    # torch 2.13 renamed the option (broadcast_buffers is deprecated there).
    if "forward_sync_buffers" in inspect.signature(parallel).parameters:
        return parallel(model, device_ids=ids, forward_sync_buffers=False)
    return parallel(model, device_ids=ids, broadcast_buffers=False)


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true in any process: a stop one process decides (a loss that
    became NaN on its share, a callback) must stop them all, or the others wait forever."""
    if rank_and_size()[1] == 1:
        return flag
    value = torch.tensor([float(flag)], device=local_device() if _nccl() else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def agree(value: T) -> T:
    """The main process's ``value``, in every process: decisions (the plan, when to stop) are
    taken once, so that clocks and floating-point differences cannot split the processes."""
    if rank_and_size()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _nccl() -> bool:
    return dist.get_backend() == "nccl"
