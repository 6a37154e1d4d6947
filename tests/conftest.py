"""Shared pytest fixtures."""

from __future__ import annotations

import os
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
def tiny_vlm_dir(models_dir: Path) -> Path:
    """The tiny Qwen2.5-VL-style model directory."""
    from lpt_utils.tiny_world.models import ensure_model

    return Path(ensure_model("vlm", models_dir))


@pytest.fixture(scope="session")
def tiny_lm_dir(models_dir: Path) -> Path:
    """The tiny Qwen2-style causal LM directory (same tokenizer)."""
    from lpt_utils.tiny_world.models import ensure_model

    return Path(ensure_model("lm", models_dir))
