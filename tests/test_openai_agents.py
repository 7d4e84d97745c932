"""The OpenAI Agents SDK adapter, end to end: real dev server, real OpenAI client and model
classes against the scripted model server, an in-process worker."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from agents import (
    Agent,
    GuardrailFunctionOutput,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    RunContextWrapper,
    Runner,
    function_tool,
    input_guardrail,
)
from openai import AsyncOpenAI
from pydantic import BaseModel
from temporalio.client import WorkflowExecutionStatus
from temporalio.worker import Worker

import tether
from tether.core.runtime import Runtime
from tether.testing import ScriptedModelServer, ToolCall, Turn
from tether.testing._history import history_stats


def client_for(server: ScriptedModelServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)


def responses_model(server: ScriptedModelServer, lane: str = "gpt-test") -> OpenAIResponsesModel:
    return OpenAIResponsesModel(model=lane, openai_client=client_for(server))


def chat_model(server: ScriptedModelServer, lane: str = "gpt-test") -> OpenAIChatCompletionsModel:
    return OpenAIChatCompletionsModel(model=lane, openai_client=client_for(server))


def wrap(agent: Agent[Any], runtime: Runtime, task_queue: str) -> tether.DurableAgent:
    return tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)


class Answer(BaseModel):
    city: str
    alerts: int


@dataclass
class Ctx:
    user: str


def alerts_script() -> list[Turn]:
    return [
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"})),
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "NY"})),
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "TX"})),
        Turn.text("CA has a heat advisory; NY and TX are quiet."),
    ]


@pytest.mark.parametrize("api", ["responses", "chat"])
async def test_three_tool_run_matches_plain_run(
    runtime: Runtime, task_queue: str, worker: Worker, api: str
) -> None:
    calls: list[str] = []

    @function_tool
    def get_weather_alerts(state: str) -> str:
        """Alerts for a state (a sync tool: the native integration breaks these)."""
        calls.append(state)
        return f"alerts for {state}: none"

    with ScriptedModelServer(alerts_script()) as server:
        model = responses_model(server) if api == "responses" else chat_model(server)
        agent = Agent(name=f"weather-{api}", tools=[get_weather_alerts], model=model)
        plain = await Runner.run(agent, "Any alerts?")
        assert calls == ["CA", "NY", "TX"]
        server.reset()
        calls.clear()

        result = await wrap(agent, runtime, task_queue).run("Any alerts?")

        assert result.final_output == plain.final_output
        assert calls == ["CA", "NY", "TX"]
        assert server.steps_seen() == {("gpt-test", t): 1 for t in range(4)}
        # The sync tool's real output reached the model, not the SDK's generic error text.
        last = server.requests[-1].body_text
        assert "alerts for TX: none" in last
        assert "An error occurred" not in last


async def test_structured_output_and_run_context(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    seen: list[str] = []

    @function_tool
    async def whoami(ctx: RunContextWrapper[Ctx]) -> str:
        """The current user."""
        seen.append(ctx.context.user)
        return ctx.context.user

    script = [
        Turn.tool_calls(ToolCall("whoami", {})),
        Turn.json({"city": "Paris", "alerts": 2}),
    ]
    with ScriptedModelServer(script) as server:
        agent = Agent[Ctx](
            name="structured", tools=[whoami], output_type=Answer, model=responses_model(server)
        )
        result = await wrap(agent, runtime, task_queue).run("where?", context=Ctx(user="ada"))
    assert result.final_output == Answer(city="Paris", alerts=2)
    assert seen == ["ada"]


async def test_failing_tool_is_retried_then_succeeds(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    attempts: list[int] = []

    @function_tool
    def flaky(x: int) -> str:
        """Fails twice, then works."""
        attempts.append(x)
        if len(attempts) < 3:
            raise ConnectionError("upstream down")
        return "ok"

    script = [Turn.tool_calls(ToolCall("flaky", {"x": 1})), Turn.text("done")]
    with ScriptedModelServer(script) as server:
        agent = Agent(name="flaky-agent", tools=[flaky], model=responses_model(server))
        result = await wrap(agent, runtime, task_queue).run("go")
        assert result.final_output == "done"
        assert attempts == [1, 1, 1]
        assert '"ok"' in server.requests[-1].body_text or "ok" in server.requests[-1].body_text


async def test_exhausted_retries_hand_the_error_to_the_model_and_record_it(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    attempts: list[int] = []

    @function_tool
    def broken(x: int) -> str:
        """Always fails."""
        attempts.append(x)
        raise ValueError("database is on fire")

    script = [Turn.tool_calls(ToolCall("broken", {"x": 1})), Turn.text("sorry")]
    with ScriptedModelServer(script) as server:
        agent = Agent(name="broken-agent", tools=[broken], model=responses_model(server))
        durable = wrap(agent, runtime, task_queue)
        handle = await durable.start("go")
        result = await handle.result()
        assert result.final_output == "sorry"
        assert attempts == [1, 1, 1]  # the default tool policy: 3 attempts
        # What the SDK does outside Temporal: its default failure text, without the details.
        followup = server.requests[-1].body_text
        assert "An error occurred while running the tool" in followup
        desc = await handle.describe()
        assert any(
            "broken" in f["step"] and "database is on fire" in f["message"] for f in desc.failures
        ), desc.failures


async def test_non_retryable_tool_error_goes_to_the_model_at_once(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    attempts: list[int] = []

    @function_tool
    def refuses(x: int) -> str:
        """Refuses for good."""
        attempts.append(x)
        raise tether.NonRetryableError("account is closed")

    script = [Turn.tool_calls(ToolCall("refuses", {"x": 7})), Turn.text("cannot")]
    with ScriptedModelServer(script) as server:
        agent = Agent(name="refusing-agent", tools=[refuses], model=responses_model(server))
        result = await wrap(agent, runtime, task_queue).run("go")
        assert result.final_output == "cannot"
        assert attempts == [7]
        assert "An error occurred while running the tool" in server.requests[-1].body_text


async def test_exceeding_max_turns_fails_the_run_cleanly(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    @function_tool
    def again() -> str:
        """Loops forever."""
        return "again"

    script = [Turn.tool_calls(ToolCall("again", {})) for _ in range(10)]
    with ScriptedModelServer(script) as server:
        agent = Agent(name="looper", tools=[again], model=responses_model(server))
        durable = wrap(agent, runtime, task_queue)
        handle = await durable.start("go", max_turns=2)
        with pytest.raises(tether.RunFailedError, match="MaxTurnsExceeded"):
            await handle.result()
        desc = await runtime.client.get_workflow_handle(handle.id).describe()
        assert desc.status == WorkflowExecutionStatus.FAILED


async def test_input_guardrail_trips_and_fails_the_run(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    @input_guardrail
    async def no_secrets(ctx: Any, agent: Any, text: Any) -> GuardrailFunctionOutput:
        return GuardrailFunctionOutput(output_info=None, tripwire_triggered="password" in text)

    with ScriptedModelServer([Turn.text("fine")]) as server:
        agent = Agent(name="guarded", input_guardrails=[no_secrets], model=responses_model(server))
        durable = wrap(agent, runtime, task_queue)
        assert (await durable.run("hello")).final_output == "fine"
        with pytest.raises(tether.RunFailedError, match="Guardrail"):
            await durable.run("my password is 123")


async def test_handoff_and_agent_as_tool_in_one_run(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    script = {
        "gpt-orch": [
            Turn.tool_calls(ToolCall("translate", {"input": "hello"})),
            Turn.tool_calls(ToolCall("transfer_to_closer", {})),
        ],
        "gpt-sub": [Turn.text("bonjour")],
        "gpt-closer": {2: Turn.text("closing: bonjour")},  # joins after the orchestrator's 2
    }
    with ScriptedModelServer(script) as server:
        translator = Agent(name="translator", model=responses_model(server, "gpt-sub"))
        closer = Agent(name="closer", model=responses_model(server, "gpt-closer"))
        orchestrator = Agent(
            name="orch",
            tools=[translator.as_tool(tool_name="translate", tool_description="To French.")],
            handoffs=[closer],
            model=responses_model(server, "gpt-orch"),
        )
        plain = await Runner.run(orchestrator, "say hello in French")
        server.reset()
        result = await wrap(orchestrator, runtime, task_queue).run("say hello in French")
        assert result.final_output == plain.final_output == "closing: bonjour"
        assert result.last_agent == "closer"
        assert all(n == 1 for n in server.steps_seen().values()), server.steps_seen()


async def test_same_run_id_runs_once(runtime: Runtime, task_queue: str, worker: Worker) -> None:
    calls: list[str] = []

    @function_tool
    def side_effect(state: str) -> str:
        """Records its call."""
        calls.append(state)
        return "done"

    script = [Turn.tool_calls(ToolCall("side_effect", {"state": "CA"})), Turn.text("ok")]
    with ScriptedModelServer(script) as server:
        agent = Agent(name="idem", tools=[side_effect], model=responses_model(server))
        durable = wrap(agent, runtime, task_queue)
        first = await durable.run("go", id="idem-run-1")
        second = await durable.run("go", id="idem-run-1")
        assert first == second
        assert calls == ["CA"]


async def test_rate_limited_model_call_is_retried_after_retry_after(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    from tether.testing import Fault

    script = [Turn.text("made it", faults=[Fault.rate_limit(retry_after=0.2)])]
    with ScriptedModelServer(script) as server:
        agent = Agent(name="limited", model=responses_model(server))
        result = await wrap(agent, runtime, task_queue).run("go")
        assert result.final_output == "made it"
        assert server.count(turn=0) == 2
        assert server.served("gpt-test", 0) == 1


async def test_model_step_input_does_not_grow_with_the_conversation(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    @function_tool
    def lookup(i: int) -> str:
        """Returns a 2 KB record."""
        return f"record {i}: " + "x" * 2000

    turns = [Turn.tool_calls(ToolCall("lookup", {"i": i})) for i in range(49)]
    turns.append(Turn.text("all 49 looked up"))
    with ScriptedModelServer(turns) as server:
        agent = Agent(name="long", tools=[lookup], model=responses_model(server))
        durable = wrap(agent, runtime, task_queue)
        handle = await durable.start("look everything up", max_turns=60)
        result = await handle.result()
        assert result.final_output == "all 49 looked up"
    stats = await history_stats(runtime.client, handle.id)
    model_inputs = [s.input_bytes for s in stats.steps if s.name == "openai_agents.model"]
    assert len(model_inputs) == 50
    print(
        f"\nmodel step input bytes at call 1/10/25/50: {model_inputs[0]}/{model_inputs[9]}/"
        f"{model_inputs[24]}/{model_inputs[49]}; history {stats.total_bytes} bytes, "
        f"{stats.events} events"
    )
    # Bounded: every later call carries one turn's delta (a 2 KB tool result), never the
    # conversation; the native integration's input at call 50 is ~50x its first.
    assert max(model_inputs[2:]) < 2 * model_inputs[2]
    assert model_inputs[49] < 6_000
    assert stats.total_bytes < 50 * 12_000


async def test_non_serializable_tool_output_fails_the_run_naming_the_tool(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    class Handle:
        pass

    @function_tool
    def opener() -> Any:
        """Returns an object that cannot cross a process boundary."""
        return Handle()

    with ScriptedModelServer([Turn.tool_calls(ToolCall("opener", {})), Turn.text("x")]) as srv:
        agent = Agent(name="opener-agent", tools=[opener], model=responses_model(srv))
        with pytest.raises(tether.RunFailedError, match=r"tool 'opener'.*cannot be serialized"):
            await wrap(agent, runtime, task_queue).run("go")


def test_wrapping_an_unknown_object_lists_installed_adapters() -> None:
    with pytest.raises(tether.NoAdapterError, match="openai_agents") as info:
        tether.durable(object())
    assert "tether plugins" in str(info.value)


async def test_unreachable_engine_is_a_clear_error() -> None:
    from tether.core.devserver import free_port

    with pytest.raises(tether.EngineUnavailableError, match="cannot connect to Temporal"):
        await Runtime.start(address=f"127.0.0.1:{free_port()}")


def test_two_agents_with_one_name_are_refused_at_wrap_time() -> None:
    a = Agent(name="dup", instructions="a")
    b = Agent(name="dup", instructions="b")
    parent = Agent(name="parent", handoffs=[a, b])
    with pytest.raises(tether.TetherError, match="two different agents named 'dup'"):
        tether.durable(parent, local_worker=False)


def test_plain_json_roundtrip_of_context() -> None:
    from tether.core.values import pack, unpack

    assert unpack(pack({"a": 1}, what="x")) == {"a": 1}
    assert json.dumps(pack([1, 2], what="x"))


async def test_recorded_history_replays_deterministically(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

    from tether.core.run import AgentRun

    @function_tool
    def get_weather_alerts(state: str) -> str:
        """Alerts."""
        return f"alerts for {state}"

    with ScriptedModelServer(alerts_script()) as server:
        agent = Agent(name="replayed", tools=[get_weather_alerts], model=responses_model(server))
        handle = await wrap(agent, runtime, task_queue).start("alerts?")
        await handle.result()
        requests_before = server.count()
        history = await runtime.client.get_workflow_handle(handle.id).fetch_history()
        replayer = Replayer(
            workflows=[AgentRun],
            workflow_runner=UnsandboxedWorkflowRunner(),
            data_converter=runtime.client.data_converter,
        )
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, result.replay_failure
        assert server.count() == requests_before  # replay made no model call
