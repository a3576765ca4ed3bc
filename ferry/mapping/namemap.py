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
class CheckpointEntry:
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
    sources: tuple[CheckpointEntry, ...]
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


def logical_entries(checkpoint: dict[str, Tensor], use_ema: bool) -> tuple[dict[str, CheckpointEntry], list[Row]]:
    """Checkpoint keys as logical entries: `name/part_N` keys joined, EMA shadows substituted if asked.

    Returns the entries (in checkpoint order) and report rows for keys folded into others.
    """
    rows: list[Row] = []
    parts: dict[str, list[tuple[int, str]]] = {}
    for key in checkpoint:
        if m := PARTITION.fullmatch(key):
            parts.setdefault(m.group(1), []).append((int(m.group(2)), key))
    entries: dict[str, CheckpointEntry] = {}
    for key, t in checkpoint.items():
        m = PARTITION.fullmatch(key)
        if m and m.group(1) not in checkpoint:
            base = m.group(1)
            if base in entries:
                continue
            keys = tuple(k for _, k in sorted(parts[base]))
            shapes = [checkpoint[k].shape for k in keys]
            joined = (sum(s[0] for s in shapes), *shapes[0][1:])
            entries[base] = CheckpointEntry(base, joined, t.dtype, keys, f"joined {len(keys)} partitions")
            continue
        entries[key] = CheckpointEntry(key, t.shape, t.dtype, (key,))
    if use_ema:
        for key in [k for k in entries if k.endswith(EMA_SUFFIX)]:
            base = key.removesuffix(EMA_SUFFIX)
            if base in entries:
                shadow = entries.pop(key)
                entries[base] = CheckpointEntry(base, shadow.shape, shadow.dtype, shadow.read, "from EMA shadow")
                rows.append(Row(key, "mapped", None, list(shadow.shape), None, "",
                                f"EMA shadow, read in place of {base!r} (name_map.use_ema)"))
    return entries, rows


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
    return Planner(checkpoint, weights, name_map, params).run()


@dataclass(frozen=True)
class ResolvedRule:
    """One rule as the planner applies it: its label, its transform and that transform's params."""

    rule: Rule
    label: str
    transform: Transform | None
    params: dict

    @classmethod
    def of(cls, index: int, rule: Rule, params: dict[int, dict]) -> ResolvedRule:
        """Rule `index`, with its params from `params` (graph facts resolved) or else the spec's own."""
        to = f" -> {rule.to!r}" if rule.to is not None else ""
        tr = f" [{rule.transform_name}]" if rule.transform_name else ""
        transform = TRANSFORMS[rule.transform_name] if rule.transform_name else None
        return cls(rule, f"rules[{index}] {rule.from_!r}{to}{tr}", transform,
                   params.get(index, rule.transform_params))


class Planner:
    """One planning pass: the logical checkpoint entries, which of them are decided (and by what), which
    model weights are claimed (and by which keys), and the plan being built."""

    def __init__(self, checkpoint: dict[str, Tensor], weights: dict[str, Tensor], name_map: NameMap,
                 params: dict[int, dict] | None = None) -> None:
        self.weights = weights
        self.name_map = name_map
        self.params = params or {}  # rule index -> transform params, graph facts resolved
        self.plan = MappingPlan()
        self.entries, self.plan.rows = logical_entries(checkpoint, name_map.use_ema)
        self.decided: dict[str, str] = {}  # entry name -> why (skip label or rule label)
        self.claimed: dict[str, str] = {}  # model weight -> the key(s) assigned to it, joined with '+'

    def run(self) -> MappingPlan:
        """Skips, then every rule in order, then the report of what is left on either side."""
        self.skip()
        for i, rule in enumerate(self.name_map.rules):
            use = ResolvedRule.of(i, rule, self.params)
            if not self.apply(use):
                self.plan.errors.append(f"name_map.{use.label}: matches no checkpoint key not already skipped or "
                                        "claimed by an earlier rule")
        for name, entry in self.entries.items():
            if name not in self.decided:
                self.plan.rows.append(Row(name, "unused", None, list(entry.shape), None, entry.note,
                                          "no rule matches"))
        self.report_unassigned()
        return self.plan

    def skip(self) -> None:
        """Decide every entry a skip pattern (or preset) matches."""
        skips = skip_patterns(self.name_map)
        for name, entry in self.entries.items():
            if skip := next((label for label, pat in skips if pat.fullmatch(name)), None):
                self.decided[name] = skip
                self.plan.rows.append(Row(name, "skipped", None, list(entry.shape), None, entry.note, skip))

    def apply(self, use: ResolvedRule) -> bool:
        """Decide the keys the rule matches; return whether it decided any."""
        if isinstance(use.rule.from_, list):  # several keys -> one target (concat)
            return self.apply_many_to_one(use)
        pattern = rule_pattern(use.rule.from_, use.rule.match)
        suffixes = use.transform.sources if use.transform and use.transform.sources else None
        found = False
        for name in list(self.entries):
            if name in self.decided:
                continue
            if suffixes:
                matched = self.match_scope(use, pattern, name)
            else:
                matched = self.match_key(use, pattern, name)
            if matched is None:
                continue
            keys, targets = matched
            found = True
            for k in keys:
                self.decided[k] = use.label
            if targets is None:
                for k in keys:
                    self.plan.rows.append(Row(k, "unused", None, list(self.entries[k].shape), None, "",
                                              f"{use.label}: bad target"))
                continue
            self.assign(use, [self.entries[k] for k in keys], targets)
        return found

    def match_key(self, use: ResolvedRule, pattern: re.Pattern[str],
                  name: str) -> tuple[list[str], list[str] | None] | None:
        """(keys, targets) when the rule matches entry `name`; targets None when one cannot be expanded."""
        m = pattern.fullmatch(name)
        if not m:
            return None
        rule = use.rule
        tos = rule.to if isinstance(rule.to, list) else [rule.to if rule.to is not None else name]
        expanded = [self.expand(m, t, use.label) for t in tos]
        return [name], None if None in expanded else expanded

    def match_scope(self, use: ResolvedRule, pattern: re.Pattern[str],
                    name: str) -> tuple[list[str], list[str] | None] | None:
        """A scope transform: the rule matches the scope, the transform names the keys under it and the
        weights under the rule's `to` scope. None when `name` is not the first key of a matching scope, or
        (after an error) when the scope lacks some of the keys."""
        suffixes, targets = use.transform.sources, use.transform.targets
        if not name.endswith("/" + suffixes[0]):
            return None
        scope = name[: -len(suffixes[0]) - 1]
        m = pattern.fullmatch(scope)
        if not m:
            return None
        keys = [f"{scope}/{s}" for s in suffixes]
        missing = [k for k in keys if k not in self.entries or k in self.decided]
        if missing:
            self.plan.errors.append(f"name_map.{use.label}: scope {scope!r} lacks checkpoint keys {missing} "
                                    f"that transform {use.rule.transform_name!r} needs ({', '.join(suffixes)})")
            return None
        to_scope = self.expand(m, use.rule.to if use.rule.to is not None else scope, use.label)
        return keys, [f"{to_scope}/{t}" for t in targets] if to_scope is not None else None

    def apply_many_to_one(self, use: ResolvedRule) -> bool:
        """A rule whose `from` lists several patterns, each matching exactly one key (e.g. concat)."""
        keys = []
        for pattern in use.rule.from_:
            compiled = rule_pattern(pattern, use.rule.match)
            hits = [n for n in self.entries if n not in self.decided and compiled.fullmatch(n)]
            if len(hits) != 1:
                self.plan.errors.append(f"name_map.{use.label}: pattern {pattern!r} must match exactly one "
                                        f"checkpoint key, matches {hits or 'none'}")
                return bool(hits)
            keys.append(hits[0])
        for k in keys:
            self.decided[k] = use.label
        targets = use.rule.to if isinstance(use.rule.to, list) else [use.rule.to]
        self.assign(use, [self.entries[k] for k in keys], targets)
        return True

    def expand(self, match: re.Match[str], template: str, label: str) -> str | None:
        """`template` with the match's groups; None (and an error) when it cannot be expanded."""
        try:
            return match.expand(template)
        except (re.error, IndexError) as exc:
            self.plan.errors.append(f"name_map.{label}: cannot expand target {template!r} for {match.string!r}: "
                                    f"{exc}")
            return None

    def assign(self, use: ResolvedRule, entries: list[CheckpointEntry], targets: list[str]) -> None:
        """Check one step (targets exist and are free, shapes, dtypes) and add it with its report rows."""
        problems = self.problems(use, entries, targets)
        casts = [self.cast(entries, t, problems) for t in targets]
        notes = "; ".join(x for x in [use.rule.transform_name or "", *(e.note for e in entries),
                                      *(c and f"cast {c}" for c in casts)] if x)
        if problems:
            for msg in problems:
                self.plan.errors.append(f"name_map.{use.label}: {msg}")
            for e in entries:
                self.plan.rows.append(Row(e.name, "unused", ", ".join(targets), list(e.shape), None, notes,
                                          f"{use.label}: {problems[0]}"))
            return
        for t in targets:
            self.claimed[t] = "+".join(e.name for e in entries)
        self.plan.assignments.append(Assignment(use.label, tuple(entries), tuple(targets), use.rule.transform_name,
                                                use.params, tuple(casts)))
        for e in entries:
            shape = list(self.weights[targets[0]].shape) if len(targets) == 1 else None
            self.plan.rows.append(Row(e.name, "mapped", ", ".join(targets), list(e.shape), shape, notes, use.label))

    def problems(self, use: ResolvedRule, entries: list[CheckpointEntry], targets: list[str]) -> list[str]:
        """What stops this step, dtypes aside: targets that are no weight or already claimed, shapes."""
        problems = []
        missing = [t for t in targets if t not in self.weights]
        if missing:
            problems.append(f"target {', '.join(repr(t) for t in missing)} is not a model weight")
        for t in targets:
            if t in self.claimed:
                problems.append(f"checkpoint keys {self.claimed[t]!r} and {'+'.join(e.name for e in entries)!r} "
                                f"both map to model weight {t!r}")
        if not use.transform and not missing and len(entries) == len(targets) == 1:
            entry, weight = entries[0], self.weights[targets[0]]
            if entry.shape != weight.shape:
                problems.append(f"shape mismatch: checkpoint key {entry.name!r} has shape {list(entry.shape)}, "
                                f"model weight {targets[0]!r} has shape {list(weight.shape)}")
        elif not use.transform and len(entries) != len(targets):
            problems.append(f"{len(entries)} checkpoint keys for {len(targets)} targets needs a transform "
                            "(split/concat)")
        return problems

    def cast(self, entries: list[CheckpointEntry], target: str, problems: list[str]) -> str | None:
        """The cast the dtype policy allows into `target` ("float16->float32"), None when none is needed;
        a dtype mismatch it does not allow is added to `problems`."""
        want = self.weights[target].dtype if target in self.weights else None
        have = {e.dtype for e in entries}
        if not want or have == {want}:
            return None
        if self.name_map.dtype_policy == "cast" and have <= FLOATS and want in FLOATS:
            return f"{'/'.join(sorted(have))}->{want}"
        problems.append(f"dtype mismatch: checkpoint key(s) {[e.name for e in entries]} are "
                        f"{'/'.join(sorted(have))}, model weight {target!r} is {want} "
                        f"(name_map.dtype_policy: cast converts between float types)")
        return None

    def report_unassigned(self) -> None:
        """A row per model weight no key reached (with a suggested rule where one fits); in strict mode an
        error listing them, and the suggested rules."""
        unassigned = [w for w in self.weights if w not in self.claimed]
        suggested = self.suggest(unassigned)
        for path in unassigned:
            hint = f"; suggested rule: {suggested[path]}" if path in suggested else ""
            self.plan.rows.append(Row(None, "unassigned", path, None, list(self.weights[path].shape), "",
                                      "no checkpoint key mapped here" + hint))
        if unassigned and self.name_map.strict:
            cov = self.plan.coverage
            self.plan.errors.append(
                f"strict name map: {len(unassigned)} of {cov['model_weights_total']} model weights unassigned "
                f"(model-weight coverage {cov['model_weights']:.0%}): "
                + ", ".join(f"{p} {list(self.weights[p].shape)}" for p in unassigned)
            )
            if self.plan.suggestions:
                self.plan.errors.append("suggested rules (shape-compatible unused keys, in graph order):\n"
                                        + "\n".join(f"  - {s}" for s in self.plan.suggestions))

    def suggest(self, unassigned: list[str]) -> dict[str, str]:
        """Pair unassigned weights with unused same-shaped keys, both in graph order: one rule each.

        Adds the rules to `plan.suggestions` and returns them by weight path."""
        unused = {r.key for r in self.plan.rows if r.status == "unused"}
        free = [e for n, e in self.entries.items() if n in unused]
        suggested = {}
        for path in unassigned:
            match = next((e for e in free if e.shape == self.weights[path].shape), None)
            if match:
                free.remove(match)
                suggested[path] = f"{{from: '{re.escape(match.name)}', to: '{path}'}}"
        self.plan.suggestions.extend(suggested.values())
        return suggested
