"""tether.contrib.temporal: Tether agents as child runs of a user's own Temporal workflows,
on the user's own client and worker (real dev server, scripted model server)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, OpenAIResponsesModel, function_tool
from openai import AsyncOpenAI
from pydantic_ai import Agent as PaiAgent
from pydantic_ai import RunContext
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    PayloadCodec,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer, Worker

from apps.user_workflows import SupportTicket, Ticket, TicketReply, TwoAgents, lookup_customer
from tether.contrib.temporal import TetherPlugin, run_agent
from tether.core.converter import TetherPayloadConverter
from tether.core.devserver import EmbeddedEngine
from tether.core.run import AgentRun
from tether.core.runtime import Runtime, worker_options
from tether.core.store import BlobStore
from tether.errors import ConfigurationError
from tether.testing import ScriptedModelServer, ToolCall, Turn, WorkerProcess, worker_processes
from tether.testing._history import StepRecord, history_stats
from workers import DELAY, executed, wait_for_completed_steps


@function_tool
def get_weather_alerts(state: str) -> str:
    """Active weather alerts for a US state."""
    return f"alerts for {state}: heat advisory"


def oa_agent(server: ScriptedModelServer, name: str = "support-oa") -> Agent[Any]:
    client = AsyncOpenAI(base_url=server.base_url, api_key="t", max_retries=0)
    return Agent(
        name=name,
        instructions="Answer with the alerts.",
        tools=[get_weather_alerts],
        model=OpenAIResponsesModel(model="gpt-support", openai_client=client),
    )


def weather_script() -> list[Turn]:
    """Four model turns, three tools (seven steps), each taking DELAY."""
    return [
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"}), delay=DELAY),
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "NY"}), delay=DELAY),
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "TX"}), delay=DELAY),
        Turn.text("CA has a heat advisory.", delay=DELAY),
    ]


@dataclass
class Deps:
    user: str


def pai_agent(server: ScriptedModelServer) -> PaiAgent[Deps, str]:
    provider = OpenAIProvider(base_url=server.base_url, api_key="t")
    agent = PaiAgent(
        OpenAIChatModel("gpt-pai-support", provider=provider), name="support-pai", deps_type=Deps
    )

    @agent.tool
    def get_weather_alerts(ctx: RunContext[Deps], state: str) -> str:
        """Active weather alerts for a US state."""
        return f"alerts for {state} (asked by {ctx.deps.user}): heat advisory"

    return agent


async def user_client(engine: EmbeddedEngine, plugin: TetherPlugin) -> Client:
    return await Client.connect(engine.address, plugins=[plugin])


async def test_user_workflow_runs_an_openai_agent_as_a_child(
    engine: EmbeddedEngine, store: BlobStore, task_queue: str
) -> None:
    script = [
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"})),
        Turn.text("CA has a heat advisory."),
    ]
    with ScriptedModelServer(script) as server:
        agent = oa_agent(server)
        client = await user_client(engine, TetherPlugin(agents=[agent], store=store))
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[SupportTicket],
            activities=[lookup_customer],
        ):
            parent = f"ticket-{uuid.uuid4().hex[:8]}"
            reply = await client.execute_workflow(
                SupportTicket.run,
                Ticket(text="alerts?", agent="support-oa"),
                id=parent,
                task_queue=task_queue,
                result_type=TicketReply,
            )
    assert reply == TicketReply("customer-7", "CA has a heat advisory.", f"{parent}/agent-1")


# -- the acceptance test: the user's worker process is SIGKILLed mid-agent ----------------


class UserWorkerProcess(WorkerProcess):
    """``python -m apps.user_worker``: a plain temporalio Worker with TetherPlugin, in its own
    process group, killed by its pid."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "apps.user_worker"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


async def wait_for_child_steps(
    client: Client, run_id: str, n: int, worker: WorkerProcess, timeout: float = 120
) -> list[StepRecord]:
    """Wait until the child run ``run_id`` exists and ``n`` of its steps completed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await wait_for_completed_steps(client, run_id, n, worker, timeout=timeout)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND or loop.time() > deadline:
                raise
            if not worker.alive():
                raise AssertionError(f"worker died early; log:\n{worker.tail()}") from None
            await asyncio.sleep(0.1)


async def started_attempts(client: Client, run_id: str) -> dict[int, int]:
    """Scheduled event id -> the attempt number that last started that step."""
    history = await client.get_workflow_handle(run_id).fetch_history()
    out: dict[int, int] = {}
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = event.activity_task_started_event_attributes
            out[attrs.scheduled_event_id] = attrs.attempt
    return out


@pytest.mark.parametrize("kill_after", [2, 5])
async def test_user_worker_killed_mid_agent_resumes_on_another(
    runtime: Runtime,
    worker_env: dict[str, str],
    tmp_path: Path,
    task_queue: str,
    kill_after: int,
) -> None:
    calls = tmp_path / "calls.txt"
    with ScriptedModelServer(weather_script()) as server, worker_processes() as procs:
        env = dict(
            worker_env,
            OPENAI_BASE_URL=server.base_url,
            TETHER_TEST_CALLS=str(calls),
            TETHER_TEST_TOOL_DELAY=str(DELAY),
        )
        first = UserWorkerProcess(env, tmp_path / "w1.log")
        procs.append(first)
        parent = f"ticket-crash-{uuid.uuid4().hex[:8]}"
        # The user's client: any client with Tether's converter (here the runtime's).
        handle = await runtime.client.start_workflow(
            "SupportTicket",
            Ticket(text="alerts?", agent="weather"),
            id=parent,
            task_queue=task_queue,
            result_type=TicketReply,
        )
        child = f"{parent}/agent-1"
        done = await wait_for_child_steps(runtime.client, child, kill_after, first)
        first.kill()
        second = UserWorkerProcess(env, tmp_path / "w2.log")
        procs.append(second)
        try:
            reply = await asyncio.wait_for(handle.result(), timeout=180)
        except Exception:
            raise AssertionError(f"second worker log:\n{second.tail()}") from None
        seen = server.steps_seen()
    assert reply == TicketReply("customer-7", "CA has a heat advisory.", child)
    stats = await history_stats(runtime.client, child)
    assert len(stats.completed()) == 7
    # Every model call that completed before the kill was made exactly once; only one in
    # flight at the kill may have been made twice.
    # A step may have been retried before it completed (a heartbeat lost on a loaded
    # machine); the request count must not exceed the attempts the engine recorded.
    attempts = await started_attempts(runtime.client, child)
    models = [s for s in done if s.name == "openai_agents.model"]
    for turn, step in enumerate(models):
        assert seen[("gpt-weather", turn)] <= attempts[step.scheduled_event_id], (turn, seen)
    counted = executed(calls)
    tools = [s for s in done if s.name == "openai_agents.tool"]
    for state, step in zip(["CA", "NY", "TX"], tools, strict=False):
        assert counted[f"get_weather_alerts:{state}"] <= attempts[step.scheduled_event_id]
    # The user's own activity completed before the agent started: never run again.
    assert counted["lookup_customer:7"] == 1, counted


async def test_user_workflow_runs_a_pydantic_ai_agent_with_deps(
    engine: EmbeddedEngine, store: BlobStore, task_queue: str
) -> None:
    script = [
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"})),
        Turn.text("CA: heat advisory."),
    ]
    with ScriptedModelServer(script) as server:
        agent = pai_agent(server)
        client = await user_client(engine, TetherPlugin(agents=[agent], store=store))
        async with Worker(
            client, task_queue=task_queue, workflows=[SupportTicket], activities=[lookup_customer]
        ):
            reply = await client.execute_workflow(
                SupportTicket.run,
                Ticket(text="alerts?", agent="support-pai", deps_user="ada"),
                id=f"ticket-{uuid.uuid4().hex[:8]}",
                task_queue=task_queue,
                result_type=TicketReply,
            )
        tool_result = server.requests[-1].body["messages"][-1]["content"]
    assert reply.answer == "CA: heat advisory."
    assert tool_result == "alerts for CA (asked by ada): heat advisory"


async def test_child_ids_are_deterministic_and_the_parent_replays(
    engine: EmbeddedEngine, store: BlobStore, task_queue: str
) -> None:
    script = {"gpt-support": [Turn.text("done")]}
    with ScriptedModelServer(script) as server:
        agent = oa_agent(server)
        plugin = TetherPlugin(agents=[agent], store=store)
        client = await user_client(engine, plugin)
        parent = f"two-{uuid.uuid4().hex[:8]}"
        async with Worker(client, task_queue=task_queue, workflows=[TwoAgents]):
            out = await client.execute_workflow(
                TwoAgents.run, "support-oa", id=parent, task_queue=task_queue
            )
        assert out == [f"{parent}/agent-1", "done", "done"]
        # Both children exist under the derived ids, on the parent's task queue.
        for n in (1, 2):
            desc = await client.get_workflow_handle(f"{parent}/agent-{n}").describe()
            assert desc.workflow_type == "tether.AgentRun"
            assert desc.task_queue == task_queue
        # The parent's history replays with the plugin (same child ids, same commands).
        history = await client.get_workflow_handle(parent).fetch_history()
        result = await Replayer(workflows=[TwoAgents], plugins=[plugin]).replay_workflow(history)
        assert result.replay_failure is None


async def test_a_failed_agent_run_fails_the_parent_with_its_cause(
    engine: EmbeddedEngine, store: BlobStore, task_queue: str
) -> None:
    loop = Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"}))
    with ScriptedModelServer({"gpt-support": [loop, loop, loop]}) as server:
        agent = oa_agent(server)
        client = await user_client(engine, TetherPlugin(agents=[agent], store=store))
        async with Worker(
            client, task_queue=task_queue, workflows=[SupportTicket], activities=[lookup_customer]
        ):
            parent = f"ticket-{uuid.uuid4().hex[:8]}"
            with pytest.raises(WorkflowFailureError) as info:
                await client.execute_workflow(
                    SupportTicket.run,
                    Ticket(text="alerts?", agent="support-oa", max_turns=1),
                    id=parent,
                    task_queue=task_queue,
                )
    cause = info.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "MaxTurnsExceeded"
    assert f"agent 'support-oa' failed in run '{parent}/agent-1'" in cause.message
    assert cause.non_retryable


# -- misuse ---------------------------------------------------------------------------------


class NoopCodec(PayloadCodec):
    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)


class OwnPayloadConverter(CompositePayloadConverter):
    def __init__(self) -> None:
        super().__init__(*DefaultPayloadConverter.default_encoding_payload_converters)


async def test_a_client_with_its_own_payload_converter_is_refused(
    engine: EmbeddedEngine, store: BlobStore
) -> None:
    own = DataConverter(payload_converter_class=OwnPayloadConverter)
    with pytest.raises(ConfigurationError, match=r"custom payload converter .*OwnPayloadConverter"):
        await Client.connect(
            engine.address, data_converter=own, plugins=[TetherPlugin(store=store)]
        )


async def test_a_codec_of_the_users_is_kept(engine: EmbeddedEngine, store: BlobStore) -> None:
    codec = NoopCodec()
    client = await Client.connect(
        engine.address,
        data_converter=DataConverter(payload_codec=codec),
        plugins=[TetherPlugin(store=store)],
    )
    assert client.data_converter.payload_codec is codec
    assert issubclass(client.data_converter.payload_converter_class, TetherPayloadConverter)
    assert client.data_converter.external_storage is not None


async def test_plugin_on_a_worker_whose_client_lacks_it_is_refused(
    engine: EmbeddedEngine, store: BlobStore, task_queue: str
) -> None:
    plain = await Client.connect(engine.address)
    with pytest.raises(ConfigurationError, match=r"Client\.connect"):
        Worker(
            plain,
            task_queue=task_queue,
            workflows=[SupportTicket],
            activities=[lookup_customer],
            plugins=[TetherPlugin(store=store)],
        )


def users_worker(runtime: Runtime, store: BlobStore, task_queue: str, **options: Any) -> Worker:
    """A worker of the user's own workflow and activity, with the plugin."""
    return Worker(
        runtime.client,
        task_queue=task_queue,
        workflows=[SupportTicket],
        activities=[lookup_customer],
        plugins=[TetherPlugin(store=store)],
        **options,
    )


async def test_plugin_on_a_worker_of_a_tether_client_works(
    runtime: Runtime, store: BlobStore, task_queue: str
) -> None:
    worker = users_worker(runtime, store, task_queue)
    config = worker.config(active_config=True)
    tether_steps = worker_options(store)["activities"]
    assert len(tether_steps) >= 4  # both adapters' model and tool steps, at least
    assert len(config["activities"]) == 1 + len(tether_steps)
    assert AgentRun in config["workflows"]


async def test_a_users_worker_gets_tethers_recovery_timing(
    runtime: Runtime, store: BlobStore, task_queue: str
) -> None:
    """The worker settings a run's recovery in seconds depends on, where the worker keeps
    the SDK's defaults: beats out within 0.5 s, a dead worker's cache let go after 3 s, a
    run activation allowed 10 s. A value the user set is kept."""
    from datetime import timedelta

    from tether.core.runtime import ACTIVATION_LIMIT

    worker = users_worker(runtime, store, task_queue)
    config = worker.config(active_config=True)
    assert config["max_heartbeat_throttle_interval"] == timedelta(seconds=0.5)
    assert config["sticky_queue_schedule_to_start_timeout"] == timedelta(seconds=3)
    async with worker:
        inner = worker._workflow_worker
        assert inner is not None
        for _ in range(100):  # set as the worker starts running (the plugins' run_worker)
            if inner._deadlock_timeout_seconds == ACTIVATION_LIMIT:
                break
            await asyncio.sleep(0.05)
        assert inner._deadlock_timeout_seconds == ACTIVATION_LIMIT

    own = users_worker(
        runtime, store, task_queue, sticky_queue_schedule_to_start_timeout=timedelta(seconds=7)
    )
    mine = own.config(active_config=True)
    assert mine["sticky_queue_schedule_to_start_timeout"] == timedelta(seconds=7)
    assert mine["max_heartbeat_throttle_interval"] == timedelta(seconds=0.5)


async def test_run_agent_outside_a_workflow_says_what_to_use() -> None:
    with pytest.raises(ConfigurationError, match=r"tether.durable\(agent\).run"):
        await run_agent("weather", "hi")


async def test_the_example_runs_without_an_api_key(engine: EmbeddedEngine) -> None:
    example = Path(__file__).parents[1] / "examples" / "temporal_workflow.py"
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["TEMPORAL_ADDRESS"] = engine.address
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(example),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=180)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode()
    assert proc.returncode == 0, text
    assert "answer    Yes: a Heat Advisory" in text, text
