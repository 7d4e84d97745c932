"""The conformance suite against the built-in adapters, through `tether conformance`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tether.conformance_tests.scenarios import SCENARIOS, applicable

# What each built-in adapter does not declare, and the reason the report must show.
EXPECTED_SKIPS = {
    "openai_agents": {},
    "pydantic_ai": {
        "handoff": "pydantic_ai does not declare capability handoffs",
        "agent_as_tool": "pydantic_ai does not declare capability agent_as_tool",
    },
}


def run_conformance(
    tmp_path: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tether.cli", "conformance", *args, "--json", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    rows = json.loads(out.read_text()) if out.exists() else []
    return proc, rows


@pytest.mark.timeout(600)
@pytest.mark.parametrize("adapter", ["openai_agents", "pydantic_ai"])
def test_builtin_adapter_passes_every_invariant_it_declares(tmp_path: Path, adapter: str) -> None:
    report = tmp_path / "report.md"
    proc, rows = run_conformance(tmp_path, adapter, "--report", str(report))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    by_case = {(r["scenario"], r["invariant"]): r for r in rows}
    # Every applicable item ran: none was lost between collection and the report.
    assert set(by_case) == {(s.name, i.id) for s in SCENARIOS for i in applicable(s)}
    failed = [r for r in rows if r["outcome"] == "failed"]
    assert not failed, failed
    skipped = {
        (r["scenario"], r["invariant"]): r["reason"] for r in rows if r["outcome"] == "skipped"
    }
    for (scenario, invariant), reason in skipped.items():
        if invariant == "crash_sigkill":
            assert "not in the SIGKILL sample" in reason
            continue
        assert scenario in EXPECTED_SKIPS[adapter], (scenario, invariant, reason)
        assert EXPECTED_SKIPS[adapter][scenario] in reason
    for scenario in EXPECTED_SKIPS[adapter]:
        assert any(s == scenario for s, _ in skipped), scenario
    # Both adapters declare approvals: the wait survived a worker restart.
    assert by_case[("approval", "approval_survives_restart")]["outcome"] == "passed"
    # The sampled SIGKILL run and the every-boundary sweep really ran (not skipped).
    assert by_case[("sequential_tools", "crash_sigkill")]["outcome"] == "passed"
    assert by_case[("long_run", "inputs_bounded")]["outcome"] == "passed"
    text = report.read_text()
    assert f"## {adapter}" in text
    assert "| sequential_tools | pass | pass | pass | pass | pass | - | - | - |" in text
    print(f"\n{adapter}: {len(rows)} items in {sum(r['duration'] for r in rows):.0f}s")
