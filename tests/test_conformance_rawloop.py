"""The out-of-tree example adapter passes the suite from its own directory, and broken
variants of it are each reported as a failure of the invariant they break."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether.conformance_tests.scenarios import BY_NAME, SCENARIOS, applicable

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "rawloop"
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def rawloop_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example installed as a distribution (entry points included) into a temp dir."""
    site = tmp_path_factory.mktemp("rawloop-site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    yield site


def suite(cwd: Path, site: Path, *args: str, report: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(TESTS)])
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            *args,
            "--tether-report-json",
            str(report),
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )


@pytest.mark.timeout(600)
def test_example_adapter_passes_the_suite_from_its_own_directory(
    rawloop_site: Path, tmp_path: Path
) -> None:
    report = tmp_path / "rows.json"
    # Plain `pytest` in the example's directory: its pyproject names the plugin and adapter.
    proc = suite(EXAMPLE, rawloop_site, report=report)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    rows = json.loads(report.read_text())
    assert {r["adapter"] for r in rows} == {"rawloop"}
    assert len(rows) == sum(len(applicable(s)) for s in SCENARIOS)
    assert not [r for r in rows if r["outcome"] == "failed"]
    passed = {(r["scenario"], r["invariant"]) for r in rows if r["outcome"] == "passed"}
    for scenario in (
        "final_answer",
        "one_tool",
        "sequential_tools",
        "parallel_tools",
        "flaky_tool",
        "fatal_tool",
        "structured_output",
        "model_429",
        "long_run",
        "large_tool_result",
        "sync_tool",
        "turn_limit",
    ):
        assert (scenario, "durable_equals_plain") in passed, scenario
    assert ("sequential_tools", "crash_sigkill") in passed
    # The second edition's checks ran and held: model 4xx fail at once, the ledger matches
    # the model server (the example reports total_tokens), the token budget trips.
    for status in (400, 401, 404):
        assert (f"model_{status}", "errors_classified") in passed
    assert ("token_budget", "usage_ledger") in passed
    for invariant in ("replay_inputs_equal", "once_per_run", "usage_ledger", "step_events_match"):
        assert ("parallel_tools", invariant) in passed, invariant
    skipped = {r["scenario"]: r["reason"] for r in rows if r["outcome"] == "skipped"}
    assert "does not declare capability handoffs" in skipped["handoff"]
    assert "does not declare capability approvals" in skipped["approval"]


BROKEN = {
    # adapter: (scenario, the invariant it breaks, text the failure must show)
    "broken_outside": ("one_tool", "crash_every_boundary", "ran again on replay"),
    "broken_random": ("final_answer", "step_names_pinned", "broken_random.model."),
    "broken_retry": ("fatal_tool", "errors_classified", "executed 3 times"),
    "broken_batch": ("sequential_tools", "crash_every_boundary", "2 model calls in one step"),
    "broken_quadratic": ("long_run", "inputs_bounded", "bounded: at most 2 x step #6"),
    "broken_cache": ("one_tool", "replay_deterministic", "the same commands as recorded"),
    "broken_events": ("flaky_tool", "events_once_in_order", "started once"),
}
"""Every invariant of the scenario runs for these (defects must not smear)."""

BROKEN_NARROW = {
    # 1. model-side errors: a 400 is retried (and answered on the retry)
    "broken_model_retry": ("model_400", "errors_classified", "2 requests"),
    # 2. determinism below the command level (Temporal's Replayer passes all three)
    "broken_clock": ("final_answer", "replay_inputs_equal", "$.transcript.delta[0].content"),
    "broken_uuid": ("one_tool", "replay_inputs_equal", "$.payload.request_id"),
    "broken_order": ("parallel_tools", "replay_inputs_equal", "$.payload.args"),
    # 3. exactly once per run: another run's reply reused
    "broken_shared_cache": ("one_tool", "once_per_run", "answered 0 time(s)"),
    # 4. usage reported twice
    "broken_usage": ("one_tool", "usage_ledger", "requests"),
    # 5. tool events published beside the run's own
    "broken_tool_events": ("one_tool", "step_events_match", "step=None"),
}
"""Only the broken invariant runs for these (and Temporal's own replay check, which they
pass: the defect is below what it sees)."""

CONTROLS = {
    # The same loops with the run's replay-safe clock and ids pass.
    "control_clock": "final_answer",
    "control_uuid": "one_tool",
}

PLUGINS = {
    "broken_outside": "outside",
    "broken_random": "random_name",
    "broken_retry": "retry",
    "broken_batch": "batch",
    "broken_quadratic": "quadratic",
    "broken_known": "known",
    "broken_cache": "cache",
    "broken_events": "events",
    "broken_model_retry": "model_retry",
    "broken_clock": "clock",
    "broken_uuid": "uuid4",
    "broken_order": "order",
    "broken_shared_cache": "shared_cache",
    "broken_usage": "usage",
    "broken_tool_events": "tool_events",
    "control_clock": "clock_ok",
    "control_uuid": "uuid_ok",
}


@pytest.mark.timeout(900)
def test_each_broken_adapter_fails_the_invariant_it_breaks(
    rawloop_site: Path, tmp_path: Path
) -> None:
    report = tmp_path / "rows.json"
    args = ["-p", "tether.conformance_tests", "--tether-sigkill", "none"]
    args += ["--tether-plugins", ",".join(f"conformance_broken:{p}" for p in PLUGINS.values())]
    for adapter in PLUGINS:
        args += ["--tether-adapter", adapter]
    selected = [f"{a}-{s}-" for a, (s, _, _) in BROKEN.items()]
    selected += [f"{a}-{s}-{i}" for a, (s, i, _) in BROKEN_NARROW.items()]
    selected += [f"{a}-{s}-replay_deterministic" for a, (s, _, _) in BROKEN_NARROW.items()]
    selected += [f"{a}-{s}-replay" for a, s in CONTROLS.items()]
    selected += ["control_uuid-one_tool-", "broken_known-fatal_tool-errors_classified"]
    args += ["-k", " or ".join(selected)]
    proc = suite(tmp_path, rawloop_site, *args, report=report)
    rows = json.loads(report.read_text())
    assert proc.returncode == 1, proc.stdout[-3000:]
    outcome = {(r["adapter"], r["scenario"], r["invariant"]): r for r in rows}
    for adapter, (scenario, invariant, shows) in {**BROKEN, **BROKEN_NARROW}.items():
        row = outcome[(adapter, scenario, invariant)]
        assert row["outcome"] == "failed", row
        assert f"[{adapter} / {scenario} / invariant" in row["reason"]
        assert invariant in row["reason"] and shows in row["reason"], row["reason"]
        for label in (
            "step:",
            "expected:",
            "seen:",
            "hint:"[: 5 if adapter in BROKEN_NARROW else 0],
        ):
            assert label in row["reason"]
    # The new defects are below what Temporal's replay compares: it passes them all.
    for adapter, (scenario, _, _) in BROKEN_NARROW.items():
        assert outcome[(adapter, scenario, "replay_deterministic")]["outcome"] == "passed"
    # The controls pass: session.now() and session.uuid() are replay-safe.
    for adapter, scenario in CONTROLS.items():
        for invariant in ("replay_deterministic", "replay_inputs_equal"):
            assert outcome[(adapter, scenario, invariant)]["outcome"] == "passed", adapter
    uuid_rows = [r for r in rows if r["adapter"] == "control_uuid"]
    assert len(uuid_rows) == len(applicable(BY_NAME["one_tool"]))
    assert all(r["outcome"] == "passed" for r in uuid_rows), uuid_rows
    # A defect the kit declares as known is a strict xfail, shown with its reason.
    [known] = [r for r in rows if r["adapter"] == "broken_known"]
    assert known["outcome"] == "xfailed" and "retries NonRetryableError" in known["reason"]
    # Defects are not smeared over everything: the retrying adapter still gets plain == durable.
    ok = {key for key, r in outcome.items() if r["outcome"] == "passed"}
    assert ("broken_retry", "fatal_tool", "durable_equals_plain") in ok
    assert ("broken_batch", "sequential_tools", "durable_equals_plain") in ok
