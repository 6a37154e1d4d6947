"""Shared pytest fixtures."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may load from the hub


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """Where the tiny models live: outputs/models (what `make models` builds), or $LPT_MODELS_DIR.
    `lpt_utils.tiny_world.models.ensure_model` builds a missing one on first use."""
    return Path(os.environ.get("LPT_MODELS_DIR", ROOT / "outputs" / "models"))


@pytest.fixture(scope="session")
def resolve(models_dir: Path):
    """The tiny profile's model resolver over `models_dir` ("tiny:vlm" -> its folder)."""
    from lpt_utils.tiny_world.plugin import resolve_model

    return lambda model: resolve_model(model, models_dir)


@pytest.fixture(scope="session")
def tiny_vlm_dir(models_dir: Path) -> Path:
    """The tiny Qwen2.5-VL-style model directory."""
    from lpt_utils.tiny_world.models import ensure_model

    return Path(ensure_model("vlm", models_dir))


@pytest.fixture(scope="session")
def tiny_lm_dir(models_dir: Path) -> Path:
    """The tiny Qwen2-style causal LM directory (same tokenizer)."""
    from lpt_utils.tiny_world.models import ensure_model

    return Path(ensure_model("lm", models_dir))


# Chromium flags for the browser tests: headless-safe, and no calls home (the pages are local).
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium (`make test` installs it where it runs as root on Debian), else a skip."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium binary on PATH: `make test` installs Debian's chromium "
                    "(scripts/ensure_chromium.sh) only when run as root on Debian")
    return browser
