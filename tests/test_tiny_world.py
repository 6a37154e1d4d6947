"""The tiny world: scenes, descriptions, questions, benchmark, tokenizer, model recipes and caching.

Fast (well under a minute): the model tests build throwaway models from a cheap recipe in a
temporary folder; the real models come from the session fixtures in conftest.py.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import replace

import pytest

from lpt_utils.pipeline import mcq
from lpt_utils.tiny_world import corpus
from lpt_utils.tiny_world.questions import (
    KINDS,
    LETTERS,
    grade_mcq,
    make_benchmark,
    scene_mcqs,
    template_kind,
)
from lpt_utils.tiny_world.scenes import (
    CELL_NAMES,
    COLOURS,
    GRID,
    SHAPES,
    Scene,
    describe,
    load_scene_set,
    make_scene_set,
    render,
    sample_scene,
    signature_split,
)
from lpt_utils.tiny_world.tokenizer import (
    ADDED_TOKENS,
    CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    build_tokenizer,
    render_chat,
)

# ----------------------------------------------------------------------------- scenes


def test_scene_is_a_function_of_its_seed():
    assert sample_scene(123) == sample_scene(123)
    assert describe(sample_scene(123)) == describe(sample_scene(123))
    assert len({sample_scene(s).signature() for s in range(50)}) > 40
    for s in range(200):
        scene = sample_scene(s)
        assert 1 <= len(scene.objects) <= GRID * GRID
        assert len({(o.row, o.col) for o in scene.objects}) == len(scene.objects)  # one per cell


def test_scene_round_trips_through_json():
    scene = sample_scene(7)
    assert Scene.from_dict(json.loads(json.dumps(scene.to_dict()))) == scene


@pytest.mark.parametrize("size", [224, 112, 300])
def test_render_size_and_colours(size):
    scene = sample_scene(3)
    img = render(scene, size)
    assert img.size == (size, size) and img.mode == "RGB"
    cell = size / GRID
    for o in scene.objects:  # the centre of each shape has the shape's colour
        x, y = int((o.col + 0.5 + o.dx) * cell), int((o.row + 0.5 + o.dy) * cell)
        assert img.getpixel((x, y)) == COLOURS[o.colour]


def test_description_names_every_object_and_its_corner():
    for s in range(300):
        scene = sample_scene(s)
        text = describe(scene)
        for o in scene.objects:
            assert f"{o.size} {o.colour} {o.shape}" in text, (text, o)
            assert o.cell in text
        assert text.count(".") >= 2  # several sentences


def test_descriptions_vary_with_the_seed():
    openings = {describe(sample_scene(s)).split(".")[0].split()[0] for s in range(60)}
    assert len(openings) >= 2


def test_scene_set_is_docci_shaped_and_splits_are_disjoint(tmp_path):
    train = make_scene_set(tmp_path / "train", 150, "train", seed=0)
    heldout = make_scene_set(tmp_path / "heldout", 60, "heldout", seed=0)
    sigs = {}
    for split, folder in (("train", train), ("heldout", heldout)):
        rows = load_scene_set(folder)
        assert len(rows) == (150 if split == "train" else 60)
        for row, scene in rows:
            assert set(row) == {"example_id", "split", "image_file", "description", "scene"}
            assert row["split"] == split and row["example_id"] == scene.id
            assert (folder / "images" / row["image_file"]).is_file()
            assert signature_split(scene.signature()) == split
        sigs[split] = {scene.signature() for _, scene in rows}
        assert len(sigs[split]) == len(rows)  # no repeated scene within a split
    assert not sigs["train"] & sigs["heldout"]
    # a different seed draws other scenes, still on the right side of the partition
    other = {s.signature() for _, s in load_scene_set(make_scene_set(tmp_path / "t2", 40, "train", seed=1))}
    assert other != sigs["train"] and not other & sigs["heldout"]


def test_scene_set_loads_through_the_docci_loader(tmp_path):
    from lpt_utils.pipeline.captions import load_docci

    folder = make_scene_set(tmp_path / "s", 5, "train", seed=0)
    records, _ = load_docci(folder, split="train")
    assert len(records) == 5


# ----------------------------------------------------------------------------- questions


def _many_mcqs(n=3000):
    out = []
    for s in range(n):
        out += scene_mcqs(sample_scene(s), random.Random(s))
    return out


def test_mcqs_are_valid():
    items = _many_mcqs(800)
    assert {it["kind"] for it in items} == set(KINDS)
    for it in items:
        assert len(it["choices"]) == 4 and len(set(it["choices"])) == 4
        assert it["answer"] in it["choices"]
        assert it["category"] in ("direct_attributes", "relative_position")
        assert it["type"] in mcq.KNOWN_TYPES
        # the parser of stage 1 reads them back as valid
        parsed = mcq.parse_tagged_list(mcq.format_tagged_list([it]))
        assert len(parsed) == 1 and mcq.validity(parsed[0]) == ""


def test_mcq_answers_are_balanced():
    items = _many_mcqs()
    for kind in KINDS:
        answers = Counter(it["answer"] for it in items if it["kind"] == kind)
        n_values = {"colour": len(COLOURS), "shape": len(SHAPES), "count": 5, "position": 4, "relation": 4}
        top_share = answers.most_common(1)[0][1] / sum(answers.values())
        if kind == "occupant":  # "nothing" against many object names
            assert top_share < 0.3, answers.most_common(3)
        else:
            assert top_share < 1.3 / n_values[kind], (kind, answers)
    # the right option's position in the shuffled options is uniform
    positions = Counter(it["choices"].index(it["answer"]) for it in items)
    assert max(positions.values()) / len(items) < 0.27


def test_mcq_answers_agree_with_the_scene():
    for s in range(200):
        scene = sample_scene(s)
        for it in scene_mcqs(scene, random.Random(s)):
            if it["kind"] == "colour" and "corner" in it["question"]:
                o = next(o for o in scene.objects if o.cell == it["target"])
                assert o.colour == it["answer"]
            if it["kind"] == "position":
                assert it["answer"] in CELL_NAMES.values() and it["answer"] == it["target"]


def test_grade_mcq_against_the_scene_graph():
    for s in range(300):
        scene = sample_scene(s)
        for it in scene_mcqs(scene, random.Random(s)):
            assert template_kind(it["question"]) == it["kind"]
            assert grade_mcq(scene, it["question"], it["answer"]) is True, it
            wrong = next(c for c in it["choices"] if c != it["answer"])
            assert grade_mcq(scene, it["question"], wrong) is False, it
    scene = Scene.from_dict({**sample_scene(1).to_dict(), "objects": [
        {"shape": "circle", "colour": "red", "size": "small", "row": 0, "col": 0, "dx": 0.0, "dy": 0.0}]})
    assert grade_mcq(scene, "What colour is the circle?", "red") is True
    assert grade_mcq(scene, "What colour is the star?", "red") is False  # no star in the scene
    assert grade_mcq(scene, "How many shapes are there in total?", "one") is True
    assert grade_mcq(scene, "What is in the bottom right corner?", "nothing") is True
    assert grade_mcq(scene, "Why is the sky blue?", "red") is None
    assert template_kind("Why is the sky blue?") is None


def test_aligned_writer_targets_are_right_and_follow_the_description():
    for s in range(300):
        scene = sample_scene(s)
        messages, target = corpus.aligned_writer_example(scene, random.Random(s))
        items = mcq.parse_tagged_list(target)
        assert len(items) >= 4
        for it in items:
            assert mcq.validity(it) == "" and grade_mcq(scene, it.question, it.answer) is True, (target, it)
        first = min(scene.objects, key=lambda o: describe(scene).find(f"{o.cell} corner"))
        assert items[0].answer == first.colour  # the colour question is about the first object named
        # copyable: one sentence of the description holds what the question names and its answer
        sentences = re.split(r"(?<=\.) ", describe(scene))
        for it in items:
            named = re.search(r"the (?:shape in the )?(.+?)(?: corner)?(?: relative to the (.+))?\?$", it.question)
            words = [w for w in (named.group(1), named.group(2)) if w] if named else []
            answer = {"to the left": "to the left of", "to the right": "to the right of"}.get(it.answer, it.answer)
            answer = re.sub(r"^(a|an) ", "", answer)
            if it.question == "How many shapes are there in total?":
                words = ["flat"]
            assert any(all(w in t for w in words) and answer in t for t in sentences), (it.question, it.answer)


def test_student_thoughts_scan_the_corners_and_every_prompt_gets_its_answer_form():
    scene = Scene.from_dict({**sample_scene(1).to_dict(), "objects": [
        {"shape": "star", "colour": "orange", "size": "small", "row": 1, "col": 0, "dx": 0.0, "dy": 0.0}]})
    item = next(it for it in scene_mcqs(scene, random.Random(0)) if it["kind"] == "colour")
    assert corpus.thought(item, scene) == (
        "I see top left: nothing; top right: nothing; bottom left: an orange star; bottom right: nothing. "
        "The one in the bottom left corner is orange. So the answer is orange.")
    for (row, messages, completion) in corpus.think_examples(scene):
        text = messages[1]["content"][1]["text"]
        right = re.search(rf"\({row['answer_letter']}\) (.+)", text).group(1)
        assert "first thinks" in messages[0]["content"] and completion.endswith(f"</think> <answer> {right} </answer>")


def test_benchmark_file_is_vstar_shaped(tmp_path):
    path = make_benchmark(tmp_path / "bench", n_scenes=25, seed=0)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) > 25
    for r in rows:
        assert {"question_id", "image", "text", "label", "category", "choices", "answer"} <= set(r)
        assert (path.parent / r["image"]).is_file()
        assert r["category"] in ("direct_attributes", "relative_position")
        assert r["choices"][LETTERS.index(r["label"])] == r["answer"]
        lines = r["text"].splitlines()
        assert lines[0] == r["question"]
        assert lines[1:5] == [f"({LETTERS[i]}) {c}" for i, c in enumerate(r["choices"])]
    assert len({r["question_id"] for r in rows}) == len(rows)
    labels = Counter(r["label"] for r in rows)
    assert max(labels.values()) - min(labels.values()) <= 1  # letters cycle A-D
    # the benchmark's scenes are held out
    for _, scene in load_scene_set(path.parent):
        assert signature_split(scene.signature()) == "heldout"


# ----------------------------------------------------------------------------- tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(corpus.tokenizer_texts(200), vocab_size=3000)


def test_tokenizer_special_and_added_tokens(tok):
    for t in SPECIAL_TOKENS + ADDED_TOKENS:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids[0]) == t
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    text = "<think> I see red. </think> <answer> (B) </answer><|im_end|>"
    decoded = tok.decode(tok(text, add_special_tokens=False)["input_ids"], skip_special_tokens=True)
    assert decoded == "<think> I see red. </think> <answer> (B) </answer>"  # think/answer survive


def test_tokenizer_world_words_are_single_tokens(tok):
    words = list(COLOURS) + list(SHAPES) + [s + "s" for s in SHAPES] + ["top", "bottom", "left", "right",
                                                                      "corner", "nothing", "zero", "four"]
    for w in words:
        assert len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1, w


def test_tokenizer_round_trips_any_text(tok):
    text = "Ünïcode — 漢字 and emoji 🙂, tabs\tand\nnewlines  double  spaces"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_chat_template_matches_the_qwen_layout(tok):
    assert tok.chat_template == CHAT_TEMPLATE
    convs = [
        [{"role": "user", "content": "hi"}],
        [{"role": "system", "content": "S"},
         {"role": "user", "content": [{"type": "image", "image": "x.png"}, {"type": "text", "text": "Q?\nA"}]},
         {"role": "assistant", "content": "<think> t </think> <answer> a </answer>"}],
    ]
    for msgs in convs:
        for gen in (False, True):
            assert tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen) == render_chat(msgs, gen)
    text = tok.apply_chat_template(convs[1][:2], tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|image_pad|><|vision_end|>Q?\nA<|im_end|>\n<|im_start|>assistant\n")
    assert render_chat(convs[0]).startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    # a pre-filled assistant turn is continued, not closed
    cont = tok.apply_chat_template(convs[1][:2] + [{"role": "assistant", "content": "<think>"}], tokenize=False,
                                   continue_final_message=True)
    assert cont.endswith("<|im_start|>assistant\n<think>")


# ----------------------------------------------------------------------------- warm-up corpus


def test_student_examples_use_the_stage2_prompt_and_parse():
    from lpt_utils.pipeline.verify import verify
    from lpt_utils.tiny_world.check import parse_student

    for scene in corpus.train_scenes(30):
        for row, msgs, completion in corpus.student_examples(scene):
            assert msgs == mcq.student_messages(row, row["image_path"])
            thought, answer = parse_student(completion)
            assert row["answer"] in thought
            assert verify(answer, row["choices"], row["answer_letter"]).correct
            wrong = LETTERS[(LETTERS.index(row["answer_letter"]) + 1) % 4]
            assert not verify(mcq.answer_in_form(row, wrong), row["choices"], row["answer_letter"]).correct


def test_writer_targets_parse_into_valid_mcqs():
    rng = random.Random(0)
    for scene in corpus.train_scenes(30):
        msgs, target = corpus.writer_example(scene, rng)
        assert msgs == mcq.writer_messages(describe(scene))
        items = mcq.parse_tagged_list(target)
        assert items and all(mcq.validity(it) == "" for it in items)
        msgs, target = corpus.reformat_example(scene, rng)
        assert all(mcq.validity(it) == "" for it in mcq.parse_tagged_list(target))


# ----------------------------------------------------------------------------- recipes and caching


def test_recipe_hash_follows_every_field():
    from lpt_utils.tiny_world.models import RECIPES, recipe_hash

    base = RECIPES["vlm"]
    assert recipe_hash(base) == recipe_hash(replace(base))
    changed = [replace(base, lr=base.lr * 2), replace(base, steps=base.steps + 1), replace(base, seed=1),
               replace(base, corpus_version="x"), replace(base, hidden_size=64), replace(base, kinds=("colour",))]
    hashes = {recipe_hash(r) for r in changed}
    assert len(hashes) == len(changed) and recipe_hash(base) not in hashes
    assert recipe_hash(RECIPES["lm"]) != recipe_hash(base)


def test_patchify_matches_the_qwen_image_processor():
    import numpy as np

    from lpt_utils.tiny_world.models import make_processor, patchify

    tok = build_tokenizer(["a b c"] * 5)
    proc = make_processor(tok, 224)
    img = render(sample_scene(11))
    out = proc.image_processor([img], return_tensors="np")
    ours, grid = patchify(img)
    assert tuple(out["image_grid_thw"][0]) == grid
    assert np.abs(out["pixel_values"] - ours).max() < 1e-5


CHEAP = dict(tokenizer_scenes=40, train_scenes=12, steps=2, batch_size=2, warmup_steps=1)


@pytest.mark.parametrize("name", ["lm", "vlm"])
def test_ensure_model_builds_once_and_loads(tmp_path, monkeypatch, name):
    import torch
    from transformers import AutoProcessor, AutoTokenizer

    from lpt_utils.tiny_world import models

    recipe = replace(models.RECIPES[name], **CHEAP, **({"probe_steps": 2, "probe_batch": 2} if name == "vlm" else {}))
    path = models.ensure_model(name, tmp_path, recipe=recipe, progress=False)
    assert path.name == f"{name}-{models.recipe_hash(recipe)}"
    assert (path / "recipe_hash.txt").read_text().strip() == models.recipe_hash(recipe)
    assert json.loads((path / "recipe.json").read_text())["steps"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left

    # a second call finds it and builds nothing
    monkeypatch.setattr(models, "_build_lm", lambda *a, **k: pytest.fail("rebuilt"))
    monkeypatch.setattr(models, "_build_vlm", lambda *a, **k: pytest.fail("rebuilt"))
    assert models.ensure_model(name, tmp_path, recipe=recipe) == path
    # a changed recipe gets its own folder
    assert models.recipe_hash(replace(recipe, lr=1e-4)) != models.recipe_hash(recipe)

    tok = AutoTokenizer.from_pretrained(path)
    assert tok.eos_token == "<|im_end|>" and tok.chat_template == CHAT_TEMPLATE
    msgs = [{"role": "user", "content": "Picture description:\nA red circle."}]
    if name == "lm":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(path)
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    else:
        from transformers import Qwen2_5_VLForConditionalGeneration

        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path)
        proc = AutoProcessor.from_pretrained(path)
        row = corpus.student_row(sample_scene(1), scene_mcqs(sample_scene(1), random.Random(0))[0], 0)
        text = proc.apply_chat_template(mcq.student_messages(row, "x.png"), add_generation_prompt=True,
                                        tokenize=False) + "<think>"
        ids = proc(text=[text], images=[render(sample_scene(1))], return_tensors="pt")
        assert int((ids["input_ids"] == tok.convert_tokens_to_ids("<|image_pad|>")).sum()) == 64
        out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert isinstance(out, torch.Tensor)


def test_both_models_share_one_tokenizer(tmp_path):
    from lpt_utils.tiny_world import models

    a = models.ensure_tokenizer(tmp_path, replace(models.RECIPES["lm"], tokenizer_scenes=40))
    b = models.ensure_tokenizer(tmp_path, replace(models.RECIPES["vlm"], tokenizer_scenes=40))
    assert a == b


def test_the_synthetic_source_grades_mcqs_against_its_scenes(tmp_path):
    from lpt_utils.tiny_world.plugin import grade_mcqs

    folder = make_scene_set(tmp_path / "scenes_train", n=6, split="train", seed=3)
    rows = []
    for row, scene in load_scene_set(folder):
        for q in scene_mcqs(scene, random.Random(0)):
            right = q["answer"]
            wrong = next(c for c in q["choices"] if c != right)
            rows += [{"image_id": row["example_id"], "question": q["question"], "answer": right, "expect": True,
                      "question_type": q["kind"]},
                     {"image_id": row["example_id"], "question": q["question"], "answer": wrong, "expect": False,
                      "question_type": q["kind"]}]
    rows.append({"image_id": "not-a-scene", "question": rows[0]["question"], "answer": "red", "expect": None,
                 "question_type": "x"})
    rows.append({"image_id": rows[0]["image_id"], "question": "Why is the sky blue?", "answer": "red", "expect": None,
                 "question_type": "x"})
    verdicts = grade_mcqs(tmp_path, rows)
    assert verdicts == [r["expect"] for r in rows]
    table = {r["question_type"]: r for r in mcq.ground_truth_agreement(rows, verdicts)}
    assert table["all"]["mcqs"] == len(rows) and table["all"]["graded"] == len(rows) - 2
    assert table["all"]["share"] == pytest.approx(0.5, abs=0.01)
    assert table["x"]["graded"] == 0 and table["x"]["share"] is None
    with pytest.raises(ValueError, match="verdicts for"):
        mcq.ground_truth_agreement(rows, verdicts[:-1])


def test_each_corner_has_its_own_shade_and_the_probe_masks_only_objects():
    """A token tells its corner from its own pixels (tiles shaded in reading order), and the vision
    probe's targets mark the object's pixels, not the darker tiles."""
    import numpy as np

    from lpt_utils.tiny_world.models import probe_targets

    blank = Scene(id="b", seed=0, objects=(), background="white")
    img = np.asarray(render(blank), dtype=float)
    tiles = [img[r * 112:(r + 1) * 112, c * 112:(c + 1) * 112].mean() for r in (0, 1) for c in (0, 1)]
    assert tiles == sorted(tiles, reverse=True) and len(set(tiles)) == 4
    t = probe_targets(blank)
    assert not t["token_colour"].any() and not t["token_shape"].any()
    assert sorted(Counter(t["token_cell"].tolist()).items()) == [(k, 16) for k in range(4)]
    one = Scene.from_dict({**blank.to_dict(), "objects": [
        {"shape": "square", "colour": "red", "size": "large", "row": 1, "col": 1, "dx": 0.0, "dy": 0.0}]})
    t = probe_targets(one)
    covered = t["token_colour"].reshape(8, 8)
    assert covered[:4].sum() == 0 and covered[:, :4].sum() == 0  # nothing outside the bottom right corner
    assert (covered[5:7, 5:7] == 1).all()  # red is colour 1: the square's middle, on the darkest tile
