"""Pydantic AI features a user keeps in a durable run: multi-turn conversations, usage
limits, the model chosen by name. Real dev server, the scripted model server, Pydantic AI's
real OpenAI model classes."""

from __future__ import annotations

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelRequest, ModelResponse
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.usage import UsageLimits
from temporalio.client import WorkflowExecutionStatus
from temporalio.worker import Worker

import tether
from tether.core.runtime import Runtime
from tether.testing import ScriptedModelServer, ToolCall, Turn


def wrap(agent: Agent[object, object], runtime: Runtime, task_queue: str) -> tether.DurableAgent:
    return tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_a_second_run_continues_the_first_conversation(
    runtime: Runtime, task_queue: str, worker: Worker, api: str
) -> None:
    with ScriptedModelServer([Turn.text("Hello Ada."), Turn.text("Your name is Ada.")]) as server:
        provider = OpenAIProvider(base_url=server.base_url, api_key="t")
        model = (
            OpenAIChatModel("gpt-talk", provider=provider)
            if api == "chat"
            else OpenAIResponsesModel("gpt-talk", provider=provider)
        )
        agent = Agent(model, name=f"pai-talk-{api}", instructions="Be brief.")
        durable = wrap(agent, runtime, task_queue)
        first = await durable.run("I am Ada.")
        second = await durable.run("What is my name?", message_history=first.all_messages())
        second_request = server.requests[-1].body_text
    assert (first.output, second.output) == ("Hello Ada.", "Your name is Ada.")
    # The second model call saw the first turn, and the result holds the whole conversation.
    assert "I am Ada." in second_request and "Hello Ada." in second_request
    messages = second.all_messages()
    assert [type(m) for m in messages] == [ModelRequest, ModelResponse] * 2
    assert messages[:2] == first.all_messages()


async def test_an_exceeded_request_limit_fails_the_run_without_retrying(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    script = [Turn.tool_calls(ToolCall("ping", {})), Turn.text("never reached")]
    with ScriptedModelServer(script) as server:
        provider = OpenAIProvider(base_url=server.base_url, api_key="t")
        agent = Agent(OpenAIChatModel("gpt-limit", provider=provider), name="pai-limit")

        @agent.tool_plain
        def ping() -> str:
            """Pong."""
            return "pong"

        durable = wrap(agent, runtime, task_queue)
        handle = await durable.start("ping", usage_limits=UsageLimits(request_limit=1))
        with pytest.raises(tether.RunFailedError, match=r"request_limit of 1") as failed:
            await handle.result()
        seen = server.steps_seen()
    assert failed.value.error_type == "UsageLimitExceeded"
    assert seen == {("gpt-limit", 0): 1}  # the limit stopped the second request
    description = await runtime.client.get_workflow_handle(handle.id).describe()
    assert description.status == WorkflowExecutionStatus.FAILED


async def test_the_model_chosen_by_name_on_the_agent_and_per_run(
    runtime: Runtime, task_queue: str, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ScriptedModelServer(
        {"gpt-by-name": [Turn.text("agent's model")], "gpt-per-run": [Turn.text("run's model")]}
    ) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        agent = Agent("openai:gpt-by-name", name="pai-by-name")
        durable = wrap(agent, runtime, task_queue)
        by_agent = await durable.run("hi")
        per_run = await durable.run("hi", model="openai:gpt-per-run")
        seen = server.steps_seen()
    assert (by_agent.output, per_run.output) == ("agent's model", "run's model")
    assert seen == {("gpt-by-name", 0): 1, ("gpt-per-run", 0): 1}


async def test_an_unknown_model_name_fails_the_run_clearly(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    agent = Agent("test", name="pai-unknown-model")
    with pytest.raises(tether.RunFailedError, match=r"UserError.*Unknown model: nowhere:gpt"):
        await wrap(agent, runtime, task_queue).run("hi", model="nowhere:gpt")


def test_provider_errors_without_a_status_are_classified_not_reraised_as_their_own_cause() -> None:
    from pydantic_ai.exceptions import ModelConnectionError, ModelNotFoundError

    from tether.adapters.pydantic_ai._worker_side import _classify

    lost = _classify(ModelConnectionError("gpt", "connection refused", retry_after=2.0))
    assert isinstance(lost, tether.RetryableError) and lost.retry_after == 2.0
    assert isinstance(
        _classify(ModelNotFoundError("gpt", "no such model")), tether.NonRetryableError
    )
