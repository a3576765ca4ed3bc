"""The inventory as text, for `ferry inspect` (fits 100 columns; no TensorFlow)."""

from __future__ import annotations

import textwrap
from typing import Any

WIDTH = 100


def _fit(text: str, width: int) -> str:
    """Shorten `text` to `width` characters, keeping its end (names differ at the end)."""
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _shape_text(shape: list[int | None] | None) -> str:
    """`[?, 784]`-style shape; `?` alone for unknown rank."""
    if shape is None:
        return "?"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _table(rows: list[list[str]], caps: list[int], indent: str = "  ") -> list[str]:
    """Left-aligned columns, each at most its cap wide; the last column gets what is left of
    WIDTH. Over-long cells are shortened from the left (names differ at their end)."""
    if not rows:
        return []
    widths = [min(cap, max(len(r[i]) for r in rows)) for i, cap in enumerate(caps[:-1])]
    last = max(8, WIDTH - len(indent) - sum(w + 2 for w in widths))
    lines = []
    for row in rows:
        cells = [_fit(cell, w).ljust(w) for cell, w in zip(row, widths)] + [_fit(row[-1], last)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _names(names: list[str], limit: int = 4) -> str:
    """A few names, then `+N more`."""
    shown = ", ".join(names[:limit])
    return shown + (f", +{len(names) - limit} more" if len(names) > limit else "")


def _first_and_count(names: list[str]) -> str:
    """`first (+N)` for a table cell; `-` when empty."""
    if not names:
        return "-"
    return names[0] + (f" (+{len(names) - 1})" if len(names) > 1 else "")


def _wrapped(label: str, text: str) -> list[str]:
    """`label` then `text` wrapped to WIDTH, continuation lines indented under the text."""
    pad = " " * len(label)
    return textwrap.wrap(text, WIDTH, initial_indent=label, subsequent_indent=pad) or [label]


def format_inventory(inv: dict[str, Any]) -> str:
    """Human-readable summary of an inventory, for `ferry inspect META` (fits 100 columns)."""
    lines = [f"Graph: {inv['source']} ({inv['format']})", ""]
    lines += _inputs_lines(inv) + [""] + _outputs_lines(inv) + [""] + _variables_lines(inv)
    lines += ["", f"Op types ({sum(inv['op_types'].values())} inference ops):"]
    lines += _wrapped("  ", ", ".join(f"{t} {n}" for t, n in inv["op_types"].items()))
    return "\n".join(lines + [""] + _training_lines(inv))


def _inputs_lines(inv: dict[str, Any]) -> list[str]:
    """The `Inputs` section."""
    rows = [[p["tensor"], p["dtype"], _shape_text(p["shape"]),
             "(has default)" if p.get("has_default") else ""] for p in inv["placeholders"]]
    return [f"Inputs ({len(rows)}):"] + (_table(rows, [48, 10, 24, 0]) or ["  (none)"])


def _outputs_lines(inv: dict[str, Any]) -> list[str]:
    """The `Candidate outputs` section."""
    rows = [[o["tensor"], o["op"], o["dtype"], _shape_text(o["shape"]),
             "from " + ", ".join(o["depends_on"]) if o.get("depends_on") else ""]
            for o in inv["outputs"]]
    table = _table(rows, [40, 16, 8, 16, 0]) or ["  (none)"]
    return [f"Candidate outputs ({len(rows)}):"] + table


def _variables_lines(inv: dict[str, Any]) -> list[str]:
    """The `Variables` section: a table of those inference reads, then the training-only ones."""
    used = [v for v in inv["variables"] if not v["training_only"]]
    skipped = [v["name"] for v in inv["variables"] if v["training_only"]]
    lines = [f"Variables ({len(used)} used by inference, {len(skipped)} training-only):"]
    rows = [[v["name"], _shape_text(v["shape"]), v["dtype"], v["kind"],
             _first_and_count(v["read_by"])] for v in used]
    header = ["name", "shape", "dtype", "kind", "read by"]
    lines += _table([header] + rows, [40, 18, 8, 9, 0]) if rows else ["  (none)"]
    if skipped:
        lines += _wrapped("  training-only: ", _names(skipped, 6))
    return lines


def _training_lines(inv: dict[str, Any]) -> list[str]:
    """The `Training-only parts` section: a count or a few names per non-empty category."""
    lines = ["Training-only parts:"]
    for key, value in inv["training_only"].items():
        if value:
            text = f"{value} ops" if isinstance(value, int) else _names(value)
            lines += _wrapped(f"  {key + ':':<16}", text)
    return lines if len(lines) > 1 else lines + ["  (none)"]
