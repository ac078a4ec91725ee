"""Several GPUs: the same run on ``torchrun`` with DistributedDataParallel.

``torchrun --nproc_per_node=N -m course_utils train [flags]`` starts N copies of the same program,
one per device. Each learns from environment variables its *rank* (0 to N-1), its device on the
machine (``LOCAL_RANK``) and the *world size* N, and all of them join one *process group* to talk:
NCCL between GPUs, Gloo between CPU processes. A run then goes like this:

- **data**: every process draws the same shuffle from ``(seed, epoch)`` and takes its own share of
  every global batch, so ``--batch-size`` is the global batch and each process loads batch / N
  (:func:`course_utils.data.build_loaders`);
- **gradients**: :class:`~torch.nn.parallel.DistributedDataParallel` (DDP) averages the gradients
  over all processes during ``backward()``, so every process takes the same optimizer step and the
  weights stay identical everywhere;
- **BatchNorm**: each process normalises with the statistics of its own images, unless
  ``--sync-bn`` (:func:`sync_batchnorm`) sums them over the global batch, which makes N processes
  compute what one process computes on the whole batch; after each epoch every process takes rank
  0's running statistics (:func:`broadcast_buffers`), as DDP itself does before every forward;
- **validation and test**: each process predicts a slice of the split and
  :func:`course_utils.evaluation.predict` gathers the slices, so every process holds the same
  predictions, reports the same metrics and takes the same early-stopping decision;
- **files and output**: rank 0 alone writes checkpoints (the weights of the model inside DDP: the
  same format as a single-process run), history, metrics and figures, prints, and shows progress
  bars. Every process reads ``best.pt`` for the test (and ``last.pt`` to resume), so on several
  machines the run folder must be on a shared file system.

Every process is seeded alike, so the random generators of all processes stay in step and rank 0's,
saved in ``last.pt``, resume all of them. The random crops and flips of the DataLoader path are
therefore drawn alike on every process (for different images); the tensor loader draws them for
the whole global batch, as a single process would.

Without torchrun (no process group), every function here leaves things as they are: a run is
exactly the single-process run. Explained in notebook 05 (training) and in the README.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from course_utils.models import replace_batchnorm

#: The environment variables torchrun sets in every process it starts.
TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

T = TypeVar("T")


class DistributedSetupError(RuntimeError):
    """The processes cannot be set up as asked; the message says what to change."""


# --------------------------------------------------------------------------------------------------
# The process group
# --------------------------------------------------------------------------------------------------


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (which sets ``TORCHRUN_VARIABLES``)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def is_distributed() -> bool:
    """Whether this process belongs to a process group (a torchrun run, between setup and end)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's number, 0 to ``world_size() - 1``; 0 without a process group."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """How many processes train together; 1 without a process group."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Whether this process is rank 0: the one that writes files and prints."""
    return rank() == 0


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """Join the processes torchrun started for the length of a run, and leave cleanly.

    Under torchrun, sets up the process group from torchrun's environment (NCCL for CUDA, Gloo for
    the CPU) and yields this process's own device: GPU number ``LOCAL_RANK`` of its machine. The
    group is destroyed on the way out, whether the run succeeded or raised. Without torchrun it
    yields ``device`` and does nothing else.

    Raises:
        DistributedSetupError: a device DDP cannot use here, or more processes than GPUs.
    """
    if not launched_by_torchrun():
        yield device
        return
    if device.type == "cuda":
        local_rank = int(os.environ["LOCAL_RANK"])
        if local_rank >= torch.cuda.device_count():
            raise DistributedSetupError(
                f"torchrun started process {local_rank} on this machine, which has "
                f"{torch.cuda.device_count()} GPU(s): use --nproc_per_node="
                f"{torch.cuda.device_count()} (one process per GPU)."
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise DistributedSetupError(
            f"Training in several processes runs on CUDA GPUs (NCCL) or on the CPU (Gloo), not on "
            f"{device.type!r}: pass --device cuda or --device cpu."
        )
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    try:
        yield device
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def quiet_unless_main() -> Iterator[None]:
    """Discard what this process prints unless it is rank 0, so a run prints its report once.

    Only standard output is silenced: errors and warnings (standard error) still show.
    """
    if is_main_process():
        yield
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


def wrap_model(model: nn.Module, device: torch.device, *, sync_bn: bool = False) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel in a torchrun run; ``model`` itself otherwise.

    Call it once the model is on its device. DDP copies rank 0's weights to every process, then
    averages the gradients during every ``backward()``. The wrapper shares the model's parameters:
    train through the wrapper, and save, validate and test ``model`` itself, whose ``state_dict``
    has the usual keys (the wrapper's would all start with ``module.``).

    Args:
        model: the network, on ``device``.
        device: this process's device.
        sync_bn: BatchNorm statistics over the global batch (:func:`sync_batchnorm`).
    """
    if not is_distributed():
        return model
    if sync_bn:
        sync_batchnorm(model, device)
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Make every ``BatchNorm2d`` of ``model`` normalise with the statistics of the global batch.

    In place: the layers are replaced by synchronised ones that share their parameters and running
    statistics, so the optimizer, the ``state_dict`` and the checkpoints do not change. On CUDA
    this uses PyTorch's :class:`torch.nn.SyncBatchNorm` (fused GPU kernels); elsewhere
    :class:`SyncBatchNorm2d`, because PyTorch's runs on GPUs only.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return replace_batchnorm(model, SyncBatchNorm2d.sharing)


class _SumOverRanks(torch.autograd.Function):
    """``all_reduce(SUM)`` that autograd can go through.

    Every process's loss depends on the sum, so the gradient that flows back into each process's
    part is the sum of all processes' gradients with respect to the sum: an ``all_reduce`` again.
    """

    @staticmethod
    def forward(ctx: object, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        return total


class SyncBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics cover every process's images: any device, any
    backend.

    Under DDP each process sees batch / N images; plain BatchNorm normalises with their mean and
    variance alone. This layer sums over the processes first (two all-reduces in the forward pass,
    two in the backward), so N processes compute what one process computes on the whole batch.
    It assumes every process holds the same number of images, as the sharded training loaders
    guarantee. In evaluation mode, or without a process group, it is a plain ``BatchNorm2d``.
    """

    @classmethod
    def sharing(cls, bn: nn.BatchNorm2d) -> SyncBatchNorm2d:
        """A synchronised layer with ``bn``'s settings, parameters and running statistics (the
        same tensors, not copies)."""
        sync = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        sync.weight, sync.bias = bn.weight, bn.bias
        sync.running_mean, sync.running_var = bn.running_mean, bn.running_var
        sync.num_batches_tracked = bn.num_batches_tracked
        return sync.train(bn.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        dtype = x.dtype
        x = x.to(torch.promote_types(x.dtype, torch.float32))  # float16/bfloat16: in float32
        count = x.numel() // x.size(1) * world_size()  # values per channel, all processes
        mean = _SumOverRanks.apply(x.sum(dim=(0, 2, 3))) / count  # (C,)
        centred = x - mean[:, None, None]  # (B, C, H, W)
        var = _SumOverRanks.apply(centred.square().sum(dim=(0, 2, 3))) / count  # (C,), biased
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * count / (count - 1))
        out = centred * torch.rsqrt(var + self.eps)[:, None, None]
        if self.affine:
            out = out * self.weight[:, None, None] + self.bias[:, None, None]
        return out.to(dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        """What ``BatchNorm2d`` does in training: an exponential average (or, with momentum None,
        the running mean of all batches so far)."""
        self.num_batches_tracked += 1
        factor = 1 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
        self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased_var, alpha=factor)


# --------------------------------------------------------------------------------------------------
# Agreeing: sums, broadcasts and gathers (each a no-op on a single process)
# --------------------------------------------------------------------------------------------------


def _collective_device() -> torch.device:
    """Where tensors sent between processes live: the GPU for NCCL, the CPU for Gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def sum_over_ranks(*values: float) -> list[float]:
    """Each value summed over all processes (in float64), for totals such as images seen."""
    if not is_distributed():
        return list(values)
    total = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(total)
    return total.tolist()


def broadcast_buffers(*modules: nn.Module | None) -> None:
    """Give every process rank 0's buffers (BatchNorm's running statistics) of ``modules``.

    With plain BatchNorm each process updates its running statistics from its own images, so they
    drift apart during an epoch; DDP copies rank 0's before every forward pass, and this does the
    same before validating and saving. ``None`` entries are skipped.
    """
    if not is_distributed():
        return
    for module in modules:
        for buffer in [] if module is None else module.buffers():
            dist.broadcast(buffer, src=0)


def from_main_process(value: T) -> T:
    """Rank 0's ``value`` in every process (any picklable object): one decision for all."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait until every process gets here (for example, until rank 0 has written a file)."""
    if is_distributed():
        dist.barrier()
