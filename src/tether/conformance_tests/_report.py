"""The report: scenarios x invariants for each adapter, pass / FAIL / skip with reasons."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from tether.conformance_tests.scenarios import INVARIANTS, SCENARIOS, applicable

_MARK = {"passed": "pass", "failed": "**FAIL**", "skipped": "skip", "xfailed": "known"}


def _header() -> list[str]:
    return [f"{i.number} {i.short}" for i in INVARIANTS]


def render(rows: list[dict[str, Any]]) -> str:
    """Markdown: one table per adapter, then the skip reasons and the failures in full."""
    by_adapter: dict[str, dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        by_adapter[row["adapter"]][(row["scenario"], row["invariant"])] = row
    out: list[str] = ["# Tether conformance report", ""]
    out.append("Invariants (the table's columns):")
    out.append("")
    out.extend(f"- **{i.number} {i.short}** (`{i.id}`): {i.title}" for i in INVARIANTS)
    out.append("")
    for adapter, cells in sorted(by_adapter.items()):
        counts: dict[str, int] = defaultdict(int)
        for row in cells.values():
            counts[row["outcome"]] += 1
        out.append(f"## {adapter}")
        out.append("")
        out.append(
            f"{counts['passed']} passed, {counts['failed']} failed, "
            f"{counts['skipped']} skipped, {counts['xfailed']} known defects "
            "('-': does not apply; blank: not selected)"
        )
        out.append("")
        out.append("| scenario | " + " | ".join(_header()) + " |")
        out.append("|---|" + "---|" * len(INVARIANTS))
        reasons: dict[str, list[str]] = defaultdict(list)
        failures: list[str] = []
        for scenario in SCENARIOS:
            if not any(key[0] == scenario.name for key in cells):
                continue
            marks = []
            applies = {i.id for i in applicable(scenario)}
            for inv in INVARIANTS:
                cell = cells.get((scenario.name, inv.id))
                if cell is None:
                    marks.append("-" if inv.id not in applies else "")
                    continue
                marks.append(_MARK.get(cell["outcome"], cell["outcome"]))
                if cell["outcome"] in ("skipped", "xfailed"):
                    reasons[cell.get("reason", "")].append(f"{scenario.name}/{inv.id}")
                elif cell["outcome"] == "failed":
                    failures.append(cell.get("reason", ""))
            out.append(f"| {scenario.name} | " + " | ".join(marks) + " |")
        out.append("")
        if reasons:
            out.append("Skipped and known defects:")
            out.append("")
            for reason, where in sorted(reasons.items()):
                out.append(f"- {reason}: {', '.join(where)}")
            out.append("")
        if failures:
            out.append("Failures:")
            out.append("")
            for text in failures:
                out.append("```")
                out.append(text.strip())
                out.append("```")
            out.append("")
    return "\n".join(out)


def failed(rows: list[dict[str, Any]]) -> int:
    return sum(1 for r in rows if r["outcome"] == "failed")
