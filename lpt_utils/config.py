"""Profiles: one YAML per scale (`tiny`, `paper`, `released_code`, `api`), the single source of truth
for every model id, sampling parameter, backend and size a run uses.

A profile may name a parent with `inherits:` and state only what differs (mappings merge key by key,
everything else replaces). Notebooks take a profile name, a run name and single-value overrides
(dotted keys, e.g. ``{"mcq.writer.sampling.temperature": 0.5}``) as papermill parameters; an override
of a key the profile does not have is an error, so a typo never silently does nothing.
"""

from __future__ import annotations

import copy
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lpt_utils import plugins, profile_schema
from lpt_utils.engines import make_engine
from lpt_utils.artifacts import settings_hash
from lpt_utils.profile_schema import ProfileError
from lpt_utils.stages import SPECS, Stage, Status, part_name

PROFILE_DIR = Path(__file__).parent / "profiles"
REPO_ROOT = Path(__file__).resolve().parent.parent

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def profile_path(name: str) -> Path:
    """A profile name (`tiny`) or a path to a YAML file of one's own."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    p = PROFILE_DIR / f"{name}.yaml"
    if not p.exists():
        known = ", ".join(available_profiles())
        raise FileNotFoundError(f"no profile named {name!r} (known: {known}; or pass a .yaml path)")
    return p


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def deep_merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """`child` over `base`: mappings merge recursively, any other value replaces."""
    out = copy.deepcopy(base)
    for k, v in child.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _read(path: Path) -> dict[str, Any]:
    """One profile file: a YAML mapping (errors name the file and the line)."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ProfileError(f"profile {path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ProfileError(f"profile {path}: a profile is a mapping of sections (data:, mcq:, ...), "
                           f"not a {type(data).__name__}")
    return data


def profile_chain(name: str, _seen: tuple[str, ...] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """The profile's files, the profile itself first, then what it inherits from, each as written."""
    path = profile_path(name)
    if str(path) in _seen:
        raise ValueError(f"profile inheritance loops: {' -> '.join(_seen + (str(path),))}")
    data = _read(path)
    parent = data.pop("inherits", None)
    return [(path, data)] + (profile_chain(parent, _seen + (str(path),)) if parent else [])


def _defines(data: dict[str, Any], dotted: str) -> bool:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _where(chain: list[tuple[Path, dict[str, Any]]], overrides: dict[str, Any] | None = None):
    """`where(dotted key)`: the override or the profile file that sets the key (or its section)."""
    def where(key: str) -> str:
        parts = key.split(".")
        prefixes = [".".join(parts[:n]) for n in range(len(parts), 0, -1)]
        for prefix in prefixes:
            if overrides and prefix in overrides:
                return f"override {prefix}"
        for prefix in prefixes:
            for path, data in chain:
                if _defines(data, prefix):
                    return f"profile {path}"
        return f"profile {chain[-1][0]}"
    return where


def load_profile(name: str, check: bool = True) -> dict[str, Any]:
    """Read a profile and everything it inherits from, merged (without the `inherits` key), and (with
    `check`) checked against the schema (`lpt_utils.profile_schema`)."""
    chain = profile_chain(name)
    data: dict[str, Any] = {}
    for _, layer in reversed(chain):
        data = deep_merge(data, layer)
    return profile_schema.check(data, _where(chain)) if check else data


def _flat_keys(d: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k, v in d.items():
        keys.append(prefix + k)
        if isinstance(v, dict):
            keys += _flat_keys(v, prefix + k + ".")
    return keys


def apply_overrides(settings: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Set dotted keys; each must already exist in the profile."""
    out = copy.deepcopy(settings)
    for dotted, value in (overrides or {}).items():
        parts = dotted.split(".")
        node = out
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                near = difflib.get_close_matches(dotted, _flat_keys(settings), n=3)
                hint = f" (did you mean {', '.join(near)}?)" if near else ""
                raise KeyError(f"override {dotted!r}: the profile has no such setting{hint}")
            if i == len(parts) - 1:
                node[part] = copy.deepcopy(value)
            else:
                node = node[part]
    return out


@dataclass
class Run:
    """One run: a profile resolved with overrides, and the folders it reads and writes."""

    profile: str
    name: str
    settings: dict[str, Any]
    root: Path = field(default=REPO_ROOT)

    def _path(self, key: str) -> Path:
        p = Path(self.settings["paths"][key])
        return p if p.is_absolute() else self.root / p

    @property
    def run_dir(self) -> Path:
        return self._path("outputs") / self.name

    @property
    def figures_dir(self) -> Path:
        d = self._path("figures") / self.name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def figures_for(self, part: str | None) -> Path:
        """Where a notebook draws: `figures/<run>/`, or for an array job's shard its own
        `figures/<run>/parts/<part>/` (a shard sees its share only; the merge draws the whole run's)."""
        d = self.figures_dir / "parts" / part if part else self.figures_dir
        d.mkdir(parents=True, exist_ok=True)
        return d

    @property
    def models_dir(self) -> Path:
        return self._path("models")

    def stage(self, stage: str) -> Stage:
        """This run's artifact of a stage (key `mcq` or folder `01_mcq`): load, write, status."""
        return Stage(self.run_dir, self.settings, stage)

    def part(self, shard_index: int, num_shards: int) -> str | None:
        """The part an array job's shard writes ("1-of-3"), or None for a whole (unsharded) stage."""
        return None if num_shards == 1 else part_name(shard_index, num_shards)

    def stage_dir(self, stage: str) -> Path:
        """`outputs/<run>/<NN_stage>/` for a stage key (`mcq`) or folder name (`01_mcq`)."""
        return self.stage(stage).dir

    def resolve_model(self, model: str) -> str:
        """What a backend loads for a model id: the profile's `plugins.model_resolver` decides (the
        tiny profile's builds "tiny:vlm" on first use); without one, the id itself."""
        resolver = plugins.named(self.settings, "model_resolver")
        return str(resolver(model, self.models_dir)) if resolver else model

    def engine(self, cfg):
        """The engine for `cfg` (an `EngineConfig`) as this run builds it: its model resolver, and its
        profile's `scale_out` (this process, or a pool of Ray actors)."""
        return make_engine(cfg, self.resolve_model, self.settings.get("scale_out"))

    def caption_source(self):
        """The plugin that reads `data.source`, when the profile names one (None: a built-in source)."""
        return plugins.named(self.settings, "caption_sources", self.settings["data"]["source"])

    def mcq_grader(self):
        """The plugin that grades MCQs against the ground truth of `data.source` (a synthetic source knows
        its scenes), when the profile names one; None otherwise (real captions have no such truth)."""
        return plugins.named(self.settings, "mcq_graders", self.settings["data"]["source"])

    def benchmark_builder(self, name: str):
        """The plugin that writes benchmark `name`'s files before it is read, if the profile names one."""
        return plugins.named(self.settings, "benchmark_builders", name)

    def stale(self) -> dict[str, Status]:
        """Every stage's status (`stages.Status`): current, stale (and why) or missing."""
        return {s.folder: self.stage(s.key).status() for s in SPECS if s.key != "sources"}

    def save(self) -> Path:
        """Write the resolved settings to `outputs/<run>/settings.yaml`."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        p = self.run_dir / "settings.yaml"
        doc = {"profile": self.profile, "run": self.name, "settings_hash": settings_hash(self.settings),
               "settings": self.settings}
        p.write_text(yaml.safe_dump(doc, sort_keys=False))
        return p


def resolve_run(profile: str = "tiny", run: str | None = None,
                overrides: dict[str, Any] | None = None, root: Path | None = None) -> Run:
    """Profile + overrides → a `Run` whose resolved settings are saved in its folder."""
    run = run or profile
    if not _RUN_NAME.match(run):
        raise ValueError(f"run name {run!r}: use letters, digits, '.', '_' and '-'")
    settings = apply_overrides(load_profile(profile, check=False), overrides)
    settings = profile_schema.check(settings, _where(profile_chain(profile), overrides))
    r = Run(profile=profile, name=run, settings=settings, root=Path(root) if root else REPO_ROOT)
    r.save()
    return r


def open_run(name: str, outputs: str | Path | None = None, root: Path | None = None) -> Run:
    """A finished (or started) run as its notebooks resolved it, read from
    `<outputs>/<name>/settings.yaml` (default outputs folder: `outputs/`); nothing is re-resolved
    or re-written."""
    root = Path(root) if root else REPO_ROOT
    base = Path(outputs) if outputs else root / "outputs"
    path = (base if base.is_absolute() else root / base) / name / "settings.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no run {name!r}: {path} does not exist (run a notebook of it first)")
    doc = yaml.safe_load(path.read_text())
    run = Run(profile=doc["profile"], name=doc["run"], settings=doc["settings"], root=root)
    if run.run_dir.resolve() != path.parent.resolve():
        # the run folder was moved or copied (e.g. from a GPU machine): its artifacts are where its
        # settings were found, whatever `paths.outputs` said when it ran
        run.settings = copy.deepcopy(run.settings)
        run.settings["paths"]["outputs"] = str(path.parent.parent.resolve())
    return run


def show(settings: dict[str, Any], sections: tuple[str, ...] | None = None) -> str:
    """The settings (or some sections) as YAML text, for printing in a notebook."""
    part = {k: v for k, v in settings.items() if sections is None or k in sections}
    return yaml.safe_dump(part, sort_keys=False)
