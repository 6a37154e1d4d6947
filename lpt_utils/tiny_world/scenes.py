"""Synthetic scenes for the offline CPU profile: a picture, its scene graph and a DOCCI-like caption.

A scene is a 2x2 grid of tiles of one background colour, each tile a shade darker than the one
before in reading order (`CELL_SHADES`: how a tiny vision tower tells the corners apart); each cell holds at most one flat, saturated shape
(circle, square, triangle or star) drawn large enough that a tiny vision tower can tell colours
apart (small shapes left colour at chance in the measurements in `shared/notes/tiny-world.md`).
Everything follows from one integer seed: the scene graph (`sample_scene`), its picture
(`render`) and the wording of its description (`describe`).

`make_scene_set` writes a folder shaped like Google's DOCCI release (`images/<id>.png` and
`descriptions.jsonl` with `example_id`, `split`, `image_file`, `description`), so the synthetic set
loads through the same loader as the real data; each row also carries the scene graph (`scene`).
The "train" and "heldout" splits are disjoint by construction: a scene belongs to the split its
signature (what it shows, ignoring the pixel jitter) hashes to, whatever seeds drew it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from PIL import Image, ImageDraw

GRID = 2  # cells per side
CELL_NAMES = {(0, 0): "top left", (0, 1): "top right", (1, 0): "bottom left", (1, 1): "bottom right"}
SHAPES = ("circle", "square", "triangle", "star")
# Saturated colours far apart in RGB, so even a 28x28-pixel patch average names them.
COLOURS = {
    "red": (220, 30, 30),
    "green": (20, 160, 40),
    "blue": (30, 70, 230),
    "yellow": (245, 215, 0),
    "purple": (140, 40, 190),
    "orange": (250, 130, 0),
}
BACKGROUNDS = {"white": (255, 255, 255), "light grey": (205, 205, 205), "cream": (245, 235, 200)}
# Each corner's tile is a shade darker than the one before (reading order), so a token of the picture
# tells which corner it lies in from its own pixels: the tiny vision tower has no absolute position
# embedding, and on a plain background a probe for a token's corner stayed at chance (24%, measured).
CELL_SHADES = (1.0, 0.9, 0.8, 0.7)
SIZES = ("small", "large")
SIZE_FRACTION = {"small": 0.55, "large": 0.85}  # of the cell's side
NUMBER_WORDS = ("zero", "one", "two", "three", "four")
SPLITS = ("train", "heldout")
HELDOUT_EVERY = 5  # one signature bucket in five is held out
_SPLIT_SEED_BASE = {"train": 0, "heldout": 1 << 40}  # the seed ranges the two splits draw from


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    row: int
    col: int
    dx: float = 0.0  # jitter of the centre, as a fraction of the cell side
    dy: float = 0.0

    @property
    def cell(self) -> str:
        return CELL_NAMES[(self.row, self.col)]

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    id: str
    seed: int
    objects: tuple[SceneObject, ...]
    background: str

    def signature(self) -> str:
        """What the scene shows, without jitter: equal signatures mean the same question set."""
        objs = sorted((o.row, o.col, o.shape, o.colour, o.size) for o in self.objects)
        return json.dumps([self.background, objs])

    def object_at(self, row: int, col: int) -> SceneObject | None:
        return next((o for o in self.objects if (o.row, o.col) == (row, col)), None)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["objects"] = [asdict(o) for o in self.objects]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scene":
        return cls(id=d["id"], seed=int(d["seed"]), background=d["background"],
                   objects=tuple(SceneObject(**o) for o in d["objects"]))


def signature_split(signature: str) -> str:
    """The split a scene signature belongs to (a fixed hash partition, independent of any seed)."""
    bucket = int.from_bytes(hashlib.sha256(signature.encode()).digest()[:4], "big") % HELDOUT_EVERY
    return "heldout" if bucket == 0 else "train"


def sample_scene(seed: int) -> Scene:
    """The scene drawn by `seed` (deterministic): 1-4 objects in distinct cells of the 2x2 grid, no two
    of the same colour and shape."""
    rng = random.Random(f"tiny-world-scene:{seed}")
    n = rng.randint(1, GRID * GRID)
    cells = rng.sample([(r, c) for r in range(GRID) for c in range(GRID)], n)
    objects = []
    for r, c in sorted(cells):
        size = rng.choice(SIZES)
        slack = (1 - SIZE_FRACTION[size]) / 2 * 0.8
        while True:  # no two objects share a name ("the red circle" always picks out one)
            shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
            if all((o.shape, o.colour) != (shape, colour) for o in objects):
                break
        objects.append(SceneObject(shape=shape, colour=colour, size=size, row=r, col=c,
                                   dx=round(rng.uniform(-slack, slack), 3), dy=round(rng.uniform(-slack, slack), 3)))
    return Scene(id=f"tw{seed:013d}", seed=seed, objects=tuple(objects),
                 background=rng.choice(list(BACKGROUNDS)))


# ----------------------------------------------------------------------------- pictures


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    pts = []
    for k in range(10):
        rad = r if k % 2 == 0 else r * 0.45
        a = -math.pi / 2 + k * math.pi / 5
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def render(scene: Scene, size: int = 224) -> Image.Image:
    """Draw the scene as an RGB image of `size` x `size` pixels."""
    img = Image.new("RGB", (size, size), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    cell = size / GRID
    base = BACKGROUNDS[scene.background]
    for (r, c), shade in zip(sorted(CELL_NAMES), CELL_SHADES):
        draw.rectangle([round(c * cell), round(r * cell), round((c + 1) * cell) - 1, round((r + 1) * cell) - 1],
                       fill=tuple(round(v * shade) for v in base))
    for o in scene.objects:
        cx = (o.col + 0.5 + o.dx) * cell
        cy = (o.row + 0.5 + o.dy) * cell
        r = SIZE_FRACTION[o.size] * cell / 2
        fill = COLOURS[o.colour]
        if o.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif o.shape == "square":
            s = r * 0.9
            draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
        elif o.shape == "triangle":
            draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
        elif o.shape == "star":
            draw.polygon(_star(cx, cy, r * 1.05), fill=fill)
        else:
            raise ValueError(f"unknown shape {o.shape!r}")
    return img


# ----------------------------------------------------------------------------- descriptions


def _plural(shape: str, k: int) -> str:
    return shape if k == 1 else shape + "s"


def _count_phrase(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def object_sentence(o: SceneObject, rng: random.Random) -> str:
    """One sentence that places and names one object (every description has one per object)."""
    templates = (
        "In the {cell} corner there is a {size} {colour} {shape}.",
        "A {size} {colour} {shape} sits in the {cell} corner.",
        "The {cell} corner holds a {size} {colour} {shape}.",
        "In the {cell} corner, a {size} {colour} {shape} stands out against the background.",
    )
    return rng.choice(templates).format(cell=o.cell, size=o.size, colour=o.colour, shape=o.shape)


def is_unique_name(scene: Scene, o: SceneObject) -> bool:
    """Whether "the <colour> <shape>" picks out `o` alone in the scene."""
    return sum(p.name == o.name for p in scene.objects) == 1


def relation_sentences(scene: Scene, rng: random.Random) -> list[str]:
    """Sentences relating objects that share a row (left/right) or a column (above/below)."""
    out = []
    objs = [o for o in scene.objects if is_unique_name(scene, o)]
    for i, a in enumerate(objs):
        for b in objs[i + 1:]:
            if a.row == b.row:
                left, right = (a, b) if a.col < b.col else (b, a)
                out.append(rng.choice((
                    f"The {left.name} is to the left of the {right.name}.",
                    f"The {right.name} is to the right of the {left.name}.",
                )))
            elif a.col == b.col:
                top, bottom = (a, b) if a.row < b.row else (b, a)
                out.append(rng.choice((
                    f"The {top.name} is directly above the {bottom.name}.",
                    f"The {bottom.name} is directly below the {top.name}.",
                )))
    return out


def describe(scene: Scene) -> str:
    """A dense, DOCCI-like paragraph written from the scene graph; wording varies with the seed.

    It says how many shapes there are and on what background, has one sentence per object (colour,
    shape, size, corner), names the empty corners, relates objects that share a row or a column,
    and ends with counts by shape and by colour.
    """
    rng = random.Random(f"tiny-world-describe:{scene.seed}")
    n = len(scene.objects)
    noun = "shape" if n == 1 else "shapes"
    opening = rng.choice((
        f"A plain {scene.background} background holds {NUMBER_WORDS[n]} flat {noun} laid out on a two by two grid.",
        f"This is a simple drawing of {NUMBER_WORDS[n]} flat {noun} on a plain {scene.background} background, arranged in a two by two grid.",
        f"The picture shows {NUMBER_WORDS[n]} flat, brightly coloured {noun} placed on a {scene.background} background in a two by two grid.",
    ))
    sentences = [opening]
    objs = list(scene.objects)
    if rng.random() < 0.5:
        rng.shuffle(objs)
    sentences += [object_sentence(o, rng) for o in objs]
    empty = [CELL_NAMES[(r, c)] for r in range(GRID) for c in range(GRID) if scene.object_at(r, c) is None]
    if empty:
        corners = "corner is" if len(empty) == 1 else "corners are"
        sentences.append(rng.choice((
            f"The {_count_phrase(empty)} {corners} empty.",
            f"Nothing is drawn in the {_count_phrase(empty)} {corners.split()[0]}.",
        )))
    rel = relation_sentences(scene, rng)
    rng.shuffle(rel)
    sentences += rel
    by_shape = {s: sum(o.shape == s for o in scene.objects) for s in SHAPES}
    by_colour = {c: sum(o.colour == c for o in scene.objects) for c in COLOURS}
    shape_counts = [f"{NUMBER_WORDS[k]} {_plural(s, k)}" for s, k in by_shape.items() if k]
    colour_counts = [f"{NUMBER_WORDS[k]} {c}" for c, k in by_colour.items() if k]
    if n > 1:
        verb = "is" if shape_counts[0].startswith("one ") else "are"
        sentences.append(rng.choice((
            f"In total there {verb} {_count_phrase(shape_counts)}.",
            f"Counting by shape, there {verb} {_count_phrase(shape_counts)}.",
        )))
        verb = "is" if colour_counts[0].startswith("one ") else "are"
        sentences.append(rng.choice((
            f"Counting colours, there {verb} {_count_phrase(colour_counts)}.",
            f"By colour, there {verb} {_count_phrase(colour_counts)}.",
        )))
    larges = [o.name for o in scene.objects if o.size == "large"]
    if larges and len(larges) < n:
        sentences.append(f"The large {'one is' if len(larges) == 1 else 'ones are'} the "
                         f"{_count_phrase(larges)}.")
    return " ".join(sentences)


# ----------------------------------------------------------------------------- scene sets


def iter_split_scenes(split: str, seed: int) -> Iterator[Scene]:
    """Scenes of `split`, in a fixed order for (`split`, `seed`), each signature at most once."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = random.Random(f"tiny-world-split:{split}:{seed}")
    seen: set[str] = set()
    while True:
        s = _SPLIT_SEED_BASE[split] + rng.randrange(1 << 39)
        scene = sample_scene(s)
        sig = scene.signature()
        if signature_split(sig) != split or sig in seen:
            continue
        seen.add(sig)
        yield scene


def make_scene_set(out_dir: str | Path, n: int, split: str = "train", seed: int = 0,
                   image_size: int = 224) -> Path:
    """Write `n` scenes of `split` as a DOCCI-shaped folder; returns `out_dir`.

    Layout: `images/<example_id>.png` and `descriptions.jsonl`, one row per image with DOCCI's
    fields (`example_id`, `split`, `image_file`, `description`) plus `scene` (the scene graph).
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    it = iter_split_scenes(split, seed)
    for _ in range(n):
        scene = next(it)
        image_file = f"{scene.id}.png"
        # under a name of this process's first, then renamed: shards building the same set at once
        # (notebook 07's array job) never read a half-written picture
        tmp_img = out / "images" / f".{image_file}.{os.getpid()}.tmp"
        render(scene, image_size).save(tmp_img, format="PNG")
        tmp_img.replace(out / "images" / image_file)
        rows.append({"example_id": scene.id, "split": split, "image_file": image_file,
                     "description": describe(scene), "scene": scene.to_dict()})
    tmp = out / f"descriptions.jsonl.{os.getpid()}.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(out / "descriptions.jsonl")
    return out


def load_scene_set(out_dir: str | Path) -> list[tuple[dict[str, Any], Scene]]:
    """Rows of a folder written by `make_scene_set`, each with its parsed `Scene`."""
    rows = [json.loads(line) for line in (Path(out_dir) / "descriptions.jsonl").read_text().splitlines() if line]
    return [(r, Scene.from_dict(r["scene"])) for r in rows]
