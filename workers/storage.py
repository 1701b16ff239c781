"""Checkpoint storage as a URI: a local (or mounted) path, ``file:///…``, ``s3://bucket/prefix``,
``gs://bucket/prefix``, ``hdfs://…``, ``abfs://…`` — whatever ``pyarrow.fs`` resolves, the same
filesystems Ray Train's ``RunConfig(storage_path=…)`` accepts.

A job's checkpoints live under ``<storage_path>/<run name>/checkpoint_*/`` with ``state.pt``
and ``meta.json``; a checkpoint is *complete* when both are there and ``meta.json`` names a
``global_step``. :class:`CheckpointStore` lists, orders, downloads, publishes and prunes them;
it handles files, not tensors (``workers.runtime`` serialises). pyarrow is imported lazily: the
control plane uses :func:`check_storage_uri` and :func:`join` without it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow.fs as pafs

STATE_FILE = "state.pt"
#: Complete checkpoints kept per job (Ray Train's ``CheckpointConfig`` and the inline prune).
CHECKPOINTS_TO_KEEP = 2
META_FILE = "meta.json"
CHECKPOINT_PREFIX = "checkpoint_"
#: URI schemes pyarrow.fs resolves (``FileSystem.from_uri``) that make sense for checkpoints.
STORAGE_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
_SCHEME_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def is_uri(location: str | os.PathLike) -> bool:
    return "://" in str(location)


def check_storage_uri(value: str) -> str:
    """``value`` as a storage location, or ValueError saying what is wrong with it.

    A plain path comes back absolute; a URI must have a known scheme, ``file://`` an absolute
    path on this host, the others a bucket/host. No network access: whether the bucket exists
    and is writable is found out by the first checkpoint.
    """
    text = value.strip()
    if not text:
        raise ValueError("empty")
    if not is_uri(text):
        if _SCHEME_LIKE.match(text):
            raise ValueError(
                f"{text!r} looks like a URI without '//' (expected a path or scheme://…)"
            )
        return os.path.abspath(os.path.expanduser(text))
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in STORAGE_SCHEMES:
        raise ValueError(
            f"unsupported scheme {parts.scheme or text.split('://')[0]!r} in "
            f"{text!r}; expected a path or one of " + ", ".join(f"{s}://" for s in STORAGE_SCHEMES)
        )
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(
                f"{text!r}: a file:// URI needs an absolute path (file:///path/to/dir)"
            )
    elif not parts.netloc:
        raise ValueError(f"{text!r} names no bucket or host ({scheme}://bucket/prefix)")
    return text


def join(base: str | os.PathLike, *names: str) -> str:
    """``base/name/…`` for a path or a URI (one slash between parts; a URI's query — pyarrow's
    ``?region=…&endpoint_override=…`` — stays at the end)."""
    base = str(base)
    names = tuple(n.strip("/") for n in names)
    if not is_uri(base):
        return os.path.join(base, *names)
    parts = urlsplit(base)
    path = parts.path.rstrip("/") + "".join("/" + n for n in names)
    return urlunsplit(parts._replace(path=path))


def resolve(location: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and the path within it (a plain path → the local filesystem)."""
    import pyarrow.fs as pafs

    location = str(location)
    if not is_uri(location):
        return pafs.LocalFileSystem(), os.path.abspath(location)
    return pafs.FileSystem.from_uri(location)


def _is_plain_local(fs: pafs.FileSystem) -> bool:
    return fs.type_name == "local"


def _renames_directories(fs: pafs.FileSystem) -> bool:
    """Whether ``fs.move`` renames a directory (object stores move single objects only)."""
    base = getattr(fs, "base_fs", None)  # SubTreeFileSystem
    return (base if base is not None else fs).type_name in ("local", "mock", "hdfs")


def download_dir(fs: pafs.FileSystem, path: str, destination: str | os.PathLike) -> Path:
    """Copy the files directly in ``path`` (one level: what the job bodies write) into the
    local ``destination``."""
    import pyarrow.fs as pafs

    dest = Path(destination)
    dest.mkdir(parents=True, exist_ok=True)
    local = pafs.LocalFileSystem()
    for info in fs.get_file_info(pafs.FileSelector(path)):
        if info.type == pafs.FileType.File:
            _copy_file(fs, info.path, local, str(dest / info.base_name))
    return dest


@contextmanager
def local_copy(
    location: str | os.PathLike, filesystem: pafs.FileSystem | None = None
) -> Iterator[Path]:
    """A local directory with the files of the directory ``location`` (a path or URI; a path
    within ``filesystem`` when given): the directory itself when it is on the local
    filesystem, else a temporary download, removed on exit."""
    fs, path = (filesystem, str(location)) if filesystem is not None else resolve(location)
    if _is_plain_local(fs):
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="densenas-ckpt-") as tmp:
        download_dir(fs, path, tmp)
        yield Path(tmp)


def _copy_file(src_fs: pafs.FileSystem, src: str, dst_fs: pafs.FileSystem, dst: str) -> None:
    with src_fs.open_input_stream(src) as fin, dst_fs.open_output_stream(dst) as fout:
        shutil.copyfileobj(fin, fout, length=8 * 1024 * 1024)


@dataclass(frozen=True)
class Checkpoint:
    name: str
    path: str  # within the store's filesystem
    uri: str  # the store's location joined with the name
    global_step: int
    mtime_ns: int

    @property
    def order(self) -> tuple[int, int]:
        """(global step, write time of meta.json): two checkpoints at one step are ordered by
        when written."""
        return self.global_step, self.mtime_ns


class CheckpointStore:
    """The ``checkpoint_*`` directories of one run: ``location`` is ``<storage>/<run name>``.

    ``filesystem`` overrides the resolution (``location`` is then a path within it), for a
    ``SubTreeFileSystem`` or another custom pyarrow filesystem.
    """

    def __init__(
        self, location: str | os.PathLike, filesystem: pafs.FileSystem | None = None
    ) -> None:
        self.location = str(location)
        self._filesystem = filesystem

    @functools.cached_property
    def _resolved(self) -> tuple[pafs.FileSystem, str]:
        # on first use: resolving an s3:// URI asks the bucket's region over the network
        if self._filesystem is not None:
            fs, root = self._filesystem, self.location
        else:
            fs, root = resolve(self.location)
        return fs, root.rstrip("/") or "/"

    @property
    def fs(self) -> pafs.FileSystem:
        return self._resolved[0]

    @property
    def root(self) -> str:
        """The run directory as a path within :attr:`fs`."""
        return self._resolved[1]

    @property
    def local_dir(self) -> Path | None:
        """The run directory when the store is the local filesystem (no copies needed)."""
        return Path(self.root) if _is_plain_local(self.fs) else None

    def _path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def _exists(self, path: str) -> bool:
        import pyarrow.fs as pafs

        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def _meta_order(self, info: pafs.FileInfo) -> tuple[int, int]:
        try:
            with self.fs.open_input_stream(info.path) as f:
                step = int(json.loads(f.read().decode()).get("global_step", -1))
            return step, int(info.mtime_ns or 0)
        except (ValueError, OSError, AttributeError):
            return -1, -1

    def _listing(self) -> list[tuple[str, dict[str, pafs.FileInfo]]]:
        """(name, {file name: info}) of every ``checkpoint_*`` directory, files one level in."""
        import pyarrow.fs as pafs

        try:
            entries = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        except (OSError, ValueError):  # not a directory
            return []
        out = []
        for entry in entries:
            if entry.type != pafs.FileType.Directory or not entry.base_name.startswith(
                CHECKPOINT_PREFIX
            ):
                continue
            files = self.fs.get_file_info(
                [f"{entry.path}/{STATE_FILE}", f"{entry.path}/{META_FILE}"]
            )
            out.append(
                (entry.base_name, {i.base_name: i for i in files if i.type == pafs.FileType.File})
            )
        return out

    def _checkpoint(self, name: str, meta: pafs.FileInfo) -> Checkpoint:
        step, mtime = self._meta_order(meta)
        return Checkpoint(
            name=name,
            path=self._path(name),
            uri=join(self.location, name),
            global_step=step,
            mtime_ns=mtime,
        )

    def checkpoints(self) -> list[Checkpoint]:
        """The complete checkpoints (state.pt, and meta.json with a global step), oldest
        first."""
        ckpts = [
            self._checkpoint(name, files[META_FILE])
            for name, files in self._listing()
            if META_FILE in files and STATE_FILE in files
        ]
        return sorted((c for c in ckpts if c.global_step >= 0), key=lambda c: c.order)

    def latest(self) -> Checkpoint | None:
        ckpts = self.checkpoints()
        return ckpts[-1] if ckpts else None

    def open(self, ckpt: Checkpoint) -> contextlib.AbstractContextManager[Path]:
        """A local directory holding ``ckpt``'s files: the checkpoint itself on a local store,
        else a temporary download (removed on exit)."""
        return local_copy(ckpt.path, self.fs)

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A local directory to write a checkpoint into before :meth:`publish`: inside the run
        directory on a local store (publishing is a rename), else a system temp dir."""
        local = self.local_dir
        if local is not None:
            local.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".ckpt-" if local else "densenas-ckpt-", dir=local))
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def publish(self, staged: str | os.PathLike, name: str) -> Checkpoint:
        """Make the checkpoint written in ``staged`` (see :meth:`staging`) appear as
        ``<root>/<name>`` (``name_``, ``name__``… when taken) all at once: a rename of a
        directory where the filesystem has one, else its files uploaded with ``meta.json``
        last, so that a reader never takes a half-written checkpoint for a complete one."""
        import pyarrow.fs as pafs

        staged = Path(staged)
        self.fs.create_dir(self.root, recursive=True)
        target = name
        while self._exists(self._path(target)):
            target += "_"
        if self.local_dir is not None:
            self.fs.move(str(staged), self._path(target))
        else:
            files = sorted(
                (p for p in staged.iterdir() if p.is_file()), key=lambda p: p.name == META_FILE
            )  # meta.json last
            rename = _renames_directories(self.fs)
            upload = self._path(f".ckpt-{uuid.uuid4().hex}") if rename else self._path(target)
            self.fs.create_dir(upload, recursive=True)
            local = pafs.LocalFileSystem()
            for f in files:
                _copy_file(local, str(f), self.fs, f"{upload}/{f.name}")
            if rename:
                self.fs.move(upload, self._path(target))
        meta = self.fs.get_file_info(f"{self._path(target)}/{META_FILE}")
        return self._checkpoint(target, meta)

    def prune(self, keep: int) -> list[str]:
        """Delete all but the ``keep`` latest checkpoints that have a ``meta.json`` (ones whose
        meta.json is unreadable go first); returns the names deleted."""
        with_meta = [
            self._checkpoint(name, files[META_FILE])
            for name, files in self._listing()
            if META_FILE in files
        ]
        old = sorted(with_meta, key=lambda c: c.order)[:-keep] if keep > 0 else with_meta
        for ckpt in old:
            try:
                self.fs.delete_dir(ckpt.path)
            except OSError:
                pass
        return [c.name for c in old]
