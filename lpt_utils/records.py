"""The records every stage writes: one dataclass per artifact row, the one place their column names
and types are declared. `lpt_utils.stages` names which stage writes which record; the stage modules
build them; `arrow_schema` turns one into the parquet schema a stage's file is checked against.

| record | written by | file |
|---|---|---|
| `MCQ` | 01 captions -> MCQs | `01_mcq/data.parquet` (valid and invalid) |
| `SimpleCoT` | 02 simple CoTs | `02_simple_cot/data.parquet` (one sampled response) |
| `LongCoT` | 03 long CoTs | `03_long_cot/data.parquet` (one continuation) |
| `SFTRow`, `DPORow` (and `MCQ`) | 04 training data | `04_training_data/<set>.parquet` (`val_mcqs.parquet`: MCQs) |
| `Prediction` | 07 evaluation | `07_eval/data.parquet` (one model's answer to one item) |
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import pyarrow as pa


@dataclass
class MCQ:
    """One row of the stage-1 artifact (valid and invalid MCQs alike)."""

    mcq_id: str
    image_id: str
    image_path: str
    description: str
    item_index: int
    question: str
    choices: list[str]  # in the order shown to the VLM (after randomisation when valid)
    answer: str  # text of the right option
    answer_letter: str  # its letter in `choices` ("" when invalid)
    question_type: str
    choice_form: str  # key of CHOICE_FORMS
    answer_form: str  # key of ANSWER_FORMS
    is_valid: bool
    invalid_reason: str
    raw_response: str  # the writer's response
    reformatted_response: str  # the reformat pass's response ("" when the writer's was parsed as is)
    raw_item: str  # the parsed block of this question
    extra: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        return d





@dataclass
class SimpleCoT:
    """One row of the stage-2 artifact: one sampled response."""

    mcq_id: str
    response_id: str
    image_id: str
    image_path: str
    question_type: str
    raw_text: str  # the whole assistant turn, think tag included
    thought: str
    answer: str
    answer_letter: str  # the right option's letter
    named_letter: str  # the option the answer names under the strict rule ("" when none or ambiguous)
    match: str  # how the strict rule read the answer (lpt_utils.pipeline.verify.Verdict.how)
    match_released: str  # how the released rule read it
    correct_strict: bool
    correct_released: bool
    rule: str  # the rule that labels the row (the profile's `simple_cot.rule`)
    is_correct: bool  # the verdict of `rule`
    label: str  # "O" (right) or "X" (wrong); "" when unparsable
    response_shape: str  # how the response is laid out (lpt_utils.pipeline.verify.SHAPES)
    num_tokens: int
    finish_reason: str
    kept: bool
    drop_reason: str  # "" | "unparsable" | "duplicate"




@dataclass
class LongCoT:
    """One row of the stage-3 artifact: one continuation of one simple CoT."""

    mcq_id: str
    simple_id: str  # the stage-2 response it expands
    long_id: str
    image_id: str
    image_path: str
    question_type: str
    cue: str
    separator: str
    simple_thought: str
    simple_answer: str
    simple_correct: bool
    simple_num_tokens: int
    prefix: str  # the pre-filled assistant text (think tag, opening, simple thought, cue)
    raw_text: str  # what the reasoning model generated after the prefix
    added_thought: str  # that text up to the closing think tag
    long_thought: str  # simple thought + separator + cue + added thought (what the student learns)
    summary: str  # what the model wrote between </think> and <answer> (R1 distills usually summarise)
    answer: str
    answer_letter: str
    named_letter: str  # the option the answer names under the strict rule
    match: str  # how the strict rule read the answer
    match_released: str  # how the released rule read it
    correct_strict: bool
    correct_released: bool
    rule: str  # the rule that labels the transition (the profile's `long_cot.rule`)
    is_correct: bool  # the verdict of `rule`
    response_shape: str  # how the continuation is laid out (lpt_utils.pipeline.verify.SHAPES, or "empty_added_thought")
    transition: str  # O→O | O→X | X→O | X→X ("" when unparsable)
    num_tokens: int  # tokens the reasoning model generated
    finish_reason: str
    banned_hits: list[str] = field(default_factory=list)
    kept: bool = True
    drop_reason: str = ""  # "" | "unparsable" | "banned word" | "duplicate"
    simple_thought_tokens: int = 0  # in the student's tokens (it is trained on these texts)
    long_thought_tokens: int = 0




@dataclass
class Prediction:
    """One row of `07_eval/data.parquet`: one model's response to one item under one prompt."""

    model: str  # the table row: base | sft | dpo | ...
    model_path: str  # what the engine loaded
    prompt: str  # direct | think
    benchmark: str
    item_id: str
    category: str
    subset: str  # the benchmark's own division for its authors' aggregate (CV-Bench: source); "" otherwise
    question: str
    choices: list[str]
    answer_letter: str  # as published
    corrected_letter: str  # a known correction ("" when none); used when corrections are on
    right_letter: str  # what was scored against
    image_path: str
    raw_output: str  # the whole assistant turn (a forced prefix included)
    extracted: str | None  # the strict rule's extraction
    source: str  # where it came from: answer_tags | answer_colon | after_thought | whole_response | none
    answered: bool
    unanswered_reason: str
    named_letter: str
    match: str
    correct: bool  # the strict rule (this project's correction)
    extracted_released: str | None  # the released script's extraction
    match_released: str
    correct_released: bool  # the released script's rule (the paper's numbers)
    num_tokens: int
    finish_reason: str


@dataclass
class SFTRow:
    """One SFT example of stage 4 (`sft_simple`, `sft_long`, `sft_published`): the student's system
    and user turns (the image goes first), the assistant turn it learns, and for X→O rows the
    `assistant_prefix` (the wrong simple thought) that carries no loss."""

    id: str
    mcq_id: str
    image_id: str
    image_path: str
    system: str
    user: str
    assistant: str
    assistant_prefix: str  # "" unless an X→O row (its tokens are masked)
    source: str  # O | O→O | X→O (the trace kind), or the published set's cot_type
    num_tokens: int  # tokens of the thought the row trains on (student tokenizer)
    simple_cot_id: str
    long_cot_id: str  # "" for a simple CoT
    extra_metadata: str  # JSON: any metadata an imported file carried beyond these columns


@dataclass
class DPORow:
    """One DPO pair of stage 4 (`dpo_O`, `dpo_XO`): the same prompt, a preferred and a rejected
    assistant turn."""

    id: str
    mcq_id: str
    image_id: str
    image_path: str
    system: str
    user: str
    chosen: str
    rejected: str
    pair_type: str  # O>O→X | O>X | X→O>X→X | X→O>X
    family: str  # O | X→O
    extra_metadata: str



@dataclass
class SetSize:
    """A row of `04_training_data/data.parquet`: one training set and its size (the sets themselves
    are `<set>.parquet` beside it)."""

    set: str
    rows: int


def columns(record: type) -> tuple[str, ...]:
    """A record's column names, in order (its fields that are columns: `arrow_schema`)."""
    return tuple(arrow_schema(record).names)


_ARROW = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}


def _arrow_type(tp: Any) -> pa.DataType:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _arrow_type(inner[0])
    if origin is list:
        return pa.list_(_arrow_type(typing.get_args(tp)[0]))
    if tp in _ARROW:
        return _ARROW[tp]
    raise TypeError(f"no arrow type for {tp!r}")


def arrow_schema(record: type) -> pa.Schema:
    """The parquet schema of a record's rows (fields of other types, such as `MCQ.extra`, are not
    columns)."""
    hints = typing.get_type_hints(record)
    out = []
    for f in fields(record):
        try:
            out.append(pa.field(f.name, _arrow_type(hints[f.name])))
        except TypeError:
            continue
    return pa.schema(out)


def frame(record: type, rows: list[Any]) -> Any:
    """Rows (records or dicts) as a DataFrame with exactly the record's columns, in order, even when
    there are none: a stage with nothing valid still has its columns, its figures and its artifact."""
    import pandas as pd

    dicts = [to_row(r) if dataclasses.is_dataclass(r) else r for r in rows]
    if not dicts:  # typed columns (a boolean mask of an empty frame must still be a mask)
        return arrow_schema(record).empty_table().to_pandas()
    return pd.DataFrame(dicts, columns=list(columns(record)))


def as_dict(record: Any) -> dict[str, Any]:
    """A record's fields as a dict, shallow (its lists are shared, not copied): what a stage turns
    into a DataFrame, a million times over, where `dataclasses.asdict`'s deep copy would dominate."""
    return dict(vars(record))


def to_row(record: Any) -> dict[str, Any]:
    """A record as a row: its columns (`arrow_schema`), nothing else."""
    names = set(arrow_schema(type(record)).names)
    return {k: v for k, v in asdict(record).items() if k in names}


SFT_COLUMNS = columns(SFTRow)
DPO_COLUMNS = columns(DPORow)
