"""Where a job body runs: in-process (:class:`LocalRuntime`) or as one rank of a Ray Train
worker group (:class:`RayTrainRuntime`).

A job body (``workers.train_fns``) is written once against this small interface: its rank and
world size, its device, collectives that are no-ops for one process, and checkpoints. Both
runtimes lay checkpoints out the same way — ``<storage_path>/<run name>/checkpoint_*/`` with
``state.pt`` (``torch.save``) and ``meta.json`` (epoch, step, global_step) — Ray Train by its own
naming, the local one imitating it, so a retried attempt finds the latest checkpoint whichever
executor wrote it. ``storage_path`` is a path or a URI (``file://``, ``s3://``, ``gs://``…): the
checkpoint I/O goes through ``pyarrow.fs`` (:mod:`workers.storage`), as Ray Train's does.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch

from .payload import JobPayload
from .storage import (
    CHECKPOINTS_TO_KEEP,
    META_FILE,
    STATE_FILE,
    CheckpointStore,
    is_uri,
    join,
    local_copy,
)

logger = logging.getLogger(__name__)


def run_dir(payload: JobPayload) -> Path | None:
    """The job's directory under ``storage_path`` when that is a local (or mounted) path or a
    ``file://`` URI; None for remote storage (see :func:`checkpoint_store`)."""
    storage = payload.storage_path
    if is_uri(storage):
        if not storage.startswith("file://"):
            return None
        storage = urlsplit(storage).path  # file:///p and file://localhost/p
    return Path(storage) / payload.run_name


def run_location(payload: JobPayload) -> str:
    """``<storage_path>/<run name>``, a path or a URI: where this job's checkpoints live."""
    return join(payload.storage_path, payload.run_name)


def checkpoint_store(payload: JobPayload) -> CheckpointStore:
    return CheckpointStore(run_location(payload))


def read_checkpoint_dir(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """A checkpoint's (state, meta) from a local directory, or from a storage URI (downloaded
    to a temporary directory first)."""
    with local_copy(path) as local:
        meta = json.loads((local / META_FILE).read_text())
        # Our own file in our own storage: full unpickling is needed for optimizer/RNG state.
        state = torch.load(local / STATE_FILE, map_location="cpu", weights_only=False)
    return state, meta


def write_checkpoint_dir(
    path: str | os.PathLike, state: dict[str, Any], meta: dict[str, Any]
) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.save(state, path / STATE_FILE)
    (path / META_FILE).write_text(json.dumps(meta))


def find_latest_checkpoint(location: str | os.PathLike | None) -> Path | str | None:
    """The complete checkpoint with the highest global step under ``location`` (a run
    directory or its URI), or None: a local directory as a Path, a remote one as its URI."""
    if location is None:
        return None
    store = CheckpointStore(location)
    latest = store.latest()
    if latest is None:
        return None
    return Path(latest.path) if store.local_dir is not None else latest.uri


def load_latest_checkpoint(store: CheckpointStore) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(state, meta) of the store's latest complete checkpoint (downloaded first when remote),
    or None when it has none."""
    latest = store.latest()
    if latest is None:
        return None
    with store.open(latest) as local:
        return read_checkpoint_dir(local)


def average_gradients(tensors: Iterable[torch.Tensor], world_size: int) -> None:
    """All-reduce-average gradients in place, in one flat collective.

    ``tensors`` are gradient tensors (what the core loops pass to ``grad_sync``) or parameters
    (their ``.grad`` is used; those without one are skipped). Every rank runs the same code on
    the same network, so all ranks pass the same list.
    """
    import torch.distributed as dist

    maybe = (t.grad if isinstance(t, torch.nn.Parameter) else t for t in tensors)
    grads = [g for g in maybe if g is not None]
    if world_size <= 1 or not grads:
        return
    flat = torch.cat([g.detach().reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(world_size)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


class Runtime:
    """One process's view of a job attempt (rank 0 of 1 here; see RayTrainRuntime)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __init__(self, payload: JobPayload) -> None:
        self.payload = payload
        self.device = self._pick_device()
        self.node_id = socket.gethostname()

    # -- identity ---------------------------------------------------------------------------------

    def _pick_device(self) -> torch.device:
        # a whole GPU per rank (a profile picks its own device: workers.train_fns)
        want_gpu = self.payload.kind != "profile" and self.payload.resources().gpus_per_worker >= 1
        return torch.device("cuda" if want_gpu and torch.cuda.is_available() else "cpu")

    def worker_info(self) -> dict[str, Any]:
        info = {
            "rank": self.rank,
            "world_size": self.world_size,
            "node_id": self.node_id,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "device": str(self.device),
        }
        if self.device.type == "cuda":
            info["device_name"] = torch.cuda.get_device_name(self.device)
        return info

    def write_marker(self) -> None:
        """``<run dir>/workers/attempt<a>-rank<r>.json``: which process runs which rank
        (operators, and the fault drill that kills one). Local storage only (a path or
        ``file://``): with remote storage (s3://, gs://…) no marker is written."""
        directory = run_dir(self.payload)
        if directory is None:
            return
        try:
            (directory / "workers").mkdir(parents=True, exist_ok=True)
            name = f"attempt{self.payload.attempt}-rank{self.rank}.json"
            tmp = directory / "workers" / (name + ".tmp")
            tmp.write_text(json.dumps({**self.worker_info(), "time": time.time()}))
            tmp.replace(directory / "workers" / name)
        except OSError as exc:
            logger.warning("could not write worker marker: %s", exc)

    # -- collectives (trivial for one process) ------------------------------------------------

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def coll_device(self) -> torch.device:
        """Where collective tensors live (NCCL needs them on the GPU)."""
        return torch.device("cpu")

    def grad_sync(self) -> Callable[[list[torch.Tensor]], None] | None:
        return None

    def all_ok(self, ok: bool) -> bool:
        """True when every rank's ``ok`` is true (a setup error on any rank stops all)."""
        return ok

    def broadcast_object(self, obj: Any) -> Any:
        return obj

    def gather_objects(self, obj: Any) -> list[Any]:
        return [obj]

    # -- checkpoints ------------------------------------------------------------------------------

    def save_checkpoint(self, state: dict[str, Any], meta: dict[str, Any]) -> None:
        """Ray Train's layout, imitated: ``<run location>/checkpoint_<date>.<usec>/`` appears
        whole (written aside, then renamed or uploaded with meta.json last), on any storage
        :mod:`workers.storage` resolves; the two latest are kept."""
        store = checkpoint_store(self.payload)
        now = time.time()
        # Named like Ray Train's (date + microseconds): the loops save twice at one step when
        # an epoch ends on a checkpoint step.
        name = (
            f"checkpoint_{time.strftime('%Y-%m-%d_%H-%M-%S', time.localtime(now))}"
            f".{int(now * 1e6) % 1_000_000:06d}"
        )
        with store.staging() as tmp:
            write_checkpoint_dir(tmp, state, meta)
            store.publish(tmp, name)
        store.prune(CHECKPOINTS_TO_KEEP)

    def load_checkpoint(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The latest checkpoint of a previous attempt of this job (attempt > 1), else None."""
        if self.payload.attempt <= 1:
            return None
        return load_latest_checkpoint(checkpoint_store(self.payload))

    def finish(self, final: dict[str, Any]) -> None:
        """The attempt's last word to the executor (the outcome and whether it was posted);
        on Ray it travels as rank 0's return value (``Result.return_value``)."""
        self.final = final


LocalRuntime = Runtime


@dataclass(frozen=True)
class _LoadError:
    message: str


class RayTrainRuntime(Runtime):
    """One rank of a Ray Train worker group; the process group is set up by TorchTrainer
    (gloo on CPU, NCCL on GPU)."""

    def __init__(self, payload: JobPayload) -> None:
        import ray
        import ray.train

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.local_rank = ctx.get_local_rank()
        super().__init__(payload)
        self.node_id = ray.get_runtime_context().get_node_id()

    def _pick_device(self) -> torch.device:
        import ray.train.torch

        device = ray.train.torch.get_device()
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return device

    def grad_sync(self) -> Callable[[list[torch.Tensor]], None] | None:
        if self.world_size <= 1:
            return None
        world = self.world_size
        return lambda grads: average_gradients(grads, world)

    def all_ok(self, ok: bool) -> bool:
        if self.world_size <= 1:
            return ok
        import torch.distributed as dist

        flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=self.coll_device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    @property
    def coll_device(self) -> torch.device:
        import torch.distributed as dist

        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def broadcast_object(self, obj: Any) -> Any:
        if self.world_size <= 1:
            return obj
        import torch.distributed as dist

        box = [obj if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0, device=self.coll_device)
        return box[0]

    def gather_objects(self, obj: Any) -> list[Any]:
        if self.world_size <= 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def save_checkpoint(self, state: dict[str, Any], meta: dict[str, Any]) -> None:
        import ray.train

        if self.rank != 0:
            ray.train.report(dict(meta), checkpoint=None)
            return
        with tempfile.TemporaryDirectory(prefix="densenas-ckpt-") as tmp:
            write_checkpoint_dir(tmp, state, meta)
            ray.train.report(dict(meta), checkpoint=ray.train.Checkpoint.from_directory(tmp))

    def load_checkpoint(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Ray Train's checkpoint after a worker-group restart (or a run snapshot of the same
        name); else, for a retried job, the latest under storage_path. Rank 0 reads and
        broadcasts, so every rank resumes from the same state even without shared storage."""
        import ray.train

        loaded: Any = None
        if self.rank == 0:
            try:
                ckpt = ray.train.get_checkpoint()
                if ckpt is not None:
                    with ckpt.as_directory() as d:
                        loaded = read_checkpoint_dir(d)
                elif self.payload.attempt > 1:
                    loaded = load_latest_checkpoint(checkpoint_store(self.payload))
            except Exception as exc:  # noqa: BLE001 - every rank must leave the broadcast
                loaded = _LoadError(f"checkpoint unreadable: {type(exc).__name__}: {exc}")
        loaded = self.broadcast_object(loaded)
        if isinstance(loaded, _LoadError):
            raise RuntimeError(loaded.message)
        return loaded
