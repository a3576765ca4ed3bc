"""The reviewer's pictures (ferry/plots.py): real PNGs from real arrays and real name-map tables."""

from __future__ import annotations

import threading
from pathlib import Path

import matplotlib.colors
import matplotlib.image
import numpy as np
import pytest
from conftest import tensors

from ferry.mapping.namemap import plan_mapping
from ferry.review import plots
from ferry.spec import NameMap

pytestmark = pytest.mark.unit

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PARITY_PIXELS = (450, 600)  # rows, columns: 6 x 4.5 in at 100 dpi


def read_png(path: Path) -> np.ndarray:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_MAGIC, f"{path} is no PNG"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image[..., :3].std() > 0.01, f"{path} is blank"  # something is drawn
    return image


def texts(fig) -> str:
    """Every text of a figure (titles, labels, annotations, legend entries, tick labels), joined."""
    from matplotlib.text import Text

    return "\n".join(t.get_text() for t in fig.findobj(Text))


def random_pair(shape, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=shape).astype(np.float32)
    return ref, (ref + rng.normal(scale=noise, size=shape)).astype(np.float32)


# --- parity -------------------------------------------------------------------------------------------


def test_parity_plots_write_two_pngs_of_the_stated_size(tmp_path):
    ref, cand = random_pair((64, 10), 1e-6)
    folder = tmp_path / "plots" / "nested"  # created
    paths = plots.parity_plots(ref, cand, "probs", folder, atol=1e-5, rtol=1e-4)
    assert paths == [folder / "parity-probs-abs-err.png", folder / "parity-probs-scatter.png"]
    for path in paths:
        assert read_png(path).shape[:2] == PARITY_PIXELS
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in paths)  # no temporary files left


def test_histogram_title_and_tolerance_line(tmp_path):
    ref, cand = random_pair((32, 16), 1e-6)
    cand[0, 0] += 0.5  # one element far out of tolerance
    hist, scatter = plots._parity_figures(ref, cand, "logits", atol=1e-5, rtol=1e-4)
    ax = hist.axes[0]
    title = ax.get_title()
    err = np.abs(cand.astype(np.float64) - ref)
    assert "logits: 512 elements" in title
    assert f"max abs err {err.max():.3g}" in title and f"mean abs err {err.mean():.3g}" in title
    assert "1 over tolerance" in title
    assert ax.get_xscale() == "log"  # 1e-7 .. 0.5 spans decades
    atol_lines = [ln for ln in ax.get_lines() if list(ln.get_xdata()) == [1e-5, 1e-5]]
    assert len(atol_lines) == 1
    lo, hi = ax.get_xlim()
    assert lo < 1e-5 < hi and hi >= 0.5
    # the scatter: x = TF1, y = Keras, the out-of-tolerance element drawn in its own colour
    sax = scatter.axes[0]
    assert (sax.get_xlabel(), sax.get_ylabel()) == ("TF1 (reference)", "Keras 3 (migrated)")
    over = [ln for ln in sax.get_lines() if ln.get_label().startswith("over tolerance")]
    assert len(over) == 1 and list(over[0].get_xdata()) == [ref[0, 0]] and list(over[0].get_ydata()) == [cand[0, 0]]
    assert any(list(ln.get_xdata()) == list(ln.get_ydata()) and ln.get_label() == "y = x" for ln in sax.get_lines())


@pytest.mark.parametrize("ref", [np.zeros((8, 5), np.float32),
                                 np.random.default_rng(1).normal(size=(3, 4, 5)).astype(np.float32)])
def test_bit_exact_outputs_are_said_so(tmp_path, ref):
    cand = ref.copy()
    hist, _ = plots._parity_figures(ref, cand, "out", atol=1e-6, rtol=0.0)
    ax = hist.axes[0]
    assert f"all {ref.size:,} elements identical" in texts(hist)
    assert "bit-exact" in ax.get_title()
    assert ax.get_xscale() == "linear"
    assert [p.get_height() for p in ax.patches if p.get_width() == 1.0] == [ref.size]  # the single bar at 0
    paths = plots.parity_plots(ref, cand, "out", tmp_path, atol=1e-6, rtol=0.0)
    assert all(read_png(p).shape[:2] == PARITY_PIXELS for p in paths)


def test_nan_and_inf_are_counted_not_fatal(tmp_path):
    ref = np.array([1.0, np.nan, 3.0, np.inf, -np.inf, 5.0, 2.0, 0.5])
    cand = np.array([1.0, np.nan, np.nan, np.inf, np.inf, 5.0001, 2.0, 0.5])
    hist, scatter = plots._parity_figures(ref, cand, "y", atol=1e-5, rtol=1e-4)
    title = hist.axes[0].get_title()
    assert "8 elements" in title
    assert "2 NaN/inf mismatches" in title  # 3 vs NaN, -inf vs inf
    assert "2 NaN/inf on both sides" in title  # NaN/NaN, inf/inf: equal, as parity.compare's equal_nan
    assert "max abs err 0.0001" in title
    assert "not drawn: 2 NaN/inf mismatches" in scatter.axes[0].get_title()
    drawn = sum(len(ln.get_xdata()) for ln in scatter.axes[0].get_lines() if ln.get_label() != "y = x")
    assert drawn == 4
    for p in plots.parity_plots(ref, cand, "y", tmp_path, atol=1e-5, rtol=1e-4):
        read_png(p)


def test_finite_part_identical_but_nan_mismatch(tmp_path):
    ref = np.array([1.0, 2.0, 3.0])
    cand = np.array([1.0, 2.0, np.nan])
    hist, _ = plots._parity_figures(ref, cand, "y", atol=1e-5, rtol=0.0)
    assert "all 2 finite elements identical" in texts(hist)
    assert "bit-exact" not in hist.axes[0].get_title() and "1 NaN/inf mismatch" in hist.axes[0].get_title()


@pytest.mark.parametrize("ref,cand,message", [
    (np.zeros((0, 4)), np.zeros((0, 4)), "empty output (0 elements)"),
    (np.array([np.nan, 1.0]), np.array([1.0, np.inf]), "no finite errors"),
    (np.float32(2.0), np.float32(2.5), "1 elements"),  # rank 0
    (np.arange(12).reshape(3, 4), np.arange(12).reshape(3, 4), "all 12 elements identical"),  # integer outputs
])
def test_degenerate_outputs_render(tmp_path, ref, cand, message):
    hist, _ = plots._parity_figures(ref, cand, "o", atol=1e-5, rtol=1e-4)
    assert message in texts(hist)
    for p in plots.parity_plots(ref, cand, "o", tmp_path, atol=1e-5, rtol=1e-4):
        assert read_png(p).shape[:2] == PARITY_PIXELS


def test_shapes_must_agree(tmp_path):
    with pytest.raises(ValueError, match=r"Keras shape \[2, 3\] != TF1 shape \[3, 2\]"):
        plots.parity_plots(np.zeros((3, 2)), np.zeros((2, 3)), "o", tmp_path, atol=1e-5, rtol=0.0)
    assert not list(tmp_path.iterdir())


def test_file_names_are_sanitized(tmp_path):
    assert plots.safe_name("probs") == "probs"
    assert plots.safe_name("dense_2/Softmax.out-1") != "dense_2/Softmax.out-1"
    names = ["scope/logits:0", "scope_logits_0", "scope:logits/0", "../../etc/passwd", "$x$ y", "", "a" * 300]
    safe = [plots.safe_name(n) for n in names]
    assert len(set(safe)) == len(names)  # no two outputs share a file
    for name in names:
        paths = plots.parity_plots(np.ones(3), np.ones(3), name, tmp_path, atol=1e-5, rtol=0.0)
        for p in paths:
            assert p.parent == tmp_path and p.is_file()
            assert all(c.isalnum() or c in "._-" for c in p.name), p.name
            assert len(p.name) < 120
    assert len(list(tmp_path.iterdir())) == 2 * len(names)
    # the title shows the name as it is (no mathtext for `$`)
    hist, _ = plots._parity_figures(np.ones(3), np.ones(3), "$x$ y", atol=1e-5, rtol=0.0)
    assert hist.axes[0].get_title().startswith("$x$ y: 3 elements")


def test_big_output_is_subsampled_deterministically_and_bounded(tmp_path):
    """A million elements draw a bounded, reproducible picture (its speed: bench/plot_subsample.py)."""
    ref, cand = random_pair((1000, 1000), 1e-7, seed=2)
    cand[123, 456] += 1e-3  # the worst element must be among the drawn points
    paths = plots.parity_plots(ref, cand, "big", tmp_path / "a", atol=1e-5, rtol=1e-4)
    for p in paths:
        assert read_png(p).shape[:2] == PARITY_PIXELS
    again = plots.parity_plots(ref, cand, "big", tmp_path / "b", atol=1e-5, rtol=1e-4)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]

    stats = plots._ErrorStats(ref, cand, 1e-5, 1e-4)
    sample = plots._scatter_sample(stats)
    assert len(np.unique(sample)) == len(sample) == plots.SCATTER_POINTS
    worst = np.argsort(stats.err)[-plots.SCATTER_WORST:]
    assert np.isin(worst, sample).all()
    assert np.array_equal(sample, plots._scatter_sample(stats))

    hist, scatter = plots._parity_figures(ref, cand, "big", atol=1e-5, rtol=1e-4)
    points = [ln for ln in scatter.axes[0].get_lines() if ln.get_label() != "y = x"]
    xs = np.concatenate([ln.get_xdata() for ln in points])
    assert len(xs) == plots.SCATTER_POINTS
    assert ref[123, 456] in xs
    assert "20,000 of 1,000,000 points" in scatter.axes[0].get_title()
    assert "1,000,000 elements" in hist.axes[0].get_title()


def test_threads_plot_at_once(tmp_path):
    """No shared figure state: plots drawn in parallel threads equal those drawn one by one."""
    pairs = {f"out{i}": random_pair((200, 50), 10.0 ** -(i + 4), seed=i) for i in range(4)}
    serial = {name: plots.parity_plots(r, c, name, tmp_path / "serial", 1e-5, 1e-4) for name, (r, c) in pairs.items()}
    errors: list[BaseException] = []

    def work(name):
        try:
            plots.parity_plots(*pairs[name], name, tmp_path / "threads", 1e-5, 1e-4)
        except BaseException as e:  # noqa: BLE001  (reported by the test)
            errors.append(e)

    threads = [threading.Thread(target=work, args=(name,)) for name in pairs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for paths in serial.values():
        for p in paths:
            assert (tmp_path / "threads" / p.name).read_bytes() == p.read_bytes()


# --- coverage -----------------------------------------------------------------------------------------


def mlp_plan():
    """An MLP checkpoint (with Adam slots) onto a Keras model with one extra layer: all four statuses."""
    ckpt = tensors({
        "global_step": (), "beta1_power": (), "beta2_power": (),
        "dense/kernel": (4, 8), "dense/bias": (8,), "dense/kernel/Adam": (4, 8), "dense/kernel/Adam_1": (4, 8),
        "dense_1/kernel": (8, 2), "dense_1/bias": (2,), "stray/w": (5,),
    })
    weights = tensors({"fc1/kernel": (4, 8), "fc1/bias": (8,), "fc2/kernel": (8, 2), "fc2/bias": (2,),
                       "head/kernel": (2, 3), "head/bias": (3,)})
    name_map = NameMap.model_validate({"skip": ["optimizer"], "strict": False,
                                       "rules": [{"from": r"dense/(kernel|bias)", "to": r"fc1/\1"},
                                                 {"from": r"dense_1/(.*)", "to": r"fc2/\1"}]})
    return plan_mapping(ckpt, weights, name_map)


def test_coverage_chart_of_a_real_mapping_table(tmp_path):
    plan = mlp_plan()
    table = plan.table()
    assert set(table["status"]) == {"mapped", "skipped", "unused", "unassigned"}
    path = plots.coverage_chart(table, tmp_path / "cov")
    assert path == tmp_path / "cov" / "coverage.png"
    image = read_png(path)
    assert image.shape[1] == 800 and image.shape[0] >= 300

    fig = plots._coverage_figure(table)
    assert fig._suptitle.get_text() == ("10 checkpoint keys: 4 mapped, 5 skipped, 1 unused; "
                                        "2 model weights unassigned")
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["(top level)", "dense", "dense_1", "stray", "head"]  # checkpoint order; `head` from targets
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["mapped (4)", "skipped (5)", "unused (1)", "unassigned (2)"]
    # bar lengths: per group and status, as in the table
    widths: dict[tuple[int, str], float] = {}
    colour_status = {tuple(np.round(matplotlib.colors.to_rgba(c), 3)): s for s, c in plots.STATUS_COLOURS.items()}
    for patch in ax.patches:
        row = round(patch.get_y() + patch.get_height() / 2)
        widths[(row, colour_status[tuple(np.round(patch.get_facecolor(), 3))])] = patch.get_width()
    expected = {(0, "skipped"): 3, (1, "mapped"): 2, (1, "skipped"): 2, (2, "mapped"): 2, (3, "unused"): 1,
                (4, "unassigned"): 2}
    assert {k: v for k, v in widths.items() if v} == expected


def test_coverage_chart_caps_300_groups(tmp_path):
    keys, statuses, targets = [], [], []
    for g in range(300):
        for j in range(1 + g % 5):  # groups of 1..5 keys
            keys.append(f"conv2d_{g}/kernel_{j}")
            statuses.append("mapped" if j % 2 == 0 else "skipped")
            targets.append(None)
    keys.append("conv2d_7/extra")  # a small group with an unused key is shown whatever its size
    statuses.append("unused")
    targets.append(None)
    keys += [None, None]
    statuses += ["unassigned", "unassigned"]
    targets += ["classifier/kernel", "classifier/bias"]
    table = {"key": keys, "status": statuses, "target": targets,
             "key_shape": [[1]] * len(keys), "target_shape": [None] * len(keys),
             "transform": [""] * len(keys), "reason": [""] * len(keys)}

    path = plots.coverage_chart(table, tmp_path)
    image = read_png(path)
    assert image.shape[1] == 800 and image.shape[0] < 1400  # legible, not 300 bars tall

    fig = plots._coverage_figure(table)
    ax, ax_other = fig.axes
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == plots.MAX_GROUPS
    assert "conv2d_7" in labels and "classifier" in labels  # problems first
    assert [t.get_text() for t in ax_other.get_yticklabels()] == [f"other ({301 - plots.MAX_GROUPS} groups)"]
    shown = sum(p.get_width() for p in ax.patches) + sum(p.get_width() for p in ax_other.patches)
    assert shown == len(keys)  # every row is in some bar
    assert fig._suptitle.get_text().startswith(f"{len(keys) - 2:,} checkpoint keys:")


def test_coverage_groups_descend_below_a_common_root():
    keys = ["global_step"] + [f"resnet_v1_50/block{b}/unit_{u}/conv1/weights" for b in (1, 2) for u in (1, 2)]
    table = {"key": keys, "status": ["skipped"] + ["mapped"] * 4, "target": [None] + ["x"] * 4}
    assert plots._groups(table) == ["(top level)"] + ["resnet_v1_50/block1"] * 2 + ["resnet_v1_50/block2"] * 2
    # the brief's rule otherwise: first scope component, top level for unscoped keys
    table = {"key": ["beta1_power", "dense/kernel/Adam", "dense_1/bias", None],
             "status": ["skipped", "skipped", "mapped", "unassigned"], "target": [None, None, "fc/b", "fc2/w"]}
    assert plots._groups(table) == ["(top level)", "dense", "dense_1", "fc2"]


def test_coverage_chart_of_an_empty_table(tmp_path):
    table = {c: [] for c in ("key", "status", "target", "key_shape", "target_shape", "transform", "reason")}
    fig = plots._coverage_figure(table)
    assert "empty name-map report" in texts(fig)
    assert fig._suptitle.get_text() == "0 checkpoint keys: 0 mapped, 0 skipped, 0 unused; 0 model weights unassigned"
    read_png(plots.coverage_chart(table, tmp_path))


# --- first divergence ---------------------------------------------------------------------------------------


def divergence_record(errors: dict[str, float], first: str | None) -> dict:
    """A failing shard's `first_divergence` with one compared layer per error, in this order."""
    rows = [{"layer": name, "tf1": f"{name}/BiasAdd:0", "tf1_op": "BiasAdd", "max_abs_err": err,
             "within_tolerance": err <= 1e-5, "inputs": {}, "inputs_max_abs_err": None, "inputs_within_tolerance": None}
            for name, err in errors.items()]
    return {"output": "probs", "shard": 0, "batch": 3, "rows": 8, "atol": 1e-5, "rtol": 1e-5,
            "correspondence": "name map", "layer": first, "max_abs_err": errors.get(first), "verdict": "",
            "compared": rows, "not_compared": {}}


def test_divergence_chart_per_layer_log_scale_tolerance_and_the_first(tmp_path):
    errors = {"dense": 0.0, "dense_1": 0.3, "dense_2": 0.2, "dense_3": 3e-6}
    record = divergence_record(errors, "dense_1")
    fig = plots._divergence_figure(record)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert "first divergent layer: dense_1 (max abs err 0.3)" in ax.get_title()
    assert "shard 0, batch 3, 8 rows; output probs" in ax.get_title()
    ticks = ax.get_xticklabels()
    assert [t.get_text() for t in ticks] == list(errors)  # topological order, as given
    assert matplotlib.colors.to_hex(ticks[1].get_color()) == "#d62728"  # the first divergence, in red
    assert [ln for ln in ax.get_lines() if list(ln.get_ydata()) == [1e-5, 1e-5]]  # the atol line
    heights = [p.get_height() for p in ax.patches]
    assert heights[1:] == pytest.approx([0.3, 0.2, 3e-6]) and 0 < heights[0] < 3e-6  # error 0 at the floor
    colours = [matplotlib.colors.to_hex(p.get_facecolor()) for p in ax.patches]
    assert colours == ["#2ca02c", "#d62728", "#d62728", "#2ca02c"]
    assert "1 with error 0" in texts(fig) and "first divergence" in texts(fig)
    path = plots.divergence_chart(record, tmp_path / "plots")
    assert path == tmp_path / "plots" / "divergence.png"
    read_png(path)


def test_divergence_chart_without_compared_layers(tmp_path):
    record = divergence_record({}, None)
    record["verdict"] = "no Keras layer could be matched to a TF1 tensor (mlp: a nested model)"
    fig = plots._divergence_figure(record)
    assert "no first divergent layer found" in fig.axes[0].get_title()
    assert "no layer compared:" in texts(fig) and "a nested model" in texts(fig)
    read_png(plots.divergence_chart(record, tmp_path))
