"""Which weights train and which moved: the vision tower and projector are frozen in the trainer's process
(`freeze_vision`), and the notebook checks afterwards, tensor by tensor on the saved models, that the
language model changed and the vision side did not (`compare_weights`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Submodules that make up the vision side of a VLM (tower and projector), by attribute name. Qwen2-VL and
# Qwen2.5-VL keep both in `model.visual` (the patch merger is the projector). A job names the modules it
# freezes (`TrainJob.frozen_modules`, these by default); the weight check classes tensors by the same names.
VISION_MODULE_NAMES = ("visual", "vision_tower", "vision_model", "multi_modal_projector", "mm_projector")


def vision_modules(model, names: Iterable[str] = VISION_MODULE_NAMES) -> dict[str, Any]:
    """The submodules of `model` whose attribute name is one of `names` (by default: the vision tower and
    projector), by qualified name, outermost matches only."""
    names = tuple(names)
    found: dict[str, Any] = {}
    for name, module in model.named_modules():
        if name.split(".")[-1] in names and not any(name.startswith(f + ".") for f in found):
            found[name] = module
    if not found:
        raise ValueError(f"{type(model).__name__}: no vision tower or projector found "
                         f"(looked for submodules named {', '.join(names)})")
    return found


def freeze_vision(model, names: Iterable[str] = VISION_MODULE_NAMES) -> list[str]:
    """Set requires_grad False on the vision tower and projector (the submodules named `names`); returns
    the frozen parameters' names."""
    frozen = []
    for prefix, module in vision_modules(model, names).items():
        for n, p in module.named_parameters():
            p.requires_grad_(False)
            frozen.append(f"{prefix}.{n}")
    return frozen


def parameter_counts(model) -> dict[str, int]:
    def n(p):  # under DeepSpeed ZeRO-3 a partitioned parameter keeps its full size in `ds_numel`
        return getattr(p, "ds_numel", None) or p.numel()

    trainable = sum(n(p) for p in model.parameters() if p.requires_grad)
    total = sum(n(p) for p in model.parameters())
    return {"trainable": trainable, "frozen": total - trainable}


@dataclass
class WeightDiff:
    """Which saved tensors differ between two checkpoints of the same model."""

    language_changed: int
    language_total: int
    vision_changed: int
    vision_total: int
    max_vision_change: float
    changed_examples: list[str] = field(default_factory=list)


def _weight_files(model: str) -> list[Path]:
    p = Path(model)
    if not p.is_dir():  # a hub id: its files in the local cache
        from huggingface_hub import snapshot_download  # only for hub ids

        p = Path(snapshot_download(model, allow_patterns=["*.safetensors", "*.json"], local_files_only=True))
    files = sorted(p.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model}: no .safetensors weights")
    return files


def is_vision_key(name: str) -> bool:
    return any(part in VISION_MODULE_NAMES for part in name.split("."))


def compare_weights(base: str, trained: str) -> WeightDiff:
    """Compare two saved models tensor by tensor (one tensor in memory at a time, so a 7B model is fine):
    how many language and vision tensors changed. Both must be saved under the same key names (any two
    `save_pretrained` folders of one architecture are)."""
    import torch  # heavy: loaded only when weights are compared
    from safetensors import safe_open

    def index(model: str) -> dict[str, Path]:
        out = {}
        for f in _weight_files(model):
            with safe_open(str(f), "pt") as h:
                out.update({k: f for k in h.keys()})
        return out

    a, b = index(base), index(trained)
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))[:5]
        raise ValueError(f"{base} and {trained} hold different tensors (e.g. {only})")
    lang = [0, 0]
    vis = [0, 0]
    max_vis = 0.0
    changed: list[str] = []
    for k in sorted(a):
        with safe_open(str(a[k]), "pt") as ha, safe_open(str(b[k]), "pt") as hb:
            ta, tb = ha.get_tensor(k), hb.get_tensor(k)
        same = ta.shape == tb.shape and torch.equal(ta, tb)
        counter = vis if is_vision_key(k) else lang
        counter[1] += 1
        if not same:
            counter[0] += 1
            if len(changed) < 5:
                changed.append(k)
            if counter is vis:
                max_vis = max(max_vis, float((ta.float() - tb.float()).abs().max()))
    return WeightDiff(language_changed=lang[0], language_total=lang[1], vision_changed=vis[0],
                      vision_total=vis[1], max_vision_change=max_vis, changed_examples=changed)
