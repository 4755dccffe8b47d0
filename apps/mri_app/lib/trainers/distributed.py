"""One training request on several processes with ``torch.distributed`` (DDP), through MONAI Label's own path.

:class:`DistributedTrainTask` runs a request through MONAI Label's ``BasicTrainTask`` in three ways:

* ``{"multi_gpu": true, "gpus": "all"}`` on a machine with several GPUs: MONAI Label spawns one process per
  GPU on ``nccl``, unchanged.
* ``{"multi_gpu": true, "processes": N}``: N processes through the same spawn path. Without CUDA they run on
  the CPU on ``gloo`` (``file://`` rendezvous); with CUDA ``processes`` picks the first N GPUs.
* in a process started by ``torchrun`` (``WORLD_SIZE`` > 1): the request joins torchrun's process group
  (``env://``; ``nccl`` on ``cuda:LOCAL_RANK`` with CUDA, else ``gloo`` on the CPU) instead of spawning, so the
  same command on each node trains across nodes.

Checkpoints, statistics and the published model are written by global rank 0 only (MONAI Label's
``context.local_rank`` is the global rank given to ``train``).

Data: the training items are split into disjoint interleaved partitions, one per rank, sizes differing by at
most one (:func:`partition`). DDP needs the same number of iterations on every rank, so where the partitions
would give one batch fewer on some ranks those ranks repeat their first item: at most ``world_size - 1``
repeats, none when the batches come out even (MONAI Label pads whenever the count is not divisible). Validation
items are split without repeats and evaluated with the unwrapped network after its buffers are taken from rank
0 (the weights the published checkpoint holds); ignite's and MONAI's metrics reduce over all ranks, so the
reported metrics are those of the whole validation set, as in one process. The run's statistics get a
``distributed`` entry with the split (:meth:`DistributedTrainTask.finalize`).

Where MONAI Label's own steps assume one process per GPU, :class:`lib.stock.StockTrainTask` (the one module that
touches its private methods) calls this module's hooks: :meth:`DistributedTrainTask.rank_device`,
:meth:`~DistributedTrainTask.rank_datalist`, :meth:`~DistributedTrainTask.attach_validation`.
"""

import copy
import logging
import math
import os
import shutil
import tempfile
from datetime import datetime
from typing import Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
from ignite.engine import Events
from monai.data import partition_dataset
from monailabel.utils.others.generic import name_to_device

from lib.stock import StockTrainTask

logger = logging.getLogger(__name__)

TORCHRUN = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def check_processes(value) -> Optional[int]:
    """The request's ``processes`` as an int >= 1, or None where it is not given.

    Raises:
        ValueError: when ``value`` is not an integer >= 1.
    """
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, str))
        or not str(value).strip().isdigit()
        or int(value) < 1
    ):
        raise ValueError(f"processes must be an integer >= 1, got {value!r}")
    return int(value)


def torchrun_env() -> Optional[Dict[str, int]]:
    """``rank``, ``world_size`` and ``local_rank`` of a process started by torchrun (``WORLD_SIZE`` > 1), else None.

    Raises:
        ValueError: when ``WORLD_SIZE`` > 1 but torchrun's other variables are missing.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world_size < 2:
        return None
    missing = [name for name in TORCHRUN if not os.environ.get(name)]
    if missing:
        raise ValueError(f"WORLD_SIZE={world_size} but {', '.join(missing)} unset: start the processes with torchrun")
    return {"rank": int(os.environ["RANK"]), "world_size": world_size, "local_rank": int(os.environ["LOCAL_RANK"])}


def partition(items: Sequence, world_size: int, batch_size: Optional[int] = None) -> List[List]:
    """Split ``items`` into ``world_size`` disjoint interleaved partitions (MONAI's ``partition_dataset``).

    Args:
        items: the items to split.
        world_size: number of partitions (ranks).
        batch_size: for training: where the partitions would give different numbers of batches of this size,
            the shorter ones repeat their first items until all have the same number (DDP runs the same number
            of iterations on every rank). None (validation): no repeats.

    Fewer items than ranks: every rank gets all items, as in MONAI Label.

    Raises:
        ValueError: when ``world_size`` or ``batch_size`` is not an integer >= 1.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be an integer >= 1, got {world_size!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be an integer >= 1 or None, got {batch_size!r}")
    items = list(items)
    if len(items) < world_size:
        if world_size > 1 and items:
            logger.warning(f"{len(items)} items for {world_size} ranks: every rank gets all of them")
        return [list(items) for _ in range(world_size)]
    parts = partition_dataset(items, num_partitions=world_size, shuffle=False, even_divisible=False)
    if batch_size:
        batches = max(math.ceil(len(p) / batch_size) for p in parts)
        parts = [p + p[: max(0, (batches - 1) * batch_size + 1 - len(p))] for p in parts]
    return parts


def finish_together(engine=None) -> None:
    """Ignite handler: wait for every rank at the end of training, before MONAI Label destroys the process group.

    gloo's worker threads free the tensors of a finished collective only once they get the GIL; a rank that
    leaves right after its last metric all-reduce can reach interpreter shutdown first and is then aborted
    (SIGABRT) while freeing them. The barrier gives them that time and leaves no tensors behind, and no rank
    tears the group down while another still uses it.
    """
    dist.barrier()


class BroadcastBuffers:
    """Ignite handler for the evaluator: give every rank rank 0's buffers (batch-norm statistics), as DDP's forward
    does, so that every rank validates the weights the published checkpoint holds."""

    def __init__(self, module: torch.nn.Module):
        self.module = module

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine=None) -> None:
        for buffer in self.module.buffers():
            dist.broadcast(buffer, src=0)


def gather_rank_items(context) -> Dict:
    """The run's ``distributed`` statistics: world size, backend, launcher, device and the items of every rank
    (an all-gather of each rank's ``context.rank_items`` on several processes)."""
    counts = getattr(context, "rank_items", {})
    gathered = [counts]
    if context.multi_gpu:
        gathered = [None] * context.world_size
        dist.all_gather_object(gathered, counts)
    train = [g.get("train", 0) for g in gathered]
    return {
        "world_size": len(gathered),
        "backend": dist.get_backend() if context.multi_gpu else None,
        "launcher": context.request.get("distributed_launcher", "spawn") if context.multi_gpu else None,
        "device": context.device.type,
        "train_items_per_rank": train,
        "train_items_repeated": sum(train) - len(context.train_datalist or []),
        "val_items_per_rank": [g.get("val", 0) for g in gathered],
    }


class DistributedTrainTask(StockTrainTask):
    """A train task on one process, on several CPU processes or under torchrun, besides MONAI Label's multi-GPU
    spawn: the request plumbing (:meth:`__call__`) and the hooks of :class:`lib.stock.StockTrainTask` for one rank
    (device, share of the items, evaluator)."""

    def __call__(self, request, datastore):
        launch = torchrun_env()
        if launch:
            return self._join_torchrun(request, datastore, launch)
        processes = check_processes(request.get("processes"))
        if processes is None:
            return super().__call__(request, datastore)
        request, rendezvous = self._spawn_request(request, processes)
        try:
            return super().__call__(request, datastore)
        finally:
            if rendezvous:
                shutil.rmtree(rendezvous, ignore_errors=True)

    def _spawn_request(self, request: Dict, processes: int):
        """``request`` for MONAI Label's ``__call__``, which spawns one process per entry of ``gpus``; and a
        folder to remove afterwards (the CPU rendezvous), or None."""
        config = self.config()
        multi_gpu = request.get("multi_gpu", config.get("multi_gpu"))
        if processes == 1:
            return dict(request, multi_gpu=False), None
        if not multi_gpu:
            raise ValueError(f"processes={processes} needs multi_gpu true, got multi_gpu={multi_gpu!r}")
        if torch.cuda.is_available():
            count, gpus = torch.cuda.device_count(), request.get("gpus", config.get("gpus", "all"))
            if not gpus or gpus == "all":
                if processes > count:
                    raise ValueError(f"processes={processes} is more than the {count} GPU(s) of this machine")
                return dict(request, gpus=",".join(str(g) for g in range(processes))), None
            if len(str(gpus).split(",")) != processes:
                raise ValueError(f"processes={processes} differs from the number of GPUs in gpus={gpus!r}")
            return dict(request), None
        rendezvous = tempfile.mkdtemp(prefix="mri-label-ddp-")
        request = dict(
            request,
            multi_gpu=True,
            gpus=",".join(str(r) for r in range(processes)),  # MONAI Label's world size: one process per entry
            distributed_backend="gloo",
            distributed_url=f"file://{os.path.join(rendezvous, 'store')}",
        )
        logger.info(f"Distributed training on {processes} CPU processes (gloo)")
        return request, rendezvous

    def _join_torchrun(self, request: Dict, datastore, launch: Dict[str, int]):
        """Train in this torchrun process as rank ``launch["rank"]`` of its process group (no spawning)."""
        req = copy.deepcopy(self.config())
        req.update(copy.deepcopy(request))
        req.update(
            run_id=datetime.now().strftime("%Y%m%d_%H%M%S"),
            device=name_to_device(req.get("device", "cuda")),
            multi_gpu=True,
            distributed_backend="nccl" if torch.cuda.is_available() else "gloo",
            distributed_url="env://",
            distributed_launcher="torchrun",
            distributed_local_rank=launch["local_rank"],
        )
        req.pop("processes", None)
        logger.info(f"torchrun: rank {launch['rank']} of {launch['world_size']} (local rank {launch['local_rank']})")
        if torch.cuda.is_available():  # before the process group is made: nccl binds to the current device
            torch.cuda.set_device(launch["local_rank"])
        datalist = self.pre_process(req, datastore)
        try:
            return self.train(launch["rank"], launch["world_size"], req, datalist)
        finally:
            self.cleanup(req)

    def train(self, rank, world_size, request, datalist):
        local_rank = os.environ.get("LOCAL_RANK")  # MONAI Label sets it to the global rank; torchrun's is restored
        try:
            return super().train(rank, world_size, request, datalist)
        finally:
            if local_rank is None:
                os.environ.pop("LOCAL_RANK", None)
            else:
                os.environ["LOCAL_RANK"] = local_rank

    def finalize(self, context):
        """MONAI Label's handlers; then the run's ``distributed`` statistics (``context.distributed``,
        :func:`gather_rank_items`) and, on several processes, every rank ends training together
        (:func:`finish_together`)."""
        super().finalize(context)
        context.distributed = gather_rank_items(context)
        if context.multi_gpu:
            context.trainer.add_event_handler(Events.COMPLETED, finish_together)
            if context.local_rank == 0:
                logger.info(f"Distributed training: {context.distributed}")

    def rank_device(self, context) -> Optional[torch.device]:
        local_rank = context.request.get("distributed_local_rank")
        if not torch.cuda.is_available():
            device = torch.device("cpu")
            if not os.environ.get("OMP_NUM_THREADS"):  # share the cores between the processes of this machine
                cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
                torch.set_num_threads(max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", context.world_size))))
        elif local_rank is not None:
            device = torch.device(f"cuda:{local_rank}")
            torch.cuda.set_device(device)
        else:
            return None  # MONAI Label's: the GPU of this rank's entry in ``gpus``
        logger.info(f"{context.local_rank} - Using Device: {device}")
        return device

    def rank_datalist(self, context, datalist: List[Dict], is_train: bool) -> List[Dict]:
        """This rank's partition (:func:`partition`; all items on one process); its size goes to
        ``context.rank_items`` for the run's statistics."""
        if context.multi_gpu:
            batch_size = int(context.train_batch_size) if is_train else None
            datalist = partition(datalist, context.world_size, batch_size)[context.local_rank]
        context.rank_items = dict(getattr(context, "rank_items", {}), **{"train" if is_train else "val": len(datalist)})
        return datalist

    def attach_validation(self, context, evaluator, network: torch.nn.Module) -> None:
        """Every validation starts by taking rank 0's buffers (:class:`BroadcastBuffers`)."""
        BroadcastBuffers(network).attach(evaluator)
