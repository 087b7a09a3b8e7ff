"""Shared fixtures. Stage-specific fixtures live in the test modules that use them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Quiet TensorFlow in tests that import it; must be set before the first import.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SHARED_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "tiny-imagenet-mini"


@pytest.fixture(scope="session")
def tiny_imagenet_mini() -> Path:
    """The real 10-class slice of Tiny ImageNet beside the checkout; skipped when absent."""
    if not (SHARED_MINI / "wnids.txt").is_file():
        pytest.skip("../shared/data/tiny-imagenet-mini is not present in this checkout")
    return SHARED_MINI
