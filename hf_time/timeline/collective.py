"""A timeline over many processes: the main process runs it, the others train with it.

Launched by ``torchrun`` or ``accelerate launch``, every process runs the same
``hf-time timeline run CFG``. The main process (rank 0) runs the timeline exactly as one process
would: it alone resolves, downloads, merges, evaluates, pushes experts and publishes step
snapshots, writes cards and the state, so the Hub gets one commit per node however many processes
there are. The other processes only *follow*: they wait in a collective until the main process
needs a training, receive the job (the init folder's path, the task, the training config, the
output path, the replay pool), train their share of every batch with it (``transformers.Trainer``
does DDP, or FSDP through accelerate's config), and wait again. Only the main process writes the
trained folder; everything the others read is a path the main process wrote, so all processes must
see the same work and cache folders (one node, or a shared file system).

The main process ends the followers with the run it made (so every process returns the same
:class:`~hf_time.timeline.runner.TimelineRun`), or with the one-line reason it failed, which each
follower raises as :class:`~hf_time.errors.DistributedRunError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_time import distributed
from hf_time.errors import DistributedRunError

logger = logging.getLogger(__name__)

_TRAIN, _DONE, _FAILED = "train", "done", "failed"


@dataclass
class CollectiveTrainer:
    """The main process's trainer: tells the followers to join, then trains its own share."""

    trainer: Callable[..., Path]
    # Set when a training failed on this process: the followers may be inside a collective of that
    # training, so no message can reach them; the main process exits and the launcher ends them.
    broken: bool = False

    def __call__(self, init_dir, task, config, out_dir, *, replay=None, device=None) -> Path:
        job = {"init_dir": str(init_dir), "task": task, "config": config, "out_dir": str(out_dir), "replay": replay,
               "device": device}
        distributed.broadcast_object((_TRAIN, job))
        try:
            out = self.trainer(init_dir, task, config, out_dir, replay=replay, device=device)
        except BaseException:
            self.broken = True
            raise
        distributed.barrier()  # the followers go back to waiting only once the folder is complete
        return out


def follow(trainer: Callable[..., Path]) -> Any:
    """Serve the main process's trainings until it says the run ended (non-main processes only).

    Returns:
        The main process's result (its ``TimelineRun``).

    Raises:
        DistributedRunError: the main process failed; the message is its error.
    """
    while True:
        kind, payload = distributed.broadcast_object(None)
        if kind == _TRAIN:
            logger.info("training %s with the main process", payload["task"].name)
            trainer(Path(payload["init_dir"]), payload["task"], payload["config"], Path(payload["out_dir"]),
                    replay=payload["replay"], device=payload["device"])
            distributed.barrier()
        elif kind == _DONE:
            return payload
        else:
            raise DistributedRunError(f"the main process (rank 0) failed: {payload}")


def lead(run: Callable[[], Any], trainer: CollectiveTrainer | None = None) -> Any:
    """Run ``run()`` on the main process and end the followers with its result or its error (unless
    ``trainer`` failed mid-training: then the error is raised at once, see :class:`CollectiveTrainer`)."""
    try:
        result = run()
    except BaseException as e:
        if trainer is None or not trainer.broken:
            distributed.broadcast_object((_FAILED, f"{type(e).__name__}: {e}"))
        raise
    distributed.broadcast_object((_DONE, result))
    return result
