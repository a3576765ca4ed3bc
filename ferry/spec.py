"""The spec catalogue: one YAML spec per model, a catalogue file with shared defaults.

Paths in a spec are relative to the spec file; paths in a catalogue to the catalogue file.
Every problem is reported as `file: field: message (got value)` so a user can fix it in one edit.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from ferry.data import DATA_FORMATS, DEFAULT_FORMAT, ImageFolderOptions, KeyMap, Options, TFRecordOptions
from ferry.data import units as data_units
from ferry.sources import FORMATS, latest_checkpoint
from ferry.stages import STAGES


class SpecError(Exception):
    """One or more problems in spec or catalogue files."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    def __reduce__(self):  # back from a model's process as itself, problems and all
        return (SpecError, (self.problems,))


class Problem(BaseModel):
    """One problem: the file, the dotted field path, what is wrong and the value received."""

    file: str
    field: str
    message: str
    value: Any = None

    def __str__(self) -> str:
        where = f"{self.file}: {self.field}" if self.field else self.file
        got = "" if self.value is None else f" (got {self.value!r})"
        return f"{where}: {self.message}{got}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


class Source(_Strict):
    """The TF1 artifact, in one of the formats of `ferry.sources` (exactly one of `meta`, `frozen_graph`,
    `saved_model`, `estimator_dir`), and the tensors that become the serving signature."""

    meta: Path | None = Field(None, description="a .meta MetaGraphDef, with a name-based checkpoint")
    frozen_graph: Path | None = Field(None, description="a frozen GraphDef (.pb): weights are constants")
    saved_model: Path | None = Field(None, description="a TF1 SavedModel folder")
    estimator_dir: Path | None = Field(None, description="an Estimator model_dir")
    checkpoint: str | None = Field(None, description="meta: checkpoint prefix (default: meta without .meta); "
                                   "estimator_dir: `latest` (default) or a checkpoint name such as model.ckpt-12000")
    tag: str | None = Field(None, description="saved_model: the MetaGraph's tag (default serve)")
    signature: str | None = Field(None, description="saved_model: the SignatureDef (default serving_default)")
    inputs: dict[str, str] = Field(default_factory=dict, validate_default=True,
                                   description="serving name -> TF1 tensor name")
    outputs: dict[str, str] = Field(default_factory=dict, validate_default=True,
                                    description="serving name -> TF1 tensor name")

    @field_validator("inputs", "outputs")
    @classmethod
    def _tensor_names(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        named = [name for name in FORMATS if info.data.get(name) is not None]
        if not value and len(named) == 1 and FORMATS[named[0]].needs_signature:
            raise ValueError(f"Field required: a {named[0]} source names its serving {info.field_name} "
                             "(serving name -> tensor name); only a saved_model has a signature of its own")
        for serving, tensor in value.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", serving):
                raise ValueError(f"serving name {serving!r} must be an identifier")
            if not re.fullmatch(r"[^:\s]+:\d+", tensor):
                raise ValueError(f"tensor name {tensor!r} for {serving!r} must look like 'op_name:0'")
        return value

    @model_validator(mode="after")
    def _one_format(self) -> Source:
        named = [name for name in FORMATS if getattr(self, name) is not None]
        if len(named) != 1:
            raise ValueError(f"needs exactly one of {', '.join(f'`{n}`' for n in FORMATS)} (got {named or 'none'})")
        for key, only in (("tag", "saved_model"), ("signature", "saved_model")):
            if getattr(self, key) is not None and named[0] != only:
                raise ValueError(f"`{key}` is for a {only} source, not {named[0]}")
        if self.checkpoint is not None and named[0] not in ("meta", "estimator_dir"):
            raise ValueError(f"`checkpoint` is for a meta or estimator_dir source, not {named[0]}")
        return self

    @property
    def format(self) -> str:
        """The format's name: meta, frozen_graph, saved_model or estimator_dir."""
        return next(name for name in FORMATS if getattr(self, name) is not None)

    @property
    def artifact(self) -> Path:
        """The file or folder the format's key names."""
        return getattr(self, self.format)

    @property
    def checkpoint_prefix(self) -> Path | None:
        """Where the weights are: a checkpoint prefix (None for a frozen graph, whose weights are in it)."""
        if self.format == "meta":
            if self.checkpoint is not None:
                return Path(self.checkpoint)
            return self.meta.with_suffix("") if self.meta.suffix == ".meta" else self.meta
        if self.format == "saved_model":
            return self.saved_model / "variables" / "variables"
        if self.format == "estimator_dir":
            return latest_checkpoint(self.estimator_dir, self.checkpoint)
        return None

    @property
    def saved_model_tag(self) -> str:
        return self.tag or "serve"

    @property
    def saved_model_signature(self) -> str:
        return self.signature or "serving_default"


class LayerSpec(BaseModel):
    """One Keras layer: `class` plus the layer's own constructor arguments."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, serialize_by_alias=True)
    class_name: str = Field(alias="class", min_length=1)
    name: str | None = None

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class GraphNode(BaseModel):
    """One node of a functional graph: a Keras layer (`class`) or a `keras.ops` call (`op`)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, serialize_by_alias=True)
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    class_name: str | None = Field(None, alias="class")
    op: str | None = None
    inputs: list[str] = Field(min_length=1)
    args: list[Any] = Field(default_factory=list, description="extra positional arguments of an `op` call")

    @model_validator(mode="after")
    def _one_kind(self) -> GraphNode:
        if (self.class_name is None) == (self.op is None):
            raise ValueError(f"node {self.name!r} needs exactly one of `class` (a Keras layer) or `op` (keras.ops)")
        if self.args and self.class_name:
            raise ValueError(f"node {self.name!r}: `args` is for `op` nodes")
        return self

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class GraphArchitecture(_Strict):
    """A functional DAG: named nodes in order, each reading spec inputs or earlier nodes."""

    nodes: list[GraphNode] = Field(min_length=1)
    outputs: dict[str, str] = Field(min_length=1, description="serving output name -> node name")

    @model_validator(mode="after")
    def _wiring(self) -> GraphArchitecture:
        seen: set[str] = set()
        for i, node in enumerate(self.nodes):
            if node.name in seen:
                raise ValueError(f"nodes[{i}]: duplicate node name {node.name!r}")
            seen.add(node.name)
        names = {n.name for n in self.nodes}
        unknown = {o: n for o, n in self.outputs.items() if n not in names}
        if unknown:
            raise ValueError(f"outputs name nodes that do not exist: {unknown}")
        return self


class Factory(_Strict):
    """A model written in Python: `module:function` called with the Keras inputs and `kwargs`."""

    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @property
    def module(self) -> str:
        return self.function.split(":")[0]


class Architecture(_Strict):
    """How to build the Keras model: exactly one of `layers`, `graph` or `factory`."""

    layers: list[LayerSpec] | None = Field(None, min_length=1)
    graph: GraphArchitecture | None = None
    factory: Factory | None = None
    input_shapes: dict[str, list[int | None]] | None = Field(
        None, description="per input, shape without batch dim; default: the TF1 placeholder's"
    )

    @model_validator(mode="after")
    def _one_form(self) -> Architecture:
        forms = [f for f in ("layers", "graph", "factory") if getattr(self, f) is not None]
        if len(forms) != 1:
            raise ValueError(f"needs exactly one of `layers`, `graph` or `factory` (got {forms or 'none'})")
        return self


TransformSpec = str | dict[str, dict[str, Any] | None]


class Rule(_Strict):
    """Checkpoint keys matching `from` become the Keras weight(s) `to`, optionally through a transform.

    `match`: `regex` (default; full match, groups usable in `to`), `glob` (`*`, `**`, `?` become
    groups) or `exact`. With a scope transform (`lstm`, `gru`) `from`/`to` name scopes; a list
    `from` (concat) or a list `to` (split) needs a transform.
    """

    from_: str | list[str] = Field(alias="from")
    to: str | list[str] | None = Field(None, description="target weight path template; default: the key itself")
    match: Literal["regex", "glob", "exact"] = "regex"
    transform: TransformSpec | None = None

    @property
    def transform_name(self) -> str | None:
        if self.transform is None:
            return None
        return self.transform if isinstance(self.transform, str) else next(iter(self.transform))

    @property
    def transform_params(self) -> dict[str, Any]:
        if isinstance(self.transform, dict):
            return dict(next(iter(self.transform.values())) or {})
        return {}

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        from ferry.mapping.namemap import rule_pattern
        from ferry.mapping.transforms import get_transform

        for pattern in self.from_ if isinstance(self.from_, list) else [self.from_]:
            if not pattern:
                raise ValueError("`from` must not be empty")
            try:
                rule_pattern(pattern, self.match)
            except re.error as exc:
                raise ValueError(f"`from` {pattern!r} is not a valid regular expression: {exc}") from exc
        if isinstance(self.transform, dict) and len(self.transform) != 1:
            raise ValueError(f"`transform` names one transform, got {sorted(self.transform)}")
        name = self.transform_name
        if name is None:
            if isinstance(self.from_, list) or isinstance(self.to, list):
                raise ValueError("a list in `from` or `to` needs a transform (concat or split)")
            return self
        transform = get_transform(name)  # a ValueError listing the supported names
        accepted = transform.params
        unknown = sorted(set(self.transform_params) - set(accepted))
        if unknown:
            raise ValueError(f"transform {name!r} takes no parameter {unknown}; it takes: "
                             f"{', '.join(accepted) or 'none'}")
        if transform.sources is not None and (isinstance(self.from_, list) or isinstance(self.to, list)):
            raise ValueError(f"transform {name!r} maps a scope: `from` and `to` are single scope names")
        return self


class NameMap(_Strict):
    """Ordered rename rules, skip patterns (or presets), dtype policy and strict coverage."""

    skip: list[str] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)
    strict: bool = True
    use_ema: bool = Field(False, description="restore from ExponentialMovingAverage shadows where present")
    dtype_policy: Literal["keep", "cast"] = Field(
        "keep", description="keep: dtypes must match; cast: convert between float types, reported")

    @field_validator("skip")
    @classmethod
    def _skips(cls, value: list[str]) -> list[str]:
        from ferry.mapping.namemap import SKIP_PRESETS

        for item in value:
            if item in SKIP_PRESETS:
                continue
            try:
                re.compile(item)
            except re.error as exc:
                raise ValueError(
                    f"{item!r} is neither a preset ({', '.join(SKIP_PRESETS)}) nor a valid regex: {exc}"
                ) from exc
        return value


class Tolerance(_Strict):
    """Pass when |keras - tf1| <= atol + rtol * |tf1| for every element. NaN and inf fail an output
    unless `allow_nonfinite` and both sides hold the same non-finite value at the same place."""

    atol: float = Field(1e-5, ge=0)
    rtol: float = Field(1e-5, ge=0)
    allow_nonfinite: bool = Field(False, description="accept NaN/inf where TF1 and Keras agree on them")


class Verify(_Strict):
    """Verification dataset and tolerances. The shards' data format (`ferry.data`) is named by its key, with its
    options: `npz` (the default), `npy`, `tfrecord` or `image_folder`; at most one."""

    shards: str = Field(min_length=1, description="glob of shards (files; npy: folders too), relative to the spec")
    npz: KeyMap | None = Field(None, description="`.npz` archives (the default); keys: serving name -> array name")
    npy: KeyMap | None = Field(None, description="`.npy` arrays; keys: serving name -> <key>.npy in a shard folder")
    tfrecord: TFRecordOptions | None = Field(None, description="TFRecord files of tf.Example")
    image_folder: ImageFolderOptions | None = Field(None, description="a folder of image files per shard")
    batch_size: int = Field(64, gt=0)
    tolerance: Tolerance = Field(default_factory=Tolerance)
    outputs: dict[str, Tolerance] = Field(default_factory=dict, description="per-output override")

    @model_validator(mode="after")
    def _one_format(self) -> Verify:
        named = [name for name in DATA_FORMATS if getattr(self, name, None) is not None]
        if len(named) > 1:
            raise ValueError(f"names at most one data format of {', '.join(f'`{n}`' for n in DATA_FORMATS)} "
                             f"(got {named})")
        return self

    @property
    def format(self) -> str:
        """The shards' data format: the one named, else npz."""
        return next((name for name in DATA_FORMATS if getattr(self, name, None) is not None), DEFAULT_FORMAT)

    @property
    def data(self) -> Options:
        """The format's options (its defaults when the spec names none)."""
        return getattr(self, self.format, None) or DATA_FORMATS[self.format].options()

    def tolerance_for(self, output: str) -> Tolerance:
        return self.outputs.get(output, self.tolerance)

    @property
    def serialized(self) -> str | None:
        """The TF1 graph's string tensor the shards' serialized tf.Examples are fed at (`tfrecord.serialized`), or
        None: the shards hold the serving inputs themselves."""
        return self.tfrecord.serialized if self.tfrecord is not None else None


class Export(_Strict):
    """Where the verified SavedModel lands."""

    dir: Path


class ModelSpec(_Strict):
    """One model's migration, with every path resolved against its spec file."""

    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    source: Source
    architecture: Architecture | Literal["auto"] = Field(description="a form, or `auto`: derived from the graph")
    name_map: NameMap = Field(default_factory=NameMap)
    verify: Verify
    export: Export
    spec_file: Path = Field(Path("<memory>"), exclude=True)
    factory_modules: tuple[str, ...] = Field((), exclude=True, description="from the catalogue")
    catalogue_dir: Path | None = Field(None, exclude=True, description="where factory modules are imported from")

    @model_validator(mode="after")
    def _serialized_inputs(self) -> ModelSpec:
        tensor = self.verify.serialized
        if tensor is not None and (not self.source.inputs or tensor in self.source.inputs.values()):
            raise ValueError(f"verify.tfrecord.serialized: the graph is fed the records at {tensor!r}; source.inputs "
                             "names the tensors the Keras model takes instead: the outputs of the graph's parse ops "
                             f"(e.g. 'ParseExample/ParseExampleV2:0') (got source.inputs {self.source.inputs})")
        return self

    @model_validator(mode="after")
    def _outputs_consistent(self) -> ModelSpec:
        if not self.source.outputs:  # a SavedModel's own signature, read at inspect
            return self
        unknown = sorted(set(self.verify.outputs) - set(self.source.outputs))
        if unknown:
            raise ValueError(f"verify.outputs names {unknown} not in source.outputs {sorted(self.source.outputs)}")
        graph = None if self.architecture == "auto" else self.architecture.graph
        if graph and sorted(graph.outputs) != sorted(self.source.outputs):
            raise ValueError(f"architecture.graph.outputs {sorted(graph.outputs)} must name the same outputs as "
                             f"source.outputs {sorted(self.source.outputs)}")
        return self

    def shard_paths(self) -> list[Path]:
        """The files (or folders) the shard glob matches."""
        return [Path(p) for p in sorted(glob.glob(self.verify.shards))]

    def shards(self) -> list[str]:
        """The verification shards, in order: a file each, or a range of a TFRecord file's records
        (`file[start:stop]`, with `records_per_shard`); each is one verify task."""
        return data_units(self)

    def with_signature(self, inputs: dict[str, str], outputs: dict[str, str]) -> ModelSpec:
        """This spec with the serving signature inspect resolved (a SavedModel's own, where the spec gave
        none)."""
        if self.source.inputs == inputs and self.source.outputs == outputs:
            return self
        source = self.source.model_copy(update={"inputs": inputs, "outputs": outputs})
        return self.model_copy(update={"source": source})


class Tracking(_Strict):
    """MLflow experiment for the catalogue's runs."""

    experiment: str | None = Field(None, description="default: `ferry <catalogue path from the project root>`, "
                                   "one experiment per catalogue")


StageTimeouts = create_model(  # one field per stage of ferry.stages, in order, with its default
    "StageTimeouts", __base__=_Strict,
    __doc__="Seconds each stage may run before its model's process is stopped (verify: per shard).",
    **{stage.name: (float, Field(stage.timeout, gt=0)) for stage in STAGES.values()})


class RunSettings(_Strict):
    """How a catalogue run executes: models at once, per-stage timeouts, memory, devices."""

    max_parallel: int = Field(2, ge=1, description="models migrated at once (each in its own process)")
    timeouts: StageTimeouts = Field(default_factory=StageTimeouts)
    memory_limit_mb: int | None = Field(None, gt=0, description="stop a model's process above this memory")
    cpu_devices: int | None = Field(None, ge=1, description="with no GPU, split the CPU into N logical devices")


class CatalogueFile(_Strict):
    """The catalogue file itself."""

    defaults: dict[str, Any] = Field(default_factory=dict)
    models: list[str] = Field(min_length=1, description="spec file globs, relative to the catalogue")
    tracking: Tracking = Field(default_factory=Tracking)
    run: RunSettings = Field(default_factory=RunSettings)
    factory_modules: list[str] = Field(
        default_factory=list, description="module prefixes `architecture.factory` may import from")


class Catalogue(BaseModel):
    """A loaded catalogue: its valid specs and the problems of the invalid ones."""

    path: Path
    tracking: Tracking
    run: RunSettings = Field(default_factory=RunSettings)
    specs: dict[str, ModelSpec]
    problems: dict[str, list[Problem]] = Field(default_factory=dict, description="spec file -> problems")

    @property
    def experiment(self) -> str:
        """The MLflow experiment of this catalogue's runs."""
        if self.tracking.experiment:
            return self.tracking.experiment
        from ferry.files import project_root

        root = project_root(self.path)
        return f"ferry {self.path.relative_to(root) if self.path.is_relative_to(root) else self.path.name}"


def _read_yaml(path: Path, field: str = "") -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError([Problem(file=str(path), field=field, message="file not found")]) from None
    except yaml.YAMLError as exc:
        raise SpecError([Problem(file=str(path), field=field, message=f"invalid YAML: {exc}")]) from None
    if not isinstance(data, dict):
        raise SpecError([Problem(file=str(path), field=field, message="expected a mapping at top level",
                                 value=type(data).__name__)])
    return data


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


UNION_TAGS = ("Architecture",)  # loc parts pydantic adds for `architecture: Architecture | "auto"`


def _problems_from(exc: ValidationError, file: Path) -> list[Problem]:
    problems = []
    errors = exc.errors()
    form_failed = any("Architecture" in map(str, e["loc"]) or any("Architecture]" in str(p) for p in e["loc"])
                      for e in errors)
    for err in errors:
        tags = [p for p in err["loc"] if isinstance(p, str) and ("[" in p or p in UNION_TAGS)]
        if form_failed and any(t.startswith("literal[") for t in tags):
            continue  # the spec gave a form, not `auto`: report what is wrong with the form
        err = {**err, "loc": tuple(p for p in err["loc"] if p not in tags)}
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        value = None if err["type"] == "missing" else err.get("input")
        if isinstance(value, dict | list) and len(repr(value)) > 120:
            value = None
        if err["loc"] == ("architecture",) and isinstance(value, str):
            message = "must be `auto` or a mapping with one of `layers`, `graph`, `factory`"
        problems.append(Problem(file=str(file), field=_field_path(err["loc"]), message=message, value=value))
    return problems


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge `override` into `base`: mappings merge recursively, anything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make the spec's relative paths absolute against the spec file's folder."""

    def resolve(section: str, key: str) -> None:
        part = data.get(section)
        if isinstance(part, dict) and isinstance(part.get(key), str):
            part[key] = str((base / part[key]).resolve()) if not Path(part[key]).is_absolute() else part[key]

    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for key in FORMATS:
        resolve("source", key)
    source = data.get("source")
    if isinstance(source, dict) and "estimator_dir" not in source:  # an Estimator's checkpoint is a name in it
        resolve("source", "checkpoint")
    for section, key in [("verify", "shards"), ("export", "dir")]:
        resolve(section, key)
    return data


def factory_allowed(module: str, prefixes: tuple[str, ...] | list[str]) -> bool:
    """Whether `module` is one of the allowed modules or lies under one (package prefix)."""
    return any(module == p or module.startswith(p.rstrip(".") + ".") for p in prefixes)


def _check_factory(spec: ModelSpec, file: Path) -> list[Problem]:
    factory = None if spec.architecture == "auto" else spec.architecture.factory
    if factory is None or factory_allowed(factory.module, spec.factory_modules):
        return []
    allowed = ", ".join(spec.factory_modules) or "none (set `factory_modules` in the catalogue)"
    return [Problem(file=str(file), field="architecture.factory.function",
                    message=f"module {factory.module!r} is not under the catalogue's factory_modules: {allowed}",
                    value=factory.function)]


def _check_files(spec: ModelSpec, file: Path) -> list[Problem]:
    """Problems with files a spec points at: missing graph, checkpoint or shards."""
    src = spec.source
    problems = [Problem(file=str(file), field=field, message=message, value=value)
                for field, message, value in FORMATS[src.format].problems(src)]
    if not spec.shard_paths():
        problems.append(Problem(file=str(file), field="verify.shards", message="glob matches no file",
                                value=spec.verify.shards))
    if not src.inputs:  # a SavedModel's own inputs are read at inspect
        return problems
    fmt, options = DATA_FORMATS[spec.verify.format], spec.verify.data
    own = [Problem(file=str(file), field=f"verify.{fmt.name}.{field}", message=message, value=value)
           for field, message, value in fmt.spec_problems(list(src.inputs), options)]
    if own:
        return problems + own
    for shard in spec.shard_paths():
        if problem := fmt.problem(shard, list(src.inputs), options):
            problems.append(Problem(file=str(file), field="verify.shards", message=problem, value=str(shard)))
    return problems


def load_spec(path: Path, defaults: dict[str, Any] | None = None, check_files: bool = True,
              factory_modules: tuple[str, ...] = (), catalogue_dir: Path | None = None) -> ModelSpec:
    """Load and validate one spec file (with catalogue defaults merged in); raise SpecError."""
    path = Path(path)
    raw = _read_yaml(path)
    data = _resolve_paths(deep_merge(defaults or {}, raw), path.parent)
    try:
        spec = ModelSpec.model_validate({**data, "spec_file": path, "factory_modules": tuple(factory_modules),
                                         "catalogue_dir": catalogue_dir or path.parent})
    except ValidationError as exc:
        raise SpecError(_problems_from(exc, path)) from None
    problems = _check_factory(spec, path) + (_check_files(spec, path) if check_files else [])
    if problems:
        raise SpecError(problems)
    return spec


def load_catalogue(path: Path, only: list[str] | None = None, check_files: bool = True) -> Catalogue:
    """Load a catalogue; invalid specs are collected as problems, not raised.

    Raises SpecError only for problems of the catalogue file itself, duplicate model names or an
    `only` name that is not in the catalogue.
    """
    path = Path(path).resolve()
    try:
        cat = CatalogueFile.model_validate(_read_yaml(path))
    except ValidationError as exc:
        raise SpecError(_problems_from(exc, path)) from None

    files: list[Path] = []
    for i, pattern in enumerate(cat.models):
        matched = sorted(Path(p) for p in glob.glob(str(path.parent / pattern)))
        if not matched:
            raise SpecError([Problem(file=str(path), field=f"models[{i}]", message="glob matches no spec file",
                                     value=pattern)])
        files += [f for f in matched if f not in files]

    specs: dict[str, ModelSpec] = {}
    problems: dict[str, list[Problem]] = {}
    from_defaults: dict[str, Problem] = {}  # problems of the catalogue's defaults, reported once
    for file in files:
        try:
            spec = load_spec(file, cat.defaults, check_files=check_files, factory_modules=tuple(cat.factory_modules),
                             catalogue_dir=path.parent)
        except SpecError as exc:
            own = _own_problems(exc.problems, cat.defaults, file, path, from_defaults)
            if own:
                problems[str(file)] = own
            continue
        if spec.name in specs:
            raise SpecError([Problem(file=str(file), field="name", message=(
                f"duplicate model name, also used by {specs[spec.name].spec_file}"), value=spec.name)])
        specs[spec.name] = spec
    if from_defaults:
        raise SpecError(list(from_defaults.values()))
    for file, problem in _shared_export_dirs(specs):
        problems.setdefault(file, []).append(problem)
        specs = {n: s for n, s in specs.items() if str(s.spec_file) != file}

    if only:
        names = set(specs) | {spec_name_hint(Path(f)) for f in problems}
        missing = [n for n in only if n not in names]
        if missing:
            raise SpecError([Problem(file=str(path), field="--only", message=(
                f"no such model in the catalogue; known: {', '.join(sorted(names))}"), value=", ".join(missing))])
        specs = {n: s for n, s in specs.items() if n in only}
        problems = {f: p for f, p in problems.items() if spec_name_hint(Path(f)) in only}
    return Catalogue(path=path, tracking=cat.tracking, run=cat.run, specs=specs, problems=problems)


def _has_path(data: Any, field: str) -> bool:
    """Whether a dotted field path (`verify.tolerance.atol`, `rules[0]`) is present in `data`."""
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", field):
        if part.startswith("["):
            index = int(part[1:-1])
            if not isinstance(data, list) or index >= len(data):
                return False
            data = data[index]
        elif isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return False
    return True


def _own_problems(problems: list[Problem], defaults: dict[str, Any], file: Path, catalogue: Path,
                  from_defaults: dict[str, Problem]) -> list[Problem]:
    """The problems of a spec file itself; those of a value it inherits from the catalogue's `defaults` (the
    spec does not set that field) go to `from_defaults`, once, against the catalogue file."""
    try:
        raw = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError):
        return problems
    own = []
    for problem in problems:
        if problem.field and _has_path(defaults, problem.field) and not _has_path(raw, problem.field):
            moved = problem.model_copy(update={"file": str(catalogue), "field": f"defaults.{problem.field}"})
            from_defaults.setdefault(moved.field + moved.message, moved)
        else:
            own.append(problem)
    return own


def _shared_export_dirs(specs: dict[str, ModelSpec]) -> list[tuple[str, Problem]]:
    """Specs whose `export.dir` another spec also names: each would overwrite the other's export."""
    by_dir: dict[Path, list[ModelSpec]] = {}
    for spec in specs.values():
        by_dir.setdefault(Path(spec.export.dir).resolve(), []).append(spec)
    out = []
    for folder, sharing in by_dir.items():
        for spec in sharing if len(sharing) > 1 else []:
            others = ", ".join(str(o.spec_file) for o in sharing if o is not spec)
            out.append((str(spec.spec_file), Problem(file=str(spec.spec_file), field="export.dir", message=(
                f"also the export folder of {others}; each model needs its own"), value=str(folder))))
    return out


def spec_name_hint(file: Path) -> str:
    """The model name of a spec file that failed validation: its `name` if readable, else its stem."""
    try:
        name = yaml.safe_load(file.read_text()).get("name")
    except Exception:  # noqa: BLE001 - any unreadable spec falls back to the file name
        name = None
    return name if isinstance(name, str) else file.stem
