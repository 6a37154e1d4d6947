"""Shared pytest fixtures."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may load from the hub

# `make test` runs two pytest-xdist workers, one test file each at a time (--dist loadfile, so a module
# fixture such as the notebook chain is built once), handed out in collection order
# (--no-loadscope-reorder). The chain's file goes first, so the other worker works through the rest
# beside it; started half-way through, it would run alone at the end.
FIRST = ("test_notebooks.py",)
CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []  # before any pinning


def pytest_configure(config):
    """Under pytest-xdist, pin worker N (and every process it starts: kernels, trainers, vLLM, Ray) to
    core N mod the cores it may use. The tiny models' training and vLLM's CPU worker run one thread
    each. vLLM's "auto" binding (read in vLLM 0.32's `ompmultiprocessing.py`) keeps one of the cores
    the process may use for its scheduler and binds to the rest: unpinned, both workers' engines would
    bind to the same core; pinned, "auto" would have no core left, so the binding is named here."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ... (absent without -n)
    if not worker or not hasattr(os, "sched_setaffinity"):
        return
    core = CORES[int(worker.removeprefix("gw")) % len(CORES)]
    os.sched_setaffinity(0, {core})
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = str(core)
    os.environ["OMP_NUM_THREADS"] = "1"


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.path.name not in FIRST)  # stable: file order otherwise


@pytest.fixture
def all_cores():
    """Lift a worker's pinning for one test: the test and what it starts may use every core. For Ray,
    which starts half a dozen daemons at once and gives its raylet 30 s to register: on one core
    beside the other worker's load it once missed that (1 run in 4)."""
    if not CORES:
        yield
        return
    pinned = os.sched_getaffinity(0)
    os.sched_setaffinity(0, CORES)
    try:
        yield
    finally:
        os.sched_setaffinity(0, pinned)


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
