"""The name-map engine: which checkpoint key feeds which Keras weight, and what was left over.

Pure data in, data out (shapes and names, no TensorFlow), so every rule is cheap to test.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from ferry.spec import NameMap

# Optimizer state and training counters that TF1 training checkpoints hold beside the weights.
SKIP_PRESETS: dict[str, list[str]] = {
    "optimizer": [
        r".*/(Adam|Adam_\d+)",
        r".*/(Momentum|Momentum_\d+)",
        r".*/RMSProp(_\d+)?",
        r".*/Adagrad(DA)?(_\d+)?",
        r".*/Adadelta(_\d+)?",
        r".*/Ftrl(_\d+)?",
        r"(.*/)?beta[12]_power(_\d+)?",
        r"(.*/)?global_step",
    ],
}

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Row:
    """One line of the mapping report."""

    key: str | None  # checkpoint key (None for an unassigned model weight)
    status: str  # mapped | skipped | unused | unassigned
    target: str | None  # Keras weight path relative to the model
    key_shape: list[int] | None
    target_shape: list[int] | None
    reason: str  # the rule or skip pattern that decided, or why nothing did


@dataclass
class MappingPlan:
    """The resolved name map: assignments, report rows, coverage, and the errors found."""

    assignments: dict[str, str] = field(default_factory=dict)  # target weight -> checkpoint key
    rows: list[Row] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows if r.status == status)

    @property
    def coverage(self) -> dict[str, float]:
        """`coverage.*` metrics: both sides of the map, as counts and fractions."""
        mapped, skipped, unused = self.count("mapped"), self.count("skipped"), self.count("unused")
        unassigned = self.count("unassigned")
        weights = mapped + unassigned
        considered = mapped + unused
        return {
            "model_weights": mapped / weights if weights else 1.0,
            "checkpoint_keys": mapped / considered if considered else 1.0,
            "model_weights_total": weights,
            "model_weights_assigned": mapped,
            "model_weights_unassigned": unassigned,
            "checkpoint_keys_total": mapped + skipped + unused,
            "checkpoint_keys_consumed": mapped,
            "checkpoint_keys_skipped": skipped,
            "checkpoint_keys_unused": unused,
        }

    def table(self) -> dict[str, list]:
        """Column-wise table (for `mlflow.log_table` and JSON)."""
        records = [asdict(r) for r in self.rows]
        columns = list(Row.__dataclass_fields__)
        return {c: [rec[c] for rec in records] for c in columns}


def skip_patterns(name_map: NameMap) -> list[tuple[str, re.Pattern[str]]]:
    """(label, compiled pattern) for every skip entry, presets expanded."""
    out = []
    for entry in name_map.skip:
        for pattern in SKIP_PRESETS.get(entry, [entry]):
            label = f"skip preset {entry!r}" if entry in SKIP_PRESETS else f"skip {entry!r}"
            out.append((label, re.compile(pattern)))
    return out


def plan_mapping(
    checkpoint: dict[str, Shape],
    weights: dict[str, Shape],
    name_map: NameMap,
) -> MappingPlan:
    """Map checkpoint keys (name -> shape) onto model weights (path -> shape) through `name_map`.

    Skips are tried first, then rules in order; the first fully matching rule decides. A target
    that is not a model weight leaves the key unused; a shape mismatch or two keys claiming one
    weight is an error; in strict mode so is any model weight left unassigned.
    """
    plan = MappingPlan()
    skips = skip_patterns(name_map)
    rules = [(i, rule, re.compile(rule.from_)) for i, rule in enumerate(name_map.rules)]

    for key in sorted(checkpoint):
        shape = list(checkpoint[key])
        skip = next((label for label, pat in skips if pat.fullmatch(key)), None)
        if skip:
            plan.rows.append(Row(key, "skipped", None, shape, None, skip))
            continue
        hit = next(((i, rule, m) for i, rule, pat in rules if (m := pat.fullmatch(key))), None)
        if hit is None:
            plan.rows.append(Row(key, "unused", None, shape, None, "no rule matches"))
            continue
        i, rule, match = hit
        label = f"rules[{i}] {rule.from_!r}" + (f" -> {rule.to!r}" if rule.to else "")
        try:
            target = match.expand(rule.to) if rule.to is not None else key
        except (re.error, IndexError) as exc:
            plan.errors.append(f"name_map.{label}: cannot expand target for checkpoint key {key!r}: {exc}")
            plan.rows.append(Row(key, "unused", None, shape, None, f"{label}: bad target template"))
            continue
        if target not in weights:
            plan.rows.append(Row(key, "unused", target, shape, None, f"{label}: target is not a model weight"))
            continue
        target_shape = list(weights[target])
        if target in plan.assignments:
            plan.errors.append(
                f"name_map.{label}: checkpoint keys {plan.assignments[target]!r} and {key!r} both map to "
                f"model weight {target!r}"
            )
            plan.rows.append(Row(key, "unused", target, shape, target_shape, f"{label}: target already assigned"))
            continue
        if target_shape != shape:
            plan.errors.append(
                f"name_map.{label}: shape mismatch: checkpoint key {key!r} has shape {shape}, "
                f"model weight {target!r} has shape {target_shape}"
            )
            plan.rows.append(Row(key, "unused", target, shape, target_shape, f"{label}: shape mismatch"))
            continue
        plan.assignments[target] = key
        plan.rows.append(Row(key, "mapped", target, shape, target_shape, label))

    unassigned = [w for w in weights if w not in plan.assignments]
    for path in unassigned:
        plan.rows.append(Row(None, "unassigned", path, None, list(weights[path]), _suggest(path, weights, plan)))
    if unassigned and name_map.strict:
        cov = plan.coverage
        plan.errors.append(
            f"strict name map: {len(unassigned)} of {cov['model_weights_total']} model weights unassigned "
            f"(model-weight coverage {cov['model_weights']:.0%}): "
            + "; ".join(f"{r.target} {r.target_shape} ({r.reason})" for r in plan.rows if r.status == "unassigned")
        )
    return plan


def _suggest(path: str, weights: dict[str, Shape], plan: MappingPlan) -> str:
    """Why a weight stayed unassigned, naming same-shaped unused checkpoint keys as candidates."""
    shape = list(weights[path])
    candidates = [r.key for r in plan.rows if r.status == "unused" and r.key_shape == shape]
    if not candidates:
        return "no checkpoint key mapped here, and no unused key has this shape"
    return "no checkpoint key mapped here; unused keys of this shape: " + ", ".join(candidates[:3])
