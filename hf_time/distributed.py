"""Many processes, one program: who is the main process, and how the others wait for it.

``torchrun`` and ``accelerate launch`` start one process per device and describe the job in the
environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); a plain
``python`` run has none of them and is a world of one, where every helper here is a no-op. The
process group is created once, by :func:`init`: NCCL when the process has a CUDA device, gloo on CPU,
the same choice accelerate makes, so ``transformers.Trainer`` (whose accelerate state finds the group
already initialized) trains with DDP, or FSDP when ``accelerate launch`` was given an FSDP config,
over the very same group.

Only torch is imported here, and only when a helper needs it: reading the world does not load the
training stack.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hf_time.errors import ConfigError

logger = logging.getLogger(__name__)

# The main process downloads, merges, evaluates and publishes while the others wait in a collective:
# the default NCCL timeout (10 min) would kill a long evaluation; HF_TIME_DIST_TIMEOUT sets it (seconds).
_DEFAULT_TIMEOUT_S = 4 * 3600


@dataclass(frozen=True)
class World:
    """This process's place in the job: global rank, rank on its node, number of processes."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """The job as the launcher described it in the environment (a world of one without a launcher).

    Raises:
        ConfigError: a malformed ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``.
    """
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise ConfigError(f"WORLD_SIZE/RANK/LOCAL_RANK must be integers ({e}); launch with torchrun or "
                          "accelerate launch, or unset them for one process") from None
    if size < 1 or not 0 <= rank < size:
        raise ConfigError(f"RANK={rank} is not in a world of WORLD_SIZE={size}; launch with torchrun or "
                          "accelerate launch, or unset them for one process")
    return World(rank, local, size)


def is_distributed() -> bool:
    """True when this process is one of several."""
    return world().size > 1


def is_main() -> bool:
    """True on the process that resolves, downloads, merges and publishes (rank 0, or the only one)."""
    return world().is_main


def _dist():
    import torch.distributed as dist

    return dist


def init() -> World:
    """Join the process group (once; later calls and a world of one do nothing).

    NCCL on CUDA (each process on ``cuda:LOCAL_RANK``), gloo otherwise. Non-main processes log
    warnings only, so progress and summaries are printed once.

    Returns:
        This process's :class:`World`.
    """
    w = world()
    if w.size == 1:
        return w
    import torch

    dist = _dist()
    if not dist.is_initialized():
        cuda = torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true")
        if cuda:
            torch.cuda.set_device(w.local_rank)
        timeout = datetime.timedelta(seconds=float(os.environ.get("HF_TIME_DIST_TIMEOUT", _DEFAULT_TIMEOUT_S)))
        dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timeout)
        logger.info("process %d of %d joined the %s group", w.rank, w.size, dist.get_backend())
    if not w.is_main:
        logging.getLogger("hf_time").setLevel(logging.WARNING)
    return w


def shutdown() -> None:
    """Leave the process group (if this process joined one)."""
    if world().size > 1 and _dist().is_initialized():
        _dist().destroy_process_group()


def barrier() -> None:
    """Wait until every process arrives here (no-op in a world of one)."""
    if world().size > 1:
        _dist().barrier()


def broadcast_object(obj: Any = None, src: int = 0) -> Any:
    """``obj`` of process ``src``, on every process (picklable objects: paths, shas, configs, states)."""
    if world().size == 1:
        return obj
    box = [obj]
    _dist().broadcast_object_list(box, src=src)
    return box[0]


@contextlib.contextmanager
def main_first() -> Iterator[World]:
    """Run the block on the main process first, then on the others (e.g. a download the others then
    read from the shared cache)."""
    w = world()
    if not w.is_main:
        barrier()
    try:
        yield w
    finally:
        if w.is_main:
            barrier()


def per_device_batch(batch_size: int, accumulation: int, processes: int | None = None) -> int:
    """Examples per device per forward pass so that one optimizer step still sees ``batch_size``
    examples: ``batch_size = per_device × processes × accumulation``.

    Raises:
        ConfigError: ``batch_size`` is not a multiple of ``accumulation × processes``.
    """
    processes = world().size if processes is None else processes
    if batch_size % (accumulation * processes):
        raise ConfigError(f"training.batch_size={batch_size} is not a multiple of gradient_accumulation_steps × "
                          f"processes = {accumulation} × {processes}; set training.batch_size to a multiple of "
                          f"{accumulation * processes} so every process gets equal micro-batches")
    return batch_size // (accumulation * processes)
