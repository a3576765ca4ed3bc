"""Spec and catalogue validation: every problem names the file, the field and the value."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from ferry.cli import main
from ferry.spec import SpecError, load_catalogue, load_spec

GOOD = """
name: demo
source:
  meta: zoo/m/model.ckpt.meta
  inputs: {x: "x:0"}
  outputs: {probs: "probs:0"}
architecture:
  layers:
    - {class: Dense, units: 10}
name_map:
  rules: [{from: '(.*)'}]
verify:
  shards: zoo/m/shards/*.npz
export:
  dir: out/demo
"""


@pytest.fixture
def fake_model(tmp_path: Path) -> Path:
    """Files where a spec expects them (validation reads no graph or checkpoint, only the shards' headers)."""
    (tmp_path / "zoo/m/shards").mkdir(parents=True)
    for name in ["model.ckpt.meta", "model.ckpt.index"]:
        (tmp_path / "zoo/m" / name).write_bytes(b"")
    np.savez(tmp_path / "zoo/m/shards/a.npz", x=np.zeros((2, 784), np.float32))
    return tmp_path


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(path: Path, **kw) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(path, **kw)
    return [str(p) for p in info.value.problems]


@pytest.mark.unit
def test_good_spec_resolves_paths_against_its_file(fake_model):
    spec = load_spec(write(fake_model, "demo.yaml", GOOD))
    assert spec.source.meta == fake_model / "zoo/m/model.ckpt.meta"
    assert spec.source.checkpoint_prefix == fake_model / "zoo/m/model.ckpt"
    assert spec.shard_paths() == [fake_model / "zoo/m/shards/a.npz"]
    assert spec.export.dir == fake_model / "out/demo"
    assert spec.name_map.strict is True and spec.verify.tolerance.atol == 1e-5


@pytest.mark.unit
def test_unknown_key_is_named_with_file_and_field(fake_model):
    path = write(fake_model, "demo.yaml", GOOD.replace("  dir: out/demo", "  dir: out/demo\n  format: onnx"))
    assert problems_of(path) == [f"{path}: export.format: unknown key (got 'onnx')"]


@pytest.mark.unit
def test_bad_type_names_field_and_value(fake_model):
    text = GOOD.replace("  shards: zoo/m/shards/*.npz", "  shards: zoo/m/shards/*.npz\n  batch_size: many")
    path = write(fake_model, "demo.yaml", text)
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: verify.batch_size: ") and "integer" in problem and "'many'" in problem


@pytest.mark.unit
def test_every_problem_is_reported_at_once(fake_model):
    text = GOOD.replace('inputs: {x: "x:0"}', 'inputs: {x: "x"}').replace("- {class: Dense, units: 10}", "")
    text = text.replace("rules: [{from: '(.*)'}]", "rules: [{from: '(unclosed'}]")
    problems = problems_of(write(fake_model, "demo.yaml", text))
    fields = sorted(p.split(": ")[1] for p in problems)
    assert fields == ["architecture", "name_map.rules[0]", "source.inputs"]
    assert any("architecture: needs exactly one of `layers`, `graph` or `factory` (got none)" in p for p in problems)
    assert any("must look like 'op_name:0'" in p for p in problems)


@pytest.mark.unit
def test_missing_files_are_reported_with_their_paths(tmp_path):
    path = write(tmp_path, "demo.yaml", GOOD)
    problems = problems_of(path)
    assert problems == [
        f"{path}: source.meta: file not found (got '{tmp_path / 'zoo/m/model.ckpt.meta'}')",
        f"{path}: source.checkpoint: no checkpoint index model.ckpt.index beside this prefix "
        f"(got '{tmp_path / 'zoo/m/model.ckpt'}')",
        f"{path}: verify.shards: glob matches no file (got '{tmp_path / 'zoo/m/shards/*.npz'}')",
    ]


@pytest.mark.unit
def test_unknown_skip_entry_that_is_no_regex(fake_model):
    path = write(fake_model, "demo.yaml", GOOD.replace("rules:", "skip: ['[oops']\n  rules:"))
    [problem] = problems_of(path)
    assert "name_map.skip" in problem and "neither a preset (optimizer, ema)" in problem


@pytest.mark.unit
def test_per_output_tolerance_must_name_an_output(fake_model):
    text = GOOD.replace("  shards: zoo/m/shards/*.npz", "  shards: zoo/m/shards/*.npz\n  outputs: {logits: {atol: 1}}")
    [problem] = problems_of(write(fake_model, "demo.yaml", text))
    assert "verify.outputs names ['logits'] not in source.outputs ['probs']" in problem


@pytest.mark.unit
def test_catalogue_defaults_merge_and_spec_wins(fake_model):
    write(fake_model, "specs/models/demo.yaml", GOOD.replace("zoo/", "../../zoo/"))
    write(fake_model, "specs/catalogue.yaml", """
        defaults:
          name_map: {skip: [optimizer], strict: false}
          verify: {batch_size: 7, tolerance: {atol: 0.1, rtol: 0.2}}
        tracking: {experiment: demo-exp}
        models: [models/*.yaml]
    """)
    cat = load_catalogue(fake_model / "specs/catalogue.yaml")
    spec = cat.specs["demo"]
    assert cat.tracking.experiment == cat.experiment == "demo-exp"
    assert spec.name_map.skip == ["optimizer"] and spec.name_map.strict is False
    assert spec.name_map.rules[0].from_ == "(.*)"  # the spec's own rules kept
    assert spec.verify.batch_size == 7 and spec.verify.tolerance.rtol == 0.2


@pytest.mark.unit
def test_each_catalogue_has_its_own_experiment_by_default(fake_model):
    write(fake_model, "specs/models/demo.yaml", GOOD.replace("zoo/", "../../zoo/"))
    (fake_model / "pyproject.toml").write_text("")  # the project root
    for name in ("nightly.yaml", "team-b/catalogue.yaml"):
        write(fake_model, f"specs/{name}", f"models: [{'../' if '/' in name else ''}models/*.yaml]\n")
    assert load_catalogue(fake_model / "specs/nightly.yaml").experiment == "ferry specs/nightly.yaml"
    assert load_catalogue(fake_model / "specs/team-b/catalogue.yaml").experiment == "ferry specs/team-b/catalogue.yaml"


@pytest.mark.unit
def test_invalid_spec_is_collected_not_raised(fake_model):
    write(fake_model, "specs/models/a.yaml", GOOD.replace("zoo/", "../../zoo/"))
    write(fake_model, "specs/models/b.yaml",
          GOOD.replace("name: demo", "name: broken").replace("units: 10", "units: 10}\n  bad"))
    write(fake_model, "specs/catalogue.yaml", "models: [models/*.yaml]\n")
    cat = load_catalogue(fake_model / "specs/catalogue.yaml")
    assert list(cat.specs) == ["demo"]
    [(file, problems)] = cat.problems.items()
    assert file.endswith("b.yaml") and "invalid YAML" in str(problems[0])


@pytest.mark.unit
def test_catalogue_errors(fake_model):
    path = write(fake_model, "cat.yaml", "models: [nothing/*.yaml]\nextra: 1\n")
    with pytest.raises(SpecError, match=r"cat.yaml: extra: unknown key \(got 1\)"):
        load_catalogue(path)
    path = write(fake_model, "cat.yaml", "models: [nothing/*.yaml]\n")
    with pytest.raises(SpecError, match=r"cat.yaml: models\[0\]: glob matches no spec file \(got 'nothing/\*.yaml'\)"):
        load_catalogue(path)
    write(fake_model, "m/a.yaml", GOOD.replace("zoo/", "../zoo/"))
    write(fake_model, "m/b.yaml", GOOD.replace("zoo/", "../zoo/"))
    path = write(fake_model, "cat.yaml", "models: [m/*.yaml]\n")
    with pytest.raises(SpecError, match=r"b.yaml: name: duplicate model name, also used by .*a.yaml \(got 'demo'\)"):
        load_catalogue(path)
    with pytest.raises(SpecError, match=r"--only: no such model in the catalogue; known: demo, other \(got 'nope'\)"):
        write(fake_model, "m/b.yaml", GOOD.replace("zoo/", "../zoo/").replace("name: demo", "name: other"))
        load_catalogue(path, only=["nope"])


@pytest.mark.tf1
def test_validate_command_reports_keras_layer_problems(fake_model, capsys):
    write(fake_model, "specs/models/demo.yaml", GOOD.replace("zoo/", "../../zoo/").replace(
        "- {class: Dense, units: 10}", "- {class: Dense, units: 10, activaton: relu}\n    - {class: Danse}"))
    cat = write(fake_model, "specs/catalogue.yaml", "models: [models/*.yaml]\n")
    assert main(["validate", str(cat)]) == 1
    out = capsys.readouterr().out
    assert "demo.yaml: architecture.layers[0]: Dense(units=10, activaton='relu'):" in out
    assert "activaton" in out.splitlines()[0]
    assert "demo.yaml: architecture.layers[1]: unknown Keras layer class 'Danse' (got 'Danse')" in out
    assert "0 of 1 specs valid, 2 problems" in out


@pytest.mark.tf1
def test_validate_command_passes_the_example_catalogue(catalogue, capsys):
    assert main(["validate", str(catalogue)]) == 0
    # seven .meta models, one of each other format, two verified from other data formats (ferry/data.py)
    assert "13 of 13 specs valid" in capsys.readouterr().out


@pytest.mark.unit
def test_architecture_must_be_auto_or_a_form(fake_model):
    path = write(fake_model, "demo.yaml", GOOD.replace("architecture:\n  layers:\n    - {class: Dense, units: 10}",
                                                       "architecture: automatic"))
    assert problems_of(path) == [f"{path}: architecture: must be `auto` or a mapping with one of `layers`, `graph`, "
                                 "`factory` (got 'automatic')"]
    path = write(fake_model, "demo.yaml", GOOD.replace("architecture:\n  layers:\n    - {class: Dense, units: 10}",
                                                       "architecture: auto"))
    assert load_spec(path).architecture == "auto"
