"""Tether inside your own Temporal code: a plugin for your client and workers, and agent
runs started as child workflows of your workflows.

    client = await Client.connect("localhost:7233", plugins=[TetherPlugin(agents=[agent])])
    worker = Worker(client, task_queue="support", workflows=[SupportTicket], activities=[...])

    @workflow.defn
    class SupportTicket:
        @workflow.run
        async def run(self, text: str) -> str:
            result = await run_agent("weather", text)   # a child run of tether.AgentRun
            return result.final_output

See docs/temporal-integration.md.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import workflow
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverter,
    DefaultFailureConverterWithEncodedAttributes,
    DefaultPayloadConverter,
)
from temporalio.exceptions import ApplicationError, CancelledError, ChildWorkflowError, FailureError
from temporalio.plugin import SimplePlugin
from temporalio.worker import ReplayerConfig, Worker, WorkerConfig, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from tether.core import codec, registry, tracing
from tether.core.codec import Keyring, with_encryption
from tether.core.contract import Budget, WaitPolicy
from tether.core.converter import EXTERNAL_THRESHOLD, TetherPayloadConverter, data_converter
from tether.core.handle import RUN_TASK_TIMEOUT, DurableAgent
from tether.core.run import WORKFLOW_NAME, AgentRun, RunResult
from tether.core.runtime import (
    HEARTBEAT_SEND_INTERVAL,
    STICKY_TIMEOUT,
    patient_deadlock_detection,
    step_kinds,
    worker_options,
)
from tether.core.store import BlobStore, default_home
from tether.errors import AgentRunFailedError, ConfigurationError

__all__ = [
    "PLUGIN_NAME",
    "AgentRunChild",
    "TetherPlugin",
    "run_agent",
    "start_agent",
]

PLUGIN_NAME = "tether.TetherPlugin"

PASSTHROUGH_MODULES = ("tether",)
"""Modules the plugin passes through the workflow sandbox (plus each agent's framework)."""

SPEEDS: dict[str, timedelta] = {
    "max_heartbeat_throttle_interval": HEARTBEAT_SEND_INTERVAL,
    "sticky_queue_schedule_to_start_timeout": STICKY_TIMEOUT,
}
"""Worker settings the plugin sets where the worker keeps the SDK's default (a value of the
user's is kept): those of a ``tether worker``."""


class TetherPlugin(SimplePlugin):
    """Adds Tether to your own Temporal client and workers.

    On a client (``Client.connect(..., plugins=[...])``, recommended: every worker built on
    the client gets the plugin too) it sets Tether's data converter. On a worker it
    registers ``tether.AgentRun`` (which runs unsandboxed on its own) and every installed
    adapter's step activities, passes ``tether`` through the workflow sandbox, and
    registers ``agents`` (framework agents or :func:`tether.durable` objects) in this
    process, so runs of them can start on the worker's task queue.

    ``store`` is the blob store large payloads and conversation segments go to; workers of
    one namespace should share it (default: ``TETHER_STORE`` or ``~/.tether/store``).

    ``encryption`` (default: the keyring ``TETHER_ENCRYPTION_KEY`` or
    ``TETHER_ENCRYPTION_KEY_FILE`` names) encrypts the store and, through Tether's payload
    codec, the client's history, as ``tether.Runtime`` does; a codec of your own on the
    client is kept and runs first (Tether's encrypts its output). See docs/security.md.
    """

    def __init__(
        self,
        agents: Iterable[object] = (),
        *,
        store: BlobStore | Path | str | None = None,
        passthrough_modules: Sequence[str] = (),
        encryption: Keyring | None = None,
    ) -> None:
        self.keyring = encryption if encryption is not None else Keyring.from_env()
        if self.keyring is not None:
            codec.configure(self.keyring)
        if isinstance(store, BlobStore):
            self.store = store
        else:
            self.store = BlobStore(
                store or os.environ.get("TETHER_STORE") or default_home() / "store"
            )
        if self.keyring is not None:
            self.store.encrypt_with(self.keyring)
        self.agents = [_wrap(agent) for agent in agents]
        modules = {*PASSTHROUGH_MODULES, *passthrough_modules}
        modules.update(type(a.agent).__module__.partition(".")[0] for a in self.agents)
        self.passthrough_modules = sorted(modules)
        super().__init__(
            PLUGIN_NAME,
            data_converter=self._data_converter,
            workflow_runner=self._workflow_runner,
        )

    # -- client ----------------------------------------------------------------------------

    def _data_converter(self, existing: DataConverter | None) -> DataConverter:
        ours = data_converter(self.store, self.keyring)
        if existing is None or existing is DataConverter.default:
            return ours
        if issubclass(existing.payload_converter_class, TetherPayloadConverter):
            return existing  # Tether's already (a Runtime's client, or the plugin twice)
        if self.keyring is not None:
            failures = existing.failure_converter_class
            if failures is DefaultFailureConverter:  # a converter of the user's is kept
                failures = DefaultFailureConverterWithEncodedAttributes
            existing = dataclasses.replace(
                existing,
                payload_codec=with_encryption(existing.payload_codec, self.keyring),
                failure_converter_class=failures,
            )
        if existing.external_storage is not None:
            raise ConfigurationError(
                "the client already stores large payloads externally (DataConverter."
                "external_storage is set), and Tether keeps its own in its blob store. "
                "Fix: drop external_storage from your converter (Tether's keeps payloads of "
                f"{EXTERNAL_THRESHOLD} bytes or more in TetherPlugin(store=...)), or run "
                "Tether on a client of its own."
            )
        if existing.payload_converter_class not in (
            DefaultPayloadConverter,
            PydanticPayloadConverter,
        ):
            name = existing.payload_converter_class
            raise ConfigurationError(
                "the client already has a custom payload converter "
                f"({name.__module__}.{name.__qualname__}), and Tether needs its own (pydantic "
                "JSON, which Tether's run inputs and results are encoded with). Another plugin "
                "that sets a converter (e.g. the OpenAI Agents or Pydantic AI Temporal plugin) "
                "conflicts the same way. Fix: run Tether agents on a client (and worker) of "
                "their own (tether.Runtime), or subclass "
                "tether.core.converter.TetherPayloadConverter for your types."
            )
        # Temporal's default or pydantic payload converter: Tether's is a superset of both.
        # Keep the user's codec (encryption, compression) and failure converter.
        return dataclasses.replace(
            existing,
            payload_converter_class=ours.payload_converter_class,
            external_storage=ours.external_storage,
        )

    # -- worker ----------------------------------------------------------------------------

    def configure_worker(self, config: WorkerConfig) -> WorkerConfig:
        client = config.get("client")
        if client is not None and not issubclass(
            client.data_converter.payload_converter_class, TetherPayloadConverter
        ):
            raise ConfigurationError(
                "TetherPlugin is on this worker, but its client does not use Tether's data "
                "converter (a worker always uses its client's). Fix: pass the plugin to "
                "Client.connect(..., plugins=[TetherPlugin(...)]) instead (workers built on "
                "that client get it too), or build the worker on a tether.Runtime's client."
            )
        for durable in self.agents:
            registry.register(durable.name, durable.agent, durable.adapter)
        config = super().configure_worker(config)
        workflows = list(config.get("workflows", ()))
        if AgentRun in workflows:
            return config  # already applied (the plugin on both the client and the worker)
        options = worker_options(self.store)
        # Timing a run's recovery depends on, where the worker keeps the SDK's defaults: a
        # step's beat goes out within 0.5 s (the SDK may hold it up to 0.8 x the 2 s
        # heartbeat timeout, which a loaded machine turns into a lost step), and a run
        # whose worker died leaves that worker's cache after 3 s, not 10.
        sdk = inspect.signature(Worker.__init__).parameters
        for name, ours in SPEEDS.items():
            if config.get(name, sdk[name].default) == sdk[name].default:
                config[name] = ours  # type: ignore[literal-required]
        config["workflows"] = [*workflows, *options["workflows"]]
        config["activities"] = [*config.get("activities", ()), *options["activities"]]
        config["interceptors"] = [*config.get("interceptors", ()), *options["interceptors"]]
        if client is not None:  # Tether's spans when tracing is on (docs/tracing.md)
            extra = tracing.worker_interceptors(client, step_kinds())
            config["interceptors"] = [*config.get("interceptors", ()), *extra]
        return config

    async def run_worker(self, worker: Worker, next: Callable[[Worker], Awaitable[None]]) -> None:
        # A run activation may compute up to 10 s (a continued segment restoring its loop,
        # a replay on a loaded machine), not the SDK's 2 s: core/runtime.py.
        patient_deadlock_detection(worker)
        await super().run_worker(worker, next)

    def configure_replayer(self, config: ReplayerConfig) -> ReplayerConfig:
        for durable in self.agents:
            registry.register(durable.name, durable.agent, durable.adapter)
        config = super().configure_replayer(config)
        workflows = list(config.get("workflows", ()))
        if AgentRun not in workflows:
            config["workflows"] = [*workflows, AgentRun]
        return config

    def _workflow_runner(self, existing: WorkflowRunner | None) -> WorkflowRunner:
        # The user's workflows keep the sandbox if they use it; tether.AgentRun opts out of
        # it itself (sandboxed=False). Workflow code calling run_agent imports tether, which
        # must be the worker's own module (its registry of agents), not a sandboxed copy.
        if isinstance(existing, SandboxedWorkflowRunner):
            return dataclasses.replace(
                existing,
                restrictions=existing.restrictions.with_passthrough_modules(
                    *self.passthrough_modules
                ),
            )
        if existing is None:
            return SandboxedWorkflowRunner()
        return existing


# -- agent runs from workflow code ----------------------------------------------------------


class AgentRunChild:
    """An agent run started by :func:`start_agent` as a child of the current workflow."""

    def __init__(self, handle: workflow.ChildWorkflowHandle[Any, RunResult], agent: DurableAgent):
        self.handle = handle
        """The Temporal child workflow handle (``tether.AgentRun``; signal or cancel it)."""
        self.agent = agent

    @property
    def id(self) -> str:
        """The run id (the child's workflow id): ``tether runs show ID`` works on it."""
        return self.handle.id

    async def raw_result(self) -> RunResult:
        """The run's :class:`~tether.core.run.RunResult` (output JSON, usage, step count)."""
        try:
            return await self.handle
        except ChildWorkflowError as exc:
            cause: BaseException | None = exc.cause
            while (
                isinstance(cause, FailureError)
                and not isinstance(cause, ApplicationError | CancelledError)
                and cause.cause is not None
            ):
                cause = cause.cause
            if isinstance(cause, CancelledError):
                raise
            message = cause.message if isinstance(cause, FailureError) else str(cause or exc)
            error_type = cause.type if isinstance(cause, ApplicationError) else None
            raise AgentRunFailedError(
                self.id, self.agent.name, message, error_type=error_type
            ) from exc

    async def result(self) -> Any:
        """What ``DurableAgent.run`` returns: the adapter's decoded output (an
        ``AgentResult`` for the OpenAI Agents SDK, an ``AgentRunResult`` for Pydantic AI)."""
        raw = await self.raw_result()
        return self.agent.adapter.decode_output(self.agent.agent, raw.output)


async def start_agent(
    agent: object,
    input: Any,
    *,
    id: str | None = None,
    context: Any = None,
    deps: Any = None,
    task_queue: str | None = None,
    budget: Budget | None = None,
    waits: WaitPolicy | None = None,
    **options: Any,
) -> AgentRunChild:
    """Start a run of ``agent`` as a child workflow of the calling workflow.

    ``agent`` is a registered agent's name, a :class:`tether.DurableAgent`, or the framework
    agent itself (found in this worker's registry by identity, then by name). The run id
    defaults to ``"{parent workflow id}/agent-{n}"`` (n counts this workflow's agent runs
    from 1, so replays reuse it); the task queue to the agent's own, else the parent's,
    where :class:`TetherPlugin` registered the agents. ``options`` are the framework's run
    options (e.g. ``max_turns``), as for ``DurableAgent.run``.
    """
    if not workflow.in_workflow():
        raise ConfigurationError(
            "tether.contrib.temporal.start_agent/run_agent start a child workflow and only "
            "work inside workflow code. Fix: outside a workflow use "
            "tether.durable(agent).run(...) (or .start(...))."
        )
    durable = _resolve(agent)
    request = durable.request(
        input, context=context, deps=deps, budget=budget, waits=waits, **options
    )
    info = workflow.info()
    run_id = id or f"{info.workflow_id}/agent-{_next_number()}"
    handle: workflow.ChildWorkflowHandle[Any, RunResult] = await workflow.start_child_workflow(
        WORKFLOW_NAME,
        request,
        id=run_id,
        task_queue=task_queue or durable.task_queue or info.task_queue,
        result_type=RunResult,
        task_timeout=RUN_TASK_TIMEOUT,
        static_summary=f"{durable.adapter.name}: {durable.name}",
    )
    return AgentRunChild(handle, durable)


async def run_agent(
    agent: object,
    input: Any,
    *,
    id: str | None = None,
    context: Any = None,
    deps: Any = None,
    task_queue: str | None = None,
    budget: Budget | None = None,
    waits: WaitPolicy | None = None,
    **options: Any,
) -> Any:
    """Run ``agent`` as a child workflow and return the framework's result (what
    ``DurableAgent.run`` returns). A failed run raises
    :class:`~tether.errors.AgentRunFailedError` here. Arguments as :func:`start_agent`."""
    child = await start_agent(
        agent,
        input,
        id=id,
        context=context,
        deps=deps,
        task_queue=task_queue,
        budget=budget,
        waits=waits,
        **options,
    )
    return await child.result()


# Agent runs started per workflow instance; a replay builds a new instance, so it counts
# from 1 again and derives the same ids.
_started: weakref.WeakKeyDictionary[object, int] = weakref.WeakKeyDictionary()
_wrapped: dict[str, DurableAgent] = {}


def _next_number() -> int:
    instance = workflow.instance()
    try:
        n = _started.get(instance, 0) + 1
        _started[instance] = n
    except TypeError:
        raise ConfigurationError(
            f"cannot number the agent runs of workflow {type(instance).__qualname__}: its "
            "instances cannot be weakly referenced (__slots__ without __weakref__). Fix: pass "
            "a deterministic id=... to run_agent/start_agent."
        ) from None
    return n


def _wrap(agent: object) -> DurableAgent:
    from tether.core.handle import durable

    wrapped = agent if isinstance(agent, DurableAgent) else durable(agent, local_worker=False)
    _ = wrapped.source  # looked up here, outside workflows, for workers' error messages
    return wrapped


def _resolve(agent: object) -> DurableAgent:
    """The durable agent a workflow means, as registered in this worker process."""
    if isinstance(agent, DurableAgent):
        return agent
    hosted = registry.registered()
    name: str | None
    if isinstance(agent, str):
        entry = hosted.get(agent)
        name = agent
    else:
        entry = next((e for e in hosted.values() if e.agent is agent), None)
        name = _agent_name(agent)
        if entry is None and name is not None:
            # A workflow module re-run by the sandbox builds copies of its agents: same name.
            entry = hosted.get(name)
    if entry is None:
        have = ", ".join(sorted(hosted)) or "none"
        raise ConfigurationError(
            f"agent {name or agent!r} is not registered in this worker process (it hosts: "
            f"{have}). Fix: pass the agent to TetherPlugin(agents=[...]) on the workers that "
            "run this workflow."
        )
    cached = _wrapped.get(entry.name)
    if cached is None or cached.agent is not entry.agent:
        cached = DurableAgent(entry.agent, entry.adapter, name=entry.name, local_worker=False)
        _wrapped[entry.name] = cached
    return cached


def _agent_name(agent: object) -> str | None:
    from tether.plugins import adapter_for

    try:
        return adapter_for(agent).agent_name(agent)
    except Exception:
        return None
