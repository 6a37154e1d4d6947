"""The schema every resolved profile is checked against (pydantic): unknown keys are errors, types
are checked (and YAML's loose spellings such as `1e-5`, which YAML reads as text, are converted), and a
message names the profile file, the dotted key and a close match.

Two kinds of section are checked elsewhere, by what reads them: an engine's keys are `EngineConfig`'s
and a sampling section's are `SamplingSettings`' (both derived from those dataclasses here), and the
TRL keys of `sft:` / `dpo:` are checked against TRL's own `SFTConfig` / `DPOConfig` fields when a
training job is built (`lpt_utils.training.job`); their `lpt:` sub-sections are checked here.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from lpt_utils.engines.base import SamplingSettings
from lpt_utils.engines.config import EngineConfig

BUILT_IN_SOURCES = ("docci", "table", "hf")


class Section(BaseModel):
    """A settings section: every key known, no other."""

    model_config = ConfigDict(extra="forbid")


def _from_dataclass(name: str, cls: type) -> type[Section]:
    """A section whose keys are a dataclass's fields (all optional: a profile states what it sets)."""
    hints = typing.get_type_hints(cls)
    fields = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if typing.get_origin(tp) is tuple:  # stop words, bad words: YAML lists
            tp = list[typing.get_args(tp)[0]]
        fields[f.name] = (Optional[tp], None)
    return create_model(name, __base__=Section, **fields)


Engine = _from_dataclass("Engine", EngineConfig)
Sampling = _from_dataclass("Sampling", SamplingSettings)


class Model(Section):
    engine: Engine
    sampling: Sampling


class Plugins(Section):
    model_resolver: Optional[str] = None
    caption_sources: dict[str, str] = Field(default_factory=dict)
    benchmark_builders: dict[str, str] = Field(default_factory=dict)
    mcq_graders: dict[str, str] = Field(default_factory=dict)


class RaySettings(Section):
    address: Optional[str] = None
    actors: int = Field(1, ge=1)
    cpus_per_actor: float = Field(1, gt=0)
    gpus_per_actor: float = Field(0, ge=0)
    batch_size: Optional[int] = None
    num_cpus: Optional[int] = None


class ScaleOut(Section):
    backend: Literal["local", "ray"] = "local"
    ray: RaySettings = Field(default_factory=RaySettings)


class Paths(Section):
    outputs: str
    figures: str
    models: str


class Data(Section):
    source: str
    path: Optional[str] = None
    split: Optional[str] = None
    image_column: str
    description_column: str
    id_column: Optional[str] = None
    image_root: Optional[str] = None
    num_images: int | Literal["all"]
    subset_seed: int
    source_options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _count(self):
        if isinstance(self.num_images, int) and self.num_images <= 0:
            raise ValueError("num_images must be a positive number of images or 'all'")
        return self


class MCQStage(Section):
    writer: Model
    reformat: Literal["always", "when_unparsed", "never"]
    reformatter: Model
    randomise_seed: int
    choice_forms: list[str]
    answer_forms: list[str]


class Student(Section):
    engine: Engine


Rule = Literal["strict", "released"]


class SimpleCoTStage(Section):
    sampling: Sampling
    think_tag: str
    with_type_line: bool
    rule: Rule


class Reasoner(Section):
    engine: Engine


class LongCoTStage(Section):
    reasoner: Reasoner
    cues: list[str] = Field(min_length=1)
    separators: list[str] = Field(min_length=1)
    cue_seed: int
    think_tag: str
    sampling: Sampling
    banned_words: list[str]
    ban_rule: Literal["released", "whole_word", "whole_word_forms"]
    banned_forms: dict[str, list[str]] = Field(default_factory=dict)
    ban_in_sampling: bool
    measure_ban_on: int = Field(ge=0)
    rule: Rule


class Published(Section):
    path: Optional[str] = None
    docci_dir: Optional[str] = None


class TrainingDataStage(Section):
    seed: int
    simple_cot_divisor: float = Field(gt=0)
    long_cot_divisor: float = Field(gt=0)
    xo_per_pooled: float = Field(ge=0)
    masked_prefix: bool
    layout: Literal["lines", "inline"]
    answer_in_requested_form: bool
    with_type_line: bool
    val_fraction: float = Field(ge=0, lt=1)
    export_sharegpt: bool
    published: Published


class Behaviours(Section):
    judge: Literal["llm", "keywords"]
    max_texts: Optional[int] = None
    engine: Engine
    sampling: Sampling


class Difficulty(Section):
    benchmarks: list[str]
    samples: int = Field(ge=1)


class BenchmarkSpec(BaseModel):
    """A benchmark's place and its own options (a builder plugin may read more)."""

    model_config = ConfigDict(extra="allow")
    path: Optional[str] = None
    image_root: Optional[str] = None


class EvalStage(Section):
    run: list[str]
    benchmarks: dict[str, BenchmarkSpec]
    limit: Optional[int] = None
    models: dict[str, str]
    prompts: dict[str, list[Literal["direct", "think"]]]
    sampling: Sampling
    image_max_pixels: Optional[int] = None
    image_min_pixels: Optional[int] = None
    whole_response_fallback: bool
    max_model_len: Optional[int] = None
    think_prefix: str
    mmvp_corrections: bool
    difficulty: Difficulty


class Validation(Section):
    max_mcqs: Optional[int] = None
    sampling: Sampling


class TrainingLpt(Section):
    """This project's training settings (`sft.lpt`, `dpo.lpt`); the rest of `sft:` / `dpo:` is TRL's."""

    data: Optional[str] = None
    control: Optional[Literal["sft_long", "sft_simple", "sft_published"]] = None
    families: Optional[list[str]] = None
    learning_rates: list[float] = Field(min_length=1)
    max_epochs: int = Field(ge=1)
    early_stop_patience: Optional[int] = None
    validate_: bool = Field(alias="validate")
    effective_batch_size: Optional[int] = None
    overlong: Literal["truncate", "drop"]
    max_pixels: Optional[int] = None
    cpu_threads: Optional[int] = None
    launcher: Literal["accelerate", "python", "slurm"]
    num_processes: int | Literal["auto"]
    num_machines: int = Field(1, ge=1)
    validation: Validation

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Training(BaseModel):
    """`sft:` / `dpo:`: TRL's own keys (checked against TRL when a job is built) and `lpt:`."""

    model_config = ConfigDict(extra="allow")
    lpt: TrainingLpt


class Profile(Section):
    plugins: Plugins
    scale_out: ScaleOut
    paths: Paths
    data: Data
    mcq: MCQStage
    student: Student
    simple_cot: SimpleCoTStage
    long_cot: LongCoTStage
    training_data: TrainingDataStage
    behaviours: Behaviours
    eval: EvalStage
    sft: Training
    dpo: Training

    @model_validator(mode="after")
    def _names(self):
        sources = set(BUILT_IN_SOURCES) | set(self.plugins.caption_sources)
        if self.data.source not in sources:
            raise ValueError(f"data.source {self.data.source!r} is neither a built-in source "
                             f"({', '.join(BUILT_IN_SOURCES)}) nor one of plugins.caption_sources "
                             f"({', '.join(self.plugins.caption_sources) or 'none'})")
        missing = [b for b in self.eval.run if b not in self.eval.benchmarks]
        if missing:
            raise ValueError(f"eval.run names {missing}, which eval.benchmarks does not define")
        return self


class ProfileError(ValueError):
    """A profile that does not fit the schema: the file, the key, what is wrong, a close match."""


def _known_keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_at(path: tuple) -> type[BaseModel] | None:
    """The section model at a dotted location, to suggest the key that was meant."""
    model: Any = Profile
    for part in path:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = next((f for name, f in model.model_fields.items() if (f.alias or name) == part), None)
        if field is None:
            return None
        tp = field.annotation
        for arg in (typing.get_args(tp) or (tp,)):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                model = arg
                break
        else:
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def check(settings: dict[str, Any], where: Any = lambda key: "the profile") -> dict[str, Any]:
    """The settings, checked against `Profile` and with YAML's loose values converted; a
    `ProfileError` naming the file (`where(dotted key)`), the key and a close match otherwise."""
    try:
        model = Profile.model_validate(settings)
    except ValidationError as e:
        raise ProfileError("\n".join(_messages(e, settings, where))) from None
    checked = model.model_dump(exclude_unset=True, by_alias=True)
    return _merge_converted(settings, checked)


def _key_path(loc: tuple, settings: dict[str, Any]) -> tuple:
    """The part of an error's location that is settings keys (a union's member names are not)."""
    node: Any = settings
    out = []
    for part in loc:
        if isinstance(node, dict) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            out.append(part)
            node = node[part]
        else:
            break
    return tuple(out)


def _messages(e: ValidationError, settings: dict[str, Any], where) -> list[str]:
    """One line per wrong setting: the file (or override), the dotted key, what is wrong."""
    grouped: dict[str, list[str]] = {}
    values: dict[str, Any] = {}
    lines = []
    for err in e.errors():
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            key = ".".join(map(str, loc))
            parent = _model_at(tuple(map(str, loc[:-1])))
            near = difflib.get_close_matches(str(loc[-1]), _known_keys(parent), n=1) if parent else []
            hint = f" (did you mean {'.'.join(map(str, loc[:-1] + (near[0],)))}?)" if near else ""
            lines.append(f"{where(key)}: unknown setting {key}{hint}")
        elif err["type"] == "missing":
            key = ".".join(map(str, loc))
            lines.append(f"{where(key)}: {key} is missing")
        elif err["type"] == "value_error":
            key = ".".join(map(str, _key_path(loc, settings)))
            lines.append(f"{where(key)}: {err['msg'].removeprefix('Value error, ')}")
        else:
            key = ".".join(map(str, _key_path(loc, settings)))
            grouped.setdefault(key, []).append(err["msg"].removeprefix("Input should be "))
            values[key] = err.get("input")
    for key, msgs in grouped.items():
        lines.append(f"{where(key)}: {key}: expected {' or '.join(dict.fromkeys(msgs))} (got {values[key]!r})")
    return lines


def _merge_converted(raw: Any, checked: Any) -> Any:
    """The raw settings with the values the schema converted (e.g. "1e-5" -> 1e-05), keys and order
    kept as written (sections the schema does not look into are kept as they are)."""
    if isinstance(raw, dict) and isinstance(checked, dict):
        return {k: _merge_converted(v, checked[k]) if k in checked else v for k, v in raw.items()}
    if isinstance(raw, list) and isinstance(checked, list) and len(raw) == len(checked):
        return [_merge_converted(a, b) for a, b in zip(raw, checked)]
    return checked if not isinstance(raw, (dict, list)) else raw
