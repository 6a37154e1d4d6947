"""Validation between training calls: each exported epoch model answers stage 4's held-out MCQs through
the engines (vLLM on the tiny and paper profiles), in the notebook's kernel and never in the trainer's
process; the engine is closed before the next training call, so the machine is the trainer's again.
`validator` gives the sweep its `validate(model_dir) -> accuracy`, with scores kept in the sweep folder
so a resumed sweep does not need the models it already scored and discarded."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lpt_utils.engines import EngineConfig, RequestStore, make_engine, run_requests
from lpt_utils.pipeline import simple_cot


@dataclass
class ValidationResult:
    """One model's score on the held-out MCQs."""

    accuracy: float  # right answers / samples; unparsable samples count as wrong
    samples: int
    parsed: int
    accuracy_by_type: dict[str, float] = field(default_factory=dict)
    rows: list = field(default_factory=list, repr=False)  # the scored samples (`simple_cot.SimpleCoT`)


def validation_accuracy(model_dir: Path, val_rows: list[dict[str, Any]], engine: dict[str, Any],
                        sampling: dict[str, Any], store_path: Path, *,
                        resolve: Callable[[str], str] | None = None, think_tag: str = "<think>",
                        with_type: bool = True, rule: str = "strict") -> ValidationResult:
    """Score `model_dir` on the held-out MCQs with the student prompt (forced think tag) through the
    engines (`engine`: the profile's `student.engine`, its model replaced by `model_dir`; `resolve`: the
    run's model resolver, `Run.resolve_model`, which leaves a folder as it is). Requests are stored under
    `store_path`, keyed by the model's weights, so a re-run with the same weights reuses them. The engine
    is closed before returning, so the next training call has the machine to itself."""
    if not val_rows:
        raise ValueError("no validation MCQs")
    cfg = EngineConfig.from_dict({**engine, "model": str(model_dir)})
    prefix = simple_cot.forced_prefix(str(model_dir), think_tag)
    eng = make_engine(cfg, resolve)
    try:
        results = run_requests(eng, simple_cot.requests(val_rows, sampling, prefix, with_type),
                               RequestStore(store_path), desc=f"validating {Path(model_dir).parent.name}")
    finally:
        close = getattr(eng, "close", None)
        if close:
            close()
    scored, _ = simple_cot.score(val_rows, results, rule=rule)
    by_type: dict[str, list[bool]] = {}
    for r in scored:
        by_type.setdefault(r.question_type, []).append(r.is_correct)
    return ValidationResult(accuracy=sum(r.is_correct for r in scored) / len(scored), samples=len(scored),
                            parsed=sum(r.drop_reason != "unparsable" for r in scored),
                            accuracy_by_type={t: sum(v) / len(v) for t, v in sorted(by_type.items())},
                            rows=scored)


def validator(val_rows: list[dict[str, Any]], student_engine: dict[str, Any], validation: dict[str, Any],
              store_path: Path, *, resolve: Callable[[str], str] | None = None, think_tag: str = "<think>",
              with_type: bool = True, rule: str = "strict",
              cache_file: Path | None = None) -> tuple[Callable[[Path], float], dict[str, ValidationResult]]:
    """`validate(model_dir) -> accuracy` for the sweep, and the dict it fills with each model's full result.
    With `cache_file` (inside the sweep folder, which `prepare_sweep_dir` empties when anything that
    shapes the models changes), each model's score is kept there too, so a resumed sweep does not need
    the models it already scored and discarded."""
    seen: dict[str, ValidationResult] = {}
    cache = json.loads(Path(cache_file).read_text()) if cache_file and Path(cache_file).exists() else {}

    def validate(model_dir: Path) -> float:
        if str(model_dir) in cache:
            res = ValidationResult(**cache[str(model_dir)])
            print(f"validation {Path(model_dir).parent.parent.name}/{Path(model_dir).parent.name}: "
                  f"{res.accuracy:.1%} (scored in an earlier run)", flush=True)
            seen[str(model_dir)] = res
            return res.accuracy
        res = validation_accuracy(model_dir, val_rows, student_engine, validation["sampling"], store_path,
                                  resolve=resolve, think_tag=think_tag, with_type=with_type, rule=rule)
        seen[str(model_dir)] = res
        if cache_file:
            cache[str(model_dir)] = {k: v for k, v in asdict(res).items() if k != "rows"}
            Path(cache_file).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(cache_file).with_suffix(".tmp")
            tmp.write_text(json.dumps(cache, indent=1))
            os.replace(tmp, cache_file)
        print(f"validation {Path(model_dir).parent.parent.name}/{Path(model_dir).parent.name}: "
              f"{res.accuracy:.1%} of {res.samples} ({res.parsed} parsed)", flush=True)
        return res.accuracy

    return validate, seen
