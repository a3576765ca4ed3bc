"""The name-map engine on plain shapes: rule order, regex groups, skips, coverage, errors."""

from __future__ import annotations

from ferry.namemap import plan_mapping
from ferry.spec import NameMap

CKPT = {
    "dense/kernel": (4, 8), "dense/bias": (8,),
    "dense_1/kernel": (8, 2), "dense_1/bias": (2,),
    "dense/kernel/Adam": (4, 8), "dense/kernel/Adam_1": (4, 8),
    "beta1_power": (), "beta2_power": (), "global_step": (),
}
WEIGHTS = {"fc1/kernel": (4, 8), "fc1/bias": (8,), "fc2/kernel": (8, 2), "fc2/bias": (2,)}


def name_map(**kw) -> NameMap:
    return NameMap.model_validate(kw)


def test_regex_groups_rename_and_optimizer_preset_skips():
    nm = name_map(skip=["optimizer"], rules=[{"from": r"dense/(kernel|bias)", "to": r"fc1/\1"},
                                             {"from": r"dense_1/(.*)", "to": r"fc2/\1"}])
    plan = plan_mapping(CKPT, WEIGHTS, nm)
    assert plan.errors == []
    assert plan.assignments == {"fc1/bias": "dense/bias", "fc1/kernel": "dense/kernel",
                                "fc2/bias": "dense_1/bias", "fc2/kernel": "dense_1/kernel"}
    skipped = {r.key for r in plan.rows if r.status == "skipped"}
    assert skipped == {"dense/kernel/Adam", "dense/kernel/Adam_1", "beta1_power", "beta2_power", "global_step"}
    assert all(r.reason == "skip preset 'optimizer'" for r in plan.rows if r.status == "skipped")
    cov = plan.coverage
    assert (cov["model_weights"], cov["checkpoint_keys"]) == (1.0, 1.0)
    assert (cov["checkpoint_keys_total"], cov["checkpoint_keys_consumed"], cov["checkpoint_keys_skipped"]) == (9, 4, 5)


def test_first_matching_rule_wins_and_rules_must_match_whole_key():
    nm = name_map(skip=["optimizer"], rules=[{"from": r"dense/kernel", "to": "fc1/kernel"},
                                             {"from": r"dense.*", "to": "fc2/kernel"},
                                             {"from": r"ense/bias", "to": "fc1/bias"}])
    plan = plan_mapping({"dense/kernel": (4, 8), "dense/bias": (8,)}, WEIGHTS, nm)
    rows = {r.key: r for r in plan.rows}
    assert rows["dense/kernel"].target == "fc1/kernel" and rows["dense/kernel"].reason.startswith("rules[0]")
    # `ense/bias` does not fully match, so `dense.*` (rules[1]) claims dense/bias for fc2/kernel: wrong shape.
    assert rows["dense/bias"].status == "unused" and rows["dense/bias"].reason.endswith("shape mismatch")
    assert any("shape mismatch: checkpoint key 'dense/bias' has shape [8], model weight 'fc2/kernel' has shape [8, 2]"
               in e for e in plan.errors)


def test_coverage_counts_both_sides_and_strict_fails_on_unassigned():
    nm = name_map(skip=["optimizer"], rules=[{"from": r"dense/(.*)", "to": r"fc1/\1"}])
    plan = plan_mapping(CKPT, WEIGHTS, nm)
    cov = plan.coverage
    assert cov["model_weights_assigned"] == 2 and cov["model_weights_unassigned"] == 2
    assert cov["model_weights"] == 0.5
    assert cov["checkpoint_keys_unused"] == 2 and cov["checkpoint_keys"] == 0.5
    [error] = plan.errors
    assert error.startswith("strict name map: 2 of 4 model weights unassigned (model-weight coverage 50%)")
    # the unassigned weights point at the same-shaped unused keys
    assert "fc2/kernel [8, 2] (no checkpoint key mapped here; unused keys of this shape: dense_1/kernel)" in error
    assert plan_mapping(CKPT, WEIGHTS, nm.model_copy(update={"strict": False})).errors == []


def test_empty_name_map_maps_nothing():
    plan = plan_mapping(CKPT, WEIGHTS, name_map())
    assert plan.coverage["model_weights"] == 0.0
    assert plan.count("unused") == len(CKPT) and plan.count("unassigned") == len(WEIGHTS)
    assert "model-weight coverage 0%" in plan.errors[0]


def test_two_keys_claiming_one_weight_is_an_error():
    nm = name_map(rules=[{"from": r"dense(_1)?/bias", "to": "fc2/bias"}], strict=False)
    plan = plan_mapping({"dense/bias": (2,), "dense_1/bias": (2,)}, WEIGHTS, nm)
    assert plan.errors == ["name_map.rules[0] 'dense(_1)?/bias' -> 'fc2/bias': checkpoint keys 'dense/bias' and "
                           "'dense_1/bias' both map to model weight 'fc2/bias'"]


def test_target_that_is_not_a_weight_leaves_key_unused_and_report_is_tabular():
    nm = name_map(rules=[{"from": "(.*)"}], strict=False)
    plan = plan_mapping({"dense/kernel": (4, 8), "fc1/bias": (8,)}, WEIGHTS, nm)
    table = plan.table()
    assert set(table) == {"key", "status", "target", "key_shape", "target_shape", "reason"}
    by_key = dict(zip(table["key"], table["status"]))
    assert by_key == {"dense/kernel": "unused", "fc1/bias": "mapped", None: "unassigned"}
    assert table["status"].count("unassigned") == 3
    assert "target is not a model weight" in table["reason"][table["key"].index("dense/kernel")]


def test_custom_skip_regex():
    nm = name_map(skip=[r"ema/.*"], rules=[{"from": "(.*)"}], strict=False)
    plan = plan_mapping({"ema/fc1/bias": (8,), "fc1/bias": (8,)}, WEIGHTS, nm)
    assert [(r.key, r.status, r.reason) for r in plan.rows if r.key] == [
        ("ema/fc1/bias", "skipped", "skip 'ema/.*'"), ("fc1/bias", "mapped", "rules[0] '(.*)'")]
