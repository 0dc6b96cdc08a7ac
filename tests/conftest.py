"""Shared fixtures: the real data folder that lies beside the checkout (../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HELM_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real OAS / CodonBERT / iCodon files; tests that need them skip, saying why, where they are absent."""
    if not (SHARED_DATA / "MANIFEST.md").exists():
        pytest.skip(
            f"real data folder not found at {SHARED_DATA} (set HELM_SHARED_DATA or place shared/ beside the repo)"
        )
    return SHARED_DATA
