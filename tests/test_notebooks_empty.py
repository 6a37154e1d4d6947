"""A tiny-profile run in which the writer yields nothing valid, executed with papermill as a user runs
it: the notebooks still write their (empty) artifacts and say why, and training stops with a clear
error. Its own file, so that pytest-xdist can run it beside the notebook chain (tests/test_notebooks.py)."""

import pytest

from lpt_utils import config
from lpt_utils.reproduce import notebooks, run_notebook

pytestmark = pytest.mark.slow


def test_a_run_with_nothing_valid_writes_empty_artifacts_and_says_why(tmp_path):
    """A writer cut to one token and no reformat pass: stage 1 parses nothing. 01-04 still write their
    (empty) artifacts and manifests, whose funnels say why; 05 stops with a clear error."""
    import papermill

    overrides = {"paths.outputs": str(tmp_path / "outputs"), "paths.figures": str(tmp_path / "figures"),
                 "mcq.writer.sampling.max_new_tokens": 1, "mcq.reformat": "never", "data.num_images": 4}
    run = config.resolve_run("tiny", "empty", overrides)
    for nb in notebooks(["01", "02", "03", "04"]):
        run_notebook(nb, "tiny", "empty", overrides, out_dir=tmp_path / "executed")
    mcq = run.stage("mcq").manifest()
    assert mcq["counts"]["valid"] == 0 and mcq["funnel"][0]["dropped"] == {"no_question_parsed": 4}
    for key in ("simple_cot", "long_cot", "training_data"):
        assert run.stage(key).status(), key  # written and current, though empty
    assert len(run.stage("simple_cot").load()) == 0
    with pytest.raises(papermill.PapermillExecutionError, match="NothingToTrain"):
        run_notebook(notebooks(["05"])[0], "tiny", "empty", overrides, out_dir=tmp_path / "executed")
