"""The vLLM backend on the tiny models (CPU): chat with an image and an assistant prefix, raw
prompts, n > 1, stop strings, bad words, token counts, and seeded determinism.

What holds for determinism (and is tested): a fresh engine with the same `seed`, given the same
requests in the same batch, samples the same texts; the same engine asked twice samples anew.
"""

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
QUESTION = "what colour is the cube on the left?"


@pytest.fixture(scope="module")
def vlm(resolve, tiny_vlm_dir: Path):
    engine = make_engine(EngineConfig(model="tiny:vlm", max_model_len=2048, max_pixels=224 * 224), resolve)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def tokenizer(tiny_vlm_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_vlm_dir)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    p = tmp_path_factory.mktemp("img") / "scene.png"
    img = Image.new("RGB", (900, 600), (240, 240, 240))
    img.paste((200, 20, 20), (100, 200, 300, 400))
    img.save(p)
    return str(p)


def image_chat(image: str, prefix: str = "<think>", **sampling) -> GenerationRequest:
    content = [{"type": "image", "image": image}, {"type": "text", "text": QUESTION}]
    return GenerationRequest(messages=[{"role": "user", "content": content}], assistant_prefix=prefix,
                             sampling=S(**sampling))


def test_fingerprint_names_model_and_settings(vlm):
    assert "model=tiny:vlm" in vlm.fingerprint and "max_pixels=50176" in vlm.fingerprint
    assert "identity=recipe:" in vlm.fingerprint and "dtype=float32" in vlm.fingerprint


def test_image_chat_with_prefix_and_n_samples(vlm, image):
    [res] = vlm.generate([image_chat(image, n=3, temperature=1.0, max_new_tokens=12)])
    assert len(res.texts) == len(res.num_tokens) == len(res.finish_reasons) == 3
    for n_tok, reason in zip(res.num_tokens, res.finish_reasons):
        assert 1 <= n_tok <= 12 and reason in ("stop", "length")
        assert reason == "stop" or n_tok == 12  # "length" means exactly max_new_tokens tokens


def test_prefix_is_in_the_prompt_not_in_the_text(vlm, tokenizer):
    """Greedy chat with a prefix == greedy raw prompt rendered with continue_final_message."""
    messages = [{"role": "user", "content": QUESTION}]
    rendered = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": "<think>\nThe cube"}],
        tokenize=False, add_generation_prompt=False, continue_final_message=True)
    assert rendered.endswith("<|im_start|>assistant\n<think>\nThe cube")
    greedy = S(max_new_tokens=16)
    chat, raw, raw_split = vlm.generate([
        GenerationRequest(messages=messages, assistant_prefix="<think>\nThe cube", sampling=greedy),
        GenerationRequest(prompt=rendered, sampling=greedy),
        GenerationRequest(prompt=rendered[:-len(" cube")], assistant_prefix=" cube", sampling=greedy),
    ])
    assert chat.texts == raw.texts == raw_split.texts


# What the tiny student opens its thoughts with: greedy decoding then writes text to stop on (after a
# bare "<think>" it may close the turn at once).
THOUGHT = "<think> I see"


def test_stop_strings_cut_before_the_stop(vlm, image):
    [free] = vlm.generate([image_chat(image, THOUGHT, max_new_tokens=24)])
    text = free.texts[0]
    usable = [c for c in text[len(text) // 2:] if c != "\ufffd" and (c.isprintable() or c in " \n")]
    assert usable, f"no character to stop on in {text!r}"
    stop = usable[0]
    [cut] = vlm.generate([image_chat(image, THOUGHT, max_new_tokens=24, stop=(stop,))])
    assert cut.texts[0] == text[: text.find(stop)]
    assert cut.finish_reasons == ["stop"] and cut.num_tokens[0] <= free.num_tokens[0]


def test_bad_words_are_never_generated(vlm, image, tokenizer):
    [free] = vlm.generate([image_chat(image, THOUGHT, max_new_tokens=24)])
    ids = tokenizer.encode(free.texts[0], add_special_tokens=False)
    words = [tokenizer.decode([i]) for i in ids]
    banned = next((w for w in words if w.strip() and w == w.lstrip()
                   and tokenizer.encode(w, add_special_tokens=False) == [tokenizer.convert_tokens_to_ids(
                       tokenizer.convert_ids_to_tokens(tokenizer.encode(w, add_special_tokens=False)[0]))]), None)
    if banned is None:
        pytest.skip(f"no single-token word in {free.texts[0]!r}")
    banned_id = tokenizer.encode(banned, add_special_tokens=False)[0]
    [res] = vlm.generate([image_chat(image, THOUGHT, max_new_tokens=24, bad_words=(banned,))])
    assert res.texts != free.texts
    assert banned_id not in tokenizer.encode(res.texts[0], add_special_tokens=False)


def test_token_counts_match_the_tokenizer(vlm, image, tokenizer):
    [res] = vlm.generate([image_chat(image, n=2, temperature=1.0, max_new_tokens=10)])
    for text, n_tok, reason in zip(res.texts, res.num_tokens, res.finish_reasons):
        # re-encoding the decoded text may merge tokens differently, and an end token is not text
        assert abs(len(tokenizer.encode(text, add_special_tokens=False)) - n_tok) <= max(2, n_tok // 3)


def test_batch_mixing_kinds_keeps_order(vlm, image):
    reqs = [
        GenerationRequest(prompt="the red cube", sampling=S(max_new_tokens=5)),
        image_chat(image, prefix="", max_new_tokens=5),
        image_chat(image, max_new_tokens=5),
        GenerationRequest(prompt="the red cube", sampling=S(max_new_tokens=5)),
    ]
    out = vlm.generate(reqs)
    assert [r.key for r in out] == [r.key(vlm.fingerprint) for r in reqs]
    assert out[0].texts == out[3].texts


def test_same_engine_seed_same_samples(resolve, tiny_lm_dir: Path):
    cfg = EngineConfig(model="tiny:lm", max_model_len=512, seed=7)
    reqs = [GenerationRequest(prompt=f"the {c} cube", sampling=S(n=2, temperature=1.0, max_new_tokens=12))
            for c in ("red", "blue", "green")]
    runs = []
    for _ in range(2):
        engine = make_engine(cfg, resolve)
        try:
            runs.append([r.texts for r in engine.generate(reqs)])
            if len(runs) == 2:
                again = [r.texts for r in engine.generate(reqs)]
        finally:
            engine.close()
    assert runs[0] == runs[1]
    assert again != runs[1]  # the engine's generator moves on: a second ask samples anew
