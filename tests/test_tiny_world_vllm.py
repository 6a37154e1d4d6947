"""The tiny models through vLLM (slow: one engine start-up per model, in a child process each).

- cheap throwaway models load in vLLM with the settings the pipeline uses, image prompts included;
- the real models (session fixtures in conftest.py) meet the warm-up's targets: nearly every sampled
  student answer parses, and right and wrong answers both occur; the writer yields valid MCQs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

_LOAD = r"""
import json, sys
from vllm import LLM, SamplingParams
from lpt_utils.pipeline import mcq
from lpt_utils.tiny_world import corpus
from lpt_utils.tiny_world.questions import scene_mcqs
from lpt_utils.tiny_world.scenes import render, sample_scene
import random
path, name = sys.argv[1], sys.argv[2]
llm = LLM(model=path, dtype="float32", enforce_eager=True, max_model_len=2048, seed=0,
          limit_mm_per_prompt={"image": 1, "video": 0})
tok = llm.get_tokenizer()
params = SamplingParams(n=2, temperature=0.7, max_tokens=8)
if name == "vlm":
    scene = sample_scene(1)
    row = corpus.student_row(scene, scene_mcqs(scene, random.Random(0))[0], 0)
    text = tok.apply_chat_template(mcq.student_messages(row, "x.png"), add_generation_prompt=True, tokenize=False)
    outs = llm.generate([{"prompt": text + "<think>", "multi_modal_data": {"image": render(scene)}}], params)
    n_prompt = len(outs[0].prompt_token_ids)
else:
    msgs = mcq.writer_messages("A plain white background holds one small red circle.")
    outs = llm.chat([msgs + [{"role": "assistant", "content": "1. <question>"}]], params,
                    add_generation_prompt=False, continue_final_message=True)
    n_prompt = len(outs[0].prompt_token_ids)
print("@@" + json.dumps({"texts": [o.text for o in outs[0].outputs], "n_prompt": n_prompt}))
"""


def _env() -> dict[str, str]:
    from lpt_utils.tiny_world.check import VLLM_ENV

    env = {**os.environ, **VLLM_ENV}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@pytest.mark.parametrize("name", ["lm", "vlm"])
def test_cheap_models_load_in_vllm(tmp_path, name):
    pytest.importorskip("vllm")
    from lpt_utils.tiny_world import models

    recipe = replace(models.RECIPES[name], tokenizer_scenes=40, train_scenes=12, steps=2, batch_size=2,
                     warmup_steps=1, probe_steps=2, probe_batch=2)
    path = models.ensure_model(name, tmp_path, recipe=recipe, progress=False)
    proc = subprocess.run([sys.executable, "-c", _LOAD, str(path), name], capture_output=True, text=True,
                          env=_env(), timeout=600)
    assert proc.returncode == 0 and "@@" in proc.stdout, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("@@", 1)[1])
    assert len(out["texts"]) == 2
    if name == "vlm":
        assert out["n_prompt"] > 64  # the image became 64 image tokens


def test_real_student_parses_and_is_sometimes_right(tiny_vlm_dir):
    pytest.importorskip("vllm")
    from lpt_utils.tiny_world.check import check_in_subprocess

    r = check_in_subprocess("vlm", tiny_vlm_dir, n_scenes=12)
    assert r["parse_rate"] >= 0.9, r
    assert 0 < r["correct"] < r["parsed"], r  # both right and wrong answers occur
    assert r["mixed_mcqs"] > 0


def test_real_writer_yields_valid_mcqs(tiny_lm_dir):
    pytest.importorskip("vllm")
    from lpt_utils.tiny_world.check import check_in_subprocess

    r = check_in_subprocess("lm", tiny_lm_dir, n_scenes=6)
    assert r["writer_responses_with_a_valid_mcq"] >= r["writer_responses"] // 2, r
    assert r["reformat_valid_share"] > 0.5, r
