"""The OpenAI-compatible HTTP backend against a fault-injecting loopback server (tests/fault_server.py):
retries and their count, no retry on 4xx, bounded concurrency, request shape, key hygiene."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import sys
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_server import FaultServer  # noqa: E402

from lpt_utils.engines import (  # noqa: E402
    EngineConfig,
    GenerationRequest,
    RequestStore,
    SamplingSettings,
    run_requests,
)
from lpt_utils.engines.openai_engine import EngineRequestError, OpenAIEngine  # noqa: E402


def engine(srv: FaultServer, **kw) -> OpenAIEngine:
    # A timeout far above a loopback answer's time even on a busy machine: only a "hang" reaches it.
    settings = dict(model="fault-model", backend="openai", base_url=srv.base_url, timeout_s=5.0,
                    retry_backoff_s=0.01, max_retries=5, concurrency=4)
    settings.update(kw)
    return OpenAIEngine(EngineConfig(**settings), "fault-model")


def chat(text: str, n: int = 1, **kw) -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": text}], sampling=SamplingSettings(n=n), **kw)


def test_retries_every_transient_fault_then_succeeds():
    faults = ["429", "500", "503", "drop", "hang"]
    with FaultServer(script=faults) as srv:
        [res] = engine(srv, concurrency=1).generate([chat("hello", n=2)])
    assert res.texts == ["reply[0]: hello", "reply[1]: hello"]
    assert [c.fault for c in srv.calls] == faults + [None]  # 5 failures, the 6th attempt answers


def test_gives_up_after_max_retries():
    with FaultServer(script=["503"] * 10) as srv:
        with pytest.raises(EngineRequestError, match="after 3 attempts"):
            engine(srv, max_retries=2).generate([chat("x")])
    assert len(srv.calls) == 3


def test_client_error_is_not_retried():
    with FaultServer(script=["400"]) as srv:
        with pytest.raises(EngineRequestError, match="HTTP 400"):
            engine(srv).generate([chat("x")])
    assert len(srv.calls) == 1


def test_concurrency_is_bounded():
    with FaultServer(answer_delay_s=0.1) as srv:
        results = engine(srv, concurrency=3).generate([chat(f"q{i}") for i in range(12)])
    assert [r.texts[0] for r in results] == [f"reply[0]: q{i}" for i in range(12)]
    assert 2 <= srv.max_in_flight <= 3


def test_key_comes_from_env_and_never_leaks(monkeypatch, caplog):
    secret = "sk-test-DO-NOT-LEAK-1234"
    monkeypatch.setenv("LPT_TEST_API_KEY", secret)
    caplog.set_level(logging.DEBUG)
    with FaultServer(script=["429", "400"]) as srv:
        eng = engine(srv, api_key_env="LPT_TEST_API_KEY", concurrency=1)
        with pytest.raises(EngineRequestError) as err:
            eng.generate([chat("x")])
        eng.generate([chat("y")])
    assert srv.calls[0].authorization == f"Bearer {secret}"
    for text in (caplog.text, eng.fingerprint, repr(eng), str(eng.cfg), str(err.value)):
        assert secret not in text


def test_missing_key_variable_is_named():
    with pytest.raises(ValueError, match="LPT_NO_SUCH_KEY"):
        OpenAIEngine(EngineConfig(model="m", backend="openai", base_url="http://127.0.0.1:9/v1",
                                  api_key_env="LPT_NO_SUCH_KEY"), "m")


def test_image_prefix_and_n_request_shape(tmp_path: Path):
    img_path = tmp_path / "img.png"
    Image.new("RGB", (400, 200), (200, 10, 10)).save(img_path)
    req = GenerationRequest(
        messages=[{"role": "user", "content": [{"type": "image", "image": str(img_path)},
                                               {"type": "text", "text": "what colour?"}]}],
        assistant_prefix="<think>\n",
        sampling=SamplingSettings(n=3, temperature=1.0, top_k=5, bad_words=("blue",)),
    )
    with FaultServer() as srv:
        [res] = engine(srv, max_pixels=100 * 50).generate([req])
    body = srv.calls[0].body
    assert body["n"] == 3 and body["top_k"] == 5 and body["bad_words"] == ["blue"]
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["return_token_ids"] is True
    assert body["messages"][-1] == {"role": "assistant", "content": "<think>\n"}
    url = body["messages"][0]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert img.size == (100, 50)  # the same cap the vLLM backend applies
    assert len(res.texts) == 3 and res.num_tokens == [2, 2, 2]  # fallback: whitespace words here


def test_neutral_sampling_fields_are_sent_explicitly():
    """A vLLM server would otherwise fill top_k / repetition_penalty from generation_config.json."""
    with FaultServer() as srv:
        engine(srv).generate([chat("x")])
    body = srv.calls[0].body
    assert body["top_k"] == -1 and body["repetition_penalty"] == 1.0 and body["n"] == 1
    assert "continue_final_message" not in body and "return_token_ids" not in body


def test_raw_prompt_uses_completions_endpoint():
    with FaultServer() as srv:
        [res] = engine(srv).generate([GenerationRequest(prompt="Q: 1+1?", assistant_prefix=" A:")])
    assert srv.calls[0].path == "/v1/completions" and srv.calls[0].body["prompt"] == "Q: 1+1? A:"
    assert res.texts == ["reply[0]: Q: 1+1? A:"] and res.finish_reasons == ["length"]
    assert res.num_tokens == [4]  # n == 1: usage.completion_tokens


def test_fewer_choices_than_asked_raises():
    with FaultServer(script=["fewer"]) as srv:
        with pytest.raises(EngineRequestError, match="1 choices for n=2"):
            engine(srv).generate([chat("x", n=2)])


def test_works_inside_a_running_event_loop():
    async def notebook_cell():
        with FaultServer() as srv:
            return engine(srv).generate([chat("from a loop")])

    [res] = asyncio.run(notebook_cell())
    assert res.texts == ["reply[0]: from a loop"]


def test_hosted_openai_rejects_vllm_extensions_before_sending():
    eng = OpenAIEngine(EngineConfig(model="gpt-x", backend="openai", base_url="https://api.openai.com/v1"), "gpt-x")
    with pytest.raises(ValueError, match="continue_final_message"):
        eng.generate([chat("x", assistant_prefix="<think>")])


def test_store_resume_over_http(tmp_path: Path):
    store_path = tmp_path / "http.jsonl"
    reqs = [chat(f"q{i}") for i in range(5)]
    with FaultServer(script=["500"] * 4) as srv:  # 1 retry + 3 retries: every request still answered
        first = run_requests(engine(srv, batch_size=2), reqs, RequestStore(store_path))
        n_calls = len(srv.calls)
        again = run_requests(engine(srv), reqs, RequestStore(store_path))
    assert [r.texts for r in again] == [r.texts for r in first]
    assert len(srv.calls) == n_calls and again.stats.from_store == 5
