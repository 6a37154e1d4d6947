"""The tiny models through vLLM (slow: one engine start-up per model, in a child process each).

The real models (session fixtures in conftest.py) load in vLLM with the settings the pipeline uses,
image prompts included, and meet the warm-up's targets:
nearly every sampled student answer parses, right and wrong answers both occur, and the writer yields
valid MCQs.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_real_student_parses_and_is_sometimes_right(tiny_vlm_dir):
    pytest.importorskip("vllm")
    from lpt_utils.tiny_world.check import check_in_subprocess

    r = check_in_subprocess("vlm", tiny_vlm_dir, n_scenes=12)
    assert r["parse_rate"] >= 0.9, r
    assert 0 < r["correct"] < r["parsed"], r  # both right and wrong answers occur
    assert r["mixed_mcqs"] > 0
    assert r["image_tokens"] == 64  # the 224 px scene reached vLLM as (224 / 14 / 2)^2 image tokens


def test_real_writer_yields_valid_mcqs(tiny_lm_dir):
    pytest.importorskip("vllm")
    from lpt_utils.tiny_world.check import check_in_subprocess

    r = check_in_subprocess("lm", tiny_lm_dir, n_scenes=6)
    assert r["writer_responses_with_a_valid_mcq"] >= r["writer_responses"] // 2, r
    assert r["reformat_valid_share"] > 0.5, r
