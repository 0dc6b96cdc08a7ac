"""Session fixtures for the downstream tests: tiny run directories (see runs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .runs import make_run


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> dict[str, Path]:
    """An MLM and a CLM codon run (random init: the tests check plumbing and definitions, not quality)."""
    root = tmp_path_factory.mktemp("runs")
    return {"mlm": make_run(root, "tiny-mlm", "mlm"), "clm": make_run(root, "tiny-clm", "clm", seed=1)}


@pytest.fixture(scope="session")
def trained_clm(tmp_path_factory, shared_data) -> tuple[Path, Path]:
    """(run dir, prepared dir) of a tiny CLM trained for 20 steps by a real `train.py` subprocess."""
    from .runs import train_tiny

    return train_tiny(shared_data, tmp_path_factory.mktemp("trained"), "clm")
