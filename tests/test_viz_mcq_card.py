"""The card model (`lpt_utils.viz.mcq_card`): an MCQ row becomes a card with its right option and the
option an answer named flagged; the HTML and the matplotlib renderer show the same option lines and
marks; long texts wrap inside the card; roles (cue, added thought, banned words, masked prefix) look
the same in both."""

from __future__ import annotations

import html as htmllib
import re
from collections import defaultdict

import matplotlib
import pytest
from PIL import Image

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from lpt_utils.viz import mcq_card
from lpt_utils.viz.mcq_card import ROLES, Segment


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "scene.png"
    Image.new("RGB", (64, 48), (30, 160, 40)).save(path)
    return str(path)


def _mcq(image, **kw):
    row = {"mcq_id": "m1", "image_path": image, "question": "What colour is the shape?",
           "choices": ["red", "blue", "green", "yellow"], "answer": "blue", "answer_letter": "B",
           "question_type": "recognition", "choice_form": "paren", "answer_form": "paren_letter",
           "is_valid": True, "invalid_reason": ""}
    return {**row, **kw}


def _simple(named="A", label="X", thought="Maybe green."):
    return {"mcq_id": "m1", "response_id": "m1-s0", "thought": thought, "raw_text": "", "answer": f"({named})",
            "named_letter": named, "label": label, "num_tokens": 12, "drop_reason": ""}


def _long(added="Looking again, it is blue.", hits=(), drop=""):
    return {"mcq_id": "m1", "simple_id": "m1-s0", "long_id": "m1-s0-l0", "simple_thought": "Maybe green.",
            "separator": " ", "cue": "Wait,", "added_thought": added, "answer": "(B)", "named_letter": "B",
            "transition": "X→O", "banned_hits": list(hits), "drop_reason": drop}


# ----------------------------------------------------------------------------- the model


def test_an_mcq_row_flags_its_right_option(image):
    card = mcq_card.mcq_only_card(_mcq(image))
    assert [o.letter for o in card.options] == ["A", "B", "C", "D"]
    assert card.right_letter == "B" and card.named_letter is None
    right = card.options[1]
    assert (right.mark, right.role, right.line) == ("✔", "right", "✔ (B) blue")
    assert card.options[0].line == "(A) red" and card.options[0].mark == ""
    invalid = mcq_card.mcq_only_card(_mcq(image, answer_letter="", is_valid=False, invalid_reason="duplicate_options"))
    assert invalid.right_letter is None and "the writer's answer: blue" in invalid.note
    assert any(s.role == "drop" and "invalid MCQ: duplicate_options" in s.text for s in invalid.header)


def test_the_named_option_is_flagged_wrong_or_right(image):
    wrong = mcq_card.simple_cot_card(_simple(named="A"), _mcq(image))
    a, b = wrong.options[:2]
    assert (a.named, a.right, a.mark, a.role) == (True, False, "✘", "wrong")
    assert a.line == "✘ (A) red ◀ answered" and b.line == "✔ (B) blue"
    right = mcq_card.simple_cot_card(_simple(named="B", label="O"), _mcq(image))
    assert right.named_letter == right.right_letter == "B"
    assert right.options[1].line == "✔ (B) blue ◀ answered" and right.options[1].role == "right"
    # a benchmark prediction: the scored letter (right_letter) is the right one
    pred = {**_mcq(image, answer_letter="A", right_letter="C"), "model": "sft", "prompt": "think",
            "benchmark": "vstar", "item_id": "7", "category": "attr", "raw_output": "<answer>(D)</answer>",
            "extracted": "(D)", "answered": True, "named_letter": "D", "correct": False,
            "extracted_released": "(D)", "correct_released": False}
    card = mcq_card.prediction_card(pred)
    assert (card.right_letter, card.named_letter) == ("C", "D")
    assert mcq_card.prediction_card({**pred, "answered": False}).named_letter is None


# ----------------------------------------------------------------------------- the two renderers


def _html_option_lines(page: str) -> list[tuple[str, str]]:
    """(text, class) of each option line of the first card in `page`."""
    block = re.search(r'<div class="options">(.*?)</div>', page).group(1)
    out = []
    for part in block.split("<br>"):
        m = re.match(r'<span class="(\w+)"[^>]*>(.*)</span>$', part)
        cls, text = (m.group(1), m.group(2)) if m else ("", part)
        out.append((htmllib.unescape(re.sub(r"<[^>]+>", "", text)), cls))
    return out


def _figure_rows(fig) -> dict[int, list]:
    """The figure's text runs by row (gid "row<i>"), in drawing order."""
    rows = defaultdict(list)
    for ax in fig.axes:
        for t in ax.texts:
            gid = t.get_gid() or ""
            if gid.startswith("row"):
                rows[int(gid[3:])].append(t)
    return rows


def test_html_and_figure_show_the_same_option_lines_and_marks(image):
    card = mcq_card.simple_cot_card(_simple(named="A"), _mcq(image))
    page = mcq_card.html(card)
    assert _html_option_lines(page) == [("✘ (A) red ◀ answered", "wrong"), ("✔ (B) blue", "right"),
                                        ("(C) green", ""), ("(D) yellow", "")]
    fig = mcq_card.figure([card])
    lines = {"".join(t.get_text() for t in ts).strip(): ts for ts in _figure_rows(fig).values()}
    for opt in card.options:
        assert opt.line in lines, (opt.line, list(lines))
        colours = {matplotlib.colors.to_hex(t.get_color()) for t in lines[opt.line] if t.get_text().strip()}
        assert colours == {ROLES[opt.role].colour}, opt
    plt.close(fig)


def test_long_text_wraps_within_the_card(image, tmp_path):
    thought = " ".join(f"word{i}" for i in range(400)) + " " + "x" * 150  # and one word longer than a line
    card = mcq_card.simple_cot_card(_simple(thought=thought), _mcq(image))
    rows = mcq_card.layout(card, width=60, max_lines=None)
    assert all(sum(len(t) for t, _ in r.runs) + r.indent <= 60 for r in rows)
    text = "".join(t for r in rows for t, _ in r.runs if _ == "text")
    assert re.sub(r"\s+", "", thought) in re.sub(r"\s+", "", text)  # nothing lost in the wrapping
    clipped = mcq_card.layout(card, width=60, max_lines=5)
    assert len(clipped) < len(rows) and any(t == " …" for r in clipped for t, _ in r.runs)
    fig = mcq_card.figure([card], width=60, max_lines=None)
    fig.savefig(tmp_path / "card.png", dpi=110)  # draws: every run at its place
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    for ts in _figure_rows(fig).values():
        for t in ts:
            ext = t.get_window_extent(renderer)
            assert box.x0 <= ext.x0 and ext.x1 <= box.x1 and box.y0 <= ext.y0 and ext.y1 <= box.y1, t.get_text()
    plt.close(fig)
    assert thought in htmllib.unescape(mcq_card.html(card))  # HTML leaves the wrapping to the browser


def test_wrap_keeps_roles_and_marks_banned_words():
    lines = mcq_card.wrap([Segment("I think so. "), Segment("Wait,", "cue"), Segment(" "),
                           Segment("The Description says green.", "added", banned=("description",))], width=24)
    runs = [r for line in lines for r in line]
    assert ("Wait,", "cue") in runs and ("Description", "banned") in runs
    assert all(sum(len(t) for t, _ in line) <= 24 for line in lines)
    assert mcq_card.banned_spans("context text", ["text"]) == [("context ", False), ("text", True)]


def test_roles_in_html_cue_added_banned_masked(image):
    long = _long(added="The description says green.", hits=["description"], drop="banned word")
    page = mcq_card.html(mcq_card.long_cot_card(long, _mcq(image)))
    assert '<span class="cue">Wait,</span>' in page
    assert '<span class="added">The <span class="banned">description</span> says green.</span>' in page
    assert "dropped: banned word" in page and '<span class="tag X">X</span>' in page
    sft = {"id": "m1-s0-l0", "image_path": image, "user": "Q?\nA. red", "assistant": "<think> wrong Wait, right",
           "assistant_prefix": "<think> wrong", "source": "X→O"}
    page = mcq_card.html(mcq_card.sft_card(sft))
    assert '<span class="masked" title="no loss on these tokens">&lt;think&gt; wrong</span> Wait, right' in page
    for role in ("cue", "added", "banned", "masked"):  # one stylesheet, from the roles table
        assert f".lpt-card .{role}{{" in mcq_card.CSS and ROLES[role].background in mcq_card.CSS
    fig = mcq_card.figure([mcq_card.sft_card(sft)])
    masked = [t for ts in _figure_rows(fig).values() for t in ts if t.get_text() == "<think> wrong"]
    assert masked and matplotlib.colors.to_hex(masked[0].get_bbox_patch().get_facecolor()) == ROLES["masked"].background
    plt.close(fig)


def test_inspector_card_nests_long_expansions_under_their_simple_cot(image):
    card = mcq_card.inspector_card(_mcq(image), [(_simple(), [_long(), _long(added="Still green.")])])
    assert [s.depth for s in card.sections] == [0, 1, 1]
    page = mcq_card.html(card)
    outer = page.index('<div class="sec is-X">')
    assert outer < page.index('<div class="sec sub is-O">') < page.rindex("</div></div></div>")
    assert page.count("<div") == page.count("</div>")


def test_a_missing_image_is_a_placeholder_in_both(tmp_path):
    card = mcq_card.mcq_only_card(_mcq(str(tmp_path / "gone.png")))
    assert 'class="noimg"' in mcq_card.html(card)
    fig = mcq_card.figure([card])
    assert any("image not found" in t.get_text() for ax in fig.axes for t in ax.texts)
    plt.close(fig)
    assert mcq_card.figure([]) is None


def test_validation_examples_show_the_kept_models_answers(image, capsys, tmp_path):
    import pandas as pd

    from lpt_utils.records import SimpleCoT
    from lpt_utils.training.validation import ValidationResult
    from lpt_utils.viz import train_plots

    cot = SimpleCoT(mcq_id="m1", response_id="m1-val0", image_id="m1", image_path=image, question_type="recognition",
                    raw_text="<think>Blue.</think><answer>(B)</answer>", thought="Blue.", answer="(B)",
                    answer_letter="B", named_letter="B", match="letter", match_released="letter_form",
                    correct_strict=True, correct_released=True, rule="strict", is_correct=True, label="O",
                    response_shape="think_answer", num_tokens=5, finish_reason="stop", kept=True, drop_reason="")
    mcqs = pd.DataFrame([_mcq(image)])
    result = ValidationResult(accuracy=1.0, samples=1, parsed=1, accuracy_by_type={"recognition": 1.0}, rows=[cot])
    [card] = train_plots.validation_examples(result, mcqs, tmp_path / "requests.jsonl")
    assert card.named_letter == card.right_letter == "B" and "'accuracy': 1.0" in capsys.readouterr().out
    assert train_plots.validation_examples(ValidationResult(0.5, 2, 2), mcqs, tmp_path / "r.jsonl") == []
    assert "scored in an earlier run" in capsys.readouterr().out
    assert train_plots.validation_examples(None, None, tmp_path / "r.jsonl") == []
