"""The Pydantic AI adapter, end to end: real dev server, Pydantic AI's real OpenAI model
classes against the scripted model server, an in-process worker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_ai import (
    Agent,
    DeferredToolRequests,
    DeferredToolResults,
    ModelRetry,
    RunContext,
)
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider
from temporalio.worker import Worker

import tether
from tether.core.runtime import Runtime
from tether.testing import ScriptedModelServer, ToolCall, Turn
from tether.testing._history import history_stats


def chat_model(server: ScriptedModelServer, lane: str = "gpt-pai") -> OpenAIChatModel:
    return OpenAIChatModel(lane, provider=OpenAIProvider(base_url=server.base_url, api_key="t"))


def responses_model(server: ScriptedModelServer, lane: str = "gpt-pai") -> OpenAIResponsesModel:
    provider = OpenAIProvider(base_url=server.base_url, api_key="t")
    return OpenAIResponsesModel(lane, provider=provider)


def wrap(agent: Agent[Any, Any], runtime: Runtime, task_queue: str) -> tether.DurableAgent:
    return tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)


@dataclass
class Deps:
    user: str


class Answer(BaseModel):
    city: str
    alerts: int


def three_tools() -> list[Turn]:
    return [
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"})),
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "NY"})),
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "TX"})),
        Turn.text("CA has a heat advisory."),
    ]


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_three_tool_run_matches_plain_run(
    runtime: Runtime, task_queue: str, worker: Worker, api: str
) -> None:
    calls: list[str] = []
    with ScriptedModelServer(three_tools()) as server:
        model = chat_model(server) if api == "chat" else responses_model(server)
        agent = Agent(model, name=f"pai-{api}", deps_type=Deps)

        @agent.tool
        def get_weather_alerts(ctx: RunContext[Deps], state: str) -> str:
            """Alerts for a state (sync)."""
            calls.append(state)
            return f"alerts for {state} (for {ctx.deps.user})"

        plain = await agent.run("alerts?", deps=Deps("ada"))
        server.reset()
        calls.clear()
        result = await wrap(agent, runtime, task_queue).run("alerts?", deps=Deps("ada"))
        assert result.output == plain.output
        assert calls == ["CA", "NY", "TX"]
        assert server.steps_seen() == {("gpt-pai", t): 1 for t in range(4)}
        assert "alerts for TX (for ada)" in server.requests[-1].body_text
        assert result.usage["requests"] == 4


async def test_a_model_step_validates_only_the_new_messages(
    runtime: Runtime, task_queue: str, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker keeps each run's validated history: a model step validates the messages
    its previous step did not (the history grows by two per tool turn), not all of them."""
    from tether.adapters.pydantic_ai import _worker_side

    real = _worker_side.ModelMessagesTypeAdapter
    validated: list[int] = []

    class Counting:
        def validate_python(self, items: list[Any]) -> Any:
            validated.append(len(items))
            return real.validate_python(items)

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    monkeypatch.setattr(_worker_side, "ModelMessagesTypeAdapter", Counting())
    with ScriptedModelServer(three_tools()) as server:
        agent = Agent(chat_model(server), name="pai-validated", deps_type=Deps)

        @agent.tool
        def get_weather_alerts(ctx: RunContext[Deps], state: str) -> str:
            """Alerts for a state."""
            return f"alerts for {state}"

        result = await wrap(agent, runtime, task_queue).run("alerts?", deps=Deps("ada"))
        histories = [len(r.body["messages"]) for r in server.requests]

    assert result.output == "CA has a heat advisory."
    assert histories == [1, 3, 5, 7]  # the prompt, then two more messages per tool turn
    # Without the kept history: 1 + 3 + 5 + 7 = 16 messages validated.
    assert validated == [1, 2, 2, 2]


async def test_structured_output_with_an_output_validator(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    script = [Turn.json({"city": "Paris", "alerts": -1}), Turn.json({"city": "Paris", "alerts": 2})]
    with ScriptedModelServer(script) as server:
        agent = Agent(chat_model(server), name="pai-structured-out", output_type=Answer)

        @agent.output_validator
        def non_negative(out: Answer) -> Answer:
            if out.alerts < 0:
                raise ModelRetry("alerts cannot be negative")
            return out

        result = await wrap(agent, runtime, task_queue).run("how many alerts in Paris?")
    assert result.output == Answer(city="Paris", alerts=2)
    assert "alerts cannot be negative" in server.requests[-1].body_text


async def test_model_retry_from_a_tool_reaches_the_model(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    seen: list[str] = []
    script = [
        Turn.tool_calls(ToolCall("lookup", {"state": "California"})),
        Turn.tool_calls(ToolCall("lookup", {"state": "CA"})),
        Turn.text("CA is quiet"),
    ]
    with ScriptedModelServer(script) as server:
        agent = Agent(chat_model(server), name="pai-retry")

        @agent.tool_plain
        def lookup(state: str) -> str:
            """Needs a two-letter code."""
            seen.append(state)
            if len(state) != 2:
                raise ModelRetry("use the two-letter code")
            return f"{state}: quiet"

        result = await wrap(agent, runtime, task_queue).run("CA?")
        assert result.output == "CA is quiet"
        assert seen == ["California", "CA"]  # ModelRetry is control flow: no step retry
        assert "use the two-letter code" in server.requests[1].body_text


async def test_approval_required_tool_defers_and_continues(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    executed: list[int] = []
    script = [
        Turn.tool_calls(ToolCall("refund", {"order": 42})),
        Turn.text("refunded order 42"),
    ]
    with ScriptedModelServer(script) as server:
        agent = Agent(
            chat_model(server), name="pai-approval", output_type=[str, DeferredToolRequests]
        )

        @agent.tool_plain(requires_approval=True)
        def refund(order: int) -> str:
            """Refunds an order (a person must approve)."""
            executed.append(order)
            return f"order {order} refunded"

        durable = wrap(agent, runtime, task_queue)
        first = await durable.run("refund 42")
        assert isinstance(first.output, DeferredToolRequests)
        assert executed == []
        [call] = first.output.approvals
        second = await durable.run(
            None,
            message_history=first.all_messages(),
            deferred_tool_results=DeferredToolResults(approvals={call.tool_call_id: True}),
        )
        assert second.output == "refunded order 42"
        assert executed == [42]


async def test_model_step_input_is_bounded_and_history_linear(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    turns = [Turn.tool_calls(ToolCall("lookup", {"i": i})) for i in range(49)]
    turns.append(Turn.text("done"))
    with ScriptedModelServer(turns) as server:
        agent = Agent(chat_model(server), name="pai-long")

        @agent.tool_plain
        def lookup(i: int) -> str:
            """A 2 KB record."""
            return f"record {i}: " + "x" * 2000

        durable = wrap(agent, runtime, task_queue)
        handle = await durable.start("look them all up")
        assert (await handle.result()).output == "done"
    stats = await history_stats(runtime.client, handle.id)
    model_inputs = [s.input_bytes for s in stats.steps if s.name == "pydantic_ai.model"]
    assert len(model_inputs) == 50
    print(
        f"\nPydantic AI model step input bytes at call 1/10/25/50: {model_inputs[0]}/"
        f"{model_inputs[9]}/{model_inputs[24]}/{model_inputs[49]}; "
        f"history {stats.total_bytes} bytes, {stats.events} events"
    )
    assert max(model_inputs[2:]) < 2 * model_inputs[2]
    assert model_inputs[49] < 6_000
    # Linear: the history per step is constant (first half vs whole run).
    assert stats.total_bytes < 50 * 12_000


def test_an_agent_without_a_name_is_refused() -> None:
    with pytest.raises(tether.ConfigurationError, match="needs a name"):
        tether.durable(Agent("test"), local_worker=False)


async def test_unserializable_or_mistyped_deps_are_refused_before_the_run(
    runtime: Runtime, task_queue: str
) -> None:
    agent = Agent("test", name="pai-deps", deps_type=Deps)
    durable = wrap(agent, runtime, task_queue)
    with pytest.raises(tether.StepInputError, match="do not match the agent's deps_type"):
        await durable.start("x", deps=42)

    class Socketish:
        pass

    loose = wrap(Agent("test", name="pai-loose"), runtime, task_queue)
    with pytest.raises(tether.StepInputError, match="cannot be serialized"):
        await loose.start("x", deps=Socketish())


async def test_a_tool_the_agent_does_not_have_fails_clearly(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    script = [Turn.tool_calls(ToolCall("teleport", {})) for _ in range(5)]
    with ScriptedModelServer(script) as server:
        agent = Agent(chat_model(server), name="pai-unknown-tool", retries=1)

        @agent.tool_plain
        def known() -> str:
            """The only tool."""
            return "ok"

        with pytest.raises(tether.RunFailedError, match="teleport"):
            await wrap(agent, runtime, task_queue).run("go")


async def test_openai_and_pydantic_agents_share_one_worker(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    from agents import Agent as OAAgent
    from agents import OpenAIResponsesModel as OAResponses
    from openai import AsyncOpenAI

    with ScriptedModelServer({"oa": [Turn.text("from oa")], "pai": [Turn.text("from pai")]}) as s:
        oa = OAAgent(
            name="shared-oa",
            model=OAResponses(
                model="oa", openai_client=AsyncOpenAI(base_url=s.base_url, api_key="t")
            ),
        )
        pai = Agent(chat_model(s, "pai"), name="shared-pai")
        r1, r2 = (
            await wrap(oa, runtime, task_queue).run("hi"),
            await wrap(pai, runtime, task_queue).run("hi"),
        )
        assert r1.final_output == "from oa"
        assert r2.output == "from pai"
