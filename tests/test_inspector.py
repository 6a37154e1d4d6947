"""The CoT inspector: loading a run's artifacts (whichever stages exist), filtering traces, grouping
simple CoTs with their long expansions, driving the widgets (filters, MCQ / SFT / DPO stepping), the
static snapshot, and the exported page (its content here, its rendering in a headless chromium)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest
from conftest import CHROMIUM_FLAGS
from PIL import Image

from lpt_utils import config
from lpt_utils.pipeline.training_data import write_sets
from lpt_utils.records import MCQ, LongCoT, SimpleCoT
from lpt_utils.stages import Stage
from lpt_utils.viz import inspector
from lpt_utils.viz.inspector import Filters

RED = (220, 20, 20)

# ----------------------------------------------------------------------------- a small run
# m1 (recognition): s0 O → l0 O→X (cue "Hmm,"); s1 X → l0 X→O (cue "Wait,"), l1 X→X dropped for a
#     banned word; s2 X dropped as a duplicate.
# m2 (counting): s0 X → l0 X→X (cue "Hmm,").
# m3 (recognition): invalid (duplicate options); no CoTs.


def _image(path: Path, colour) -> str:
    Image.new("RGB", (48, 48), colour).save(path)
    return str(path)


def _mcq(mcq_id, image_path, qtype, question, valid=True):
    return MCQ(mcq_id=mcq_id, image_id=mcq_id, image_path=image_path, description="a scene", item_index=0,
               question=question, choices=["red", "blue", "green", "blue" if not valid else "yellow"],
               answer="blue", answer_letter="B" if valid else "", question_type=qtype, choice_form="paren",
               answer_form="paren_letter", is_valid=valid, invalid_reason="" if valid else "duplicate_options",
               raw_response="", reformatted_response="", raw_item="").to_row()


def _simple(mcq_id, k, label, thought, drop=""):
    return asdict(SimpleCoT(
        mcq_id=mcq_id, response_id=f"{mcq_id}-s{k}", image_id=mcq_id, image_path="", question_type="",
        raw_text=f"<think>{thought}</think><answer>(A)</answer>", thought=thought,
        answer="(B)" if label == "O" else "(A)", answer_letter="B", named_letter="B" if label == "O" else "A",
        match="letter", match_released="letter_form", correct_strict=label == "O", correct_released=label == "O",
        rule="strict", is_correct=label == "O", label=label, response_shape="think_answer", num_tokens=12,
        finish_reason="stop", kept=not drop, drop_reason=drop))


def _long(simple_id, k, transition, cue, added, hits=(), drop=""):
    return asdict(LongCoT(
        mcq_id=simple_id.rsplit("-", 1)[0], simple_id=simple_id, long_id=f"{simple_id}-l{k}", image_id="",
        image_path="", question_type="", cue=cue, separator=" ", simple_thought="t", simple_answer="(A)",
        simple_correct=transition[0] == "O", simple_num_tokens=12, prefix="", raw_text=added,
        added_thought=added, long_thought=f"t {cue} {added}", summary="",
        answer="(B)" if transition[-1] == "O" else "(A)", answer_letter="B", named_letter="", match="letter",
        match_released="letter_form", correct_strict=transition[-1] == "O", correct_released=transition[-1] == "O",
        rule="strict", is_correct=transition[-1] == "O", response_shape="think_answer", transition=transition, num_tokens=20, finish_reason="stop", banned_hits=list(hits), kept=not drop,
        drop_reason=drop))


def _sft(row_id, mcq_id, image, source, assistant, prefix=""):
    return {"id": row_id, "mcq_id": mcq_id, "image_id": mcq_id, "image_path": image, "system": "sys",
            "user": f"question of {mcq_id}", "assistant": assistant, "assistant_prefix": prefix,
            "source": source, "num_tokens": 30}


def _dpo(row_id, mcq_id, image, rule, family, chosen, rejected):
    return {"id": row_id, "mcq_id": mcq_id, "image_id": mcq_id, "image_path": image, "system": "sys",
            "user": f"question of {mcq_id}", "chosen": chosen, "rejected": rejected, "pair_type": rule,
            "family": family}


def _write(run_dir: Path, stage: str, rows: list[dict]) -> None:
    """A stage written as the notebooks write it (the tiny profile's settings)."""
    Stage(run_dir, config.load_profile("tiny"), stage).write(pd.DataFrame(rows))


def make_run(root: Path, stages: int = 4) -> Path:
    """outputs/<run>/ with stages 01..`stages` written as the notebooks write them."""
    run_dir = root / "myrun"
    red, blue = _image(root / "red.png", RED), _image(root / "blue.png", (20, 20, 220))
    mcqs = [_mcq("m1", red, "recognition", "What colour is the shape?"),
            _mcq("m2", blue, "counting", "How many shapes?"),
            _mcq("m3", blue, "recognition", "Which shape is it?", valid=False)]
    _write(run_dir, "mcq", mcqs)
    if stages >= 2:
        simple = [_simple("m1", 0, "O", "A red one."), _simple("m1", 1, "X", "Maybe green."),
                  _simple("m1", 2, "X", "Maybe green.", drop="duplicate"), _simple("m2", 0, "X", "I count one.")]
        _write(run_dir, "simple_cot", simple)
    if stages >= 3:
        long = [_long("m1-s0", 0, "O→X", "Hmm,", "It could be green after all."),
                _long("m1-s1", 0, "X→O", "Wait,", "Looking again, it is blue."),
                _long("m1-s1", 1, "X→X", "Wait,", "The description says green.", hits=["description"],
                      drop="banned word"),
                _long("m2-s0", 0, "X→X", "Hmm,", "Still one.")]
        _write(run_dir, "long_cot", long)
    if stages >= 4:
        wrong = "<think>\nMaybe green."
        sets = {"sft_simple": [_sft("m1-s0", "m1", red, "O", "<think>\nA red one.\n</think>\n<answer>(B)</answer>")],
                "sft_long": [_sft("m1-s0", "m1", red, "O", "<think>\nA red one.\n</think>\n<answer>(B)</answer>"),
                             _sft("m1-s1-l0", "m1", red, "X→O",
                                  wrong + " Wait, Looking again, it is blue.\n</think>\n<answer>(B)</answer>", wrong),
                             _sft("m2-s0", "m2", blue, "O", "<think>\nTwo.\n</think>\n<answer>(C)</answer>")],
                "dpo_O": [_dpo("m1-s0>m1-s0-l0", "m1", red, "O>O→X", "O", "CHOSEN-O", "REJECTED-OX")],
                "dpo_XO": [_dpo("m1-s1-l0>m1-s1", "m1", red, "X→O>X", "X→O", "CHOSEN-XO", "REJECTED-X"),
                           _dpo("m2-a>m2-b", "m2", blue, "X→O>X→X", "X→O", "CHOSEN-2", "REJECTED-2")]}
        sizes = write_sets(run_dir / "04_training_data", sets, [])
        _write(run_dir, "training_data", [{"set": k, "rows": v} for k, v in sizes.items()])
    return run_dir


@pytest.fixture
def run_dir(tmp_path):
    return make_run(tmp_path)


# ----------------------------------------------------------------------------- data side


def test_trace_table_marks_where_each_chain_stopped(run_dir):
    view = inspector.load_view(run_dir)
    assert view.name == "myrun" and all(view.stages.values())
    t = view.traces
    status = {lo or r or m: s for m, r, lo, s in zip(t.mcq_id, t.response_id, t.long_id, t.status)}
    assert status == {"m1-s0-l0": "kept", "m1-s1-l0": "kept",
                      "m1-s1-l1": "dropped · long CoT: banned word",
                      "m1-s2": "dropped · simple CoT: duplicate",
                      "m2-s0-l0": "kept", "m3": "dropped · MCQ: duplicate_options"}
    opts = inspector.filter_options(view)
    assert opts["transition"] == ["O→X", "X→O", "X→X"] and opts["cue"] == ["Hmm,", "Wait,"]
    assert opts["status"][:2] == ["kept", "dropped"] and len(opts["status"]) == 5


def test_matching_mcqs_and_grouping(run_dir):
    view = inspector.load_view(run_dir)
    assert inspector.matching_mcqs(view, Filters()) == ["m1", "m2", "m3"]
    assert inspector.matching_mcqs(view, Filters(transition="X→O")) == ["m1"]
    assert inspector.matching_mcqs(view, Filters(label="X", cue="Hmm,")) == ["m2"]  # same trace, not same MCQ
    assert inspector.matching_mcqs(view, Filters(label="O", cue="Wait,")) == []
    g = inspector.group_mcq(view, "m1", Filters(transition="X→O"))
    assert [(s.simple["response_id"], [e["long_id"] for e in s.expansions]) for s in g.simples] == [
        ("m1-s1", ["m1-s1-l0"])]
    assert g.hidden == 3 + 3 - 2  # three simple and three long CoTs, two shown
    every = inspector.group_mcq(view, "m1", Filters(transition="X→O"), only_matching=False)
    assert [len(s.expansions) for s in every.simples] == [1, 2, 0] and every.hidden == 0


def test_run_with_stages_01_02_only(tmp_path):
    run_dir = make_run(tmp_path, stages=2)
    ins = inspector.inspect(run_dir)
    assert ins.selection.view.long.empty and ins.selection.view.sft == {}
    assert ins.transition_filter.disabled and ins.cue_filter.disabled and not ins.label_filter.disabled
    ins.label_filter.value = "X"
    assert ins.mcq_ids == ["m1", "m2"]
    assert "m1-s1" in ins.mcq_view.value and "m1-s0" not in ins.mcq_view.value
    assert "03_long_cot — not written yet" in ins.mcq_count.value + ins.widget.children[0].value
    assert "04_training_data is not written" in ins.sft_view.value and ins.sft_position.value == "none"
    page = ins.export(tmp_path / "two.html").read_text()
    assert "m1-s1" in page and "04_training_data is not written" in page


def test_missing_run_or_stage_1_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        inspector.load_view(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="run notebook 01"):
        inspector.load_view(tmp_path / "empty")


# ----------------------------------------------------------------------------- the widgets


def test_filter_widgets_narrow_the_mcq_list(run_dir):
    ins = inspector.inspect(run_dir)
    assert ins.mcq_ids == ["m1", "m2", "m3"] and ins.mcq_count.value == "of 3 matching MCQs"
    ins.type_filter.value = "recognition"
    assert ins.mcq_ids == ["m1", "m3"]
    ins.type_filter.value = inspector.ANY
    ins.transition_filter.value = "X→X"
    assert ins.mcq_ids == ["m1", "m2"]
    ins.cue_filter.value = "Wait,"
    assert ins.mcq_ids == ["m1"]
    ins.status_filter.value = "kept"  # the only X→X after "Wait," was dropped
    assert ins.mcq_ids == [] and ins.mcq_count.value == "no MCQ matches these filters"
    assert ins.prev_mcq.disabled and ins.next_mcq.disabled and ins.current_mcq is None
    ins.set_filters(Filters(status="dropped"))
    assert ins.transition_filter.value == inspector.ANY and ins.mcq_ids == ["m1", "m3"]
    ins.status_filter.value = "dropped · MCQ: duplicate_options"
    assert ins.mcq_ids == ["m3"] and "invalid MCQ: duplicate_options" in ins.mcq_view.value
    assert ins.export_path.value.endswith("/status-dropped-MCQ-duplicate-options.html")
    with pytest.raises(ValueError, match="this run has"):
        ins.set_filters(Filters(cue="Oh,"))


def test_only_matching_checkbox_shows_every_cot(run_dir):
    ins = inspector.inspect(run_dir, transition="X→O")
    assert ins.mcq_ids == ["m1"] and "m1-s1-l0" in ins.mcq_view.value
    assert "m1-s0" not in ins.mcq_view.value and "not shown" in ins.mcq_view.value
    ins.only_matching.value = False
    assert all(i in ins.mcq_view.value for i in ("m1-s0-l0", "m1-s1-l1", "m1-s2"))


def test_mcq_navigation(run_dir):
    ins = inspector.inspect(run_dir)
    assert ins.current_mcq == "m1" and ins.prev_mcq.disabled and not ins.next_mcq.disabled
    ins.next_mcq.click()
    assert ins.current_mcq == "m2" and ins.mcq_number.value == 2 and "How many shapes?" in ins.mcq_view.value
    ins.next_mcq.click()
    ins.next_mcq.click()  # past the end: stays on the last
    assert ins.current_mcq == "m3" and ins.next_mcq.disabled
    ins.prev_mcq.click()
    assert ins.current_mcq == "m2"
    ins.mcq_number.value = 1
    assert ins.current_mcq == "m1" and "What colour is the shape?" in ins.mcq_view.value
    ins.next_mcq.click()
    ins.label_filter.value = "O"  # a filter change goes back to the first match
    assert ins.current_mcq == "m1" and ins.mcq_number.value == 1 and ins.mcq_number.max == 1


def test_sft_and_dpo_stepping(run_dir):
    ins = inspector.inspect(run_dir)
    assert ins.sft_set.options == ("sft_simple", "sft_long") and ins.sft_position.value == "1 of 1"
    ins.sft_set.value = "sft_long"
    assert ins.sft_source.options == (inspector.ANY, "O", "X→O") and ins.sft_position.value == "1 of 3"
    ins.next_sft.click()
    assert ins.current_sft()["id"] == "m1-s1-l0" and 'class="masked"' in ins.sft_view.value
    ins.next_sft.click()
    ins.next_sft.click()
    assert ins.current_sft()["id"] == "m2-s0" and ins.next_sft.disabled
    ins.sft_source.value = "X→O"
    assert ins.sft_position.value == "1 of 1" and ins.current_sft()["source"] == "X→O"
    ins.dpo_set.value = "dpo_XO"
    assert ins.dpo_position.value == "1 of 2" and "CHOSEN-XO" in ins.dpo_view.value
    assert "rule X→O&gt;X" in ins.dpo_view.value
    ins.next_dpo.click()
    assert ins.current_dpo()["pair_type"] == "X→O>X→X" and "REJECTED-2" in ins.dpo_view.value
    ins.prev_dpo.click()
    assert ins.current_dpo()["id"] == "m1-s1-l0>m1-s1"
    ins.dpo_rule.value = "X→O>X→X"
    assert ins.dpo_position.value == "1 of 1"
    ins.type_filter.value = "recognition"  # the pair belongs to m2: out of the selection
    assert ins.dpo_position.value == "none" and ins.current_dpo() is None
    ins.dpo_rule.value = inspector.ANY
    assert [ins.current_dpo()["mcq_id"], ins.dpo_position.value] == ["m1", "1 of 1"]


def test_display_shows_widget_and_a_static_snapshot(run_dir, monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    for static, kinds in ((None, ["VBox", "HTML"]), (True, ["HTML"]), (False, ["VBox"])):
        shown.clear()
        inspector.inspect(run_dir, static=static)._ipython_display_()
        assert [type(o).__name__ for o in shown] == kinds
    shown.clear()
    ins = inspector.inspect(run_dir, static=None)
    ins.next_mcq.click()  # the snapshot is the first page, wherever the widget stands
    ins._ipython_display_()
    snap = shown[-1].data
    assert snap.startswith("<details>") and "What colour is the shape?" in snap and "data:image/jpeg" in snap
    assert "<details>" not in inspector.inspect(run_dir, static=True).snapshot()


# ----------------------------------------------------------------------------- the exported page


def _export(run_dir: Path, path: Path, **filters) -> str:
    ins = inspector.inspect(run_dir, **filters)
    ins.sft_set.value = "sft_long"
    ins.sft_source.value = "X→O"
    ins.dpo_set.value = "dpo_XO"
    return ins.export(path).read_text()


def test_export_content(run_dir, tmp_path):
    page = _export(run_dir, tmp_path / "page.html", question_type="recognition", transition="X→X")
    title = re.search(r"<title>(.*?)</title>", page).group(1)
    assert title == "LPT inspector · run myrun · type: recognition · transition: X→X"
    assert "<script" not in page and 'src="http' not in page and "<style>" in page
    assert len(re.findall(r'src="data:image/jpeg;base64,[A-Za-z0-9+/=]{40,}"', page)) == 1 + 1 + 1  # MCQ, SFT, DPO
    assert '<span class="right" title="the right option">✔ (B) blue</span>' in page
    assert '<span class="cue">Wait,</span>' in page
    assert 'The <span class="banned">description</span> says green.' in page
    assert 'banned: description' in page and "dropped: banned word" in page
    assert '<span class="masked" title="no loss on these tokens">&lt;think&gt;\nMaybe green.</span>' in page
    assert "CHOSEN-XO" in page and "rule X→O&gt;X" in page
    for other in ("How many shapes?", "m2-s0", "CHOSEN-2"):  # m2 is a counting MCQ: not selected
        assert other not in page


def test_export_from_the_widget_path(run_dir):
    ins = inspector.inspect(run_dir, label="O")
    out = Path(ins.export_path.value)
    assert out.parent == run_dir.resolve() / "inspector" and out.name == "O-X-O.html"
    ins.export_button.click()
    assert out.exists() and "wrote" in ins.export_status.value and "O/X: O" in out.read_text()


def test_export_renders_in_headless_chromium(run_dir, tmp_path, chromium):
    page = tmp_path / "page.html"
    _export(run_dir, page, transition="X→O")
    flags = [chromium, "--headless", "--hide-scrollbars", *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(flags + ["--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "<title>LPT inspector · run myrun · transition: X→O</title>" in dom
    assert '<span class="cue">Wait,</span>' in dom and 'class="masked"' in dom
    shot = tmp_path / "shot.png"
    subprocess.run(flags + ["--window-size=1000,1400", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    with Image.open(shot) as im:
        colours = {c for _, c in im.convert("RGB").getcolors(maxcolors=1 << 20)}
    assert RED in colours  # the inlined image was decoded and drawn
    assert (0xff, 0xe0, 0x82) in colours  # the cue's highlight: the inline CSS applied
