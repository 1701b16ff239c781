"""Datasets: IDX reading, seeded class subsets, per-class 80/20 splits, limits, synthetic."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from densenas_core.data import (
    DataError,
    DatasetSpec,
    dataset_meta,
    fetch_batch,
    load_eval_data,
    load_search_data,
)


def _write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 8, array.ndim) + b"".join(
        struct.pack(">I", d) for d in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture()
def fashion_root(tmp_path):
    """A miniature Fashion-MNIST in the distribution's IDX .gz layout (60 train, 20 test)."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 20)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 256, size=(n, 28, 28))
        images[:, 0, 0] = labels  # a marker to check image/label alignment
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return tmp_path


def _marker(ds):
    """Top-left pixel (raw value) of each image, after the centred padding to 32."""
    return ds.images[:, 0, 2, 2].long()


def test_fashion_idx_files_are_read_directly(fashion_root):
    spec = {"name": "fashion-mnist", "root": str(fashion_root)}
    train, arch, info = load_search_data(spec, seed=0)
    assert (len(train), len(arch)) == (50, 10)  # 6 per class: 5 train / 1 arch (round(1.2))
    assert train.images.shape[1:] == (1, 32, 32) and train.images.dtype == torch.uint8
    assert (train.images[:, :, :2, :] == 0).all()  # zero padding 28 → 32
    assert torch.equal(_marker(train), train.labels) and torch.equal(_marker(arch), arch.labels)
    assert info["classes"][0] == "T-shirt/top" and info["in_channels"] == 1
    assert sorted(info["train_indices"] + info["arch_indices"]) == list(range(60))
    x, y = fetch_batch(train, torch.arange(4))
    assert x.dtype == torch.float32 and x.shape == (4, 1, 32, 32) and y.dtype == torch.long
    tr, te = load_eval_data({**spec, "input_size": 28})
    assert (len(tr), len(te)) == (60, 20) and tr.input_size == 28


def test_class_subset_is_seeded_and_relabelled(fashion_root):
    spec = {"name": "fashion-mnist", "root": str(fashion_root), "num_classes": 3}
    a = load_search_data(spec, seed=1)
    b = load_search_data(spec, seed=1)
    c = load_search_data(spec, seed=2)
    assert a[2]["class_ids"] == b[2]["class_ids"] != c[2]["class_ids"]
    ids = a[2]["class_ids"]
    assert len(ids) == 3 and ids == sorted(ids)
    train = a[0]
    assert set(train.labels.tolist()) == {0, 1, 2}
    assert torch.equal(torch.tensor(ids)[train.labels], _marker(train))
    assert a[2]["train_indices"] == b[2]["train_indices"]
    tr, te = load_eval_data(spec, seed=1)
    assert tr.classes == a[0].classes and set(te.labels.tolist()) == {0, 1, 2}


def test_per_class_split_and_limits():
    spec = {"name": "synthetic", "limit_train": 200, "num_classes": 4, "input_size": 8}
    train, arch, info = load_search_data(spec, seed=0, val_fraction=0.2)
    assert len(train) + len(arch) == 200
    assert torch.bincount(arch.labels, minlength=4).tolist() == [10, 10, 10, 10]
    assert torch.bincount(train.labels, minlength=4).tolist() == [40, 40, 40, 40]
    assert not set(info["train_indices"]) & set(info["arch_indices"])
    _, arch_capped, _ = load_search_data({**spec, "limit_val": 12}, seed=0)
    assert len(arch_capped) == 12
    meta = dataset_meta(train)
    assert meta == {
        "num_classes": 4,
        "in_channels": 3,
        "input_size": 8,
        "classes": ["class0", "class1", "class2", "class3"],
    }


def test_synthetic_is_deterministic_and_learnable_by_colour():
    spec = {
        "name": "synthetic",
        "limit_train": 64,
        "limit_val": 32,
        "num_classes": 3,
        "input_size": 8,
    }
    a, _ = load_eval_data(spec)
    b, _ = load_eval_data(spec)
    assert torch.equal(a.images, b.images)
    x, y = a.get_batch(torch.arange(len(a)))
    means = torch.stack([x[y == c].mean((0, 2, 3)) for c in range(3)])
    assert torch.cdist(means, means).fill_diagonal_(1e9).min() > 0.3


def test_resize_to_other_input_sizes(fashion_root):
    train, _, _ = load_search_data(
        {"name": "fashion-mnist", "root": str(fashion_root), "input_size": 20}, seed=0
    )
    assert train.images.shape[-2:] == (20, 20)


def test_spec_validation():
    with pytest.raises(DataError, match="dataset.name"):
        DatasetSpec(name="mnist")
    with pytest.raises(DataError, match="limit_train"):
        DatasetSpec(limit_train=0)
    with pytest.raises(DataError, match="dataset.bogus"):
        DatasetSpec.from_dict({"bogus": 1})
    with pytest.raises(DataError, match="root"):
        DatasetSpec(name="imagefolder")
    assert DatasetSpec.from_dict({}, default_input_size=32).input_size == 32
    with pytest.raises(DataError, match="num_classes"):
        load_search_data({"name": "synthetic", "num_classes": 1})


def test_imagefolder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("val", 4)):
        for cls in ("cat", "dog", "eel"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(
                    d / f"{i}.png"
                )
    spec = {"name": "imagefolder", "root": str(tmp_path), "input_size": 8, "num_classes": 2}
    train, arch, info = load_search_data(spec, seed=0)
    assert len(train) + len(arch) == 20 and len(arch) == 4 and info["num_classes"] == 2
    x, y = fetch_batch(train, torch.arange(3))
    assert x.shape == (3, 3, 8, 8) and set(y.tolist()) <= {0, 1}
    tr, te = load_eval_data(spec, seed=0)
    assert len(tr) == 20 and len(te) == 8 and te.classes == tr.classes


def test_imagefolder_errors_name_the_directory_never_its_entries(tmp_path):
    """torchvision lists the class folders it found; a job's error reaches whoever submitted it,
    so it may name the root but not what the root holds."""
    (tmp_path / "secret-a").mkdir()
    (tmp_path / "secret-b").mkdir()
    (tmp_path / "secret-b" / "notes.txt").write_text("not an image")
    spec = {"name": "imagefolder", "root": str(tmp_path), "input_size": 8}
    with pytest.raises(FileNotFoundError) as e:
        load_search_data(spec, seed=0)
    assert str(tmp_path) in str(e.value) and "secret" not in str(e.value)
    assert e.value.__cause__ is None and e.value.__suppress_context__
    with pytest.raises(FileNotFoundError, match="does not exist") as e:
        load_search_data({**spec, "root": str(tmp_path / "missing")}, seed=0)
