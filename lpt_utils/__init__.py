"""Helpers shared by the LongPerceptualThoughts notebooks: one module per stage of the paper.

- `config`: profiles (one YAML per scale), overrides, run folders, settings hash
- `captions`: caption sources (DOCCI, any table or HF dataset of images + descriptions, synthetic)
- `mcq`: stage 1, captions to verifiable multiple-choice questions
- `engines`: one generation interface (vLLM, OpenAI-compatible HTTP, transformers) + resumable store
- `artifacts`: stage outputs and their manifests
- `tiny_world`: synthetic scenes and tiny Qwen models for the offline CPU profile
"""

__version__ = "0.1.0"
