"""Human-in-the-loop: approvals and questions as durable waits, one API for both adapters
(real dev server, the frameworks' real OpenAI model classes, the scripted model server)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic_ai import ApprovalRequired, RunContext
from temporalio.worker import Worker

import tether
from hitl_helpers import ADAPTERS, all_events, build_agent, output_of, wait_pending, wrap
from tether.core.runtime import Runtime, agent_queue
from tether.testing import ScriptedModelServer, ToolCall, Turn, Usage
from workers import WorkerProcess, executed, wait_until_polling, worker_processes


def refund_script() -> list[Turn]:
    return [Turn.tool_calls(ToolCall("refund", {"order": 42})), Turn.text("done with 42")]


def refund_agent(adapter: str, server: ScriptedModelServer, ran: list[int]) -> object:
    def refund(order: int) -> str:
        """Refund an order (a person must approve)."""
        ran.append(order)
        return f"order {order} refunded"

    return build_agent(
        adapter, server, f"refunds-{adapter}", {"refund": refund}, approval=("refund",)
    )


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_an_approved_call_runs_once_and_the_run_finishes(
    runtime: Runtime, task_queue: str, worker: Worker, adapter: str
) -> None:
    ran: list[int] = []
    with ScriptedModelServer(refund_script()) as server:
        handle = await wrap(refund_agent(adapter, server, ran), runtime, task_queue).start("42")
        [request] = await wait_pending(handle)
        assert (request.kind, request.tool, request.args) == ("approval", "refund", {"order": 42})
        assert request.id.startswith("call_")  # the model's tool call id
        assert ran == []  # nothing runs before a person says so
        assert (await handle.describe()).status == "waiting"
        await handle.approve(request.id)
        assert output_of(await handle.result()) == "done with 42"
        assert "order 42 refunded" in server.requests[-1].body_text
    assert ran == [42]
    assert await handle.pending() == []
    [wait] = (await handle.describe()).waits
    assert (wait["id"], wait["approved"], wait["timed_out"]) == (request.id, True, False)


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_a_denied_call_is_never_executed_and_the_model_hears_why(
    runtime: Runtime, task_queue: str, worker: Worker, adapter: str
) -> None:
    ran: list[int] = []
    with ScriptedModelServer(refund_script()) as server:
        handle = await wrap(refund_agent(adapter, server, ran), runtime, task_queue).start("42")
        [request] = await wait_pending(handle)
        await handle.deny(request.id, "refunds over $40 need a manager")
        assert output_of(await handle.result()) == "done with 42"
        assert "refunds over $40 need a manager" in server.requests[-1].body_text
    assert ran == []
    tool_events = [e for e in await all_events(handle) if e.type.startswith("tool.")]
    assert tool_events == []


async def test_wrong_answers_are_clear_errors_not_crashes(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    ran: list[int] = []
    with ScriptedModelServer(refund_script()) as server:
        agent = refund_agent("openai_agents", server, ran)
        handle = await wrap(agent, runtime, task_queue).start("42")
        [request] = await wait_pending(handle)
        with pytest.raises(tether.UnknownWaitRequestError, match="not waiting for a request"):
            await handle.approve("call_nope")
        with pytest.raises(tether.WrongAnswerKindError, match="is an approval"):
            await handle.answer(request.id, "yes")
        await handle.approve(request.id)
        with pytest.raises(tether.AlreadyAnsweredError, match="already answered \\(approved\\)"):
            await handle.deny(request.id, "too late")
        await handle.result()
        with pytest.raises(tether.AlreadyAnsweredError, match="approved\\) and the run has ended"):
            await handle.approve(request.id)
        with pytest.raises(tether.RunNotWaitingError, match="has ended"):
            await handle.approve("call_other")
    assert ran == [42]
    # Refused answers never entered the run's history: only the accepted one did.
    history = await runtime.client.get_workflow_handle(handle.id).fetch_history()
    updates = [
        e
        for e in history.events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    ]
    answers = [
        e
        for e in updates
        if e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
        == "tether.answer"
    ]
    assert len(answers) == 1


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("policy", ["deny", "default", "fail"])
async def test_a_timed_out_wait_follows_its_policy(
    runtime: Runtime, task_queue: str, worker: Worker, adapter: str, policy: str
) -> None:
    ran: list[int] = []
    waits = tether.WaitPolicy(timeout=0.5, on_timeout=policy, default=True)  # type: ignore[arg-type]
    with ScriptedModelServer(refund_script()) as server:
        durable = wrap(refund_agent(adapter, server, ran), runtime, task_queue)
        handle = await durable.start("42", waits=waits)
        if policy == "fail":
            with pytest.raises(tether.WaitTimedOutError, match=r"within 0\.5s.*'fail'"):
                await handle.result()
            assert server.count() == 1
        else:
            assert output_of(await handle.result()) == "done with 42"
    assert ran == ([42] if policy == "default" else [])
    answered = [e for e in await all_events(handle) if e.type == "approval.answered"]
    assert [e.data["timed_out"] for e in answered] == [True]
    assert answered[0].data["approved"] is (
        True if policy == "default" else None if policy == "fail" else False
    )


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_ask_human_is_a_durable_question_in_both_frameworks(
    runtime: Runtime, task_queue: str, worker: Worker, adapter: str
) -> None:
    script = [
        Turn.tool_calls(ToolCall("ask_human", {"question": "Which order?"})),
        Turn.text("refund order noted"),
    ]
    with ScriptedModelServer(script) as server:
        agent = build_agent(adapter, server, f"asker-{adapter}", {}, human=tether.ask_human)
        handle = await wrap(agent, runtime, task_queue).start("refund my order")
        [request] = await wait_pending(handle)
        assert (request.kind, request.question) == ("question", "Which order?")
        with pytest.raises(tether.WrongAnswerKindError, match="is a question"):
            await handle.approve(request.id)
        await handle.answer(request.id, "order 77")
        assert output_of(await handle.result()) == "refund order noted"
        assert "order 77" in server.requests[-1].body_text


@pytest.mark.parametrize(
    ("default", "told"),
    [
        ("no answer: do not refund", "no answer: do not refund"),
        (None, "(nobody answered within 0.3s)"),
    ],
)
async def test_a_human_input_tool_that_times_out_answers_its_default_or_says_so(
    runtime: Runtime, task_queue: str, worker: Worker, default: str | None, told: str
) -> None:
    ask = tether.human_input("ask_manager", timeout=0.3, on_timeout="deny", default=default)
    script = [
        Turn.tool_calls(ToolCall("ask_manager", {"question": "Refund 42?"})),
        Turn.text("not refunded"),
    ]
    with ScriptedModelServer(script) as server:
        agent = build_agent("pydantic_ai", server, "manager-asker", {}, human=ask)
        result = await wrap(agent, runtime, task_queue).run("refund 42")
        assert result.output == "not refunded"
        assert told in server.requests[-1].body_text


def test_ask_human_outside_a_durable_run_is_a_clear_error() -> None:
    import asyncio

    with pytest.raises(tether.ConfigurationError, match="only works inside a durable run"):
        asyncio.run(tether.ask_human("hello?"))


@pytest.mark.parametrize(
    ("adapter", "spec"),
    [
        ("openai_agents", "apps.hitl_apps:openai_refunds"),
        ("pydantic_ai", "apps.hitl_apps:pai_refunds"),
    ],
)
async def test_a_waiting_run_survives_a_worker_sigkill_and_finishes_after_approve(
    runtime: Runtime,
    worker_env: dict[str, str],
    tmp_path: Path,
    adapter: str,
    spec: str,
) -> None:
    from apps import hitl_apps

    agent = hitl_apps.openai_refunds if adapter == "openai_agents" else hitl_apps.pai_refunds
    tool = "refund" if adapter == "openai_agents" else "pai_refund"
    script = [
        Turn.tool_calls(ToolCall(tool, {"order": 42}), usage=Usage(120, 15)),
        Turn.text("order 42 refunded", usage=Usage(200, 9)),
    ]
    calls = tmp_path / "calls.txt"
    with ScriptedModelServer(script) as server, worker_processes() as procs:
        env = dict(worker_env, OPENAI_BASE_URL=server.base_url, TETHER_TEST_CALLS=str(calls))
        first = WorkerProcess([spec], env, tmp_path / "w1.log")
        procs.append(first)
        durable = tether.durable(agent, runtime=runtime, local_worker=False)
        durable.task_queue = agent_queue(env["TETHER_TASK_QUEUE"], durable.name)
        handle = await durable.start("refund 42", id=f"hitl-crash-{uuid.uuid4().hex[:6]}")
        # A worker starting on a loaded machine takes a while to poll; pending() would say
        # no worker hosts the agent before that.
        await wait_until_polling(runtime.client, durable.task_queue, timeout=180)
        [request] = await wait_pending(handle)
        killed = datetime.now(UTC)
        first.kill()  # the worker held the waiting run in its cache; now it is gone
        procs.append(WorkerProcess([spec], env, tmp_path / "w2.log"))
        await wait_until_polling(runtime.client, durable.task_queue, timeout=180, since=killed)
        assert [r.id for r in await handle.pending()] == [request.id]
        await handle.approve(request.id)
        result = await handle.result()
        assert output_of(result) == "order 42 refunded"
        total = server.total_usage()
        assert server.count() == 2  # no model call was made again after the restart
        # A finished run's events are read through a worker (it replays the run's log).
        events = await all_events(handle)
    assert executed(calls) == {"refund:42": 1}
    usage = await handle.usage()
    assert (usage.input_tokens, usage.output_tokens) == (total.input_tokens, total.output_tokens)
    assert (usage.input_tokens, usage.output_tokens, usage.requests) == (320, 24, 2)
    assert [e.offset for e in events] == list(range(len(events)))
    assert [e.type for e in events] == [
        "run.started",
        "model.started",
        "model.finished",
        "model.response",
        "usage",
        "approval.requested",
        "approval.answered",
        "tool.started",
        "tool.finished",
        "model.started",
        "model.finished",
        "model.response",
        "usage",
        "run.finished",
    ]


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_a_history_with_waits_replays_deterministically(
    runtime: Runtime, task_queue: str, worker: Worker, adapter: str
) -> None:
    from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

    from tether.core.run import AgentRun

    ran: list[int] = []

    def refund(order: int) -> str:
        """Refund an order."""
        ran.append(order)
        return "refunded"

    script = [
        Turn.tool_calls(ToolCall("refund", {"order": 1})),
        Turn.tool_calls(ToolCall("ask_human", {"question": "Why?"})),
        Turn.tool_calls(ToolCall("refund", {"order": 2})),
        Turn.text("one denied, one refunded"),
    ]
    with ScriptedModelServer(script) as server:
        agent = build_agent(
            adapter,
            server,
            f"replay-{adapter}",
            {"refund": refund},
            approval=("refund",),
            human=tether.ask_human,
        )
        handle = await wrap(agent, runtime, task_queue).start("refund 1 and 2")
        await handle.deny((await wait_pending(handle))[0].id, "no")
        await handle.answer((await wait_pending(handle))[0].id, "because")
        await handle.approve((await wait_pending(handle))[0].id)
        assert output_of(await handle.result()) == "one denied, one refunded"
        events_before = await all_events(handle)
        history = await runtime.client.get_workflow_handle(handle.id).fetch_history()
        replayer = Replayer(
            workflows=[AgentRun],
            workflow_runner=UnsandboxedWorkflowRunner(),
            data_converter=runtime.client.data_converter,
        )
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, result.replay_failure
        assert server.count() == 4
    assert ran == [2]
    kinds = [e.type for e in events_before if e.type.endswith(("requested", "asked", "answered"))]
    assert kinds == [
        "approval.requested",
        "approval.answered",
        "question.asked",
        "question.answered",
        "approval.requested",
        "approval.answered",
    ]


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_an_unanswered_question_with_the_fail_policy_fails_the_run(
    runtime: Runtime, task_queue: str, worker: Worker, adapter: str
) -> None:
    ask = tether.human_input("ask_manager", timeout=0.3, on_timeout="fail")
    script = [Turn.tool_calls(ToolCall("ask_manager", {"question": "Refund?"})), Turn.text("x")]
    with ScriptedModelServer(script) as server:
        agent = build_agent(adapter, server, f"fail-asker-{adapter}", {}, human=ask)
        handle = await wrap(agent, runtime, task_queue).start("refund 42")
        with pytest.raises(tether.WaitTimedOutError, match=r"question .* within 0\.3s"):
            await handle.result()
        assert server.count() == 1


async def test_an_approval_inside_an_agent_used_as_a_tool_waits_in_the_outer_run(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    import agents

    from hitl_helpers import client

    ran: list[int] = []

    @agents.function_tool(needs_approval=True)
    def refund(order: int) -> str:
        """Refund an order."""
        ran.append(order)
        return "refunded"

    script = {
        "gpt-outer": [
            Turn.tool_calls(ToolCall("refunder", {"input": "refund 5"})),
            Turn.text("outer done"),
        ],
        "gpt-inner": [Turn.tool_calls(ToolCall("refund", {"order": 5})), Turn.text("inner done")],
    }
    with ScriptedModelServer(script) as server:
        model = agents.OpenAIResponsesModel
        inner = agents.Agent(
            name="inner",
            model=model(model="gpt-inner", openai_client=client(server)),
            tools=[refund],
        )
        outer = agents.Agent(
            name="outer",
            model=model(model="gpt-outer", openai_client=client(server)),
            tools=[inner.as_tool(tool_name="refunder", tool_description="Refunds orders.")],
        )
        handle = await wrap(outer, runtime, task_queue).start("refund 5")
        [request] = await wait_pending(handle)
        assert (request.tool, request.args) == ("refund", {"order": 5})
        await handle.approve(request.id)
        assert output_of(await handle.result()) == "outer done"
        assert "inner done" in server.requests[-1].body_text
    assert ran == [5]


async def test_a_pydantic_ai_externally_executed_call_is_answered_by_a_person(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    from pydantic_ai import CallDeferred

    def lookup_stock(sku: str) -> str:
        """Stock level (the warehouse team looks it up)."""
        raise CallDeferred()

    script = [Turn.tool_calls(ToolCall("lookup_stock", {"sku": "A1"})), Turn.text("noted")]
    with ScriptedModelServer(script) as server:
        agent = build_agent("pydantic_ai", server, "stock", {"lookup_stock": lookup_stock})
        handle = await wrap(agent, runtime, task_queue).start("stock of A1?")
        [request] = await wait_pending(handle)
        assert (request.kind, request.tool, request.args) == (
            "question",
            "lookup_stock",
            {"sku": "A1"},
        )
        await handle.answer(request.id, "12 units")
        assert output_of(await handle.result()) == "noted"
        assert "12 units" in server.requests[-1].body_text


async def test_a_pydantic_ai_tool_raising_approval_required_waits_then_runs_approved(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    ran: list[tuple[int, bool]] = []

    def refund(ctx: RunContext[None], order: int) -> str:
        """Refund an order; large ones need a person's approval."""
        ran.append((order, ctx.tool_call_approved))
        if order > 40 and not ctx.tool_call_approved:
            raise ApprovalRequired()
        return f"order {order} refunded"

    script = [Turn.tool_calls(ToolCall("refund", {"order": 42})), Turn.text("done")]
    with ScriptedModelServer(script) as server:
        agent = build_agent("pydantic_ai", server, "asks-when-large", {"refund": refund})
        handle = await wrap(agent, runtime, task_queue).start("refund 42")
        [request] = await wait_pending(handle)
        assert ran == [(42, False)]  # the tool ran once (a step), asked, and the run waits
        await handle.approve(request.id)
        assert output_of(await handle.result()) == "done"
        assert "order 42 refunded" in server.requests[-1].body_text
    assert ran == [(42, False), (42, True)]
