"""Tiny Qwen models for the offline CPU profile, built from configs and warmed up on the tiny world.

- "vlm": a Qwen2.5-VL (text hidden 128 x 2 layers, vision hidden 64 x depth 2, ~1 M parameters) saved
  with a Qwen2.5-VL processor; the student of stages 2, 5 and 6.
- "lm": a Qwen2 causal LM of the same text size; the MCQ writer and reformatter of stage 1 and the
  reasoner of stage 3. Its writer targets (`corpus.aligned_writer_example`) key answers that are the
  first of their kind in the description, the only lookups it learned to copy at all in its budget.

Both share one world tokenizer (`tokenizer.py`). Each is built from a `Recipe` (sizes, steps, learning
rate, seed, corpus version): random init, then a short warm-up on the pipeline's own prompts
(`corpus.py`) with a completion-only loss, AdamW and a cosine schedule, so that its outputs parse.
The VLM first pre-trains its vision tower on a dense probe (under every image token: its corner,
and the colour and shape covering it; per grid cell: the object's shape, colour and size; linear
heads, thrown away after; their held-out accuracy goes into `warmup_log.json`), then keeps it frozen
while the language model learns to answer. Its thoughts scan the four corners in a fixed order (see
`corpus.thought`); the corner tiles' shades (`scenes.CELL_SHADES`) are what let it tell the corners
apart at all. `python -m lpt_utils.tiny_world check` writes what each model does into `check.json`
beside `warmup_log.json` (build time, losses).

`ensure_model(name, models_dir)` returns `models_dir/<name>-<recipe hash>/`, building it once (in a
temporary folder renamed into place, so a crash or a parallel build never leaves half a model) and
again only when the hash changes: the recipe's fields, `BUILDER_VERSION`, and fingerprints of the
pipeline's prompts and of the warm-up corpus all enter it. The folders load with transformers and
with vLLM (`check.py` measures them there). Builds run on one CPU thread (see `_torch_setup`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lpt_utils.config import load_profile
from lpt_utils.pipeline import mcq
from lpt_utils.tiny_world import corpus
from lpt_utils.tiny_world.questions import KINDS
from lpt_utils.tiny_world.scenes import COLOURS, GRID, SHAPES, SIZES, Scene, iter_split_scenes, render
from lpt_utils.tiny_world.tokenizer import EOS_TOKEN, build_tokenizer

# Qwen2-VL's image normalisation (CLIP's), applied by the saved processor too.
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
PATCH, MERGE, TEMPORAL = 14, 2, 2
# Bump when the build code below changes what a recipe produces (the hash then names new folders).
BUILDER_VERSION = "2"  # 2: the direct prompt is no longer taught behind a forced <think>


@dataclass(frozen=True)
class Recipe:
    """Everything that decides a tiny model's weights; its hash names the model's folder."""

    name: str
    corpus_version: str = corpus.CORPUS_VERSION
    seed: int = 0
    # tokenizer (shared by both models: same fields, same tokenizer)
    tokenizer_scenes: int = 1500
    vocab_size: int = 3000
    # text model
    hidden_size: int = 128
    intermediate_size: int = 512
    num_layers: int = 2
    num_heads: int = 2
    num_kv_heads: int = 1
    max_position_embeddings: int = 2048
    # vision tower ("vlm" only)
    vision_depth: int = 2
    vision_hidden: int = 64
    vision_heads: int = 2
    vision_intermediate: int = 256
    image_size: int = 224
    probe_steps: int = 0  # vision-tower pre-training on the dense probe
    probe_batch: int = 32
    probe_lr: float = 3e-3
    # warm-up
    tasks: tuple[tuple[str, float], ...] = ()  # (task, share of the batches)
    kinds: tuple[str, ...] = KINDS  # question kinds the student warm-up uses
    max_objects: int = 4  # the student warm-up's scenes hold at most this many objects
    train_scenes: int = 1000
    steps: int = 300
    batch_size: int = 16
    lr: float = 3e-3
    vision_lr: float = 0.0  # 0 freezes the vision tower during the warm-up
    warmup_steps: int = 20
    weight_decay: float = 0.01

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["tasks"] = [list(t) for t in self.tasks]
        d["kinds"] = list(self.kinds)
        return d


# Sized so that both, built in parallel on one thread each, stay within five minutes on 2 cores.
# What they reach is recorded in `warmup_log.json` and measured by `python -m lpt_utils.tiny_world check`
# (`check.json`). Tried and not kept (held-out accuracy of the student, think prompt or stage-2 prompt,
# measured): 1,800 warm-up steps instead of ~700, 4 text layers, training the vision tower in the
# warm-up (vision_lr 1e-3): none moved the stage-2 accuracy off 26-31%; what did was shading the
# corner tiles (the scan's colours 61% -> 100% right) and answering the think prompt with text. For the
# LM, a short "lookup" task (description + one question -> the value) in 22% of the batches, or alone
# for 600 steps of 16, left it answering no better than the commonest answer (27-32% against 33%;
# README, "A reading curriculum"). Nor did a first-layer head set to attend to the previous token (half of
# a copying circuit): writer agreement 26.6% against 26.5% (README, "Nor does the simplest form").
# Nor did one token per object (colour, shape and corner fused in the tokenizer), with free or
# composed embeddings: 23.1% and 23.6% (README, "Nor does one token per object").
RECIPES: dict[str, Recipe] = {
    "vlm": Recipe(name="vlm", tasks=(("answer", 0.5), ("answer_direct", 0.1), ("answer_think", 0.4)), probe_steps=100,
                  train_scenes=2000, steps=600, batch_size=8, lr=3e-3, vision_lr=0.0),
    "lm": Recipe(name="lm", tasks=(("mcq_writer_aligned", 0.45), ("reformat", 0.1), ("long_cot", 0.45)),
                 train_scenes=1500, steps=720, batch_size=4, lr=3e-3),
}


# ----------------------------------------------------------------------------- hashing


def prompt_fingerprint() -> str:
    """Hash of the pipeline's prompts as rendered for a fixed example: a template edit rebuilds."""

    row = {"question": "Q?", "choices": ["a", "b", "c", "d"], "question_type": "recognition",
           "choice_form": next(iter(mcq.CHOICE_FORMS)), "answer_form": next(iter(mcq.ANSWER_FORMS)),
           "image_path": "x.png", "answer_letter": "A"}
    sample = {
        "writer": mcq.writer_messages("DESCRIPTION"),
        "reformat": mcq.reformat_messages("RESPONSE"),
        "tagged": mcq.format_tagged_list([{"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": "a",
                                           "type": "recognition"}]),
        "student": [mcq.student_messages({**row, "choice_form": c, "answer_form": a}, "x.png")
                    for c in mcq.CHOICE_FORMS for a in mcq.ANSWER_FORMS],
        "answers": [mcq.answer_in_form({**row, "answer_form": a}) for a in mcq.ANSWER_FORMS],
    }
    return hashlib.sha256(json.dumps(sample, sort_keys=True).encode()).hexdigest()[:16]


def corpus_fingerprint() -> str:
    """Hash of a sample of the warm-up corpus and tokenizer text: an edit to what the models are
    taught (scenes, descriptions, questions, thoughts, prompts) rebuilds them without anyone having
    to remember to bump `CORPUS_VERSION`."""
    rng = random.Random(0)
    h = hashlib.sha256()
    for scene in corpus.train_scenes(12):
        for part in (corpus.writer_example(scene, rng), corpus.aligned_writer_example(scene, rng),
                     corpus.reformat_example(scene, rng),
                     *[(m, c) for _, m, c in corpus.student_examples(scene)],
                     *[(m, c) for _, m, c in corpus.direct_examples(scene)],
                     *[(m, c) for _, m, c in corpus.think_examples(scene)]):
            h.update(json.dumps(part, sort_keys=True).encode())
    for i, text in enumerate(corpus.tokenizer_texts(3)):
        h.update(text.encode())
    return h.hexdigest()[:16]


def _fingerprints() -> dict[str, str]:
    return {"prompts": prompt_fingerprint(), "corpus": corpus_fingerprint()}


def _tokenizer_fields(r: Recipe) -> dict[str, Any]:
    return {"corpus_version": r.corpus_version, "seed": r.seed, "tokenizer_scenes": r.tokenizer_scenes,
            "vocab_size": r.vocab_size}


def tokenizer_hash(recipe: Recipe) -> str:
    payload = {"tokenizer": _tokenizer_fields(recipe), **_fingerprints()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def taught_cues() -> tuple[list[str], list[str]]:
    """The cues and separators the tiny reasoner is taught: the tiny profile's (`long_cot.cues`,
    `long_cot.separators`), read from its file, so a run-time override does not rebuild the model:
    like a real reasoner, it then meets a cue it was not taught."""
    s = load_profile("tiny")["long_cot"]
    return list(s["cues"]), list(s["separators"])


def long_cot_fingerprint() -> str:
    """Hash of a few stage-3 warm-up examples (prompt, pre-filled prefix, target): a change to stage
    3's templates rebuilds the models that learn it, and only those (the tokenizer and the student
    do not see stage 3)."""
    rng = random.Random(0)
    scenes = corpus.train_scenes(8)
    h = hashlib.sha256()
    for scene in scenes:
        h.update(json.dumps(corpus.long_cot_example(scene, rng, scenes, *taught_cues()), sort_keys=True).encode())
    return h.hexdigest()[:16]


def recipe_hash(recipe: Recipe) -> str:
    """12 hex digits over the recipe's fields, the builder version and the prompt and corpus
    fingerprints (plus stage 3's where the recipe learns it)."""
    payload = {"recipe": recipe.to_json(), "builder": BUILDER_VERSION, **_fingerprints()}
    if any(task == "long_cot" for task, _ in recipe.tasks):
        payload["long_cot"] = long_cot_fingerprint()
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------- cache folders


def default_models_dir() -> Path:
    """`$LPT_MODELS_DIR`, else `outputs/models` at the repository root (where `make models` builds)."""
    env = os.environ.get("LPT_MODELS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "outputs" / "models"


def _atomic_build(target: Path, build: Callable[[Path], None]) -> Path:
    """Run `build(tmp)` in a temporary sibling folder, then rename it to `target`.

    When another process finished the same target first, its folder is kept and ours discarded.
    """
    if (target / "recipe_hash.txt").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "recipe_hash.txt").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def ensure_tokenizer(models_dir: str | Path | None = None, recipe: Recipe | None = None) -> Path:
    """The shared world tokenizer's folder, `models_dir/tokenizer-<hash>/` (built once)."""
    recipe = recipe or RECIPES["lm"]
    models_dir = Path(models_dir) if models_dir else default_models_dir()
    h = tokenizer_hash(recipe)

    def build(tmp: Path) -> None:
        tok = build_tokenizer(corpus.tokenizer_texts(recipe.tokenizer_scenes, recipe.seed), recipe.vocab_size)
        tok.save_pretrained(tmp)
        (tmp / "recipe.json").write_text(json.dumps(_tokenizer_fields(recipe), indent=2))
        (tmp / "recipe_hash.txt").write_text(h + "\n")

    return _atomic_build(models_dir / f"tokenizer-{h}", build)


def ensure_model(name: str, models_dir: str | Path | None = None, recipe: Recipe | None = None,
                 progress: bool = True) -> Path:
    """`models_dir/<name>-<recipe hash>/`, built (tokenizer, model, warm-up) if it is not there yet.

    `name` is "vlm" or "lm"; `recipe` overrides `RECIPES[name]` (tests use a cheap one).
    """
    if name not in RECIPES:
        raise ValueError(f"unknown tiny model {name!r}; known: {sorted(RECIPES)}")
    recipe = recipe or RECIPES[name]
    models_dir = Path(models_dir) if models_dir else default_models_dir()
    h = recipe_hash(recipe)
    target = models_dir / f"{name}-{h}"
    if (target / "recipe_hash.txt").exists():
        return target
    tok_dir = ensure_tokenizer(models_dir, recipe)

    def build(tmp: Path) -> None:
        import torch

        t0, threads = time.time(), torch.get_num_threads()
        try:
            log = (_build_vlm if name == "vlm" else _build_lm)(recipe, tok_dir, tmp, progress)
        finally:
            torch.set_num_threads(threads)
        log["build_seconds"] = round(time.time() - t0, 1)
        (tmp / "recipe.json").write_text(json.dumps(recipe.to_json(), indent=2))
        (tmp / "warmup_log.json").write_text(json.dumps(log, indent=2))
        (tmp / "recipe_hash.txt").write_text(h + "\n")

    return _atomic_build(target, build)


def prune(models_dir: str | Path | None = None) -> list[Path]:
    """Delete tiny-model and tokenizer folders whose hash is not the current recipes' (and temporary
    build folders over an hour old); returns what was removed. Nothing else in the folder is touched."""
    models_dir = Path(models_dir) if models_dir else default_models_dir()
    keep = {f"{n}-{recipe_hash(r)}" for n, r in RECIPES.items()}
    keep |= {f"tokenizer-{tokenizer_hash(r)}" for r in RECIPES.values()}
    removed = []
    for p in sorted(models_dir.glob("*")) if models_dir.is_dir() else []:
        ours = re.fullmatch(r"\.?(vlm|lm|tokenizer)-[0-9a-f]{12}(\.\w+)?", p.name)
        if p.name.startswith(".") and time.time() - p.stat().st_mtime < 3600:
            continue  # a build that may still be running
        if p.is_dir() and ours and p.name not in keep:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


# ----------------------------------------------------------------------------- shared training bits


def _torch_setup(seed: int):
    import torch

    # One thread: these models are too small to gain from two, and with two a busy machine (another
    # process on the other core) made every step 5-10x slower (OpenMP threads waiting on each other).
    torch.set_num_threads(int(os.environ.get("LPT_TINY_THREADS", "1")))
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    return torch


def _cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _encode(tok, messages: list[dict], completion: str, image_tokens: int = 0,
            prefix: str = "") -> tuple[list[int], int]:
    """Token ids of prompt + completion + eos, and the prompt's length (no loss on it).

    The prompt ends with `prefix`: the forced `<think>` for the student's stage-2 and think prompts
    (none for the direct prompt, which opens no thought), the pre-filled assistant turn for stage 3,
    nothing for stage 1's tasks; image placeholders are expanded to `image_tokens` pads the way the
    processor does.
    """
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + prefix
    if image_tokens:
        prompt = prompt.replace("<|image_pad|>", "<|image_pad|>" * image_tokens)
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    c = tok(completion + EOS_TOKEN, add_special_tokens=False)["input_ids"]
    return p + c, len(p)


def _pad(seqs: list[tuple[list[int], int]], pad_id: int):
    import torch

    T = max(len(s) for s, _ in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), T), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, (s, n_prompt) in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
        labels[i, n_prompt:len(s)] = torch.tensor(s[n_prompt:])
    return ids, mask, labels


def _completion_loss(model, labels, **inputs):
    """Mean next-token cross-entropy over the completion tokens only; the output projection runs
    on those positions alone (most of each sequence is prompt, so this saves a good part of a step)."""
    import torch.nn.functional as F

    hidden = model.model(**inputs).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != -100
    logits = model.lm_head(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep])


def _warm_up(model, opt, recipe: Recipe, batch: Callable, desc: str, progress: bool) -> list[float]:
    """The warm-up loop both models share: `batch()` gives (model inputs, labels); completion-only
    loss, clipped AdamW steps on a cosine schedule. Returns the loss per step."""
    import torch

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine(s, recipe.steps, recipe.warmup_steps))
    losses = []
    bar = _tqdm(recipe.steps, desc, progress)
    for _ in range(recipe.steps):
        inputs, labels = batch()
        loss = _completion_loss(model, labels, **inputs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(round(loss.item(), 4))
        bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.update()
    bar.close()
    return losses


def _tqdm(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, mininterval=2.0)


def _special_ids(tok) -> dict[str, int]:
    return {t: tok.convert_tokens_to_ids(t) for t in
            ("<|endoftext|>", "<|im_end|>", "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")}


def _vocab(tok) -> int:
    return ((len(tok) + 63) // 64) * 64


def _save_generation_config(model, tok) -> None:
    ids = _special_ids(tok)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.bos_token_id = None


# ----------------------------------------------------------------------------- the LM


def _build_lm(recipe: Recipe, tok_dir: Path, out: Path, progress: bool) -> dict[str, Any]:
    torch = _torch_setup(recipe.seed)
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tok_dir)
    ids = _special_ids(tok)
    config = Qwen2Config(
        vocab_size=_vocab(tok), hidden_size=recipe.hidden_size, intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers, num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_kv_heads, max_position_embeddings=recipe.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )
    model = Qwen2ForCausalLM(config)

    scenes = corpus.train_scenes(recipe.train_scenes, recipe.seed)
    cues = taught_cues()  # read once: loading the profile per example cost a third of each step
    makers = {"mcq_writer": corpus.writer_example, "mcq_writer_aligned": corpus.aligned_writer_example,
              "reformat": corpus.reformat_example,
              "long_cot": lambda scene, rng: corpus.long_cot_example(scene, rng, scenes, *cues)}
    rng = random.Random(f"tiny-world-lm:{recipe.seed}")
    tasks = [t for t, _ in recipe.tasks]
    weights = [w for _, w in recipe.tasks]

    def batch():
        seqs = []
        for _ in range(recipe.batch_size):
            task = rng.choices(tasks, weights)[0]
            messages, *prefix, completion = makers[task](rng.choice(scenes), rng)
            seqs.append(_encode(tok, messages, completion, prefix="".join(prefix)))
        return _pad(seqs, ids["<|endoftext|>"])

    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay,
                            betas=(0.9, 0.98))
    model.train()

    def lm_batch():
        input_ids, mask, labels = batch()
        return dict(input_ids=input_ids, attention_mask=mask), labels

    losses = _warm_up(model, opt, recipe, lm_batch, "warm-up lm", progress)
    model.eval()
    _save_generation_config(model, tok)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return {"losses": losses, "parameters": sum(p.numel() for p in model.parameters())}


# ----------------------------------------------------------------------------- the VLM


def patchify(img, image_size: int = 224):
    """`pixel_values` for one RGB image of `image_size` pixels, as Qwen2-VL's image processor makes
    them (CLIP normalisation, each frame doubled in time, 14-pixel patches grouped 2x2 for merging);
    a fast numpy path for the warm-up, checked against the processor in the tests."""
    x = np.asarray(img.convert("RGB").resize((image_size, image_size)), dtype=np.float32) / 255.0
    x = (x - np.array(IMAGE_MEAN, dtype=np.float32)) / np.array(IMAGE_STD, dtype=np.float32)
    x = np.repeat(x.transpose(2, 0, 1)[None], TEMPORAL, axis=0)  # (T, C, H, W)
    g = image_size // PATCH
    x = x.reshape(1, TEMPORAL, 3, g // MERGE, MERGE, PATCH, g // MERGE, MERGE, PATCH)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(g * g, 3 * TEMPORAL * PATCH * PATCH), (1, g, g)


def probe_targets(scene: Scene, image_size: int = 224) -> dict[str, np.ndarray]:
    """Dense labels under each merged image token (colour and shape of what covers at least a fifth
    of it, else "none") and per grid cell (object shape, colour and size, or "empty")."""
    side = image_size // (PATCH * MERGE)  # merged tokens per side
    px = image_size // side
    colour_ids = {c: i + 1 for i, c in enumerate(COLOURS)}
    token_colour = np.zeros((side, side), dtype=np.int64)
    token_shape = np.zeros((side, side), dtype=np.int64)
    empty = np.asarray(render(Scene(id="m", seed=0, objects=(), background="white"), image_size), dtype=np.int16)
    for o in scene.objects:
        drawn = np.asarray(render(Scene(id="m", seed=0, objects=(o,), background="white"), image_size), dtype=np.int16)
        m = np.abs(drawn - empty).max(axis=-1) > 0  # the object's own pixels, whatever the tile's shade
        cover = m.reshape(side, px, side, px).mean(axis=(1, 3))
        hit = cover >= 0.2
        token_colour[hit] = colour_ids[o.colour]
        token_shape[hit] = SHAPES.index(o.shape) + 1
    cells = [scene.object_at(r, c) for r in range(GRID) for c in range(GRID)]
    rows = np.arange(side)[:, None] * GRID // side
    cols = np.arange(side)[None, :] * GRID // side
    return {
        "token_cell": (rows * GRID + cols).reshape(-1),  # which corner a token lies in
        "token_colour": token_colour.reshape(-1),
        "token_shape": token_shape.reshape(-1),
        "cell_shape": np.array([0 if o is None else SHAPES.index(o.shape) + 1 for o in cells]),
        "cell_colour": np.array([0 if o is None else colour_ids[o.colour] for o in cells]),
        "cell_size": np.array([0 if o is None else SIZES.index(o.size) + 1 for o in cells]),
    }


def _cell_pool_matrix(image_size: int):
    """(cells, tokens) averaging matrix from merged tokens (raster order) to grid cells."""
    import torch

    side = image_size // (PATCH * MERGE)
    per = side // GRID
    P = torch.zeros(GRID * GRID, side * side)
    for i in range(side * side):
        r, c = divmod(i, side)
        P[(r // per) * GRID + c // per, i] = 1.0 / (per * per)
    return P


_PROBE_CLASSES = {"token_cell": GRID * GRID, "token_colour": len(COLOURS) + 1, "token_shape": len(SHAPES) + 1, "cell_shape": len(SHAPES) + 1,
                  "cell_colour": len(COLOURS) + 1, "cell_size": len(SIZES) + 1}


def _probe_batch(visual, scenes: list[Scene], image_size: int, cache: dict[str, tuple]):
    """The vision tower's merged-token features (B, tokens, d) and the dense targets of `scenes`."""
    import torch

    pv, tg = [], {k: [] for k in _PROBE_CLASSES}
    for s in scenes:
        if s.id not in cache:
            cache[s.id] = (patchify(render(s, image_size), image_size)[0], probe_targets(s, image_size))
        pv.append(cache[s.id][0])
        for k in _PROBE_CLASSES:
            tg[k].append(cache[s.id][1][k])
    g = image_size // PATCH
    grid = torch.tensor([[1, g, g]] * len(scenes))
    feats = visual(torch.from_numpy(np.concatenate(pv)), grid_thw=grid).pooler_output
    return feats.view(len(scenes), -1, feats.shape[-1]), {k: torch.from_numpy(np.stack(v)) for k, v in tg.items()}


def _pretrain_vision(model, recipe: Recipe, scenes: list[Scene], progress: bool,
                     heldout: list[Scene] | None = None) -> tuple[list[float], dict[str, float]]:
    """Supervised pre-training of the vision tower on `probe_targets` (linear heads, thrown away
    after); returns the losses and, on `heldout` scenes, each head's accuracy (cell heads: over the
    four cells; token heads: over the tokens an object covers)."""
    import torch
    import torch.nn.functional as F

    visual = model.model.visual
    d = model.config.vision_config.out_hidden_size
    heads = torch.nn.ModuleDict({k: torch.nn.Linear(d, n) for k, n in _PROBE_CLASSES.items()})
    pool = _cell_pool_matrix(recipe.image_size)
    opt = torch.optim.AdamW(list(visual.parameters()) + list(heads.parameters()), lr=recipe.probe_lr,
                            weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine(s, recipe.probe_steps, 10))
    rng = random.Random(f"tiny-world-probe:{recipe.seed}")
    cache: dict[str, tuple] = {}
    losses = []
    bar = _tqdm(recipe.probe_steps, "vision probe", progress)

    def logits(feats):
        cell_feats = torch.einsum("ct,btd->bcd", pool, feats)
        return {k: head(feats if k.startswith("token") else cell_feats) for k, head in heads.items()}

    for step in range(recipe.probe_steps):
        feats, tg = _probe_batch(visual, [rng.choice(scenes) for _ in range(recipe.probe_batch)],
                                 recipe.image_size, cache)
        out = logits(feats)
        loss = sum(F.cross_entropy(out[k].reshape(-1, heads[k].out_features), tg[k].reshape(-1)) for k in heads)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(round(loss.item(), 4))
        bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.update()
    bar.close()
    accuracy: dict[str, float] = {}
    if heldout:
        with torch.no_grad():
            feats, tg = _probe_batch(visual, heldout, recipe.image_size, {})
            out = logits(feats)
        for k in heads:
            pred, y = out[k].argmax(-1), tg[k]
            keep = y > 0 if k in ("token_colour", "token_shape") else torch.ones_like(y, dtype=torch.bool)
            accuracy[k] = round(float((pred[keep] == y[keep]).float().mean()), 3)
    return losses, accuracy


def make_processor(tok, image_size: int = 224):
    """A Qwen2.5-VL processor (image + video processors, the world tokenizer, its chat template) that
    resizes every image to `image_size` x `image_size` pixels' worth of area."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import (
        Qwen2VLVideoProcessor,
    )

    area = image_size * image_size
    size = {"shortest_edge": area, "longest_edge": area}
    ip = Qwen2VLImageProcessor(size=size, patch_size=PATCH, temporal_patch_size=TEMPORAL, merge_size=MERGE,
                               image_mean=list(IMAGE_MEAN), image_std=list(IMAGE_STD))
    vp = Qwen2VLVideoProcessor(size=size, patch_size=PATCH, temporal_patch_size=TEMPORAL, merge_size=MERGE)
    return Qwen2_5_VLProcessor(image_processor=ip, tokenizer=tok, video_processor=vp,
                               chat_template=tok.chat_template)


def vlm_config(recipe: Recipe, tok):
    from transformers import Qwen2_5_VLConfig

    ids = _special_ids(tok)
    head_dim = recipe.hidden_size // recipe.num_heads
    quarter = head_dim // 2 // 4  # mrope sections (t, h, w) sum to head_dim / 2
    mrope = [head_dim // 2 - 2 * (quarter + quarter // 2), quarter + quarter // 2, quarter + quarter // 2]
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=_vocab(tok), hidden_size=recipe.hidden_size, intermediate_size=recipe.intermediate_size,
            num_hidden_layers=recipe.num_layers, num_attention_heads=recipe.num_heads,
            num_key_value_heads=recipe.num_kv_heads, max_position_embeddings=recipe.max_position_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
            bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
            tie_word_embeddings=True),
        vision_config=dict(
            depth=recipe.vision_depth, hidden_size=recipe.vision_hidden, intermediate_size=recipe.vision_intermediate,
            num_heads=recipe.vision_heads, out_hidden_size=recipe.hidden_size,
            # one window per grid cell (112 px), then full attention in the last block
            window_size=recipe.image_size // GRID, fullatt_block_indexes=[recipe.vision_depth - 1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def _build_vlm(recipe: Recipe, tok_dir: Path, out: Path, progress: bool) -> dict[str, Any]:
    torch = _torch_setup(recipe.seed)
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    tok = AutoTokenizer.from_pretrained(tok_dir)
    ids = _special_ids(tok)
    model = Qwen2_5_VLForConditionalGeneration(vlm_config(recipe, tok))
    scenes = corpus.train_scenes(recipe.train_scenes, recipe.seed)
    log: dict[str, Any] = {"parameters": sum(p.numel() for p in model.parameters())}

    t0 = time.time()
    model.train()
    if recipe.probe_steps:
        heldout = list(itertools.islice(iter_split_scenes("heldout", recipe.seed), 100))
        log["probe_losses"], log["probe_heldout_accuracy"] = _pretrain_vision(model, recipe, scenes, progress, heldout)
    log["probe_seconds"] = round(time.time() - t0, 1)

    g = recipe.image_size // PATCH
    n_image_tokens = g * g // (MERGE * MERGE)
    pool = [s for s in scenes if len(s.objects) <= recipe.max_objects]
    examples = {
        "answer": [(s, msgs, completion) for s in pool
                   for _, msgs, completion in corpus.student_examples(s, recipe.seed, kinds=recipe.kinds)],
        "answer_direct": [(s, msgs, completion) for s in pool
                          for _, msgs, completion in corpus.direct_examples(s, recipe.seed)],
        "answer_think": [(s, msgs, completion) for s in pool
                         for _, msgs, completion in corpus.think_examples(s, recipe.seed)],
    }
    tasks = [t for t, _ in recipe.tasks]
    weights = [w for _, w in recipe.tasks]
    rng = random.Random(f"tiny-world-vlm:{recipe.seed}")
    pixel_cache: dict[str, np.ndarray] = {}
    feature_cache: dict[str, Any] = {}  # the vision tower's output per scene, when it is frozen
    grid1 = torch.tensor([[1, g, g]])

    def pixels(s: Scene) -> np.ndarray:
        if s.id not in pixel_cache:
            pixel_cache[s.id] = patchify(render(s, recipe.image_size), recipe.image_size)[0]
        return pixel_cache[s.id]

    def features(picks: list[Scene]):
        todo = list({s.id: s for s in picks if s.id not in feature_cache}.values())
        if todo:
            with torch.no_grad():
                pv = torch.from_numpy(np.concatenate([pixels(s) for s in todo]))
                out = model.model.visual(pv, grid_thw=grid1.repeat(len(todo), 1)).pooler_output
            for s, f in zip(todo, out.split(n_image_tokens)):
                feature_cache[s.id] = f
        return tuple(feature_cache[s.id] for s in picks)

    def batch():
        chosen = [rng.choices(tasks, weights)[0] for _ in range(recipe.batch_size)]
        picks = [(task, rng.choice(examples[task])) for task in chosen]
        # stage 2's prompt and the think prompt open the thought for the model; the direct prompt does not
        seqs = [_encode(tok, msgs, completion, n_image_tokens, prefix="" if task == "answer_direct" else corpus.THINK)
                for task, (_, msgs, completion) in picks]
        input_ids, mask, labels = _pad(seqs, ids["<|endoftext|>"])
        inputs = dict(input_ids=input_ids, attention_mask=mask, image_grid_thw=grid1.repeat(len(picks), 1),
                      mm_token_type_ids=(input_ids == ids["<|image_pad|>"]).long())
        scenes_ = [s for _, (s, _, _) in picks]
        if recipe.vision_lr > 0:
            inputs["pixel_values"] = torch.from_numpy(np.concatenate([pixels(s) for s in scenes_]))
        else:
            inputs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=features(scenes_))}
        return inputs, labels

    visual = list(model.model.visual.parameters())
    visual_ids = {id(p) for p in visual}
    text = [p for p in model.parameters() if id(p) not in visual_ids]
    groups = [{"params": text, "lr": recipe.lr}]
    if recipe.vision_lr > 0:
        groups.append({"params": visual, "lr": recipe.vision_lr})
    else:
        for p in visual:
            p.requires_grad_(False)
    opt = torch.optim.AdamW(groups, weight_decay=recipe.weight_decay, betas=(0.9, 0.98))
    losses = _warm_up(model, opt, recipe, batch, "warm-up vlm", progress)
    for p in visual:
        p.requires_grad_(True)
    model.eval()
    _save_generation_config(model, tok)
    model.save_pretrained(out)
    make_processor(tok, recipe.image_size).save_pretrained(out)
    log["losses"] = losses
    return log
