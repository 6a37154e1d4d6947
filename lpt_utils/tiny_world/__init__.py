"""The tiny world: synthetic scenes, their descriptions and questions, and tiny Qwen models, so the
whole pipeline runs offline on a CPU in minutes (the `tiny` profile).

- `scenes`: procedurally drawn scenes, DOCCI-like descriptions, DOCCI-shaped folders
- `questions`: ground-truth MCQs from a scene graph; a V*-like held-out benchmark
- `tokenizer`: a world BPE tokenizer with Qwen's special tokens and chat template
- `corpus`: warm-up examples built from the pipeline's own prompts
- `models`: tiny Qwen2.5-VL (student) and Qwen2 (writer) models, built once per recipe
- `check`: vLLM smoke checks of the built models (parse rates, accuracy per question kind)

`python -m lpt_utils.tiny_world build --models-dir DIR` builds both models;
`python -m lpt_utils.tiny_world check --models-dir DIR` runs the smoke checks.
"""
