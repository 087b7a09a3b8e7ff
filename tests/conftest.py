"""Shared fixtures. Stage-specific fixtures live in the test modules that use them; the tiny
export lives here because the export tests and the browser test both read it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

# Quiet TensorFlow in tests that import it; must be set before the first import.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SHARED_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "tiny-imagenet-mini"


@pytest.fixture(autouse=True)
def layout_cache_per_test(tmp_path_factory: pytest.TempPathFactory,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test (and the commands it runs) remembers calibrated layouts in a folder of its own,
    never in the user's cache."""
    from edge_ssl.runtime.user_cache import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("layout-cache")))


@pytest.fixture(scope="session")
def tiny_imagenet_mini() -> Path:
    """The real 10-class slice of Tiny ImageNet beside the checkout; skipped when absent."""
    if not (SHARED_MINI / "wnids.txt").is_file():
        pytest.skip("../shared/data/tiny-imagenet-mini is not present in this checkout")
    return SHARED_MINI


@pytest.fixture(scope="session")
def source_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pristine tiny run directory (tests/export_fixtures.py); tests that export copy it."""
    import export_fixtures

    return export_fixtures.write_run(tmp_path_factory.mktemp("runs") / "tiny-run")


@pytest.fixture(scope="session")
def exported(source_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """One full export of the tiny run (both variants, both inputs, ORT files), shared by the
    tests that only read it: the export tests and the browser test."""
    import export_fixtures

    from edge_ssl import contract
    from edge_ssl.export.config import ExportConfig
    from edge_ssl.export.pipeline import export_run

    run = export_fixtures.copy_run(source_run, tmp_path_factory.mktemp("exported"))
    # A 0.35-wide network with random features changes its answers under any noise, INT8's or
    # FP16's: the gates are off here and tested on their own in test_export.py and test_int8.py.
    config = ExportConfig(run, int8=True, fp16=True, min_int8_agreement=0.0, max_fp32_nodes=0,
                          fp16_tolerance=0.5, ort=True)
    return run / contract.EXPORTS_DIR, export_run(config)
