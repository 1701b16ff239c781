"""Ray Train's torch backend, built without importing torch in the process that builds it.

``TorchTrainer`` (and ``ray.train.torch.config``) import torch at module level, so a job actor
that built one held torch's ~470 MB resident for the whole run while it only waits on its
Train controller (measured in docs/capacity.md §Per-job memory). :func:`workers.ray_job.
build_trainer` therefore builds a ``DataParallelTrainer`` — the class ``TorchTrainer`` is a thin
subclass of — with :class:`TorchBackendConfig` (``TorchConfig``'s fields and behaviour, its
torch classes imported only where they run: the controller sets up the process group, the
Train workers enter the device context) and :func:`train_loop` (the job bodies of
:mod:`workers.train_fns`, imported on the Train workers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ray.train.backend import Backend, BackendConfig

#: The job kinds that run as a Ray Train data-parallel trainer (workers.train_fns.TRAIN_LOOPS).
TRAIN_KINDS = ("search", "retrain")


def _torch_config(config: TorchBackendConfig) -> Any:
    from ray.train.torch.config import TorchConfig

    return TorchConfig(
        backend=config.backend, init_method=config.init_method, timeout_s=config.timeout_s
    )


@dataclass
class TorchBackendConfig(BackendConfig):
    """``ray.train.torch.TorchConfig`` (same fields, same framework tag) whose backend and
    worker context import torch when they run, not when the trainer is built."""

    backend: str | None = None
    init_method: str = "env"
    timeout_s: int = 1800

    @property
    def backend_cls(self) -> type[Backend]:
        return _TorchBackend

    @property
    def train_func_context(self) -> Any:
        return _TorchWorkerContext

    @property
    def framework(self) -> Any:
        from ray.train.v2._internal.util import TrainingFramework

        return TrainingFramework.TORCH

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "init_method": self.init_method,
            "timeout_s": self.timeout_s,
        }


class _TorchBackend(Backend):
    """Delegates to Ray's torch backend (process group set-up and teardown, in the
    controller) with the equivalent ``TorchConfig``."""

    share_cuda_visible_devices: bool = True

    @staticmethod
    def _real() -> Any:
        from ray.train.torch.config import _TorchBackend as RayTorchBackend

        return RayTorchBackend()

    def on_start(self, worker_group: Any, backend_config: Any) -> None:
        self._real().on_start(worker_group, _torch_config(backend_config))

    def on_training_start(self, worker_group: Any, backend_config: Any) -> None:
        self._real().on_training_start(worker_group, _torch_config(backend_config))

    def on_shutdown(self, worker_group: Any, backend_config: Any) -> None:
        self._real().on_shutdown(worker_group, _torch_config(backend_config))


class _TorchWorkerContext:
    """Ray's ``TorchConfigContextManager`` (the CUDA device of the rank), on a Train worker."""

    def __enter__(self) -> None:
        from ray.train.torch.config import TorchConfigContextManager

        self._real = TorchConfigContextManager()
        self._real.__enter__()

    def __exit__(self, *exc: Any) -> bool:
        return bool(self._real.__exit__(*exc))


def train_loop(config: dict[str, Any]) -> Any:
    """``train_loop_per_worker``: the kind's job body (search_loop, retrain_loop)."""
    from .train_fns import TRAIN_LOOPS

    return TRAIN_LOOPS[config["payload"]["kind"]](config)
