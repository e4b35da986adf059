"""Results: what a cell holds, the printed tables and the JSON document."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.harness import Stats

__all__ = ["RATIO_BASES", "Cell", "Footnotes", "Table", "ratios", "render"]

#: dbnexus figures are given as a multiple of these columns' figures in the same case.
RATIO_BASES = ("raw", "core")
DBNEXUS_COLUMNS = ("dbnexus", "dbnexus_nocache")


@dataclass
class Cell:
    """One implementation in one case: a figure, or why there is none."""

    stats: Stats | None = None
    na: str | None = None
    failed: bool = False  # n/a because something broke, not by design
    note: str | None = None
    checks: list[str] = field(default_factory=list)  # commit checks run afterwards
    ratios: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        if self.stats is None:
            return {"status": "n/a", "reason": self.na}
        d: dict[str, Any] = {"status": "ok", **self.stats.as_dict()}
        if self.note:
            d["note"] = self.note
        if self.checks:
            d["checks"] = self.checks
        for base, value in self.ratios.items():
            d[f"ratio_to_{base}"] = value
        return d


def ratios(cells: dict[str, Cell]) -> None:
    """Fill ``Cell.ratios`` of the dbnexus cells: their median over raw's and Core's."""
    for key in DBNEXUS_COLUMNS:
        cell = cells.get(key)
        if cell is None or cell.stats is None:
            continue
        for base in RATIO_BASES:
            other = cells.get(base)
            if other is not None and other.stats is not None and other.stats.median_us > 0:
                cell.ratios[base] = cell.stats.median_us / other.stats.median_us


def fmt_us(v: float) -> str:
    if v < 10:
        return f"{v:.2f}"
    if v < 100:
        return f"{v:.1f}"
    return f"{v:,.0f}"


def fmt_rate(ops: float) -> str:
    if ops >= 1e6:
        return f"{ops / 1e6:.2f}M/s"
    if ops >= 1e4:
        return f"{ops / 1e3:.1f}k/s"
    if ops >= 1e3:
        return f"{ops / 1e3:.2f}k/s"
    if ops >= 10:
        return f"{ops:.0f}/s"
    return f"{ops:.2f}/s"


def fmt_ratio(v: float) -> str:
    """``2.31x``; a tiny ratio as ``1/N x`` so that it does not print as ``0.00x``."""
    if v >= 0.095 or v <= 0:
        return f"{v:.2f}x"
    return f"1/{1 / v:,.0f}x"


class Footnotes:
    """Numbers each distinct reason or note once, in order of first use."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def mark(self, text: str) -> str:
        if text not in self.texts:
            self.texts.append(text)
        return f"[{self.texts.index(text) + 1}]"

    def lines(self) -> list[str]:
        return [f"  [{i}] {text}" for i, text in enumerate(self.texts, 1)]


def cell_lines(cell: Cell | None, notes: Footnotes) -> list[str]:
    if cell is None:
        return ["-"]
    if cell.stats is None:
        return [f"n/a {notes.mark(cell.na or 'no figure')}"]
    s = cell.stats
    lines = [f"{fmt_us(s.median_us)} µs {fmt_rate(s.ops_per_s)}"]
    spread = f"{fmt_us(s.min_us)}-{fmt_us(s.max_us)}"
    if cell.note:
        spread += f" {notes.mark(cell.note)}"
    failed = [c for c in cell.checks if c.startswith("FAILED")]
    if failed:
        spread += f" {notes.mark('; '.join(failed))}"
    lines.append(spread)
    if cell.ratios:
        lines.append(" ".join(f"{fmt_ratio(v)} {k}" for k, v in cell.ratios.items()))
    return lines


def row_reason(cells: dict[str, Cell]) -> str:
    """The reason to print for a row without figures: dbnexus's, else the first one."""
    for key in (*DBNEXUS_COLUMNS, *cells):
        cell = cells.get(key)
        if cell is not None and cell.na:
            return cell.na
    return "no figure"


@dataclass
class Table:
    """Rows of cells under column headers; ``render`` lays it out as text."""

    title: str
    columns: Sequence[tuple[str, str]]  # (key, label)
    rows: list[tuple[str, dict[str, Cell]]] = field(default_factory=list)
    extra_notes: list[str] = field(default_factory=list)


def render(table: Table) -> str:
    notes = Footnotes()
    body: list[tuple[str, list[list[str]]]] = []
    spans: dict[str, str] = {}  # rows with no figure at all print one reason across
    for title, cells in table.rows:
        if all(c.stats is None for c in cells.values()):
            spans[title] = f"n/a: {row_reason(cells)}"
            continue
        body.append((title, [cell_lines(cells.get(key), notes) for key, _ in table.columns]))
    label_w = max([len("case")] + [len(t) for t, _ in body] + [len(t) for t in spans]) + 2
    widths = [
        max([len(label)] + [len(line) for _, cols in body for line in cols[i]]) + 2
        for i, (_, label) in enumerate(table.columns)
    ]
    out = [table.title, ""]
    header = "case".ljust(label_w) + "".join(
        label.rjust(w) for (_, label), w in zip(table.columns, widths, strict=True)
    )
    out += [header, "-" * len(header)]
    for title, _ in table.rows:
        if title in spans:
            out += [title.ljust(label_w) + spans[title], ""]
            continue
        cols = next(c for t, c in body if t == title)
        height = max(len(c) for c in cols)
        for i in range(height):
            line = (title if i == 0 else "").ljust(label_w)
            line += "".join(
                (c[i] if i < len(c) else "").rjust(w) for c, w in zip(cols, widths, strict=True)
            )
            out.append(line.rstrip())
        out.append("")
    footnotes = notes.lines()
    if footnotes or table.extra_notes:
        out.append("notes:")
        out += footnotes + [f"  {n}" for n in table.extra_notes]
    return "\n".join(out)
