"""Engine settings, the shared image cap, fingerprints: fast checks that load no model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from lpt_utils import config
from lpt_utils.engines import EngineConfig
from lpt_utils.engines.common import model_identity, safe_url
from lpt_utils.engines.images import capped_size, load_image


def test_from_dict_rejects_unknown_keys_by_name():
    cfg = EngineConfig.from_dict({"model": "m", "backend": "hf", "max_pixels": 1000})
    assert cfg.backend == "hf" and cfg.max_pixels == 1000
    assert EngineConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="max_pixel, temprature"):
        EngineConfig.from_dict({"model": "m", "max_pixel": 1, "temprature": 0.7})


@pytest.mark.parametrize("bad", [{"backend": "tgi"}, {"dtype": "fp8"}, {"batch_size": 0},
                                 {"backend": "openai"}, {"max_pixels": 0}])
def test_invalid_settings_raise(bad):
    with pytest.raises(ValueError):
        EngineConfig(model="m", **bad)


def test_the_profile_names_the_model_resolver(tmp_path: Path):
    paper = config.resolve_run("paper", "p", {"paths.outputs": str(tmp_path)})
    assert paper.resolve_model("Qwen/Qwen2.5-VL-7B-Instruct") == "Qwen/Qwen2.5-VL-7B-Instruct"  # no resolver
    tiny = config.resolve_run("tiny", "t", {"paths.outputs": str(tmp_path), "paths.models": str(tmp_path / "m"),
                                            "plugins.model_resolver": "lpt_utils.tiny_world.plugin:resolve_model"})
    assert tiny.resolve_model(str(tmp_path)) == str(tmp_path)  # not a tiny id: unchanged
    bad = config.resolve_run("paper", "b", {"paths.outputs": str(tmp_path), "plugins.model_resolver": "no.such:thing"})
    with pytest.raises(ImportError, match="plugins.model_resolver: cannot import 'no.such'"):
        bad.resolve_model("x")
    worse = config.resolve_run("paper", "w", {"paths.outputs": str(tmp_path), "plugins.model_resolver": "lpt_utils"})
    with pytest.raises(ValueError, match="not a 'module:attribute'"):
        worse.resolve_model("x")


def test_image_cap():
    assert capped_size(640, 480, None, None) == (640, 480)
    assert capped_size(640, 480, 640 * 480, None) == (640, 480)  # never enlarged by max_pixels
    w, h = capped_size(1000, 500, 200 * 100, None)
    assert (w, h) == (200, 100)
    w, h = capped_size(333, 777, 10_000, None)
    assert w * h <= 10_000 and abs(w / h - 333 / 777) < 0.02
    assert capped_size(300, 150, None, 600) == (600, 300)  # longest_side scales both ways
    assert capped_size(300, 150, 600 * 300 // 4, 600) == (300, 150)


def test_load_image_is_rgb_and_capped(tmp_path: Path):
    p = tmp_path / "a.png"
    Image.new("RGBA", (800, 400), (1, 2, 3, 4)).save(p)
    img = load_image(p, max_pixels=200 * 100)
    assert img.mode == "RGB" and img.size == (200, 100)


def test_model_identity_follows_the_weights(tmp_path: Path):
    assert model_identity("some/hub-id") == ""
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"a" * 100)
    first = model_identity(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"b" * 100)
    assert model_identity(str(tmp_path)) != first
    (tmp_path / "recipe_hash.txt").write_text("abc\n")
    assert model_identity(str(tmp_path)) == "recipe:abc"


def test_a_trained_model_folder_is_fingerprinted_by_what_it_holds_not_where_it_is(tmp_path: Path):
    """A run's own trained model (05_sft/model) copied elsewhere keeps its fingerprint, so calls to it
    from a copy of the run find their stored results; a changed chat template changes it (changed
    weights: `test_model_identity_follows_the_weights`)."""
    import shutil

    from lpt_utils.engines.common import fingerprint

    def fp(folder: Path) -> str:
        return fingerprint("vllm", EngineConfig(model=str(folder)), model_identity(str(folder)))

    a = tmp_path / "run" / "05_sft" / "model"
    a.mkdir(parents=True)
    (a / "config.json").write_text("{}")
    (a / "model.safetensors").write_bytes(b"w" * 100)
    (a / "chat_template.jinja").write_text("{{ messages }}")
    b = tmp_path / "moved" / "05_sft" / "model"
    shutil.copytree(a, b)
    assert fp(a) == fp(b) and str(a) not in fp(a)
    (b / "chat_template.jinja").write_text("{{ messages | reverse }}")
    assert fp(a) != fp(b)
    assert fingerprint("vllm", EngineConfig(model="Qwen/Qwen2.5-VL-7B-Instruct"), "").startswith(
        "backend=vllm|model=Qwen/Qwen2.5-VL-7B-Instruct|")  # a hub id names the model


def test_safe_url_drops_credentials():
    assert safe_url("https://user:sk-secret@host.example:8443/v1/?key=sk-secret") == "https://host.example:8443/v1"


def test_importing_engines_does_not_import_backends():
    code = ("import sys, lpt_utils.engines; "
            "print(any(m in sys.modules for m in ('vllm', 'openai', 'transformers', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"
