"""Pictures a reviewer of a migration looks at in the MLflow UI: parity of one output, name-map coverage.

Everything renders headless through matplotlib's object-oriented API (`Figure` + `FigureCanvasAgg`):
no pyplot, no global figure state and no backend selection, so several threads may plot at once,
each with its own figures. No TensorFlow here. Text is drawn with `parse_math=False`: output names
and variable scopes are shown literally, even with `$` or `_` in them.

- `parity_plots`: `parity-<output>-abs-err.png` (histogram of |Keras - TF1|) and
  `parity-<output>-scatter.png` (TF1 vs Keras values) for one model output.
- `coverage_chart`: `coverage.png`, the name-map report (`MappingPlan.table()`) as stacked bars per
  variable group.
- `divergence_chart`: `divergence.png`, a failing shard's max abs error per compared layer in topological
  order (`ferry.divergence.FirstDivergence`), log scale, the tolerance and the first divergent layer marked.

The `_..._figure` builders return the `Figure` without writing it (tests read titles and texts).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import Counter
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, NullLocator

from ferry.files import write_atomically

DPI = 100
PARITY_SIZE = (6.0, 4.5)  # inches: 600 x 450 pixels at DPI
SCATTER_POINTS = 20_000  # at most this many points in a scatter
SCATTER_WORST = 500  # of which the elements with the largest errors, always shown
MAX_GROUPS = 40  # coverage: groups with a bar of their own; the rest summed in one "other" bar
TOP_LEVEL = "(top level)"
STATUS_COLOURS = {"mapped": "#2ca02c", "skipped": "#a0a0a0", "unused": "#ff7f0e", "unassigned": "#d62728"}
_EXTRA_COLOURS = ["#9467bd", "#8c564b", "#e377c2", "#17becf"]
_NO_MATH = {"parse_math": False}


def safe_name(name: str) -> str:
    """`name` for a file name: characters other than letters, digits, `.`, `_`, `-` become `_`.

    A name that had to change gets a short hash of the original appended, so two outputs whose names
    differ only in such characters ("a/b", "a:b") never write the same file.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")[:80] or "output"
    if safe != name:
        safe += "-" + hashlib.sha1(name.encode()).hexdigest()[:6]
    return safe


def parity_plots(reference: np.ndarray, candidate: np.ndarray, output: str, folder: Path, atol: float,
                 rtol: float) -> list[Path]:
    """Write the error histogram and the value scatter of one output into `folder` (created).

    `reference` are the TF1 values, `candidate` the Keras values (same shape, any rank, any real
    dtype). Returns `[folder/parity-<output>-abs-err.png, folder/parity-<output>-scatter.png]` with
    `<output>` passed through `safe_name`. Raises ValueError when the shapes differ.
    """
    figures = _parity_figures(reference, candidate, output, atol, rtol)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"parity-{safe_name(output)}"
    paths = [folder / f"{stem}-abs-err.png", folder / f"{stem}-scatter.png"]
    for fig, path in zip(figures, paths):
        _save(fig, path)
    return paths


def coverage_chart(table: dict[str, list], folder: Path) -> Path:
    """Write the name-map report `table` (`MappingPlan.table()`, `mapping.json["table"]`) as
    `folder/coverage.png` (folder created): rows per status, stacked, per variable group."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "coverage.png"
    _save(_coverage_figure(table), path)
    return path


# --- parity -----------------------------------------------------------------------------------------


def _parity_figures(reference: np.ndarray, candidate: np.ndarray, output: str, atol: float,
                    rtol: float) -> tuple[Figure, Figure]:
    """The histogram and the scatter of `parity_plots`, not written."""
    stats = _ErrorStats(reference, candidate, atol, rtol)
    return _abs_err_figure(stats, output), _scatter_figure(stats, output)


class _ErrorStats:
    """Elementwise errors of one output, split into finite errors and non-finite cases."""

    def __init__(self, reference: np.ndarray, candidate: np.ndarray, atol: float, rtol: float):
        ref = np.asarray(reference)
        cand = np.asarray(candidate)
        if ref.shape != cand.shape:
            raise ValueError(f"Keras shape {list(cand.shape)} != TF1 shape {list(ref.shape)}")
        self.ref = ref.astype(np.float64, copy=False).ravel()
        self.cand = cand.astype(np.float64, copy=False).ravel()
        self.atol, self.rtol = float(atol), float(rtol)
        self.n = self.ref.size
        with np.errstate(invalid="ignore", over="ignore"):
            err = np.abs(self.cand - self.ref)
        finite = np.isfinite(err)
        if finite.all():
            self.finite_idx = None  # every element: avoids copying a big array
            self.err = err
            self.same_nonfinite = self.mismatch = 0
        else:
            self.finite_idx = np.flatnonzero(finite)
            self.err = err[self.finite_idx]
            # NaN against NaN, or inf against the same inf: equal (as parity.compare's equal_nan)
            bad = ~finite
            r, c = self.ref[bad], self.cand[bad]
            same = (np.isnan(r) & np.isnan(c)) | (r == c)
            self.same_nonfinite = int(same.sum())
            self.mismatch = int(bad.sum()) - self.same_nonfinite
        self.n_finite = self.err.size
        self.max = float(self.err.max()) if self.n_finite else 0.0
        self.mean = float(self.err.mean()) if self.n_finite else 0.0
        self.zeros = int(np.count_nonzero(self.err == 0))
        ref_f = self.ref if self.finite_idx is None else self.ref[self.finite_idx]
        self.over = int(np.count_nonzero(self.err > self.atol + self.rtol * np.abs(ref_f)))

    @property
    def bit_exact(self) -> bool:
        return self.n > 0 and self.mismatch == 0 and self.zeros == self.n_finite

    def nonfinite_note(self) -> str:
        parts = []
        if self.mismatch:
            parts.append(f"{self.mismatch:,} NaN/inf mismatch" + ("es" if self.mismatch > 1 else ""))
        if self.same_nonfinite:
            parts.append(f"{self.same_nonfinite:,} NaN/inf on both sides")
        return ", ".join(parts)


def _new_figure(size: tuple[float, float], layout: str | None = None) -> Figure:
    """A figure on its own Agg canvas. The parity plots use fixed margins: constrained layout
    measures every tick label twice and would cost most of their time budget."""
    fig = Figure(figsize=size, dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    if layout is None:
        fig.subplots_adjust(left=0.15, right=0.97, bottom=0.12, top=0.87)
    return fig


def _title(fig: Figure, ax, lines: list[str]) -> None:
    """A title of several lines over a fixed-margin figure, the top margin made room for."""
    ax.set_title("\n".join(lines), fontsize=10, **_NO_MATH)
    fig.subplots_adjust(top=1 - (0.2 + 0.17 * len(lines)) / fig.get_figheight())


def _save(fig: Figure, path: Path) -> None:
    """Render `fig` as PNG at its own size and write it atomically (no half-written file to log)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    write_atomically(path, buf.getvalue())


def _abs_err_figure(stats: _ErrorStats, output: str) -> Figure:
    """Histogram of |candidate - reference| with the atol line; bit-exact and empty outputs as text."""
    fig = _new_figure(PARITY_SIZE)
    ax = fig.add_subplot()
    s = stats
    note = s.nonfinite_note()
    if s.bit_exact:
        line2 = "bit-exact: max abs err 0"
    else:
        line2 = f"max abs err {s.max:.3g}, mean abs err {s.mean:.3g}; {s.over:,} over tolerance"
    _title(fig, ax, [f"{_short(output, 60)}: {s.n:,} elements", line2] + ([note] if note else []))
    ax.set_xlabel("|Keras 3 - TF1|  (absolute error)")
    ax.set_ylabel("elements")

    if s.n == 0 or s.n_finite == 0:
        msg = "empty output (0 elements)" if s.n == 0 else f"no finite errors\n{note}"
        ax.text(0.5, 0.5, msg, ha="center", va="center", fontsize=13, transform=ax.transAxes, **_NO_MATH)
        ax.set_yticks([])
        ax.set_xticks([])
        return fig
    nonzero = s.err[s.err > 0]
    if nonzero.size == 0:  # bit-exact (on the finite elements): one bar at 0, said in words
        ax.bar([0.0], [s.n_finite], width=1.0, color=STATUS_COLOURS["mapped"])
        ax.set_xlim(-2, 2)
        ax.set_xticks([0.0], ["0"])
        what = "elements" if s.n_finite == s.n else "finite elements"
        ax.text(0.5, 0.55, f"all {s.n_finite:,} {what} identical\n(error 0)", ha="center", va="center",
                fontsize=14, transform=ax.transAxes, bbox={"facecolor": "white", "edgecolor": "0.6"}, **_NO_MATH)
        return fig

    lo, hi = float(nonzero.min()), float(nonzero.max())
    span_lo = min(lo, s.atol) if s.atol > 0 else lo
    span_hi = max(hi, s.atol)
    if span_hi / span_lo >= 10:  # errors (and the tolerance) span decades: log bins over the nonzero errors
        # one bin per octave, edges between powers of two: float errors are small multiples of an
        # ulp, and decimal bins would alias them into alternating full and empty bins
        e_lo, e_hi = np.floor(np.log2(lo) - 0.5), np.ceil(np.log2(hi) + 0.5)
        step = max(1.0, np.ceil((e_hi - e_lo) / 120))
        edges = np.arange(e_lo, e_hi + step, step) + 0.5
        counts, _ = np.histogram(np.log2(nonzero), bins=edges)
        ax.stairs(counts, 2.0 ** edges, fill=True, color="#1f77b4", label="nonzero errors")
        ax.set_xscale("log")
        ax.set_xlim(min(span_lo, 2.0 ** edges[0]) / 2, max(span_hi, 2.0 ** edges[-1]) * 2)
        if s.zeros:
            ax.plot([], [], " ", label=f"+ {s.zeros:,} errors exactly 0 (not on log axis)")
    else:
        counts, edges = np.histogram(s.err, bins=40, range=(0.0, hi))
        ax.stairs(counts, edges, fill=True, color="#1f77b4", label="errors")
        ax.set_xlim(0, span_hi * 1.05)
    if counts.max() > 20 * counts[counts > 0].min():  # a few outliers stay visible next to a tall bar
        ax.set_yscale("log")
    else:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    for axis in (ax.xaxis, ax.yaxis):  # log axes: decades only; minor ticks cost a third of the time
        if axis.get_scale() == "log":
            axis.set_minor_locator(NullLocator())
    if s.atol > 0:
        ax.axvline(s.atol, color="#d62728", linestyle="--", linewidth=1.2,
                   label=f"atol {s.atol:g} (+ rtol {s.rtol:g} x |TF1|)")
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    return fig


def _scatter_sample(stats: _ErrorStats) -> np.ndarray:
    """Indices (into the finite elements) to draw: all of them, or the worst errors plus a fixed
    random sample, SCATTER_POINTS in all. Deterministic: the same arrays give the same picture."""
    n = stats.n_finite
    if n <= SCATTER_POINTS:
        return np.arange(n)
    worst = np.argpartition(stats.err, n - SCATTER_WORST)[n - SCATTER_WORST:]
    others = np.ones(n, dtype=bool)
    others[worst] = False
    rest = np.random.default_rng(0).choice(np.flatnonzero(others), SCATTER_POINTS - SCATTER_WORST, replace=False)
    return np.sort(np.concatenate([worst, rest]))


def _scatter_figure(stats: _ErrorStats, output: str) -> Figure:
    """TF1 value (x) against Keras value (y) with y = x; points over tolerance in red."""
    fig = _new_figure(PARITY_SIZE)
    ax = fig.add_subplot()
    s = stats
    ax.set_xlabel("TF1 (reference)")
    ax.set_ylabel("Keras 3 (migrated)")
    idx = _scatter_sample(s)
    finite = "finite " if s.n_finite < s.n else ""
    shown = (f"all {idx.size:,} {finite}points" if idx.size == s.n_finite
             else f"{idx.size:,} of {s.n_finite:,} {finite}points "
                  f"(the {SCATTER_WORST} worst errors and a fixed sample)")
    note = s.nonfinite_note()
    _title(fig, ax, [f"{_short(output, 60)}: TF1 vs Keras 3, {s.n:,} elements", shown]
           + ([f"not drawn: {note}"] if note else []))
    if idx.size == 0:
        ax.text(0.5, 0.5, "empty output (0 elements)" if s.n == 0 else "no finite values", ha="center",
                va="center", fontsize=13, transform=ax.transAxes, **_NO_MATH)
        return fig
    fin = s.finite_idx
    x = s.ref[idx] if fin is None else s.ref[fin[idx]]
    y = s.cand[idx] if fin is None else s.cand[fin[idx]]
    err = s.err[idx]
    over = err > s.atol + s.rtol * np.abs(x)
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    pad = (hi - lo) * 0.03 or max(abs(lo) * 0.03, 1e-6)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", linewidth=0.8, label="y = x", zorder=1)
    size = 4.0 if idx.size <= 2000 else 1.5
    ax.plot(x[~over], y[~over], linestyle="none", marker="o", markersize=size, markeredgewidth=0,
            color="#1f77b4", alpha=0.6, label="within tolerance", zorder=2)
    if over.any():
        ax.plot(x[over], y[over], linestyle="none", marker="o", markersize=size + 1, markeredgewidth=0,
                color="#d62728", label=f"over tolerance ({s.over:,} in all)", zorder=3)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.legend(loc="upper left", fontsize=8, markerscale=6 / size)
    return fig


# --- first divergence -------------------------------------------------------------------------------

MAX_LAYERS = 80  # layers drawn by name; a longer model keeps those around the first divergence


def divergence_chart(record: dict, folder: Path) -> Path:
    """Write a failing shard's `first_divergence` (its compared layers) as `folder/divergence.png`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "divergence.png"
    _save(_divergence_figure(record), path)
    return path


def _divergence_figure(record: dict) -> Figure:
    """Max abs error of each compared layer, in topological order, on a log axis: within tolerance in green,
    out of it in red, the first divergent layer labelled; the atol line (the bound is atol + rtol x |TF1|)."""
    rows = [r for r in record["compared"] if r["max_abs_err"] is not None]
    first = record.get("layer")
    if len(rows) > MAX_LAYERS:
        at = next((i for i, r in enumerate(rows) if r["layer"] == first), 0)
        start = max(0, min(at - MAX_LAYERS // 2, len(rows) - MAX_LAYERS))
        rows = rows[start:start + MAX_LAYERS]
    fig = _new_figure((min(max(6.0, 1.2 + 0.22 * len(rows)), 24.0), 5.0), layout="constrained")
    ax = fig.add_subplot()
    atol, rtol = record["atol"], record["rtol"]
    where = (f"shard {record.get('shard', '?')}, batch {record['batch']}, {record['rows']} rows; "
             f"output {record['output']}")
    head = (f"first divergent layer: {_short(first, 50)} (max abs err {record['max_abs_err']:.3g})"
            if first is not None else "no first divergent layer found")
    ax.set_title(f"{head}\n{where}\nmax |Keras 3 - TF1| per layer, in topological order", fontsize=10, **_NO_MATH)
    if not rows:
        ax.text(0.5, 0.5, "no layer compared:\n" + _short(record["verdict"], 120), ha="center", va="center",
                fontsize=11, transform=ax.transAxes, **_NO_MATH)
        ax.set_xticks([])
        ax.set_yticks([])
        return fig
    errors = np.array([r["max_abs_err"] for r in rows], dtype=float)
    floor = min([e for e in errors if e > 0] + [atol or 1e-12]) / 10  # exact zeros are drawn at the floor
    shown = np.where(errors > 0, errors, floor)
    x = np.arange(len(rows))
    ax.bar(x, shown, width=0.7, color=["#2ca02c" if r["within_tolerance"] else "#d62728" for r in rows])
    ax.set_yscale("log")
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_ylim(floor / 2, max(float(shown.max()), atol) * 10)
    if atol > 0:
        ax.axhline(atol, color="0.3", linestyle="--", linewidth=1.2, label=f"atol {atol:g} (+ rtol {rtol:g} x |TF1|)")
    ax.set_xticks(x, [_short(r["layer"], 28) for r in rows], rotation=60, ha="right", fontsize=7, **_NO_MATH)
    for i, r in enumerate(rows):
        if r["layer"] == first:
            ax.get_xticklabels()[i].set_color("#d62728")
            ax.annotate("first divergence", (i, shown[i]), xytext=(0, 6), textcoords="offset points", ha="center",
                        fontsize=8, color="#d62728", **_NO_MATH)
    handles = [Patch(color="#2ca02c", label="within tolerance"), Patch(color="#d62728", label="out of tolerance"),
               *ax.get_lines()]
    if (errors == 0).any():
        handles.append(Patch(color="white", label=f"{int((errors == 0).sum())} with error 0 (drawn at {floor:.0e})"))
    ax.set_ylabel("max abs error")
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
    return fig


# --- coverage ---------------------------------------------------------------------------------------


def _scope(name: str | None) -> list[str]:
    """Scope components of a variable path: all but the last component."""
    return name.split("/")[:-1] if name else []


def _groups(table: dict[str, list]) -> list[str]:
    """The group of each row: the scope of its checkpoint key (of its target for unassigned rows),
    cut to its first component, or deeper while every row shares the same first components
    (a slim ResNet puts everything under `resnet_v1_50/`)."""
    names = [k if k is not None else t for k, t in zip(table["key"], table["target"])]
    scopes = [_scope(n) for n in names]
    depth = 1
    while depth < 4:
        at = {tuple(sc[:depth]) for sc in scopes if sc}
        deeper = {tuple(sc[:depth + 1]) for sc in scopes if sc}
        if len(at) != 1 or len(deeper) <= 1:
            break
        depth += 1
    return ["/".join(sc[:depth]) if sc else TOP_LEVEL for sc in scopes]


def _short(label: str, width: int = 40) -> str:
    return label if len(label) <= width else label[: width // 2 - 1] + "…" + label[-(width // 2):]


def _coverage_figure(table: dict[str, list]) -> Figure:
    """Horizontal stacked bars of status counts per variable group. At most MAX_GROUPS groups get a
    bar of their own: groups with unused keys or unassigned weights first, then the largest; the
    rest are summed in an "other" bar on an axis of its own (its total would dwarf the others)."""
    statuses = [str(st) for st in table.get("status", [])]
    groups = _groups(table) if statuses else []
    counts = Counter(statuses)
    order = list(STATUS_COLOURS) + sorted(set(statuses) - set(STATUS_COLOURS))
    colours = {**STATUS_COLOURS, **dict(zip(order[len(STATUS_COLOURS):], _EXTRA_COLOURS * 10))}

    per_group: dict[str, Counter] = {}
    for g, st in zip(groups, statuses):
        per_group.setdefault(g, Counter())[st] += 1  # insertion order: checkpoint (graph) order

    def priority(g: str) -> tuple[int, int]:
        c = per_group[g]
        return (-int(sum(c[st] for st in c if st not in ("mapped", "skipped")) > 0), -sum(c.values()))

    keep = set(sorted(per_group, key=priority)[:MAX_GROUPS])
    labels = [g for g in per_group if g in keep]
    rows = [per_group[g] for g in labels]
    other = Counter()
    for g, c in per_group.items():
        if g not in keep:
            other.update(c)

    ckpt = counts["mapped"] + counts["skipped"] + counts["unused"]
    title = (f"{ckpt:,} checkpoint keys: {counts['mapped']:,} mapped, {counts['skipped']:,} skipped, "
             f"{counts['unused']:,} unused; {counts['unassigned']:,} model weights unassigned")
    extra = order[len(STATUS_COLOURS):]
    if extra:
        title += "\n" + ", ".join(f"status {st!r}: {counts[st]:,} rows" for st in extra)
    shown = f"{len(per_group)} variable groups" + (f", {MAX_GROUPS} shown" if other else "")

    height = max(3.0, 1.6 + 0.2 * len(labels) + (0.6 if other else 0.0))
    fig = _new_figure((8.0, height), layout="constrained")
    fig.suptitle(title, fontsize=10, **_NO_MATH)
    if not labels:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "empty name-map report (no checkpoint keys, no model weights)", ha="center",
                va="center", fontsize=12, transform=ax.transAxes, **_NO_MATH)
        ax.set_xticks([])
        ax.set_yticks([])
        return fig
    if other:
        ax, ax_other = fig.subplots(2, 1, height_ratios=[len(labels), 1.6])
        n_other = len(per_group) - len(keep)
        _stacked_bars(ax_other, [f"other ({n_other} groups)"], [other], order, colours)
        ax_other.set_title(f"above: groups with unused/unassigned rows first, then the largest; below: the other "
                           f"{n_other} summed", fontsize=8, loc="left", **_NO_MATH)
        bottom = ax_other
    else:
        ax = fig.add_subplot()
        bottom = ax
    _stacked_bars(ax, labels, rows, order, colours)
    bottom.set_xlabel(f"rows of the name-map report ({shown})", fontsize=9, **_NO_MATH)
    handles = [Patch(color=colours[st], label=f"{st} ({counts[st]:,})") for st in order]  # zero counts too
    fig.legend(handles=handles, loc="outside lower center", ncols=len(order), fontsize=8, frameon=False)
    return fig


def _stacked_bars(ax, labels: list[str], rows: list[Counter], order: list[str], colours: dict[str, str]) -> None:
    """One horizontal bar per label, segments in status order, total written at the end."""
    y = np.arange(len(labels))
    left = np.zeros(len(labels))
    for st in order:
        values = np.array([r[st] for r in rows], dtype=float)
        if values.any():
            ax.barh(y, values, left=left, height=0.75, color=colours[st])
        left += values
    for yi, total in zip(y, left):
        ax.text(total, yi, f" {int(total)}", va="center", ha="left", fontsize=7, **_NO_MATH)
    ax.set_yticks(y, [_short(lab) for lab in labels], fontsize=8, **_NO_MATH)
    ax.set_ylim(len(labels) - 0.5, -0.5)  # first group on top
    ax.set_xlim(0, left.max() * 1.08 + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
