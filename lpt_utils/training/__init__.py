"""Stages 5 and 6: supervised fine-tuning on the long CoTs, then DPO from the SFT model.

The paper trains the whole language model of the student VLM with its vision tower and projector
frozen: SFT first (TRL `SFTTrainer`), then DPO with an SFT (NLL) term mixed in (TRL `DPOTrainer`,
``loss_type=["sigmoid", "sft"]``), the SFT model being both the starting point and the reference.

The work is split at the process boundary:

- **The trainer's process** is a TRL-style script, ``python -m lpt_utils.training sft|dpo --config
  job.yaml`` (the same under ``accelerate launch ... -m lpt_utils.training`` on GPUs; `lpt_utils.training.launch`
  builds the command). It reads a job file (`job.TrainJob`: the TRL config dict verbatim plus this
  project's job fields), builds TRL's own `SFTConfig` / `DPOConfig` from it, trains one more epoch of
  the schedule (resuming from the previous call's checkpoint) and exports that epoch's model.
- **The notebook's kernel** does everything else: it checks the input contract and renders the
  examples (`data`), turns the profile's `sft:` / `dpo:` section into job files (`job`), runs the
  learning-rate sweep with early stopping and keeps the best epoch (`sweep`), scores each exported
  model on held-out MCQs through the engines, never in the trainer's process (`validation`), and
  checks which weights moved (`weights`).

The profile sections hold TRL's keys as they are (checked against `dataclasses.fields(SFTConfig)` /
`DPOConfig`) and one sub-section, `lpt:`, of this project's settings (the sweep, validation, data
choice, launcher, image cap...); `job.StageSettings.from_section` names any key it does not know, with
its section and the closest known name.

Modules: `data` (contract, rendering, collators), `job` (profile section -> job file -> trainer -> one
epoch), `sweep` (sweep, resume, keep best, `run_sweep`), `validation`, `weights`, `__main__` (CLI).
Nothing here imports torch, transformers or trl at module level: the kernel imports these modules
cheaply, and the heavy libraries load where a function needs them.
"""
