"""Shared fixtures: the real DOTA samples that live beside the repository (``../shared/data``)."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real DOTA samples; tests that need them skip when it is missing."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real DOTA samples not found at {SHARED_DATA}")
    return SHARED_DATA
