"""The usage ledger: per model step tokens and cost, retries counted apart, never counted twice
on replay, and a budget that stops a run cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price
from temporalio.worker import Worker

import tether
from hitl_helpers import ADAPTERS, all_events, build_agent, output_of, wait_pending, wrap
from tether.core.runtime import Runtime
from tether.testing import Fault, ScriptedModelServer, ToolCall, Turn, Usage
from workers import DELAY, crash_and_resume


def lookup(state: str) -> str:
    """Weather alerts for a state."""
    return f"{state}: quiet"


def gpt4o_cost(input_tokens: int, output_tokens: int) -> float:
    usage = PriceUsage(input_tokens=input_tokens, output_tokens=output_tokens)
    return float(calc_price(usage, model_ref="gpt-4o", provider_id="openai").total_price)


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_the_ledger_equals_the_providers_usage_and_counts_failed_attempts_apart(
    runtime: Runtime, task_queue: str, worker: Worker, adapter: str
) -> None:
    script = [
        Turn.tool_calls(ToolCall("lookup", {"state": "CA"}), usage=Usage(1000, 50)),
        Turn.tool_calls(
            ToolCall("lookup", {"state": "NY"}),
            usage=Usage(1200, 40),
            faults=[Fault.rate_limit(0.1)],
        ),
        Turn.text("all quiet", usage=Usage(1500, 20)),
    ]
    with ScriptedModelServer(script) as server:
        agent = build_agent(adapter, server, f"ledger-{adapter}", {"lookup": lookup})
        handle = await wrap(agent, runtime, task_queue).start("alerts?")
        assert output_of(await handle.result()) == "all quiet"
        billed = server.total_usage()
        assert server.count() == 4
    usage = await handle.usage()
    assert (usage.input_tokens, usage.output_tokens) == (billed.input_tokens, billed.output_tokens)
    assert (usage.input_tokens, usage.output_tokens, usage.requests) == (3700, 110, 3)
    assert usage.failed_attempts == 1
    assert [(s.input_tokens, s.output_tokens, s.failed_attempts) for s in usage.steps] == [
        (1000, 50, 0),
        (1200, 40, 1),
        (1500, 20, 0),
    ]
    assert {s.model for s in usage.steps} == {"gpt-4o"}
    expected = [gpt4o_cost(1000, 50), gpt4o_cost(1200, 40), gpt4o_cost(1500, 20)]
    assert [s.cost for s in usage.steps] == pytest.approx(expected)
    assert usage.cost == pytest.approx(sum(expected))
    assert usage.unpriced_steps == 0


async def test_an_unknown_models_cost_is_none_not_a_guess(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    with ScriptedModelServer([Turn.text("hi", usage=Usage(10, 2))]) as server:
        agent = build_agent("pydantic_ai", server, "unpriced", {}, lane="gpt-scripted-lane")
        handle = await wrap(agent, runtime, task_queue).start("hi")
        await handle.result()
    usage = await handle.usage()
    assert (usage.total_tokens, usage.cost, usage.unpriced_steps) == (12, None, 1)


async def test_usage_of_a_waiting_run_is_readable(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    script = [
        Turn.tool_calls(ToolCall("lookup", {"state": "CA"}), usage=Usage(300, 30)),
        Turn.text("done", usage=Usage(400, 4)),
    ]
    with ScriptedModelServer(script) as server:
        agent = build_agent(
            "openai_agents", server, "waiting-usage", {"lookup": lookup}, approval=("lookup",)
        )
        handle = await wrap(agent, runtime, task_queue).start("alerts?")
        [request] = await wait_pending(handle)
        now = await handle.usage()
        assert (now.requests, now.input_tokens, now.output_tokens) == (1, 300, 30)
        await handle.approve(request.id)
        await handle.result()
    assert (await handle.usage()).total_tokens == 734


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_a_budget_stops_the_run_cleanly(
    runtime: Runtime, task_queue: str, worker: Worker, adapter: str
) -> None:
    script = [
        Turn.tool_calls(ToolCall("lookup", {"state": s}), usage=Usage(400, 10))
        for s in ("CA", "NY", "TX", "WA")
    ] + [Turn.text("done", usage=Usage(400, 10))]
    with ScriptedModelServer(script) as server:
        agent = build_agent(adapter, server, f"budget-{adapter}", {"lookup": lookup})
        handle = await wrap(agent, runtime, task_queue).start(
            "alerts?", budget=tether.Budget(max_tokens=1000)
        )
        with pytest.raises(tether.BudgetExceededError, match=r"1230 tokens used.*max_tokens=1000"):
            await handle.result()
        assert server.count() == 3  # stopped right after the step that crossed the line
        events = await all_events(handle)
    assert events[-1].type == "run.failed"
    assert events[-1].data["type"] == "BudgetExceeded"
    usage = await handle.usage()
    assert usage.total_tokens == 1230


def test_a_budget_needs_a_limit() -> None:
    with pytest.raises(ValueError, match="needs max_tokens"):
        tether.Budget()


async def test_the_ledger_survives_a_worker_crash_without_counting_twice(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path
) -> None:
    from apps.openai_apps import weather

    turns = [
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": s}), usage=u, delay=DELAY)
        for s, u in (("CA", Usage(500, 11)), ("NY", Usage(700, 13)), ("TX", Usage(900, 17)))
    ] + [Turn.text("CA has a heat advisory.", usage=Usage(1100, 19), delay=DELAY)]
    with ScriptedModelServer(turns) as server:
        result, run_id, _, _ = await crash_and_resume(
            runtime,
            worker_env,
            tmp_path,
            server,
            "apps.openai_apps:weather",
            weather,
            "alerts?",
            3,
        )
        served = {turn: server.served("gpt-weather", turn) for turn in range(4)}
        billed = server.total_usage()
    assert result.final_output == "CA has a heat advisory."
    usage = await _usage(runtime, run_id)
    # Each model step counted once, whatever the provider saw; a call made twice because the
    # kill hit it in flight is billed twice at the provider but is one step of the run.
    assert (usage.input_tokens, usage.output_tokens, usage.requests) == (3200, 60, 4)
    again = [t for t, n in served.items() if n > 1]
    extra_in = sum((served[t] - 1) * turns[t].usage.input_tokens for t in again)  # type: ignore[union-attr]
    assert billed.input_tokens - usage.input_tokens == extra_in


async def _usage(runtime: Runtime, run_id: str) -> tether.UsageReport:
    handle = await tether.get_run(run_id, runtime)
    return await handle.usage()
