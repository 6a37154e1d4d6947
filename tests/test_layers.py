"""The layers of lpt_utils hold (pyproject.toml, [tool.importlinter]): reproduce on top, then display,
training, the paper's steps, benchmarks, engines, run settings, the stage registry and plumbing; the
tiny world beside the pipeline, imported by nothing in it; no import cycles. import-linter reads every
import, those inside functions included."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is in the dev extra: make setup installs it"
    out = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout and "4 kept" in out.stdout
