"""The paper's steps, one module each, in the order the notebooks run them:

| notebook | module | the step |
|---|---|---|
| 01 | `captions`, `mcq` | caption sources; dense descriptions -> verifiable multiple-choice questions |
| 02 | `simple_cot`, `verify` | the student's simple CoTs; parsing and the two answer rules (02, 03, 07) |
| 03 | `long_cot`, `behaviours` | the reasoner's long CoTs (cue, banned words, transitions); cognitive behaviours |
| 04 | `training_data`, `sharegpt` | SFT and DPO data; the LLaMA-Factory format, import and export |
| 07 | `evaluation` | the benchmarks under both answer rules, beside the paper's numbers |

Training (05, 06) is `lpt_utils.training`; display is `lpt_utils.viz`.
"""
