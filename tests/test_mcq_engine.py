"""Stage 1 through a real engine: the tiny LM writes and reformats via vLLM (the reformat pass in
`always` mode, as the paper runs it), and stage 1 builds MCQ records from what came back."""

from pathlib import Path

import pytest

from lpt_utils.engines import EngineConfig, RequestStore, make_engine, run_requests
from lpt_utils.pipeline import captions, mcq

pytestmark = pytest.mark.slow


def test_writer_and_reformat_pass_on_the_tiny_lm(tmp_path: Path, resolve):
    from lpt_utils.tiny_world.scenes import make_scene_set

    recs, report = captions.load_docci(make_scene_set(tmp_path / "scenes", n=4, split="train", seed=3))
    assert report.kept == 4
    engine = make_engine(EngineConfig(model="tiny:lm", max_model_len=2048), resolve)
    try:
        store = RequestStore(tmp_path / "writer.jsonl")
        writer = run_requests(engine, mcq.writer_requests(recs, {"temperature": 0.7, "max_new_tokens": 600}), store)
        reqs = mcq.reformat_requests(writer, {"temperature": 0.0, "max_new_tokens": 600}, "always")
        assert len(reqs) == 4 and all(writer[i].texts[0] in reqs[i].messages[1]["content"] for i in range(4))
        reformatted = run_requests(engine, reqs, RequestStore(tmp_path / "reformat.jsonl"))
        assert reformatted.stats.generated == 4
    finally:
        engine.close()
    mcqs, funnel = mcq.build_mcqs(recs, writer, reformatted, seed=0)
    assert mcqs and all(m.reformatted_response for m in mcqs)
    assert funnel.steps[0]["in"] == 4
    assert sum(m.is_valid for m in mcqs) == funnel.steps[-1]["out"]
