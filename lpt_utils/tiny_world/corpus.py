"""Warm-up examples that teach the tiny models the pipeline's formats, built from the real prompts.

Every prompt here comes from the pipeline's own prompt builders in `lpt_utils.pipeline.mcq` (one source of
truth): the tiny models learn to answer exactly what the stages will send them.

- `writer_example`: stage 1's writer prompt for a train-split description -> the scene's
  ground-truth MCQs as the tagged numbered list (`mcq.format_tagged_list`).
- `reformat_example`: stage 1's reformat prompt around a writer-style response (tagged, or in a
  looser layout) -> the same questions as the tagged list.
- `student_example`: stage 2's student prompt (image + question + options, in the surface forms
  `mcq.randomise` draws) -> a short thought naming what is seen, `</think>`, and the answer in the
  requested form inside answer tags.
- `long_cot_example`: stage 3's reasoning-model prompt (description, question, options) with the
  assistant turn pre-filled exactly as stage 3 builds it (opening, a simple thought that is right
  or wrong half the time, separator, cue) -> a re-check that quotes the description's sentence
  about what the question asks, the value, `</think>`, (half the time) a summary sentence, and the
  answer in answer tags; some re-checks name the description or use words the banned-word rules
  disagree on (`RECHECK_OPENERS`), as real reasoners do.
- `direct_examples`: the evaluation's direct prompt -> the answer, sometimes without answer tags
  (`DIRECT_FORMS`), as Qwen2.5-VL writes it.
"""

from __future__ import annotations

import random
import re
from typing import Any, Iterator, Sequence

from lpt_utils.benchmarks import BenchItem
from lpt_utils.pipeline import evaluation, long_cot, mcq
from lpt_utils.tiny_world import questions as _q
from lpt_utils.tiny_world.questions import KINDS, LETTERS, RELATIONS, scene_mcqs
from lpt_utils.tiny_world.scenes import (
    CELL_NAMES,
    COLOURS,
    NUMBER_WORDS,
    SHAPES,
    Scene,
    describe,
    iter_split_scenes,
)

# Bump when the examples below change in a way the models should be rebuilt for.
CORPUS_VERSION = "1"
THINK = "<think>"


def train_scenes(n: int, seed: int = 0) -> list[Scene]:
    it = iter_split_scenes("train", seed)
    return [next(it) for _ in range(n)]


# ----------------------------------------------------------------------------- stage 1 (LM)


_ORDER = {w: i for i, w in enumerate(
    list(COLOURS) + list(SHAPES) + list(NUMBER_WORDS) + list(CELL_NAMES.values()) + list(RELATIONS))}


def canonical_order(choices: list[str]) -> list[str]:
    """Options in a fixed order (palette, shapes, numbers, corners, relations; "nothing" last).

    The writer's targets list options this way: a tiny model then writes four distinct options by
    following one memorised sequence, which it does far more reliably than keeping track of what it
    already wrote. Stage 1 shuffles the options anyway before any model answers them.
    """
    def key(c: str) -> tuple[int, int]:
        words = c.split()
        if c == "nothing":
            return (999, 0)
        if len(words) == 3 and words[0] in ("a", "an"):  # "a red circle"
            return (_ORDER[words[1]], _ORDER[words[2]])
        return (_ORDER.get(c, 500), 0)

    return sorted(choices, key=key)


def _mcq_items(scene: Scene, rng: random.Random) -> list[dict[str, Any]]:
    return [{"question": it["question"], "choices": canonical_order(it["choices"]), "answer": it["answer"],
             "type": it["type"]} for it in scene_mcqs(scene, rng)]


def loose_list(items: list[dict[str, Any]], rng: random.Random) -> str:
    """The same questions in one of a few untagged layouts a writer might produce."""
    style = rng.randrange(3)
    blocks = []
    for i, it in enumerate(items, start=1):
        opts = [f"{LETTERS[j]}) {c}" for j, c in enumerate(it["choices"])]
        if style == 0:
            blocks.append(f"{i}. Question: {it['question']}\nOptions: {' '.join(opts)}\n"
                          f"Answer: {it['answer']}\nType: {it['type']}")
        elif style == 1:
            blocks.append(f"{i}. {it['question']}\n" + "\n".join(opts) +
                          f"\nCorrect answer: {it['answer']} ({it['type']})")
        else:
            blocks.append(f"Q{i}: {it['question']} Choices: {'; '.join(it['choices'])}. "
                          f"Answer: {it['answer']}. Reasoning type: {it['type']}.")
    return "\n\n".join(blocks)


def writer_example(scene: Scene, rng: random.Random) -> tuple[list[dict[str, Any]], str]:
    """(prompt messages, completion) for the MCQ writer on this scene's description."""
    return mcq.writer_messages(describe(scene)), mcq.format_tagged_list(_mcq_items(scene, rng))


_RELATION_SENTENCE = re.compile(r"The (\w+ \w+) is (to the left of|to the right of|directly above|directly below) "
                                r"the (\w+ \w+)\.")
_RELATION_ANSWER = {"to the left of": "to the left", "to the right of": "to the right",
                    "directly above": "above", "directly below": "below"}


def aligned_items(scene: Scene, rng: random.Random) -> list[dict[str, Any]]:
    """Ground-truth MCQs a tiny writer can copy from the description: each answer is the *first* word
    of its kind in the description (the first corner, colour, shape or number named), which a small
    attention model finds far more reliably than "the second object" or a name matched across
    sentences (measured: questions about later objects or relation sentences agreed with the scene
    0-16% of the time).

    The first object the description names gets a colour, a shape and an occupant question, each
    asked by its corner, and a position question by its name; the total count is the opening
    sentence's number. Recognition, counting and spatial reasoning are all present. Same templates,
    answer sets and options as `scene_mcqs`, in the same kind order.
    """
    text = describe(scene)
    o = min(scene.objects, key=lambda p: text.find(f"{p.cell} corner"))
    n = len(scene.objects)
    distractors = [_q._thing(rng.choice([k for k in COLOURS if k != o.colour]), o.shape),
                   _q._thing(o.colour, rng.choice([s for s in SHAPES if s != o.shape])), "nothing"]
    return [
        _q._item("colour", f"What colour is the shape in the {o.cell} corner?", o.colour,
                 rng.sample([c for c in COLOURS if c != o.colour], 3), rng, target=o.cell),
        _q._item("shape", f"What shape is in the {o.cell} corner?", o.shape, [s for s in SHAPES if s != o.shape],
                 rng, target=o.cell),
        _q._item("occupant", f"What is in the {o.cell} corner?", _q._thing(o.colour, o.shape), distractors, rng,
                 target=o.cell),
        _q._item("count", "How many shapes are there in total?", NUMBER_WORDS[n],
                 rng.sample([w for i, w in enumerate(NUMBER_WORDS) if i != n], 3), rng),
        _q._item("position", f"Where is the {o.name}?", o.cell, [c for c in CELL_NAMES.values() if c != o.cell],
                 rng, target=o.cell),
    ]


def aligned_mcqs(scene: Scene, rng: random.Random) -> list[dict[str, Any]]:
    """`aligned_items` as the writer writes them: question, options in `canonical_order`, answer, type.
    (Keying option A instead, tried together with 4 attention heads, gave more duplicate options:
    111 of 215 items against 30 of 216; not kept.)"""
    return [{"question": it["question"], "choices": canonical_order(it["choices"]), "answer": it["answer"],
             "type": it["type"]} for it in aligned_items(scene, rng)]


def aligned_writer_example(scene: Scene, rng: random.Random) -> tuple[list[dict[str, Any]], str]:
    """`writer_example` with `aligned_mcqs` as the target (the "mcq_writer_aligned" warm-up task)."""
    return mcq.writer_messages(describe(scene)), mcq.format_tagged_list(aligned_mcqs(scene, rng))


def reformat_example(scene: Scene, rng: random.Random) -> tuple[list[dict[str, Any]], str]:
    """(prompt messages, completion) for the reformat pass: tagged or loose list -> tagged list."""
    items = _mcq_items(scene, rng)
    response = mcq.format_tagged_list(items) if rng.random() < 0.4 else loose_list(items, rng)
    return mcq.reformat_messages(response), mcq.format_tagged_list(items)


# ----------------------------------------------------------------------------- stage 2 (VLM)


def inventory(scene: Scene) -> str:
    """What each corner holds, in a fixed reading order: "top left: a red circle; top right: nothing; ..."."""
    parts = []
    for (r, c), cell in CELL_NAMES.items():
        o = scene.object_at(r, c)
        parts.append(f"{cell}: {_q._thing(o.colour, o.shape) if o else 'nothing'}")
    return "; ".join(parts)


def thought(item: dict[str, Any], scene: Scene) -> str:
    """A short first-person thought: what each corner holds, what answers the question, the value.

    It opens with a scan of the four corners in a fixed order (top left, top right, bottom left,
    bottom right), so each phrase depends on one region of the picture: a tiny student learns to read
    a corner from the image tokens under it, and the answer is then read back from its own words
    (the corner the question points to, the count, the relation).
    """
    kind, ans, target = item["kind"], item["answer"], item.get("target")
    if kind == "colour":
        second = f"The one in the {target} corner is {ans}."
    elif kind == "shape":
        second = f"The one in the {target} corner is a {ans}."
    elif kind == "occupant":
        second = f"In the {target} corner I see {ans}."
    elif kind == "count":
        second = f"I count {ans}."
    elif kind == "position":
        second = f"It is in the {ans} corner."
    elif kind == "relation":
        rel = {"to the left": "to the left of", "to the right": "to the right of"}.get(ans, ans)
        second = f"It is {rel} the other one."
    else:
        raise ValueError(kind)
    return f"I see {inventory(scene)}. {second} So the answer is {ans}."


def student_row(scene: Scene, item: dict[str, Any], index: int, seed: int = 0,
                image_path: str = "") -> dict[str, Any]:
    """The MCQ as a stage-1 row (options shuffled and surface forms drawn as `mcq.randomise` does)."""
    mcq_id = f"{scene.id}-q{index:02d}"
    choices, right, c_form, a_form = mcq.randomise(item["choices"], item["choices"].index(item["answer"]),
                                                    seed, mcq_id)
    return {"mcq_id": mcq_id, "image_id": scene.id, "image_path": image_path, "question": item["question"],
            "choices": choices, "answer": item["answer"], "answer_letter": LETTERS[right],
            "question_type": item["type"], "choice_form": c_form, "answer_form": a_form,
            "kind": item["kind"]}


def student_completion(row: dict[str, Any], item: dict[str, Any], scene: Scene) -> str:
    """What follows the forced `<think>`: thought, `</think>`, the answer in the requested form."""
    return f" {thought(item, scene)} </think> <answer> {mcq.answer_in_form(row)} </answer>"


def student_examples(scene: Scene, seed: int = 0, image_path: str = "",
                     kinds: tuple[str, ...] = KINDS) -> Iterator[tuple[dict, list, str]]:
    """(row, prompt messages, completion) for every ground-truth MCQ of the scene."""
    rng = random.Random(f"tiny-world-student:{seed}:{scene.id}")
    for i, item in enumerate(scene_mcqs(scene, rng, kinds)):
        row = student_row(scene, item, i, seed, image_path or f"{scene.id}.png")
        yield row, mcq.student_messages(row, row["image_path"]), student_completion(row, item, scene)


# ----------------------------------------------------------------------------- stage 3 (LM)


def _sentences(text: str) -> list[str]:
    return [t.strip() for t in re.split(r"(?<=\.)\s+", text) if t.strip()]


def evidence_sentence(scene: Scene, item: dict[str, Any], text: str) -> str:
    """The description's sentence that settles `item`: the one naming its corner (colour, shape,
    occupant, position), the counting or opening sentence (count), the relation sentence naming
    both objects (relation)."""
    sents = _sentences(text)
    kind = item["kind"]
    if item.get("target"):
        for t in sents[1:]:
            if item["target"] in t:
                return t
    if kind == "count":
        if "in total" in item["question"]:
            return sents[0]  # the opening says how many shapes there are
        for t in sents:
            if t.startswith(("In total", "Counting by shape")):
                return t
        return sents[0]
    if kind == "relation":
        q = item["question"]
        for t in sents:
            m = _RELATION_SENTENCE.search(t)
            if m and m.group(1) in q and m.group(3) in q:
                return t
    return sents[0]


def long_cot_case(scene: Scene, rng: random.Random, others: list[Scene] | None, cues: Sequence[str],
                  separators: Sequence[str]) -> dict[str, Any]:
    """One stage-3 warm-up case: `messages`, `prefix`, `completion` (see `long_cot_example`), the MCQ
    as a stage-1 `row`, its `kind`, and whether the simple thought in the prefix is right
    (`simple_right`), which is what the reasoner check scores X->O and O->X on."""
    items = aligned_items(scene, rng) if rng.random() < ALIGNED_SHARE else scene_mcqs(scene, rng)
    index = rng.randrange(len(items))
    item = items[index]
    row = student_row(scene, item, index, seed=rng.randrange(1 << 30))
    right = rng.random() < 0.5
    if right:
        simple = thought(item, scene)
    else:  # a wrong simple thought: a wrong value, sometimes about another picture too
        wrong = {**item, "answer": rng.choice([c for c in item["choices"] if c != item["answer"]])}
        other = rng.choice(others) if others and rng.random() < 0.5 else scene
        simple = thought(wrong, other)
    lines = mcq.choice_lines(row)
    cue, sep = rng.choice(list(cues)), rng.choice(list(separators))
    text = describe(scene)
    messages = [{"role": "user", "content": long_cot.user_message(text, row["question"], lines)}]
    prefix = long_cot.assistant_prefix(row["question"], lines, simple, cue, sep, THINK)
    completion = reasoner_completion(evidence_sentence(scene, item, text), item["answer"], row["answer_letter"], rng)
    return {"messages": messages, "prefix": prefix, "completion": completion, "row": row, "kind": item["kind"],
            "simple_right": right}


def long_cot_example(scene: Scene, rng: random.Random, others: list[Scene] | None, cues: Sequence[str],
                     separators: Sequence[str]) -> tuple[list[dict[str, Any]], str, str]:
    """(prompt messages, assistant prefix, completion) for stage 3 on one of the scene's MCQs, the
    prefix ending in one of `cues` (the tiny profile's); half the simple thoughts are wrong (a wrong
    value, half of those about a picture from `others`). Most questions are the writer's kind
    (`aligned_items`: what stage 3 meets in a run), the rest the benchmark's (`scene_mcqs`)."""
    case = long_cot_case(scene, rng, others, cues, separators)
    return case["messages"], case["prefix"], case["completion"]


ALIGNED_SHARE = 0.9  # stage-3 warm-up questions of the writer's kind, what a run meets (the rest: the benchmark's)

# How the tiny reasoner opens its re-check, with the share of continuations that open so. Real
# reasoners often talk about the description they were told not to name (the released code's filter
# dropped about half its continuations); the last three exercise where the banned-word rules differ:
# only the listed-forms rule catches "Mentioning", only the released substring test drops "texture".
RECHECK_OPENERS = (
    ("Looking at it again:", 0.50),
    ("The description says:", 0.16),  # banned under every rule ("description", "says")
    ("As mentioned,", 0.16),  # "mentioned": every rule
    ("Mentioning it once more:", 0.08),  # "Mentioning": only whole_word_forms (the released test is case-sensitive)
    ("Checking the texture again:", 0.10),  # "texture" holds "text": only the released substring test
)
SUMMARY_SHARE = 0.6  # continuations with a summary between </think> and <answer>, as R1 distills write


def reasoner_completion(evidence: str, answer: str, letter: str, rng: random.Random) -> str:
    """What the tiny reasoner writes after the cue: a re-check quoting the description's sentence
    that settles the question, the value, `</think>`, then (half the time) a summary sentence before
    the answer block, as R1 distills do, and the answer as "(B) value", "(B)" or "B"."""
    opener = rng.choices([o for o, _ in RECHECK_OPENERS], [w for _, w in RECHECK_OPENERS])[0]
    tagged = rng.choices([f"({letter}) {answer}", f"({letter})", letter], [0.5, 0.3, 0.2])[0]
    between = f"\n\nFinal check: it is {answer}, option ({letter}).\n\n" if rng.random() < SUMMARY_SHARE else " "
    if opener.endswith(","):
        evidence = evidence[:1].lower() + evidence[1:]
    return f" {opener} {evidence} So the answer is {answer}. </think>{between}<answer> {tagged} </answer>"


# ----------------------------------------------------------------------------- evaluation (VLM)

# How the tiny student answers the evaluation's direct prompt ("the letter in parentheses inside
# answer tags"): mostly as asked, but, as Qwen2.5-VL does, sometimes without the tags, so the
# extraction's fallbacks run on every tiny run. "The answer is (B)." is read by neither rule.
DIRECT_FORMS = (("<answer> ({letter}) </answer>", 0.5), ("({letter})", 0.2), ("({letter}) {answer}", 0.15),
                ("The answer is ({letter}).", 0.1), ("{letter}", 0.05))


def _bench_item(scene: Scene, i: int, item: dict[str, Any], rng: random.Random,
                image_path: str) -> tuple[BenchItem, int]:
    """The MCQ as a benchmark shows it: the right option at a drawn position k among the distractors."""
    k = rng.randrange(4)
    distractors = [c for c in item["choices"] if c != item["answer"]]
    choices = distractors[:k] + [item["answer"]] + distractors[k:]
    return BenchItem("synthetic", f"{scene.id}-{i}", item["question"], choices, LETTERS[k],
                     image_path=image_path or f"{scene.id}.png"), k


def direct_examples(scene: Scene, seed: int = 0, image_path: str = "") -> Iterator[tuple[dict, list, str]]:
    """(row, prompt messages, completion) for the evaluation's direct prompt on each of the scene's
    ground-truth MCQs (options in a fixed order, "(A) text" lines, as the benchmarks show them)."""
    rng = random.Random(f"tiny-world-direct:{seed}:{scene.id}")
    for i, item in enumerate(scene_mcqs(scene, rng)):
        bench, k = _bench_item(scene, i, item, rng, image_path)
        form = rng.choices([f for f, _ in DIRECT_FORMS], [w for _, w in DIRECT_FORMS])[0]
        yield ({"kind": item["kind"], "answer_letter": LETTERS[k]}, evaluation.messages(bench, "direct"),
               form.format(letter=LETTERS[k], answer=item["answer"]))


def think_examples(scene: Scene, seed: int = 0, image_path: str = "") -> Iterator[tuple[dict, list, str]]:
    """(row, prompt messages, completion) for the evaluation's think prompt (after its forced `<think>`)
    on each of the scene's ground-truth MCQs: the same thought as stage 2's, then the option's text
    inside answer tags. The prompt asks for the letter, but a 2-layer student maps the value it named
    to the right letter at chance (consistency of letter answers with its own "So the answer is ..."
    was 45-55%, against 80-92% for option text, measured), so it answers as Qwen2.5-VL sometimes does,
    with the text, which both answer rules read."""
    rng = random.Random(f"tiny-world-think:{seed}:{scene.id}")
    for i, item in enumerate(scene_mcqs(scene, rng)):
        bench, k = _bench_item(scene, i, item, rng, image_path)
        yield ({"kind": item["kind"], "answer_letter": LETTERS[k], "choices": bench.choices},
               evaluation.messages(bench, "think"),
               f" {thought(item, scene)} </think> <answer> {item['answer']} </answer>")


# ----------------------------------------------------------------------------- tokenizer text


def _message_text(messages: list[dict[str, Any]]) -> str:
    parts = []
    for m in messages:
        c = m["content"]
        parts.append(c if isinstance(c, str) else " ".join(p.get("text", "") for p in c))
    return "\n".join(parts)


def tokenizer_texts(n_scenes: int = 1500, seed: int = 0) -> Iterator[str]:
    """Text the tokenizer learns from: descriptions, prompts, MCQ lists and thoughts of the world."""
    rng = random.Random(f"tiny-world-tokenizer:{seed}")
    for k, scene in enumerate(train_scenes(n_scenes, seed)):
        msgs, completion = writer_example(scene, rng)
        yield _message_text(msgs) if k < 50 else describe(scene)
        yield completion
        if k < 300:
            msgs, completion = reformat_example(scene, rng)
            yield _message_text(msgs)
            for row, msgs, completion in student_examples(scene, seed):
                yield _message_text(msgs)
                yield completion
    for shape in SHAPES:
        yield f"{shape} {shape}s"
    yield " ".join(CELL_NAMES.values())
