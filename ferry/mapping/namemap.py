"""The name-map engine: which checkpoint keys feed which Keras weights, through which transform.

Pure data in, data out (names, shapes, dtypes; no TensorFlow), so every rule is cheap to test.
The restore stage executes the plan: read the source keys, transform, cast, assign.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from ferry.facts import EMA_SUFFIX, PARTITION, optimizer_skip_patterns
from ferry.mapping.transforms import TRANSFORMS, Transform
from ferry.spec import NameMap, Rule

# Optimizer state and training counters that TF1 training checkpoints hold beside the weights;
# and EMA shadows, skipped unless `name_map.use_ema` restores from them.
SKIP_PRESETS: dict[str, list[str]] = {
    "optimizer": optimizer_skip_patterns(),
    "ema": [rf".*{re.escape(EMA_SUFFIX)}"],
}
FLOATS = {"float16", "bfloat16", "float32", "float64"}

Shape = tuple[int, ...]


class RestoreError(ValueError):
    """The name map does not restore the model completely and consistently."""


@dataclass(frozen=True)
class Tensor:
    """A checkpoint key or a model weight: shape and dtype name."""

    shape: Shape
    dtype: str = "float32"


@dataclass(frozen=True)
class Source:
    """A logical checkpoint entry: what to read for it (EMA shadow, or partitions to join on axis 0)."""

    name: str
    shape: Shape
    dtype: str
    read: tuple[str, ...]  # checkpoint keys to read; several = partitions, concatenated on axis 0
    note: str = ""


@dataclass(frozen=True)
class Assignment:
    """One step of the plan: read `sources`, apply `transform`, cast, assign to `targets`."""

    rule: str
    sources: tuple[Source, ...]
    targets: tuple[str, ...]
    transform: str | None
    params: dict
    casts: tuple[str | None, ...]  # per target: "float16->float32" or None


@dataclass(frozen=True)
class Row:
    """One line of the mapping report."""

    key: str | None  # checkpoint key (None for an unassigned model weight)
    status: str  # mapped | skipped | unused | unassigned
    target: str | None  # Keras weight path relative to the model
    key_shape: list[int] | None
    target_shape: list[int] | None
    transform: str  # transform name, cast, EMA / partition notes; "" when copied as is
    reason: str  # the rule or skip pattern that decided, or why nothing did


@dataclass
class MappingPlan:
    """The resolved name map: assignments, report rows, coverage, errors and suggested rules."""

    assignments: list[Assignment] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows if r.status == status)

    @property
    def assigned(self) -> dict[str, str]:
        """Target weight -> the checkpoint key(s) it came from (joined with '+')."""
        return {t: "+".join(s.name for s in a.sources) for a in self.assignments for t in a.targets}

    @property
    def coverage(self) -> dict[str, float]:
        """`coverage.*` metrics: both sides of the map, as counts and fractions."""
        skipped, unused, unassigned = self.count("skipped"), self.count("unused"), self.count("unassigned")
        consumed = len({r.key for r in self.rows if r.status == "mapped"})
        assigned = len(self.assigned)
        weights = assigned + unassigned
        considered = consumed + unused
        return {
            "model_weights": assigned / weights if weights else 1.0,
            "checkpoint_keys": consumed / considered if considered else 1.0,
            "model_weights_total": weights,
            "model_weights_assigned": assigned,
            "model_weights_unassigned": unassigned,
            "checkpoint_keys_total": consumed + skipped + unused,
            "checkpoint_keys_consumed": consumed,
            "checkpoint_keys_skipped": skipped,
            "checkpoint_keys_unused": unused,
        }

    def table(self) -> dict[str, list]:
        """Column-wise table (for `mlflow.log_table` and JSON)."""
        records = [asdict(r) for r in self.rows]
        return {c: [rec[c] for rec in records] for c in Row.__dataclass_fields__}


def skip_patterns(name_map: NameMap) -> list[tuple[str, re.Pattern[str]]]:
    """(label, compiled pattern) for every skip entry, presets expanded."""
    out = []
    for entry in name_map.skip:
        for pattern in SKIP_PRESETS.get(entry, [entry]):
            label = f"skip preset {entry!r}" if entry in SKIP_PRESETS else f"skip {entry!r}"
            out.append((label, re.compile(pattern)))
    return out


def rule_pattern(pattern: str, match: str) -> re.Pattern[str]:
    """Compile one `from` pattern: regex as is; glob `*` / `**` / `?` become groups; exact escaped."""
    if match == "exact":
        return re.compile(re.escape(pattern))
    if match == "glob":
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                out, i = out + "(.*)", i + 2
            elif pattern[i] == "*":
                out, i = out + "([^/]*)", i + 1
            elif pattern[i] == "?":
                out, i = out + "([^/])", i + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return re.compile(out)
    return re.compile(pattern)


def logical_sources(checkpoint: dict[str, Tensor], use_ema: bool) -> tuple[dict[str, Source], list[Row]]:
    """Checkpoint keys as logical entries: `name/part_N` keys joined, EMA shadows substituted if asked.

    Returns the entries (in checkpoint order) and report rows for keys folded into others.
    """
    rows: list[Row] = []
    parts: dict[str, list[tuple[int, str]]] = {}
    for key in checkpoint:
        if m := PARTITION.fullmatch(key):
            parts.setdefault(m.group(1), []).append((int(m.group(2)), key))
    sources: dict[str, Source] = {}
    for key, t in checkpoint.items():
        m = PARTITION.fullmatch(key)
        if m and m.group(1) not in checkpoint:
            base = m.group(1)
            if base in sources:
                continue
            keys = tuple(k for _, k in sorted(parts[base]))
            shapes = [checkpoint[k].shape for k in keys]
            joined = (sum(s[0] for s in shapes), *shapes[0][1:])
            sources[base] = Source(base, joined, t.dtype, keys, f"joined {len(keys)} partitions")
            continue
        sources[key] = Source(key, t.shape, t.dtype, (key,))
    if use_ema:
        for key in [k for k in sources if k.endswith(EMA_SUFFIX)]:
            base = key.removesuffix(EMA_SUFFIX)
            if base in sources:
                shadow = sources.pop(key)
                sources[base] = Source(base, shadow.shape, shadow.dtype, shadow.read, "from EMA shadow")
                rows.append(Row(key, "mapped", None, list(shadow.shape), None, "",
                                f"EMA shadow, read in place of {base!r} (name_map.use_ema)"))
    return sources, rows


def plan_mapping(
    checkpoint: dict[str, Tensor],
    weights: dict[str, Tensor],
    name_map: NameMap,
    params: dict[int, dict] | None = None,
) -> MappingPlan:
    """Map checkpoint keys onto model weights through `name_map`.

    Skips are tried first, then rules in order; the first rule matching a key decides it. Errors
    (collected, not raised): a rule that decides no key, a target that is no model weight (for
    transforms) or is claimed twice, shape or dtype mismatches, transform misuse, and in strict
    mode any model weight left unassigned. `params` holds per-rule transform params with graph
    facts already resolved (rule index -> params); default: the spec's own.
    """
    plan = MappingPlan()
    sources, plan.rows = logical_sources(checkpoint, name_map.use_ema)
    skips = skip_patterns(name_map)
    decided: dict[str, str] = {}  # key -> why (skip label or rule label)

    for name, src in sources.items():
        if skip := next((label for label, pat in skips if pat.fullmatch(name)), None):
            decided[name] = skip
            plan.rows.append(Row(name, "skipped", None, list(src.shape), None, src.note, skip))

    claimed: dict[str, str] = {}
    for i, rule in enumerate(name_map.rules):
        label = _label(i, rule)
        rule_params = (params or {}).get(i, rule.transform_params)
        found = _apply_rule(rule, label, rule_params, name_map.dtype_policy, sources, decided, weights, claimed,
                            plan)
        if not found:
            plan.errors.append(f"name_map.{label}: matches no checkpoint key not already skipped or claimed by "
                               "an earlier rule")

    for name, src in sources.items():
        if name not in decided:
            plan.rows.append(Row(name, "unused", None, list(src.shape), None, src.note, "no rule matches"))

    unassigned = [w for w in weights if w not in claimed]
    suggested = _suggest(plan, sources, weights, unassigned)
    for path in unassigned:
        hint = f"; suggested rule: {suggested[path]}" if path in suggested else ""
        plan.rows.append(Row(None, "unassigned", path, None, list(weights[path].shape), "",
                             "no checkpoint key mapped here" + hint))
    if unassigned and name_map.strict:
        cov = plan.coverage
        plan.errors.append(
            f"strict name map: {len(unassigned)} of {cov['model_weights_total']} model weights unassigned "
            f"(model-weight coverage {cov['model_weights']:.0%}): "
            + ", ".join(f"{p} {list(weights[p].shape)}" for p in unassigned)
        )
        if plan.suggestions:
            plan.errors.append("suggested rules (shape-compatible unused keys, in graph order):\n"
                               + "\n".join(f"  - {s}" for s in plan.suggestions))
    return plan


def _label(i: int, rule: Rule) -> str:
    to = f" -> {rule.to!r}" if rule.to is not None else ""
    tr = f" [{rule.transform_name}]" if rule.transform_name else ""
    return f"rules[{i}] {rule.from_!r}{to}{tr}"


def _apply_rule(rule: Rule, label, params, policy, sources, decided, weights, claimed, plan) -> bool:
    """Decide the keys `rule` matches; return whether it decided any."""
    transform = TRANSFORMS[rule.transform_name] if rule.transform_name else None
    if isinstance(rule.from_, list):  # several keys -> one target (concat)
        return _apply_many_to_one(rule, label, params, policy, transform, sources, decided, weights, claimed,
                                  plan)
    pattern = rule_pattern(rule.from_, rule.match)
    suffixes = transform.sources if transform and transform.sources else None
    found = False
    for name in list(sources):
        if name in decided:
            continue
        if suffixes:  # scope transform: the rule matches the scope, the transform names the keys under it
            if not name.endswith("/" + suffixes[0]):
                continue
            scope = name[: -len(suffixes[0]) - 1]
            m = pattern.fullmatch(scope)
            if not m:
                continue
            keys = [f"{scope}/{s}" for s in suffixes]
            missing = [k for k in keys if k not in sources or k in decided]
            if missing:
                plan.errors.append(f"name_map.{label}: scope {scope!r} lacks checkpoint keys {missing} "
                                   f"that transform {rule.transform_name!r} needs ({', '.join(suffixes)})")
                continue
            to_scope = _expand(m, rule.to if rule.to is not None else scope, label, plan)
            targets = [f"{to_scope}/{t}" for t in transform.targets] if to_scope is not None else None
        else:
            m = pattern.fullmatch(name)
            if not m:
                continue
            keys = [name]
            tos = rule.to if isinstance(rule.to, list) else [rule.to if rule.to is not None else name]
            expanded = [_expand(m, t, label, plan) for t in tos]
            targets = None if None in expanded else expanded
        found = True
        for k in keys:
            decided[k] = label
        if targets is None:
            for k in keys:
                plan.rows.append(Row(k, "unused", None, list(sources[k].shape), None, "", f"{label}: bad target"))
            continue
        _assign(rule, label, params, policy, transform, [sources[k] for k in keys], targets, weights, claimed, plan)
    return found


def _apply_many_to_one(rule, label, params, policy, transform, sources, decided, weights, claimed,
                       plan) -> bool:
    """A rule whose `from` lists several patterns, each matching exactly one key (e.g. concat)."""
    keys = []
    for pattern in rule.from_:
        hits = [n for n in sources if n not in decided and rule_pattern(pattern, rule.match).fullmatch(n)]
        if len(hits) != 1:
            plan.errors.append(f"name_map.{label}: pattern {pattern!r} must match exactly one checkpoint key, "
                               f"matches {hits or 'none'}")
            return bool(hits)
        keys.append(hits[0])
    for k in keys:
        decided[k] = label
    targets = rule.to if isinstance(rule.to, list) else [rule.to]
    _assign(rule, label, params, policy, transform, [sources[k] for k in keys], targets, weights, claimed, plan)
    return True


def _expand(match: re.Match[str], template: str, label: str, plan: MappingPlan) -> str | None:
    try:
        return match.expand(template)
    except (re.error, IndexError) as exc:
        plan.errors.append(f"name_map.{label}: cannot expand target {template!r} for {match.string!r}: {exc}")
        return None


def _assign(rule, label, params, policy: str, transform: Transform | None, srcs: list[Source], targets: list[str],
            weights: dict[str, Tensor], claimed: dict[str, str], plan: MappingPlan) -> None:
    """Check one step (targets exist and are free, shapes, dtypes) and add it with its report rows."""
    problems = []
    missing = [t for t in targets if t not in weights]
    if missing:
        problems.append(f"target {', '.join(repr(t) for t in missing)} is not a model weight")
    taken = [t for t in targets if t in claimed]
    for t in taken:
        problems.append(f"checkpoint keys {claimed[t]!r} and {'+'.join(s.name for s in srcs)!r} both map to "
                        f"model weight {t!r}")
    if not transform and not missing and len(srcs) == len(targets) == 1:
        if srcs[0].shape != weights[targets[0]].shape:
            problems.append(f"shape mismatch: checkpoint key {srcs[0].name!r} has shape {list(srcs[0].shape)}, "
                            f"model weight {targets[0]!r} has shape {list(weights[targets[0]].shape)}")
    elif not transform and len(srcs) != len(targets):
        problems.append(f"{len(srcs)} checkpoint keys for {len(targets)} targets needs a transform (split/concat)")
    casts = []
    for t in targets:
        want = weights[t].dtype if t in weights else None
        have = {s.dtype for s in srcs}
        cast = None
        if want and have != {want}:
            if policy == "cast" and have <= FLOATS and want in FLOATS:
                cast = f"{'/'.join(sorted(have))}->{want}"
            else:
                problems.append(f"dtype mismatch: checkpoint key(s) {[s.name for s in srcs]} are "
                                f"{'/'.join(sorted(have))}, model weight {t!r} is {want} "
                                f"(name_map.dtype_policy: cast converts between float types)")
        casts.append(cast)

    note = rule.transform_name or ""
    notes = "; ".join(x for x in [note, *(s.note for s in srcs), *(c and f"cast {c}" for c in casts)] if x)
    if problems:
        for msg in problems:
            plan.errors.append(f"name_map.{label}: {msg}")
        for s in srcs:
            plan.rows.append(Row(s.name, "unused", ", ".join(targets), list(s.shape), None, notes,
                                 f"{label}: {problems[0]}"))
        return
    for t in targets:
        claimed[t] = "+".join(s.name for s in srcs)
    plan.assignments.append(Assignment(label, tuple(srcs), tuple(targets), rule.transform_name, params,
                                       tuple(casts)))
    for s in srcs:
        shape = list(weights[targets[0]].shape) if len(targets) == 1 else None
        plan.rows.append(Row(s.name, "mapped", ", ".join(targets), list(s.shape), shape, notes, label))


def _suggest(plan: MappingPlan, sources: dict[str, Source], weights: dict[str, Tensor],
             unassigned: list[str]) -> dict[str, str]:
    """Pair unassigned weights with unused same-shaped keys, both in graph order: one rule each.

    Adds the rules to `plan.suggestions` and returns them by weight path."""
    unused = {r.key for r in plan.rows if r.status == "unused"}
    free = [s for n, s in sources.items() if n in unused]
    suggested = {}
    for path in unassigned:
        match = next((s for s in free if s.shape == weights[path].shape), None)
        if match:
            free.remove(match)
            suggested[path] = f"{{from: '{re.escape(match.name)}', to: '{path}'}}"
    plan.suggestions.extend(suggested.values())
    return suggested
