"""The transformers fallback backend on the tiny models: image + prefix, n > 1, stop strings,
bad words, per-request seeding."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from lpt_utils.engines import (
    EngineConfig,
    GenerationRequest,
    SamplingSettings,
    make_engine,
)

S = SamplingSettings


@pytest.fixture(scope="module")
def hf_vlm(resolve, tiny_vlm_dir: Path):
    engine = make_engine(EngineConfig(model="tiny:vlm", backend="hf", max_pixels=224 * 224), resolve)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    p = tmp_path_factory.mktemp("img") / "scene.png"
    Image.new("RGB", (448, 300), (30, 160, 30)).save(p)
    return str(p)


def ask(image: str, **sampling) -> GenerationRequest:
    content = [{"type": "image", "image": image}, {"type": "text", "text": "which shape is green?"}]
    return GenerationRequest(messages=[{"role": "user", "content": content}], assistant_prefix="<think>",
                             sampling=S(**sampling))


def test_sampling_is_seeded_per_request(hf_vlm, image):
    req = ask(image, n=2, temperature=1.0, max_new_tokens=10)
    first, other = hf_vlm.generate([req, ask(image, n=2, temperature=1.0, max_new_tokens=10, seed=5)])
    [again] = hf_vlm.generate([req])
    assert first.texts == again.texts and first.num_tokens == again.num_tokens
    assert len(first.texts) == 2 and all(1 <= n <= 10 for n in first.num_tokens)
    assert other.texts != first.texts


def test_stop_string_and_bad_words(hf_vlm, image):
    [free] = hf_vlm.generate([ask(image, max_new_tokens=16)])
    text = free.texts[0]
    usable = [c for c in text[len(text) // 2:] if c != "\ufffd" and (c.isprintable() or c in " \n")]
    assert usable, f"no character to stop on in {text!r}"
    [cut] = hf_vlm.generate([ask(image, max_new_tokens=16, stop=(usable[0],))])
    assert cut.texts[0] == text[: text.find(usable[0])] and cut.finish_reasons == ["stop"]
    words = [w for w in text.split() if w]
    if words:
        [banned] = hf_vlm.generate([ask(image, max_new_tokens=16, bad_words=(words[0],))])
        assert banned.texts != free.texts
