"""`densenas submit <kind> --help` shows the server's default of each spec option (the options
default to None so that only given flags reach the spec), read from the spec declarations."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

import service.cli as cli
from densenas_core.specs import ProfileSpec, RetrainSpec, SearchSpec
from service.cli.submit import server_default
from workers.payload import RetrainResources, SearchResources

runner = CliRunner()


def help_defaults(*command: str) -> dict[str, str]:
    """option → the text of its ``[server default: …]`` in the command's --help."""
    r = runner.invoke(cli.app, [*command, "--help"])
    assert r.exit_code == 0, r.output
    entries: list[str] = []  # one an option, its wrapped help lines joined
    for line in r.stdout.splitlines():
        if line.lstrip().startswith("-") or not entries:
            entries.append(line.strip())
        else:
            entries[-1] += " " + line.strip()
    out: dict[str, str] = {}
    for entry in entries:
        m = re.match(r"(--[\w-]+)(?: / --[\w-]+)?\s.*\[server default: ([^\]]+)\]", entry)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_search_help_shows_the_declared_defaults() -> None:
    search, res = SearchSpec(), SearchResources()
    assert help_defaults("submit", "search") == {
        "--space": search.space,
        "--dataset": search.dataset.name,
        "--epochs": str(search.epochs),
        "--warmup-epochs": str(search.warmup_epochs),
        "--batch-size": str(search.batch_size),
        "--seed": str(search.seed),
        "--schedule": search.schedule,
        "--cost-metric": search.cost.metric,
        "--cost-mode": search.cost.mode,
        "--lam": f"{search.cost.lam:g}",
        "--workers": str(res.num_workers),
        "--gpu": "--no-gpu",
        "--checkpoint-every": str(res.checkpoint_every),
    }
    assert (SearchSpec.epochs, SearchSpec.batch_size) == (4, 64)  # what the issue saw hidden


def test_retrain_and_profile_help_show_the_declared_defaults() -> None:
    retrain, res, profile = RetrainSpec(), RetrainResources(), ProfileSpec()
    assert help_defaults("submit", "retrain") == {
        "--epochs": str(retrain.epochs),
        "--batch-size": str(retrain.batch_size),
        "--lr": f"{retrain.lr:g}",
        "--lr-min": f"{retrain.lr_min:g}",
        "--label-smoothing": f"{retrain.label_smoothing:g}",
        "--nodes": str(res.num_nodes),
        "--workers-per-node": str(res.workers_per_node),
        "--gpus-per-worker": "0",
        "--dataset": retrain.dataset.name,
        "--seed": str(retrain.seed),
    }
    assert help_defaults("submit", "profile") == {
        "--space": profile.space,
        "--device": "cpu",
        "--batch": str(profile.batch_size),
        "--warmup": str(profile.warmup),
        "--repeats": str(profile.repeats),
    }


def test_server_default_text() -> None:
    assert server_default("Total epochs.", "search", "epochs") == (
        f"Total epochs.  [server default: {SearchSpec.epochs}]"
    )
    assert server_default(None, "retrain", "lr_min") == "[server default: 0.0001]"
    assert server_default("Use GPUs.", "search", "use_gpu", flag="gpu").endswith("--no-gpu]")
    # a field without a fixed default (null: the server decides from other fields) shows none
    assert server_default("Dataset directory.", "search", "dataset.root") == "Dataset directory."
    with pytest.raises(KeyError):
        server_default(None, "search", "no_such_field")
