"""Helpers shared by the LongPerceptualThoughts notebooks, in layers (each imports only from those
below it; `pyproject.toml`'s import-linter contracts hold this in `make test`):

- `reproduce`: runs the numbered notebooks in order with papermill
- `viz`: display: MCQ and CoT cards, figures, the CoT inspector
- `training`: notebooks 05-06: TRL jobs in a subprocess, the learning-rate sweep, validation
- `pipeline`: the paper's steps: captions and MCQs (01), simple CoTs and answer reading (02), long
  CoTs (03), training data and its sharegpt format (04), evaluation (07)
- `benchmarks`: the evaluation benchmarks' published files, one task each
- `config`: profiles, overrides, a run's folders and plugins; `profile_schema`: every setting's type
- `engines`: one generation interface (vLLM, OpenAI-compatible HTTP, transformers) + the request store
- `stages`: the stage registry (folders, settings, upstream stages, records; load, write, staleness)
- `records`, `artifacts`, `plugins`, `prompts`: artifact rows, funnels and hashes, plugins by name,
  prompt templates

Beside them, `tiny_world`: synthetic scenes and tiny Qwen models for the offline CPU profile, plugged
in by the tiny profile and imported by nothing above.
"""

__version__ = "0.1.0"
