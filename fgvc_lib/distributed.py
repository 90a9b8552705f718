"""Data-parallel training with ``torchrun`` (PyTorch DDP): environment detection, sharded samplers, reductions.

``torchrun --nproc_per_node=N -m fgvc_lib.cli train bird -f parameters/bird.yaml`` starts N processes with
``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` set; ``init_distributed`` joins the process group (NCCL on CUDA,
gloo on the CPU) and every piece of the workbook then follows these rules:

* ``batch_size`` stays the *global* batch: each rank loads ``batch_size / world_size`` samples per step, and
  the gradients are averaged across ranks, so a step sees the same samples as a single-process step.
* Every sampler (shuffling, uniform / reversed / class-balanced ``ClassAwareSampler``) is wrapped in
  ``ShardedSampler``: each rank draws the *same* full index sequence (same seed, same epoch) and takes every
  ``world_size``-th index starting at its rank, so the union of the ranks' batches at step k is exactly the
  single-process batch k.
* Evaluation shards without padding; ``gather_interleaved`` puts the ranks' logits back in dataset order, so
  metrics are computed on exactly the single-process predictions. Training sums are ``all_reduce``-d.
* Only rank 0 writes files (run folder, checkpoints, history, metrics, figures).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import RandomSampler, Sampler, SequentialSampler


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}: expected an integer, got {value!r}") from None


def dist_env() -> DistEnv:
    """Rank and world size: from the initialised process group, else from torchrun's environment."""
    if dist.is_available() and dist.is_initialized():
        return DistEnv(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    return DistEnv(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    return dist_env().is_main


def init_distributed(device: torch.device | str = "cpu") -> DistEnv:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1); a no-op otherwise.

    CUDA: NCCL, one GPU per process (``LOCAL_RANK``); CPU: gloo. Returns the environment."""
    env = dist_env()
    if not env.enabled or (dist.is_available() and dist.is_initialized()):
        return env
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(env.local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend)
    atexit.register(shutdown_distributed)  # gloo aborts at exit when its group is still alive
    return dist_env()


def shutdown_distributed() -> None:
    """Leave the process group (after a final barrier so no rank exits while others still talk)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def rank_device(device: torch.device) -> torch.device:
    """Under DDP on CUDA each process uses the GPU of its ``LOCAL_RANK``."""
    if device.type == "cuda" and is_distributed() and device.index is None:
        return torch.device("cuda", dist_env().local_rank)
    return device


def local_batch_size(batch_size: int) -> int:
    """Per-rank batch for a global ``batch_size``; it must divide evenly."""
    world = dist_env().world_size if is_distributed() else 1
    if batch_size % world:
        from .config import ParameterError

        raise ParameterError(
            f"parameter 'batch_size': {batch_size} is the global batch and must be divisible by the "
            f"number of processes ({world})"
        )
    return batch_size // world


class ShardedSampler(Sampler[int]):
    """Rank ``rank`` of ``world_size`` takes indices ``rank, rank + W, ...`` of the inner sampler's sequence.

    Training (``pad=True``): the sequence is padded by repeating its start to a multiple of W so every rank
    runs the same number of steps. Evaluation (``pad=False``): no duplicates; ranks may differ by one item.
    ``set_epoch`` is passed to the inner sampler (class-aware samplers draw per epoch).
    """

    def __init__(self, inner: Sampler[int] | Any, rank: int | None = None, world_size: int | None = None,
                 *, pad: bool = True):
        env = dist_env()
        self.inner = inner
        self.rank = env.rank if rank is None else rank
        self.world_size = env.world_size if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in [0, {self.world_size}), got {self.rank}")
        self.pad = pad

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def _total(self) -> int:
        n = len(self.inner)
        return -(-n // self.world_size) * self.world_size if self.pad else n

    def __iter__(self) -> Iterator[int]:
        indices = torch.as_tensor(list(iter(self.inner)), dtype=torch.long)
        if self.pad and len(indices) % self.world_size:
            extra = self.world_size - len(indices) % self.world_size
            indices = torch.cat([indices, indices[:extra]])
        return iter(indices[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        total = self._total()
        return len(range(self.rank, total, self.world_size))

    def __repr__(self) -> str:
        return f"ShardedSampler({self.inner!r}, rank={self.rank}, world_size={self.world_size}, pad={self.pad})"


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (in place, returned); identity without a process group."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_interleaved(tensor: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """Undo an evaluation ``ShardedSampler(pad=False)``: rank r holds items r, r + W, ...; returns all items in
    order (every rank gets the result). Works for unequal per-rank lengths."""
    if not is_distributed():
        return tensor
    world = dist.get_world_size()
    backend_device = tensor.device if dist.get_backend() == "nccl" else torch.device("cpu")
    local = tensor.to(backend_device).contiguous()
    sizes = [torch.zeros(1, dtype=torch.long, device=backend_device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([local.shape[0]], device=backend_device))
    longest = int(max(int(s) for s in sizes))
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=backend_device)
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    n = sum(int(s) for s in sizes) if total is None else total
    out = torch.empty((n, *local.shape[1:]), dtype=local.dtype, device=backend_device)
    for r, (part, size) in enumerate(zip(parts, sizes, strict=True)):
        out[r::world] = part[: int(size)]
    return out.to(tensor.device)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s Python object on every rank (e.g. the run folder rank 0 created)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def average_gradients(model: torch.nn.Module) -> None:
    """All-reduce-average the gradients of ``model`` in one flat buffer (for steps that bypass the DDP
    wrapper's forward, e.g. BBN's two-branch forward)."""
    if not is_distributed():
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def shard_loader_options(dataset: Any, options: dict[str, Any]) -> dict[str, Any]:
    """DataLoader keyword arguments for this rank (unchanged without a process group): the global
    ``batch_size`` divided by the world size, and the sampler (given, shuffling with the loader's generator,
    or sequential for evaluation) wrapped in ``ShardedSampler``."""
    if not is_distributed():
        return options
    options = dict(options)
    options["batch_size"] = local_batch_size(options["batch_size"])
    shuffle = options.pop("shuffle", False)
    if options.get("sampler") is not None:
        inner, pad = options.pop("sampler"), True
    elif shuffle:  # the same permutation as one process: RandomSampler over the same generator
        inner, pad = RandomSampler(dataset, generator=options.get("generator")), True
    else:
        inner, pad = SequentialSampler(dataset), False
    options["sampler"] = ShardedSampler(inner, pad=pad)
    return options
