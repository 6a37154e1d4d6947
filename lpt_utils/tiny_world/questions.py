"""Ground-truth multiple-choice questions about a synthetic scene, read off its scene graph.

Two uses: the warm-up corpus that shows the tiny MCQ-writer and student models what to write, and
a held-out synthetic benchmark shaped like V* Bench (`make_benchmark`).

Question kinds, with the paper's reasoning-type tag and a V*-style benchmark category:

| kind      | example                                         | type                        | category           |
|-----------|-------------------------------------------------|-----------------------------|--------------------|
| colour    | What colour is the circle?                      | recognition                 | direct_attributes  |
| shape     | What shape is the red object?                   | recognition                 | direct_attributes  |
| occupant  | What is in the top left corner?                 | recognition                 | direct_attributes  |
| count     | How many stars are there?                       | counting and quantification | direct_attributes  |
| position  | Where is the blue square?                       | spatial and relational      | relative_position  |
| relation  | Where is the red circle relative to the ...?    | spatial and relational      | relative_position  |

Answers are balanced: colours, shapes and corners are drawn uniformly by the scene sampler, the
relation question picks which of the two objects it asks about at random, and the count question
draws its answer value with weights that undo how much more often small counts are on offer (an
unbalanced count question alone gave a fake 40% in the measurements). Option order is shuffled.
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path
from typing import Any

from lpt_utils.tiny_world.scenes import (
    CELL_NAMES,
    COLOURS,
    GRID,
    NUMBER_WORDS,
    SHAPES,
    Scene,
    is_unique_name,
    load_scene_set,
    make_scene_set,
)

KINDS = ("colour", "shape", "occupant", "count", "position", "relation")
KIND_TYPE = {
    "colour": "recognition",
    "shape": "recognition",
    "occupant": "recognition",
    "count": "counting and quantification",
    "position": "spatial and relational",
    "relation": "spatial and relational",
}
KIND_CATEGORY = {k: ("relative_position" if k in ("position", "relation") else "direct_attributes")
                 for k in KINDS}
RELATIONS = ("to the left", "to the right", "above", "below")
LETTERS = "ABCD"
# Weight of each count answer (0-4), roughly the inverse of how often a scene offers a question
# with that answer; measured over 20K scenes so that the drawn answers come out near uniform.
_COUNT_WEIGHTS = (1.0, 1.0, 2.6, 9.0, 16.0)


def _item(kind: str, question: str, answer: str, distractors: list[str], rng: random.Random,
          **extra: Any) -> dict[str, Any]:
    choices = [answer] + list(distractors)
    assert len(set(choices)) == 4, choices
    rng.shuffle(choices)
    return {"question": question, "choices": choices, "answer": answer, "type": KIND_TYPE[kind],
            "category": KIND_CATEGORY[kind], "kind": kind, **extra}


def _colour_q(scene: Scene, rng: random.Random) -> dict[str, Any]:
    o = rng.choice(scene.objects)
    if sum(p.shape == o.shape for p in scene.objects) == 1:
        q = f"What colour is the {o.shape}?"
    else:
        q = f"What colour is the shape in the {o.cell} corner?"
    others = rng.sample([c for c in COLOURS if c != o.colour], 3)
    return _item("colour", q, o.colour, others, rng, target=o.cell)


def _shape_q(scene: Scene, rng: random.Random) -> dict[str, Any]:
    o = rng.choice(scene.objects)
    if sum(p.colour == o.colour for p in scene.objects) == 1:
        q = f"What shape is the {o.colour} object?"
    else:
        q = f"What shape is in the {o.cell} corner?"
    return _item("shape", q, o.shape, [s for s in SHAPES if s != o.shape], rng, target=o.cell)


def _thing(colour: str, shape: str) -> str:
    return f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape}"


def _occupant_q(scene: Scene, rng: random.Random) -> dict[str, Any]:
    cells = [(r, c) for r in range(GRID) for c in range(GRID)]
    empty = [rc for rc in cells if scene.object_at(*rc) is None]
    # Ask about an empty corner a third of the time when there is one: "nothing" is then the
    # answer to about a quarter of these questions rather than the 3/8 a uniform corner gives.
    if empty and rng.random() < 1 / 3:
        r, c = rng.choice(empty)
    else:
        r, c = rng.choice([rc for rc in cells if rc not in empty])
    o = scene.object_at(r, c)
    q = f"What is in the {CELL_NAMES[(r, c)]} corner?"
    if o is None:
        answer = "nothing"
        pool = {_thing(p.colour, p.shape) for p in scene.objects}
        while len(pool) < 3:
            pool.add(_thing(rng.choice(list(COLOURS)), rng.choice(SHAPES)))
        distractors = rng.sample(sorted(pool), 3)
    else:
        answer = _thing(o.colour, o.shape)
        alt_colour = rng.choice([k for k in COLOURS if k != o.colour])
        alt_shape = rng.choice([s for s in SHAPES if s != o.shape])
        distractors = [_thing(alt_colour, o.shape), _thing(o.colour, alt_shape), "nothing"]
    return _item("occupant", q, answer, distractors, rng, target=CELL_NAMES[(r, c)])


def _count_q(scene: Scene, rng: random.Random) -> dict[str, Any]:
    offers: dict[int, list[str]] = {}
    offers.setdefault(len(scene.objects), []).append("How many shapes are there in total?")
    for s in SHAPES:
        offers.setdefault(sum(o.shape == s for o in scene.objects), []).append(f"How many {s}s are there?")
    for c in COLOURS:
        offers.setdefault(sum(o.colour == c for o in scene.objects), []).append(
            f"How many {c} shapes are there?")
    values = sorted(offers)
    value = rng.choices(values, weights=[_COUNT_WEIGHTS[v] for v in values])[0]
    q = rng.choice(offers[value])
    others = rng.sample([w for i, w in enumerate(NUMBER_WORDS) if i != value], 3)
    return _item("count", q, NUMBER_WORDS[value], others, rng)


def _position_q(scene: Scene, rng: random.Random) -> dict[str, Any] | None:
    named = [o for o in scene.objects if is_unique_name(scene, o)]
    if not named:
        return None
    o = rng.choice(named)
    return _item("position", f"Where is the {o.name}?", o.cell,
                 [n for n in CELL_NAMES.values() if n != o.cell], rng, target=o.cell)


def _relation_q(scene: Scene, rng: random.Random) -> dict[str, Any] | None:
    named = [o for o in scene.objects if is_unique_name(scene, o)]
    pairs = [(a, b) for a in named for b in named
             if a is not b and (a.row == b.row or a.col == b.col)]
    if not pairs:
        return None
    a, b = rng.choice(pairs)  # ordered pairs, so each relation and its converse are equally likely
    if a.row == b.row:
        rel = "to the left" if a.col < b.col else "to the right"
    else:
        rel = "above" if a.row < b.row else "below"
    return _item("relation", f"Where is the {a.name} relative to the {b.name}?", rel,
                 [r for r in RELATIONS if r != rel], rng, target=a.cell, reference=b.cell)


_MAKERS = {"colour": _colour_q, "shape": _shape_q, "occupant": _occupant_q, "count": _count_q,
           "position": _position_q, "relation": _relation_q}


def scene_mcqs(scene: Scene, rng: random.Random, kinds: tuple[str, ...] = KINDS) -> list[dict[str, Any]]:
    """One ground-truth MCQ per kind that the scene supports, in the order of `kinds`.

    Each is a dict with `question`, `choices` (4 distinct option texts, shuffled), `answer` (the
    right option's text), `type` (reasoning type), `category` (V*-style) and `kind`, plus the
    corner(s) it is about (`target`, `reference`) where there is one.
    """
    out = []
    for k in kinds:
        item = _MAKERS[k](scene, rng)
        if item is not None:
            out.append(item)
    return out


def make_benchmark(out_dir: str | Path, n_scenes: int = 100, seed: int = 0,
                   image_size: int = 224) -> Path:
    """A V*-Bench-like file of ground-truth MCQs on held-out scenes; returns the file's path.

    Writes the scenes (`images/`, `descriptions.jsonl`, as `make_scene_set`) and `benchmark.jsonl`,
    one row per question: `question_id`, `image` (path relative to `out_dir`), `text` (question,
    "(A) ..." lines and V*'s answer hint), `label` (letter), `category`; plus `question`, `choices`,
    `answer`, `kind`, `type` and `example_id`. The right option's letter cycles A, B, C, D over the
    rows, so letters are exactly balanced.
    """
    out = Path(out_dir)
    make_scene_set(out, n_scenes, "heldout", seed, image_size=image_size)
    rows = []
    for row, scene in load_scene_set(out):
        rng = random.Random(f"tiny-world-benchmark:{seed}:{scene.id}")
        for item in scene_mcqs(scene, rng):
            k = len(rows) % 4
            distractors = [c for c in item["choices"] if c != item["answer"]]
            choices = distractors[:k] + [item["answer"]] + distractors[k:]
            text = "\n".join([item["question"]] + [f"({LETTERS[i]}) {c}" for i, c in enumerate(choices)]
                             + ["Answer with the option's letter from the given choices directly."])
            rows.append({"question_id": len(rows), "image": f"images/{row['image_file']}", "text": text,
                         "label": LETTERS[k], "category": item["category"], "question": item["question"],
                         "choices": choices, "answer": item["answer"], "kind": item["kind"],
                         "type": item["type"], "example_id": row["example_id"]})
    path = out / "benchmark.jsonl"
    tmp = path.with_suffix(f".jsonl.{os.getpid()}.tmp")  # shards building it at once each rename their own
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)
    return path


# ----------------------------------------------------------------------------- grading a writer's MCQ

_CELL_RX = "|".join(CELL_NAMES.values())
_COLOUR_RX = "|".join(COLOURS)
_SHAPE_RX = "|".join(SHAPES)
_NAME_RX = rf"(?:{_COLOUR_RX}) (?:{_SHAPE_RX})"
# (kind, pattern) for every question template `scene_mcqs` writes, matched on the whole question.
_TEMPLATES = (
    ("colour", rf"what colour is the (?P<shape>{_SHAPE_RX})\?"),
    ("colour", rf"what colour is the shape in the (?P<cell>{_CELL_RX}) corner\?"),
    ("shape", rf"what shape is the (?P<colour>{_COLOUR_RX}) object\?"),
    ("shape", rf"what shape is in the (?P<cell>{_CELL_RX}) corner\?"),
    ("occupant", rf"what is in the (?P<cell>{_CELL_RX}) corner\?"),
    ("count", r"how many shapes are there in total\?"),
    ("count", rf"how many (?P<shape>{_SHAPE_RX})s are there\?"),
    ("count", rf"how many (?P<colour>{_COLOUR_RX}) shapes are there\?"),
    ("relation", rf"where is the (?P<a>{_NAME_RX}) relative to the (?P<b>{_NAME_RX})\?"),
    ("position", rf"where is the (?P<a>{_NAME_RX})\?"),
)
_TEMPLATE_RX = [(k, re.compile(p)) for k, p in _TEMPLATES]


def _norm_text(s: str) -> str:
    return " ".join(s.lower().strip().strip(".").split())


def _match_template(question: str):
    q = _norm_text(question)
    for kind, rx in _TEMPLATE_RX:
        m = rx.fullmatch(q)
        if m:
            return kind, m
    return None


def template_kind(question: str) -> str | None:
    """The kind of tiny-world question template `question` follows, or None."""
    hit = _match_template(question)
    return hit[0] if hit else None


def grade_mcq(scene: Scene, question: str, answer: str) -> bool | None:
    """Whether `answer` is right about `scene` for a question in one of `scene_mcqs`'s templates.

    None when the question follows none of them. A question about something the scene lacks (a
    shape that is not there, an ambiguous name, two objects that share no row or column) or
    whose answer is not the scene's value gives False.
    """
    hit = _match_template(question)
    if hit is None:
        return None
    kind, m = hit
    g = m.groupdict()
    ans = _norm_text(answer)
    objs = list(scene.objects)
    at = {o.cell: o for o in objs}

    def unique(pred) -> Any:
        found = [o for o in objs if pred(o)]
        return found[0] if len(found) == 1 else None

    if kind == "colour":
        o = at.get(g["cell"]) if g.get("cell") else unique(lambda p: p.shape == g["shape"])
        return o is not None and ans == o.colour
    if kind == "shape":
        o = at.get(g["cell"]) if g.get("cell") else unique(lambda p: p.colour == g["colour"])
        return o is not None and ans == o.shape
    if kind == "occupant":
        o = at.get(g["cell"])
        return ans == ("nothing" if o is None else _thing(o.colour, o.shape))
    if kind == "count":
        if g.get("shape"):
            n = sum(o.shape == g["shape"] for o in objs)
        elif g.get("colour"):
            n = sum(o.colour == g["colour"] for o in objs)
        else:
            n = len(objs)
        return ans == NUMBER_WORDS[n]
    a = unique(lambda p: p.name == g["a"])
    if kind == "position":
        return a is not None and ans == a.cell
    b = unique(lambda p: p.name == g["b"])
    if a is None or b is None or a is b:
        return False
    if a.row == b.row:
        rel = "to the left" if a.col < b.col else "to the right"
    elif a.col == b.col:
        rel = "above" if a.row < b.row else "below"
    else:
        return False
    return ans == rel
