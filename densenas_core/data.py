"""Datasets for search and retraining, kept in memory for small sets.

* ``fashion-mnist``: read straight from the IDX ``.gz`` files in ``root``, else in
  :data:`FASHION_SYSTEM_DIR`, where the distribution package ``dataset-fashion-mnist`` installs
  them (docs/operations.md §Fashion-MNIST package), with numpy — no torchvision download —
  falling back to torchvision's downloader when the files are absent. One input channel,
  28×28 zero-padded (centred) to 32 or resized to ``input_size``.
* ``cifar10``: torchvision (downloads into ``root``).
* ``imagefolder``: torchvision ``ImageFolder`` under ``root`` (``root/train`` and
  ``root/val``|``root/test`` when present), decoded lazily.
* ``synthetic``: deterministic class-coloured noise images for tests (3 channels).

Images are held as ``uint8`` [N, C, H, W] and normalised per batch
(:meth:`ImageTensorDataset.get_batch`), so a whole split costs one byte per pixel. No
DataLoader processes: loops fetch batches by index with :func:`fetch_batch`.

Limits: in :func:`load_search_data` ``limit_train`` caps the pool drawn (seeded) from the
training set *before* the per-class 80/20 split and ``limit_val`` further caps the arch split;
in :func:`load_eval_data` they cap the training and the test set. ``num_classes`` picks a
seeded random subset of the classes, relabelled 0..k−1 in ascending original order.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import numpy.typing as npt
import torch
from torch.nn import functional as F

# the dataset spec is declared with the other job specs; importable from here too
from .specs import DATASET_NAMES as DATASET_NAMES
from .specs import DataError as DataError
from .specs import DatasetSpec as DatasetSpec
from .specs import SearchSpec

FASHION_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
#: per-channel (mean, std) of the images, by dataset name
_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "synthetic": ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
}


# -- in-memory dataset ---------------------------------------------------------------------------


class ImageTensorDataset(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """uint8 images [N, C, H, W] with int64 labels; normalised on access."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        classes: Sequence[str],
    ) -> None:
        self.images = images
        self.labels = labels
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.classes = list(classes)
        c = images.shape[1]
        self._m = torch.tensor(self.mean).mul(255).view(1, c, 1, 1)
        self._s = torch.tensor(self.std).mul(255).view(1, c, 1, 1)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.images.shape[1]

    @property
    def input_size(self) -> int:
        return self.images.shape[-1]

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, y = self.get_batch(torch.tensor([i]))
        return x[0], int(y[0])

    def get_batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[idx].float().sub_(self._m).div_(self._s)
        return x, self.labels[idx]

    def subset(self, idx: torch.Tensor | Sequence[int]) -> ImageTensorDataset:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return ImageTensorDataset(
            self.images[idx], self.labels[idx], mean=self.mean, std=self.std, classes=self.classes
        )


class _LazySubset(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """Index view over a decoding dataset (ImageFolder) with relabelled targets."""

    def __init__(
        self,
        base: Any,
        indices: Sequence[int],
        labels: Sequence[int],
        classes: Sequence[str],
        in_channels: int,
        input_size: int,
    ) -> None:
        self.base, self.indices, self.labels = base, list(indices), list(labels)
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.in_channels, self.input_size = in_channels, input_size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x: torch.Tensor = self.base[self.indices[i]][0]
        return x, self.labels[i]

    def get_batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        items = [self[int(i)] for i in idx]
        return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def fetch_batch(ds: Any, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch (x, y) by indices from any dataset (fast path: ``get_batch``)."""
    if hasattr(ds, "get_batch"):
        batch: tuple[torch.Tensor, torch.Tensor] = ds.get_batch(idx)
        return batch
    items = [ds[int(i)] for i in idx]
    return torch.stack([x for x, _ in items]), torch.as_tensor([int(y) for _, y in items])


def dataset_meta(ds: Any) -> dict[str, Any]:
    """num_classes / in_channels / input_size / classes of a dataset (attributes or a probe)."""
    classes = list(getattr(ds, "classes", []))
    x, _ = fetch_batch(ds, torch.tensor([0]))
    num = getattr(ds, "num_classes", None) or len(classes) or None
    if num is None:
        num = int(max(int(ds[i][1]) for i in range(len(ds)))) + 1
    return {
        "num_classes": int(num),
        "in_channels": int(x.shape[1]),
        "input_size": int(x.shape[-1]),
        "classes": classes or [str(i) for i in range(num)],
    }


# -- raw sources -------------------------------------------------------------------------------


def _read_idx(path: Path) -> npt.NDArray[np.uint8]:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _fashion_dir(root: str | None) -> Path | None:
    for cand in ([Path(root), Path(root) / "FashionMNIST" / "raw"] if root else []) + [
        Path(FASHION_SYSTEM_DIR)
    ]:
        if (cand / "train-images-idx3-ubyte.gz").is_file():
            return cand
    return None


_RAW_CACHE: dict[tuple[str, str | None, bool], tuple[torch.Tensor, torch.Tensor]] = {}


def _raw(spec: DatasetSpec, train: bool) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(uint8 images [N,C,H,W] at native size, int64 labels, class names) for one split."""
    key = (spec.name, spec.root, train)
    if spec.name == "fashion-mnist":
        if key not in _RAW_CACHE:
            d = _fashion_dir(spec.root)
            prefix = "train" if train else "t10k"
            if d is not None:
                x = _read_idx(d / f"{prefix}-images-idx3-ubyte.gz")
                y = _read_idx(d / f"{prefix}-labels-idx1-ubyte.gz")
                _RAW_CACHE[key] = (
                    torch.from_numpy(x.copy()).unsqueeze(1),
                    torch.from_numpy(y.astype(np.int64)),
                )
            else:  # pragma: no cover - needs the network
                from torchvision.datasets import FashionMNIST

                ds = FashionMNIST(_data_root(spec), train=train, download=True)
                _RAW_CACHE[key] = (ds.data.unsqueeze(1).contiguous(), ds.targets.long())
        return (*_RAW_CACHE[key], list(FASHION_CLASSES))
    if spec.name == "cifar10":
        if key not in _RAW_CACHE:  # pragma: no cover - needs the network or a local copy
            from torchvision.datasets import CIFAR10

            ds = CIFAR10(_data_root(spec), train=train, download=True)
            _RAW_CACHE[key] = (
                torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(),
                torch.tensor(ds.targets, dtype=torch.long),
            )
        return (*_RAW_CACHE[key], list(CIFAR10_CLASSES))
    raise DataError("dataset.name", f"no raw loader for {spec.name!r}")  # pragma: no cover


def _data_root(spec: DatasetSpec) -> str:
    return spec.root or os.environ.get("DENSENAS_DATA", str(Path.home() / ".cache" / "densenas"))


def _synthetic(spec: DatasetSpec, train: bool) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Class-coloured noise: learnable through global pooling, fully deterministic."""
    k = spec.num_classes or 10
    n = (spec.limit_train or 512) if train else (spec.limit_val or 128)
    s = spec.resolved_input_size
    colors = torch.rand(k, 3, generator=torch.Generator().manual_seed(4242))
    g = torch.Generator().manual_seed(1000 + int(train))
    labels = torch.randperm(n, generator=g) % k
    noise = torch.rand(n, 3, s, s, generator=g)
    x = (0.55 * colors[labels][:, :, None, None] + 0.45 * noise) * 255
    return x.round().to(torch.uint8), labels.long(), [f"class{c}" for c in range(k)]


def _fit(images: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad (centred) or resize uint8 images to size×size."""
    h = images.shape[-1]
    if h == size:
        return images
    if size > h and (size - h) % 2 == 0:
        p = (size - h) // 2
        return F.pad(images, (p, p, p, p))
    out = F.interpolate(
        images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=size < h
    )
    return out.round().clamp(0, 255).to(torch.uint8)


def _class_subset(total: int, k: int | None, seed: int) -> list[int]:
    if k is None or k >= total:
        if k is not None and k > total:
            raise DataError("dataset.num_classes", f"{k} > the {total} classes available")
        return list(range(total))
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    return sorted(perm[:k].tolist())


def _gen(seed: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + salt)


def _cap(idx: torch.Tensor, limit: int | None, gen: torch.Generator) -> torch.Tensor:
    if limit is None or limit >= len(idx):
        return idx
    return idx[torch.randperm(len(idx), generator=gen)[:limit]].sort().values


def _split_per_class(
    spec: DatasetSpec,
    pool: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    seed: int,
    val_fraction: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, arch) indices: ``limit_train`` caps the pool, then per class ``val_fraction``
    (at least one, never all) goes to the arch split, which ``limit_val`` caps."""
    pool = _cap(pool, spec.limit_train, _gen(seed, 1))
    g = _gen(seed, 2)
    pool_labels = labels[pool]
    train_idx: list[torch.Tensor] = []
    arch_idx: list[torch.Tensor] = []
    for c in range(num_classes):
        members = pool[pool_labels == c]
        members = members[torch.randperm(len(members), generator=g)]
        n_arch = int(round(val_fraction * len(members)))
        if len(members) >= 2:
            n_arch = min(max(n_arch, 1), len(members) - 1)
        arch_idx.append(members[:n_arch])
        train_idx.append(members[n_arch:])
    tr = torch.cat(train_idx).sort().values
    return tr, _cap(torch.cat(arch_idx).sort().values, spec.limit_val, _gen(seed, 3))


def _tensor_split(
    spec: DatasetSpec, train: bool, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int], list[str]]:
    """(images, relabelled labels, kept original indices, class ids, class names)."""
    images, labels, names = (
        _synthetic(spec, train) if spec.name == "synthetic" else _raw(spec, train)
    )
    ids = _class_subset(len(names), None if spec.name == "synthetic" else spec.num_classes, seed)
    remap = torch.full((len(names),), -1, dtype=torch.long)
    remap[ids] = torch.arange(len(ids))
    keep = torch.nonzero(remap[labels] >= 0).squeeze(1)
    return images, remap[labels], keep, ids, [names[i] for i in ids]


def _mean_std(spec: DatasetSpec) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return _STATS[spec.name]


class SplitInfo(TypedDict):
    """What :func:`load_search_data` drew: classes and split indices (into the source training
    set), recorded in search checkpoints."""

    name: str
    classes: list[str]
    class_ids: list[int]
    num_classes: int
    in_channels: int
    input_size: int
    seed: int
    val_fraction: float
    train_indices: list[int]
    arch_indices: list[int]


#: a split as loaded here: in memory, or a lazily decoded ImageFolder view
SplitDataset = ImageTensorDataset | _LazySubset


def load_search_data(
    spec: DatasetSpec | Mapping[str, Any],
    seed: int = 0,
    val_fraction: float = SearchSpec.val_fraction,
) -> tuple[SplitDataset, SplitDataset, SplitInfo]:
    """(train split, arch split, info) of the training set: per class, ``val_fraction`` of
    the (seeded, limited) pool goes to the arch split. ``info`` records the class list and the
    split indices (into the source training set) for checkpoints."""
    spec = DatasetSpec.from_dict(spec)
    if not 0 < val_fraction < 1:
        raise DataError("val_fraction", f"expected a number in (0, 1), got {val_fraction!r}")
    if spec.name == "imagefolder":
        return _imagefolder_search(spec, seed, val_fraction)
    images, labels, pool, ids, names = _tensor_split(spec, True, seed)
    tr, ar = _split_per_class(spec, pool, labels, len(ids), seed, val_fraction)
    size = spec.resolved_input_size
    mean, std = _mean_std(spec)

    def make(idx: torch.Tensor) -> ImageTensorDataset:
        return ImageTensorDataset(
            _fit(images[idx], size), labels[idx], mean=mean, std=std, classes=names
        )

    train_ds, arch_ds = make(tr), make(ar)
    info: SplitInfo = {
        "name": spec.name,
        "classes": names,
        "class_ids": ids,
        "num_classes": len(ids),
        "in_channels": train_ds.in_channels,
        "input_size": size,
        "seed": seed,
        "val_fraction": val_fraction,
        "train_indices": tr.tolist(),
        "arch_indices": ar.tolist(),
    }
    return train_ds, arch_ds, info


def load_eval_data(
    spec: DatasetSpec | Mapping[str, Any], seed: int = 0
) -> tuple[SplitDataset, SplitDataset]:
    """(train set, test set) for retraining/evaluating, with the same seeded class subset."""
    spec = DatasetSpec.from_dict(spec)
    if spec.name == "imagefolder":
        return _imagefolder_eval(spec, seed)
    out: list[ImageTensorDataset] = []
    for train, limit, salt in ((True, spec.limit_train, 11), (False, spec.limit_val, 12)):
        images, labels, keep, ids, names = _tensor_split(spec, train, seed)
        if spec.name != "synthetic":
            keep = _cap(keep, limit, _gen(seed, salt))
        mean, std = _mean_std(spec)
        out.append(
            ImageTensorDataset(
                _fit(images[keep], spec.resolved_input_size),
                labels[keep],
                mean=mean,
                std=std,
                classes=names,
            )
        )
    return out[0], out[1]


# -- ImageFolder ---------------------------------------------------------------------------------


def _folder(spec: DatasetSpec, train: bool) -> Any:  # a torchvision ImageFolder (untyped)
    from torchvision import datasets, transforms

    root = Path(spec.root or "")
    if train:
        d = root / "train" if (root / "train").is_dir() else root
    else:
        found = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
        if found is None:
            raise DataError("dataset.root", f"{root} has no val/ or test/ directory to evaluate on")
        d = found
    size = spec.resolved_input_size
    mean, std = _STATS["imagefolder"]
    tf = transforms.Compose(
        [
            transforms.Resize(size),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    # torchvision's own messages list the class directories it found; a job's error is shown
    # to whoever submitted it, so ours name the directory and never what is in it.
    if not d.is_dir():
        raise FileNotFoundError(f"dataset.root: {d} does not exist or is not a directory")
    try:
        return datasets.ImageFolder(str(d), transform=tf)
    except (OSError, ValueError) as e:
        what = (
            "cannot be read"
            if isinstance(e, PermissionError)
            else "holds no class directories with images (expected <root>[/train]/<class>/<image>)"
        )
        raise FileNotFoundError(f"dataset.root: {d} {what}") from None


def _folder_view(
    spec: DatasetSpec, base: Any, seed: int, limit: int | None, salt: int
) -> tuple[torch.Tensor, list[int], dict[int, int]]:
    ids = _class_subset(len(base.classes), spec.num_classes, seed)
    remap = {c: i for i, c in enumerate(ids)}
    keep = torch.tensor([i for i, t in enumerate(base.targets) if t in remap], dtype=torch.long)
    keep = _cap(keep, limit, _gen(seed, salt))
    return keep, ids, remap


def _imagefolder_search(
    spec: DatasetSpec, seed: int, val_fraction: float
) -> tuple[_LazySubset, _LazySubset, SplitInfo]:
    base = _folder(spec, True)
    pool, ids, remap = _folder_view(spec, base, seed, None, 1)
    targets = torch.tensor([remap.get(t, -1) for t in base.targets])
    tr_i, ar_i = _split_per_class(spec, pool, targets, len(ids), seed, val_fraction)
    names = [base.classes[i] for i in ids]
    size = spec.resolved_input_size

    def view(idx: torch.Tensor) -> _LazySubset:
        return _LazySubset(base, idx.tolist(), targets[idx].tolist(), names, 3, size)

    info: SplitInfo = {
        "name": spec.name,
        "classes": names,
        "class_ids": ids,
        "num_classes": len(ids),
        "in_channels": 3,
        "input_size": size,
        "seed": seed,
        "val_fraction": val_fraction,
        "train_indices": tr_i.tolist(),
        "arch_indices": ar_i.tolist(),
    }
    return view(tr_i), view(ar_i), info


def _imagefolder_eval(spec: DatasetSpec, seed: int) -> tuple[_LazySubset, _LazySubset]:
    out: list[_LazySubset] = []
    for train, limit, salt in ((True, spec.limit_train, 11), (False, spec.limit_val, 12)):
        base = _folder(spec, train)
        keep, ids, remap = _folder_view(spec, base, seed, limit, salt)
        out.append(
            _LazySubset(
                base,
                keep.tolist(),
                [remap[base.targets[i]] for i in keep.tolist()],
                [base.classes[i] for i in ids],
                3,
                spec.resolved_input_size,
            )
        )
    return out[0], out[1]
