"""The ``densenas`` command line: run the control plane, submit and watch jobs, inspect results.

Remote commands go through :class:`service.client.DenseNASClient` (the REST contract), so the CLI
sees exactly what any other client sees. A few commands are deliberately local: ``serve``,
``migrate`` and ``token create`` act on the configured database directly (they are how a server
gets started and its first tokens minted), and ``space show`` / ``arch flops`` answer from
``densenas_core`` without a server. Every command that prints data takes ``--json`` for scripts;
every failure is one red line (the problem+json detail) and exit code 1, never a traceback.
"""

from __future__ import annotations

# The modules register their commands on import, so this order is the order of the commands in
# ``densenas --help`` (hence no import sorting here).
# isort: off
from . import server, jobs, catalog, demo, submit, sweeps  # noqa: F401

# isort: on
from .catalog import parse_count
from .common import CliError, app, cli_errors
from .demo import free_port, run_control_plane
from .submit import build_search_spec, resolve_space
from .watch import JobWatcher, finish_watch

__all__ = [
    "CliError",
    "JobWatcher",
    "app",
    "build_search_spec",
    "cli_errors",
    "finish_watch",
    "free_port",
    "parse_count",
    "resolve_space",
    "run_control_plane",
]
