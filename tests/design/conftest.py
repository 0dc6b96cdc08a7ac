"""Tiny codon runs for the design tests (random init, built with the public APIs: tests/downstream/runs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from downstream.runs import make_run


@pytest.fixture(scope="session")
def design_runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("design-runs")
    return {"clm": make_run(root, "tiny-clm", "clm", seed=1), "mlm": make_run(root, "tiny-mlm", "mlm", seed=2)}
