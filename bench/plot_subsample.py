"""Benchmark: the review plots of a big output, subsampled (ferry) vs every point drawn, side by side.

    python bench/plot_subsample.py [--elements 1000000] [--repeat 3]

`ferry.plots.parity_plots` draws at most `SCATTER_POINTS` points (the worst errors plus a fixed
sample) and bins the error histogram; the naive way scatters every element. Both write the same two
PNGs from the same arrays in this one process; the table gives min/median seconds and the ratio.
(`tests/test_plots.py` checks that the subsample is bounded and deterministic; speed lives here.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ferry.review import plots  # noqa: E402


def naive(reference: np.ndarray, candidate: np.ndarray, folder: Path) -> None:
    """Every element drawn: the scatter and a histogram of all errors."""
    err = np.abs(candidate - reference).ravel()
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    ax.hist(err, bins=60)
    fig.savefig(folder / "naive-hist.png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    ax.plot(reference.ravel(), candidate.ravel(), ".", markersize=1)
    fig.savefig(folder / "naive-scatter.png")
    plt.close(fig)


def timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(2)
    reference = rng.normal(size=args.elements).astype(np.float32)
    candidate = reference + rng.normal(scale=1e-7, size=args.elements).astype(np.float32)
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        plots.parity_plots(reference[:10], candidate[:10], "warm-up", folder, 1e-5, 1e-4)
        ferry_s = timed(lambda: plots.parity_plots(reference, candidate, "big", folder, 1e-5, 1e-4), args.repeat)
        naive_s = timed(lambda: naive(reference, candidate, folder), args.repeat)
    print(f"{'route':<28}{'min s':>8}{'median s':>10}")
    print(f"{'ferry (subsampled)':<28}{min(ferry_s):8.2f}{statistics.median(ferry_s):10.2f}")
    print(f"{'every point':<28}{min(naive_s):8.2f}{statistics.median(naive_s):10.2f}")
    print(f"ratio every point / ferry (median): {statistics.median(naive_s) / statistics.median(ferry_s):.1f}x "
          f"on {args.elements:,} elements")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
