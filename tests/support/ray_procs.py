"""Ray (and other) processes a test starts as separate processes, and stops by pid.

No side effects on import (unlike :mod:`tests.support.ray_env`): the deploy rehearsal builds
its processes' environments from docker-compose.yml and must not inherit the suite's
single-machine Ray settings. Every process is started in a session of its own; stopping it
sends SIGTERM to that pid, waits, then SIGKILLs its process group (while its leader still runs,
so the group is ours), and finally any process left whose command line names one of the
process's own temp dirs (Ray processes it spawned) — never ``ray stop``, which stops every Ray
on the machine.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

VENV_BIN = str(Path(sys.executable).parent)


def short_temp_dir(prefix: str) -> Path:
    """Ray puts AF_UNIX sockets under its temp dir (107-byte paths): pytest's are too long."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without RAY_* / DENSENAS_* (the suite sets single-machine Ray
    settings there), the venv's bin first on PATH, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RAY_", "DENSENAS_")) and k != "LD_PRELOAD"
    }
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


class Proc:
    """One started process, its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str],
        log_dir: Path,
        owned_dirs: Sequence[Path] = (),
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.owned_dirs = [str(d) for d in owned_dirs]
        self._log = open(self.log_path, "w")  # noqa: SIM115 — closed by stop()
        self.popen = subprocess.Popen(
            list(argv), env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.pid = self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-n:])

    def running(self) -> bool:
        return self.popen.poll() is None

    def wait_for_log(self, needle: str, timeout: float) -> None:
        wait_until(lambda: needle in self.log(), timeout, f"{self.name}: {needle!r}", self)

    def descendants(self) -> list[int]:
        return descendants(self.pid)

    def stop(self, timeout: float = 30.0) -> float:
        """SIGTERM, wait up to ``timeout``, then SIGKILL the process group and anything left
        that runs from this process's own dirs. Returns seconds until the process ended."""
        t0 = time.monotonic()
        if self.running():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        took = time.monotonic() - t0
        if self.running():
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(10)
        # Ray processes that outlived their `ray start` (they name its temp dir)
        kill_processes_using(self.owned_dirs)
        self._log.close()
        return took


# -- processes, from /proc (Linux; no psutil in the venv) -------------------------------------


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def cmdline(pid: int) -> list[str]:
    return [a.decode(errors="replace") for a in _read(f"/proc/{pid}/cmdline").split(b"\0") if a]


def _pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for p in _pids():
        stat = _read(f"/proc/{p}/stat").decode(errors="replace")
        if ")" not in stat:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(p)
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_processes_using(dirs: Sequence[str]) -> list[int]:
    """SIGKILL every process whose command line names one of ``dirs`` (unique temp dirs of
    this test, so only processes it started); returns their pids."""
    if not dirs:
        return []
    pattern = re.compile("|".join(re.escape(d) for d in dirs))
    killed = []
    for pid in _pids():
        if pid != os.getpid() and pattern.search(" ".join(cmdline(pid))):
            _kill(pid)
            killed.append(pid)
    return killed


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    proc: Proc | None = None,
    interval: float = 0.5,
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and not proc.running():
            raise AssertionError(
                f"{proc.name} exited ({proc.popen.returncode}) while waiting "
                f"for {what}:\n{proc.tail()}"
            )
        if time.monotonic() > deadline:
            extra = f"\n{proc.tail()}" if proc is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


def raylet_node_id(proc: Proc) -> str:
    """The node id of the Ray node a `ray start` process runs (from its raylet's arguments)."""
    for pid in proc.descendants():
        args = cmdline(pid)
        if args and os.path.basename(args[0]) == "raylet":
            for a in args:
                if a.startswith("--node_id="):
                    return a.split("=", 1)[1]
    raise AssertionError(f"{proc.name}: no raylet found")


class Procs(ExitStack):
    """Stops what it started, last started first; removes its temp dirs after that."""

    def temp_dir(self, prefix: str) -> Path:
        path = short_temp_dir(prefix)
        self.callback(shutil.rmtree, path, True)
        return path

    def start(self, *args, stop_timeout: float = 30.0, **kw) -> Proc:
        proc = Proc(*args, **kw)
        self.callback(proc.stop, stop_timeout)
        return proc
