"""The name-map engine on plain names, shapes and dtypes: rules, skips, transforms, coverage, errors."""

from __future__ import annotations

import pytest

from ferry.mapping.namemap import Tensor, plan_mapping
from ferry.spec import NameMap

pytestmark = pytest.mark.unit


def tensors(shapes: dict[str, tuple], dtype: str = "float32") -> dict[str, Tensor]:
    return {k: Tensor(v, "int64" if k == "global_step" else dtype) for k, v in shapes.items()}


CKPT = tensors({
    "dense/kernel": (4, 8), "dense/bias": (8,),
    "dense_1/kernel": (8, 2), "dense_1/bias": (2,),
    "dense/kernel/Adam": (4, 8), "dense/kernel/Adam_1": (4, 8),
    "beta1_power": (), "beta2_power": (), "global_step": (),
})
WEIGHTS = tensors({"fc1/kernel": (4, 8), "fc1/bias": (8,), "fc2/kernel": (8, 2), "fc2/bias": (2,)})


def name_map(**kw) -> NameMap:
    return NameMap.model_validate(kw)


def test_regex_groups_rename_and_optimizer_preset_skips():
    nm = name_map(skip=["optimizer"], rules=[{"from": r"dense/(kernel|bias)", "to": r"fc1/\1"},
                                             {"from": r"dense_1/(.*)", "to": r"fc2/\1"}])
    plan = plan_mapping(CKPT, WEIGHTS, nm)
    assert plan.errors == []
    assert plan.assigned == {"fc1/kernel": "dense/kernel", "fc1/bias": "dense/bias",
                             "fc2/kernel": "dense_1/kernel", "fc2/bias": "dense_1/bias"}
    skipped = {r.key for r in plan.rows if r.status == "skipped"}
    assert skipped == {"dense/kernel/Adam", "dense/kernel/Adam_1", "beta1_power", "beta2_power", "global_step"}
    assert all(r.reason == "skip preset 'optimizer'" for r in plan.rows if r.status == "skipped")
    cov = plan.coverage
    assert (cov["model_weights"], cov["checkpoint_keys"]) == (1.0, 1.0)
    assert (cov["checkpoint_keys_total"], cov["checkpoint_keys_consumed"], cov["checkpoint_keys_skipped"]) == (9, 4, 5)


def test_glob_and_exact_rules():
    nm = name_map(skip=["optimizer"], rules=[{"from": "dense/*", "to": r"fc1/\1", "match": "glob"},
                                             {"from": "dense_1/kernel", "to": "fc2/kernel", "match": "exact"},
                                             {"from": "dense_1/bias", "to": "fc2/bias", "match": "exact"}])
    plan = plan_mapping(CKPT, WEIGHTS, nm)
    assert plan.errors == [] and plan.coverage["model_weights"] == 1.0
    # `exact` escapes regex characters: a dot is a dot
    nm = name_map(rules=[{"from": "dense.kernel", "match": "exact"}], strict=False)
    plan = plan_mapping(tensors({"dense/kernel": (4, 8)}), WEIGHTS, nm)
    assert plan.errors == ["name_map.rules[0] 'dense.kernel': matches no checkpoint key not already skipped or "
                           "claimed by an earlier rule"]


def test_first_matching_rule_wins_and_later_rule_must_still_match_something():
    nm = name_map(rules=[{"from": r"dense/kernel", "to": "fc1/kernel"},
                         {"from": r"dense/.*", "to": "fc1/bias"},
                         {"from": r"dense/kernel", "to": "fc2/kernel"}], strict=False)
    plan = plan_mapping(tensors({"dense/kernel": (4, 8), "dense/bias": (8,)}), WEIGHTS, nm)
    rows = {r.key: r for r in plan.rows}
    assert rows["dense/kernel"].target == "fc1/kernel" and rows["dense/kernel"].reason.startswith("rules[0]")
    assert rows["dense/bias"].target == "fc1/bias" and rows["dense/bias"].reason.startswith("rules[1]")
    assert plan.errors == ["name_map.rules[2] 'dense/kernel' -> 'fc2/kernel': matches no checkpoint key not "
                           "already skipped or claimed by an earlier rule"]


def test_shape_mismatch_names_both_sides():
    nm = name_map(rules=[{"from": "dense/bias", "to": "fc2/kernel"}], strict=False)
    plan = plan_mapping(tensors({"dense/bias": (8,)}), WEIGHTS, nm)
    assert plan.errors == ["name_map.rules[0] 'dense/bias' -> 'fc2/kernel': shape mismatch: checkpoint key "
                           "'dense/bias' has shape [8], model weight 'fc2/kernel' has shape [8, 2]"]
    assert plan.rows[0].status == "unused"


def test_coverage_counts_both_sides_and_strict_fails_with_suggested_rules():
    nm = name_map(skip=["optimizer"], rules=[{"from": r"dense/(.*)", "to": r"fc1/\1"}])
    plan = plan_mapping(CKPT, WEIGHTS, nm)
    cov = plan.coverage
    assert cov["model_weights_assigned"] == 2 and cov["model_weights_unassigned"] == 2
    assert cov["model_weights"] == 0.5
    assert cov["checkpoint_keys_unused"] == 2 and cov["checkpoint_keys"] == 0.5
    assert plan.errors[0] == ("strict name map: 2 of 4 model weights unassigned (model-weight coverage 50%): "
                              "fc2/kernel [8, 2], fc2/bias [2]")
    assert plan.suggestions == ["{from: 'dense_1/kernel', to: 'fc2/kernel'}", "{from: 'dense_1/bias', to: 'fc2/bias'}"]
    assert "  - {from: 'dense_1/kernel', to: 'fc2/kernel'}" in plan.errors[1]
    reasons = {r.target: r.reason for r in plan.rows if r.status == "unassigned"}
    assert reasons["fc2/bias"] == ("no checkpoint key mapped here; suggested rule: "
                                   "{from: 'dense_1/bias', to: 'fc2/bias'}")
    assert plan_mapping(CKPT, WEIGHTS, nm.model_copy(update={"strict": False})).errors == []


def test_suggestions_pair_same_shapes_in_graph_order():
    """Two same-shaped layers: the first unassigned weight gets the first unused key in graph order."""
    ckpt = tensors({"b/kernel": (3, 3), "a/kernel": (3, 3)})  # graph order: b before a
    weights = tensors({"first/kernel": (3, 3), "second/kernel": (3, 3)})
    plan = plan_mapping(ckpt, weights, name_map())
    assert plan.suggestions == ["{from: 'b/kernel', to: 'first/kernel'}", "{from: 'a/kernel', to: 'second/kernel'}"]


def test_empty_name_map_maps_nothing():
    plan = plan_mapping(CKPT, WEIGHTS, name_map())
    assert plan.coverage["model_weights"] == 0.0
    assert plan.count("unused") == len(CKPT) and plan.count("unassigned") == len(WEIGHTS)
    assert "model-weight coverage 0%" in plan.errors[0]


def test_two_keys_claiming_one_weight_is_an_error():
    nm = name_map(rules=[{"from": r"dense(_1)?/bias", "to": "fc2/bias"}], strict=False)
    plan = plan_mapping(tensors({"dense/bias": (2,), "dense_1/bias": (2,)}), WEIGHTS, nm)
    assert plan.errors == ["name_map.rules[0] 'dense(_1)?/bias' -> 'fc2/bias': checkpoint keys 'dense/bias' and "
                           "'dense_1/bias' both map to model weight 'fc2/bias'"]


def test_target_that_is_not_a_weight_is_an_error_and_report_is_tabular():
    nm = name_map(rules=[{"from": "(.*)"}], strict=False)
    plan = plan_mapping(tensors({"dense/kernel": (4, 8), "fc1/bias": (8,)}), WEIGHTS, nm)
    assert plan.errors == ["name_map.rules[0] '(.*)': target 'dense/kernel' is not a model weight"]
    table = plan.table()
    assert set(table) == {"key", "status", "target", "key_shape", "target_shape", "transform", "reason"}
    by_key = dict(zip(table["key"], table["status"]))
    assert by_key == {"dense/kernel": "unused", "fc1/bias": "mapped", None: "unassigned"}
    assert table["status"].count("unassigned") == 3


def test_custom_skip_regex():
    nm = name_map(skip=[r"ema/.*"], rules=[{"from": "(.*)"}], strict=False)
    plan = plan_mapping(tensors({"ema/fc1/bias": (8,), "fc1/bias": (8,)}), WEIGHTS, nm)
    assert [(r.key, r.status, r.reason) for r in plan.rows if r.key] == [
        ("ema/fc1/bias", "skipped", "skip 'ema/.*'"), ("fc1/bias", "mapped", "rules[0] '(.*)'")]


def test_scope_transform_maps_a_cell_scope_to_three_weights():
    ckpt = tensors({"rnn/lstm_cell/kernel": (12, 32), "rnn/lstm_cell/bias": (32,)})
    weights = tensors({"lstm/lstm_cell/kernel": (4, 32), "lstm/lstm_cell/recurrent_kernel": (8, 32),
                       "lstm/lstm_cell/bias": (32,)})
    nm = name_map(rules=[{"from": "rnn/lstm_cell", "to": "lstm/lstm_cell",
                          "transform": {"lstm": {"forget_bias": 1.0}}}])
    plan = plan_mapping(ckpt, weights, nm)
    assert plan.errors == [] and plan.coverage["model_weights"] == 1.0
    [step] = plan.assignments
    assert [s.name for s in step.sources] == ["rnn/lstm_cell/kernel", "rnn/lstm_cell/bias"]
    assert step.targets == ("lstm/lstm_cell/kernel", "lstm/lstm_cell/recurrent_kernel", "lstm/lstm_cell/bias")
    assert step.transform == "lstm" and step.params == {"forget_bias": 1.0}
    assert all(r.transform == "lstm" for r in plan.rows)


def test_scope_transform_missing_key_is_named():
    nm = name_map(rules=[{"from": "rnn/gru_cell", "to": "gru/gru_cell", "transform": "gru"}], strict=False)
    plan = plan_mapping(tensors({"rnn/gru_cell/gates/kernel": (6, 4)}), tensors({}), nm)
    assert "lacks checkpoint keys ['rnn/gru_cell/gates/bias', 'rnn/gru_cell/candidate/kernel', " \
           "'rnn/gru_cell/candidate/bias']" in plan.errors[0]


def test_split_and_concat_rules():
    ckpt = tensors({"attn/qkv/kernel": (4, 12), "a/kernel": (4, 2), "b/kernel": (4, 6)})
    weights = tensors({"q/kernel": (4, 4), "k/kernel": (4, 4), "v/kernel": (4, 4), "ab/kernel": (4, 8)})
    nm = name_map(rules=[{"from": "attn/qkv/kernel", "to": ["q/kernel", "k/kernel", "v/kernel"],
                          "transform": {"split": {"axis": -1}}},
                         {"from": ["a/kernel", "b/kernel"], "to": "ab/kernel", "transform": {"concat": {"axis": 1}}}])
    plan = plan_mapping(ckpt, weights, nm)
    assert plan.errors == [] and plan.coverage["model_weights"] == 1.0
    assert [(len(a.sources), a.targets) for a in plan.assignments] == [
        (1, ("q/kernel", "k/kernel", "v/kernel")), (2, ("ab/kernel",))]


def test_partitions_are_joined_and_ema_shadows_are_opt_in():
    ckpt = tensors({"emb/part_0": (4, 3), "emb/part_1": (6, 3), "w": (3,), "w/ExponentialMovingAverage": (3,)})
    weights = tensors({"emb": (10, 3), "w": (3,)})
    plan = plan_mapping(ckpt, weights, name_map(skip=["ema"], rules=[{"from": "(.*)"}]))
    assert plan.errors == []
    emb = next(a for a in plan.assignments if a.targets == ("emb",))
    assert emb.sources[0].read == ("emb/part_0", "emb/part_1") and emb.sources[0].shape == (10, 3)
    w = next(a for a in plan.assignments if a.targets == ("w",))
    assert w.sources[0].read == ("w",)
    plan = plan_mapping(ckpt, weights, name_map(use_ema=True, rules=[{"from": "(.*)"}]))
    w = next(a for a in plan.assignments if a.targets == ("w",))
    assert plan.errors == [] and w.sources[0].read == ("w/ExponentialMovingAverage",)
    assert "from EMA shadow" in next(r.transform for r in plan.rows if r.key == "w")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_dtype_policy_keep_rejects_and_cast_reports(dtype):
    ckpt = tensors({"fc1/bias": (8,)}, dtype=dtype)
    plan = plan_mapping(ckpt, WEIGHTS, name_map(rules=[{"from": "(.*)"}], strict=False))
    assert plan.errors == [f"name_map.rules[0] '(.*)': dtype mismatch: checkpoint key(s) ['fc1/bias'] are {dtype}, "
                           "model weight 'fc1/bias' is float32 (name_map.dtype_policy: cast converts between "
                           "float types)"]
    plan = plan_mapping(ckpt, WEIGHTS, name_map(rules=[{"from": "(.*)"}], strict=False, dtype_policy="cast"))
    assert plan.errors == [] and plan.assignments[0].casts == (f"{dtype}->float32",)
    assert plan.rows[0].transform == f"cast {dtype}->float32"


def test_integer_key_is_never_cast_to_a_float_weight():
    plan = plan_mapping(tensors({"global_step": ()}), tensors({"step": ()}),
                        name_map(rules=[{"from": "global_step", "to": "step"}], dtype_policy="cast"))
    assert ("dtype mismatch: checkpoint key(s) ['global_step'] are int64, model weight 'step' is float32"
            in plan.errors[0])
