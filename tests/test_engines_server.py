"""Smoke test of the HTTP backend against vLLM's real OpenAI-compatible server on the tiny VLM
(loopback only): an image + assistant prefix request with n = 2, and the same greedy answer as the
offline vLLM backend (same prompt rendering, same image cap)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from lpt_utils.engines import (
    EngineConfig,
    GenerationRequest,
    SamplingSettings,
    make_engine,
)

pytestmark = pytest.mark.slow
START_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tiny_vlm_dir: Path, tmp_path_factory):
    """A vLLM OpenAI server on a free loopback port; yields its base URL; always killed."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1",
           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_vlm_dir),
           "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager",
           "--max-model-len", "2048", "--limit-mm-per-prompt", '{"image": 1, "video": 0}', "--seed", "0"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.time() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r:
                    json.load(r)
                break
            except OSError:
                if time.time() > deadline:
                    pytest.fail(f"vLLM server not ready after {START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")
                time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # its own process group: the server and any child
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def test_image_prefix_n2_through_the_real_server(vllm_server, resolve, tmp_path: Path):
    img = tmp_path / "scene.png"
    Image.new("RGB", (640, 480), (20, 20, 200)).save(img)
    content = [{"type": "image", "image": str(img)}, {"type": "text", "text": "what colour is the sphere?"}]

    def req(**sampling):
        return GenerationRequest(messages=[{"role": "user", "content": content}], assistant_prefix="<think>",
                                 sampling=SamplingSettings(**sampling))

    cfg = EngineConfig(model="tiny:vlm", backend="openai", base_url=vllm_server, max_pixels=224 * 224,
                       timeout_s=60, max_retries=2)
    http = make_engine(cfg, resolve)
    sampled, greedy = http.generate([req(n=2, temperature=1.0, max_new_tokens=16), req(max_new_tokens=16)])
    assert len(sampled.texts) == 2 and all(1 <= n <= 16 for n in sampled.num_tokens)
    assert http.token_count_method == "server"  # per-choice token ids from vLLM
    assert all(r in ("stop", "length") for r in sampled.finish_reasons)

    offline = make_engine(EngineConfig(model="tiny:vlm", max_model_len=2048, max_pixels=224 * 224), resolve)
    try:
        [same] = offline.generate([req(max_new_tokens=16)])
    finally:
        offline.close()
    assert same.texts == greedy.texts and same.num_tokens == greedy.num_tokens
