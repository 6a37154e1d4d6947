"""How the tiny world plugs into the pipeline, named by the tiny profile's `plugins` section (the
pipeline itself never imports the tiny world; `lpt_utils/plugins.py`):

- `resolve_model`: "tiny:vlm" / "tiny:lm" -> the folder of that tiny model, built on first use
  (`models.ensure_model`); any other id unchanged.
- `scene_captions`: the `synthetic` caption source: `data.num_images` scenes of the training split
  (seed `data.source_options.seed`), written in DOCCI's layout and read by the DOCCI reader.
- `grade_mcqs`: whether each MCQ's right answer is true of its scene (the ground truth that real
  captions lack), for notebook 01's agreement table.
- `build_benchmark`: the held-out benchmark (`eval.benchmarks.synthetic`: `n_scenes`, `seed`), V*-shaped,
  written before notebook 07 reads it with the `synthetic` task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lpt_utils.pipeline.captions import load_docci
from lpt_utils.tiny_world.models import ensure_model
from lpt_utils.tiny_world.questions import grade_mcq, make_benchmark
from lpt_utils.tiny_world.scenes import load_scene_set, make_scene_set

PREFIX = "tiny:"


def resolve_model(model: str, models_dir: str | Path) -> str:
    if not model.startswith(PREFIX):
        return model
    return str(ensure_model(model[len(PREFIX):], Path(models_dir)))


def scene_captions(data: dict[str, Any], work_dir: Path):
    options = data.get("source_options") or {}
    n = data["num_images"]
    if not isinstance(n, int):
        raise ValueError(f"data.num_images: the synthetic source draws a number of scenes, not {n!r}")
    folder = make_scene_set(Path(work_dir) / "scenes_train", n=n, split="train", seed=int(options.get("seed", 0)))
    return load_docci(folder, split="train")


def build_benchmark(spec: dict[str, Any], folder: Path) -> Path:
    """Write the held-out benchmark into `folder` (deterministic: a rebuild writes the same bytes)."""
    if not spec.get("n_scenes"):
        raise ValueError("eval.benchmarks.synthetic.n_scenes: how many held-out scenes to draw")
    return make_benchmark(folder, n_scenes=int(spec["n_scenes"]), seed=int(spec.get("seed") or 0),
                          image_size=int(spec.get("image_size") or 224))


def grade_mcqs(sources_dir: Path, mcqs: list[dict[str, Any]]) -> list[bool | None]:
    """For each MCQ (a row of stage 1: `image_id`, `question`, `answer`), whether its answer is true of
    its scene: True, False (wrong, or about something the scene lacks), or None (a question in none of
    the world's templates, or an image that is not one of the drawn scenes: not gradable)."""
    scenes = {row["example_id"]: scene for row, scene in load_scene_set(Path(sources_dir) / "scenes_train")}
    out: list[bool | None] = []
    for m in mcqs:
        scene = scenes.get(m["image_id"])
        out.append(None if scene is None else grade_mcq(scene, m["question"], m["answer"]))
    return out
