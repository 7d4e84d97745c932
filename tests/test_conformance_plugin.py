"""The conformance plugin stays out of the way, and the scenarios cover what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from tether import Budget, StreamRetracted
from tether.conformance_tests._harness import Observed
from tether.conformance_tests._invariants import (
    Checker,
    ConformanceFailure,
    Runs,
    Skip,
    stream_equals_plain,
)
from tether.conformance_tests.kit import ConformanceKit, KitEnv, shown_events
from tether.conformance_tests.scenarios import (
    BY_NAME,
    INVARIANT_BY_ID,
    MCP_TOOL,
    SCENARIOS,
    Behaviour,
    Scenario,
    applicable,
    retryable_status,
)
from tether.core.contract import Capability
from tether.core.ledger import Ledger, normalize_usage
from tether.core.replay import first_difference

ISSUE_SCENARIOS = {
    "final_answer",
    "one_tool",
    "sequential_tools",
    "parallel_tools",
    "flaky_tool",
    "fatal_tool",
    "structured_output",
    "handoff",
    "agent_as_tool",
    "approval",
    "model_429",
    "model_400",
    "model_401",
    "model_404",
    "token_budget",
    "long_run",
    "large_tool_result",
    "sync_tool",
    "turn_limit",
}


def pytest_in(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_plugin_adds_nothing_without_tether_adapter(tmp_path: Path) -> None:
    (tmp_path / "test_mine.py").write_text("def test_mine():\n    pass\n")
    proc = pytest_in(tmp_path, "--collect-only", "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test_mine.py::test_mine" in proc.stdout
    assert "test_conformance" not in proc.stdout


def test_the_plugin_module_imports_nothing_heavy() -> None:
    # Beyond the `tether` package itself: no framework, no suite machinery.
    code = (
        "import sys, tether.conformance_tests.plugin\n"
        "names = ('agents', 'pydantic_ai', 'openai', 'tether.conformance_tests._harness',\n"
        "         'tether.conformance_tests.suite', 'tether.testing')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_an_adapter_without_a_kit_is_a_clear_error(tmp_path: Path) -> None:
    proc = pytest_in(tmp_path, "-p", "tether.conformance_tests", "--tether-adapter", "nope")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "no conformance kit for adapter 'nope'" in out
    assert "openai_agents" in out and "pydantic_ai" in out  # names what is installed


def test_items_are_named_adapter_scenario_invariant(tmp_path: Path) -> None:
    proc = pytest_in(
        tmp_path,
        "-p",
        "tether.conformance_tests",
        "--tether-adapter",
        "openai_agents",
        "--collect-only",
        "-q",
        "-k",
        "parallel_tools",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test_conformance[openai_agents-parallel_tools-crash_every_boundary]" in proc.stdout
    assert "test_conformance[openai_agents-parallel_tools-crash_sigkill]" in proc.stdout
    assert "one_tool" not in proc.stdout


def test_the_scenarios_cover_the_issue() -> None:
    assert set(BY_NAME) >= ISSUE_SCENARIOS
    long_run = BY_NAME["long_run"]
    steps = sum(1 + len(t.calls) for t in long_run.lanes["main"])
    assert steps >= 200
    assert max(t.size for t in BY_NAME["large_tool_result"].tools) >= 1_000_000
    assert BY_NAME["flaky_tool"].tools[0].behaviour is Behaviour.FLAKY
    assert BY_NAME["fatal_tool"].tools[0].behaviour is Behaviour.FATAL
    assert BY_NAME["sync_tool"].tools[0].sync
    assert BY_NAME["approval"].tools[0].approval
    # Model answers no retry gets past: one fault, which the plain run gets as well.
    for status in (400, 401, 404):
        [turn] = BY_NAME[f"model_{status}"].lanes["main"]
        assert [f.status for f in turn.faults] == [status]
        assert not retryable_status(status)
        assert BY_NAME[f"model_{status}"].expect.fails
    assert retryable_status(429) and retryable_status(503)
    assert BY_NAME["token_budget"].budget_tokens == 5
    ids = {i.id for i in applicable(BY_NAME["token_budget"])}
    assert "usage_ledger" in ids and "durable_equals_plain" not in ids
    # Every scenario is checked by the result and crash invariants, or by the approval one.
    for scenario in SCENARIOS:
        ids = {i.id for i in applicable(scenario)}
        assert ids, scenario.name
        assert (
            "durable_equals_plain" in ids
            or "approval_survives_restart" in ids
            or scenario.budget_tokens
            or ids == {"stream_equals_plain"}
        )


def test_the_streaming_and_mcp_scenarios_need_their_capabilities() -> None:
    streamed, mcp = BY_NAME["streamed"], BY_NAME["mcp_tool"]
    assert streamed.needs == {Capability.STREAMING} and streamed.stream
    assert {i.id for i in applicable(streamed)} == {"stream_equals_plain"}
    assert mcp.needs == {Capability.MCP} and mcp.mcp
    assert [c.name for t in mcp.lanes["main"] for c in t.calls] == [MCP_TOOL]
    assert {"durable_equals_plain", "crash_every_boundary", "replay_deterministic"} <= {
        i.id for i in applicable(mcp)
    }


def test_a_retraction_drops_what_was_shown_of_the_retracted_response() -> None:
    events = ["start", "a", "b", "start", "c", StreamRetracted(step=3, attempt=1, text="c")]
    events += ["start", "c2", "end"]
    shown, retracted = shown_events(events, shape=str.upper, opens_response=lambda e: e == "start")
    assert shown == ["START", "A", "B", "START", "C2", "END"]
    assert retracted == 1


class _Kit(ConformanceKit):
    adapter_name = "fake"
    pinned_steps: dict[str, Any] = {}

    def build(self, scenario: Scenario, env: KitEnv) -> object:
        return object()

    async def run_plain(self, agent: object, scenario: Scenario, env: KitEnv) -> object:
        return None

    def output(self, result: object) -> Any:
        return result


def _stream_runs(durable_events: list[Any], sweep_events: list[Any]) -> Runs:
    scenario = BY_NAME["streamed"]
    out = scenario.expect.output
    plain = ["tool call", "tool result", "text: CA", "text: is quiet"]
    cache = {
        "stream-plain": Observed("plain streamed run", output=out, stream=plain),
        "stream-durable": Observed("durable streamed run", output=out, stream=durable_events),
        "stream-sweep": Observed("swept streamed run", output=out, stream=sweep_events),
    }
    return Runs(harness=cast(Any, None), kit=_Kit(), scenario=scenario, _cache=cast(Any, cache))


def test_the_stream_invariant_fails_naming_the_first_event_that_differs() -> None:
    invariant = INVARIANT_BY_ID["stream_equals_plain"]
    same = ["tool call", "tool result", "text: CA", "text: is quiet"]
    stream_equals_plain(Checker(_stream_runs(same, list(same)), invariant))  # passes
    twice = ["tool call", "tool result", "tool result", "text: CA", "text: is quiet"]
    with pytest.raises(ConformanceFailure) as failure:
        stream_equals_plain(Checker(_stream_runs(same, twice), invariant))
    text = str(failure.value)
    assert "stream event #2 of the swept streamed run" in text
    assert "invariant 13 stream_equals_plain" in text and '"text: CA"' in text
    with pytest.raises(ConformanceFailure, match="4 events, as the plain run"):
        stream_equals_plain(Checker(_stream_runs(same[:3], same), invariant))


def test_a_kit_that_cannot_stream_skips_with_the_reason() -> None:
    runs = Runs(harness=cast(Any, _NoStreamHarness()), kit=_Kit(), scenario=BY_NAME["streamed"])
    with pytest.raises(Skip, match=r"_Kit does not implement run_streamed\(\)"):
        stream_equals_plain(Checker(runs, INVARIANT_BY_ID["stream_equals_plain"]))


class _NoStreamHarness:
    def streamed(self, kit: ConformanceKit, scenario: Scenario, *, mode: str) -> Observed:
        import asyncio

        asyncio.run(kit.run_streamed(object(), scenario, cast(Any, None)))
        raise AssertionError("unreachable")


def test_tether_conformance_names_the_installed_kits_for_an_unknown_adapter(
    tmp_path: Path,
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tether.cli", "conformance", "nope"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "no conformance kit for adapter 'nope'" in proc.stderr
    assert "kits installed: openai_agents, pydantic_ai" in proc.stderr


def test_total_tokens_is_derived_when_an_adapter_gives_input_and_output_only() -> None:
    derived = normalize_usage({"requests": 1, "input_tokens": 30, "output_tokens": 15})
    assert derived == {"requests": 1, "input_tokens": 30, "output_tokens": 15, "total_tokens": 45}
    given = normalize_usage({"input_tokens": 30, "output_tokens": 15, "total_tokens": 50})
    assert given["total_tokens"] == 50  # what the provider says wins
    assert "total_tokens" not in normalize_usage({"requests": 1})
    # The issue's case: Budget(max_tokens=5) must stop a run reporting 45 tokens this way.
    ledger = Ledger()
    ledger.step_done(1, "model: main", 1, "t0", "t1", False)
    ledger.add({"requests": 1, "input_tokens": 30, "output_tokens": 15}, "main", None, None)
    assert ledger.report()["total_tokens"] == 45
    assert ledger.over(Budget(max_tokens=5)) == "45 tokens used, budget max_tokens=5"


def test_first_difference_names_the_path_and_where_two_texts_part() -> None:
    prompt = "You are a conformance scenario agent, answering briefly. It is "
    recorded = {"step": 1, "transcript": {"delta": [{"content": prompt + "06:16 UTC."}]}}
    replayed = {"step": 1, "transcript": {"delta": [{"content": prompt + "07:17 UTC."}]}}
    path, was, now = first_difference(recorded, replayed) or ("", "", "")
    assert path == f"$.transcript.delta[0].content (from character {len(prompt) + 1})"
    assert was.endswith("It is 06:16 UTC.'") and now.endswith("It is 07:17 UTC.'")
    assert first_difference({"a": [1, 2]}, {"a": [1, 2, 3]}) == ("$.a (length)", "2", "3")
    assert first_difference({"a": {"b": 1}}, {"a": {"b": 1}}) is None
    assert first_difference({"a": 1}, {"b": 1}) == ("$.a", "1", "'<absent>'")
