"""The user-facing run API: :class:`DurableAgent` and :class:`RunHandle`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, FailureError
from temporalio.service import RPCError

from tether.core import registry
from tether.core.contract import Adapter, RunRequest
from tether.core.run import STATUS_QUERY, WORKFLOW_NAME, RunResult
from tether.core.runtime import Runtime, default_runtime
from tether.core.values import pack
from tether.errors import RunFailedError

RUN_TASK_TIMEOUT = timedelta(seconds=4)


@dataclass(frozen=True)
class RunDescription:
    """A run's state as the engine and the run itself report it."""

    run_id: str
    agent: str | None
    status: str
    steps: int
    current_step: str | None
    usage: dict[str, int]
    failures: list[dict[str, Any]]


class RunHandle:
    """A started run: await its result, describe it, cancel it. Survives restarts by id."""

    def __init__(self, runtime: Runtime, run_id: str, agent: DurableAgent | None) -> None:
        self.runtime = runtime
        self.id = run_id
        self._agent = agent
        self._handle: WorkflowHandle[Any, RunResult] = runtime.client.get_workflow_handle(
            run_id, result_type=RunResult
        )

    async def raw_result(self) -> RunResult:
        """The run's result with usage and step counts (waits for the run to end)."""
        try:
            return await self._handle.result()
        except WorkflowFailureError as exc:
            cause = exc.cause
            while (
                isinstance(cause, FailureError)
                and cause.cause is not None
                and not (isinstance(cause, ApplicationError))
            ):
                cause = cause.cause
            message = cause.message if isinstance(cause, FailureError) else str(cause)
            error_type = cause.type if isinstance(cause, ApplicationError) else None
            raise RunFailedError(self.id, message, error_type=error_type) from exc

    async def result(self) -> Any:
        """The final output, as the framework's own run would return it."""
        raw = await self.raw_result()
        if self._agent is None:
            return raw.output
        return self._agent.adapter.decode_output(self._agent.agent, raw.output)

    async def describe(self) -> RunDescription:
        desc = await self._handle.describe()
        status = desc.status.name.lower() if desc.status else "unknown"
        state: dict[str, Any] = {}
        if desc.status == WorkflowExecutionStatus.RUNNING:
            try:
                state = await self._handle.query(STATUS_QUERY)
            except RPCError:
                state = {}
        elif desc.status == WorkflowExecutionStatus.COMPLETED:
            raw = await self._handle.result()
            state = {"steps": raw.steps, "usage": raw.usage, "failures": raw.failures}
        return RunDescription(
            run_id=self.id,
            agent=state.get("agent") or (self._agent.name if self._agent else None),
            status=status,
            steps=int(state.get("steps", 0)),
            current_step=state.get("current_step"),
            usage=dict(state.get("usage", {})),
            failures=list(state.get("failures", [])),
        )

    async def cancel(self) -> None:
        await self._handle.cancel()


class DurableAgent:
    """An agent of any supported framework, run durably. Made by :func:`tether.durable`."""

    def __init__(
        self,
        agent: object,
        adapter: Adapter,
        *,
        name: str | None = None,
        runtime: Runtime | None = None,
        task_queue: str | None = None,
        local_worker: bool = True,
    ) -> None:
        adapter.prepare(agent)
        self.agent = agent
        self.adapter = adapter
        self.name = name or adapter.agent_name(agent)
        self._runtime = runtime
        self.task_queue = task_queue
        self.local_worker = local_worker
        registry.register(self.name, agent, adapter)

    async def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = await default_runtime()
        return self._runtime

    async def start(
        self,
        input: Any,
        *,
        id: str | None = None,
        context: Any = None,
        deps: Any = None,
        **options: Any,
    ) -> RunHandle:
        """Start a run and return at once. Starting again with the same ``id`` is a no-op.

        ``context`` (OpenAI Agents SDK) and ``deps`` (Pydantic AI) are the same thing: the
        value handed to tools, sent to workers once per run.
        """
        if deps is not None:
            if context is not None:
                raise TypeError("pass context= or deps=, not both")
            context = deps
        if context is not None:
            context = self.adapter.prepare_context(self.agent, context)
        packed = pack(context, what="run context") if context is not None else None
        encoded = self.adapter.encode_options(self.agent, options)
        runtime = await self.runtime()
        if self.local_worker:
            await runtime.ensure_local_worker()
        run_id = id or f"{self.name}-{uuid.uuid4().hex[:12]}"
        request = RunRequest(
            agent=self.name,
            adapter=self.adapter.name,
            input=self.adapter.encode_input(input),
            options=encoded,
            context=packed,
        )
        try:
            await runtime.client.start_workflow(
                WORKFLOW_NAME,
                request,
                id=run_id,
                task_queue=self.task_queue or runtime.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                static_summary=f"{self.adapter.name}: {self.name}",
                # A task lost with a killed worker is retried after this long (Temporal's
                # default is 10 s); a run's task is milliseconds of loop code.
                task_timeout=RUN_TASK_TIMEOUT,
            )
        except Exception as exc:
            # An earlier run with this id already finished: the id is the idempotency key.
            if type(exc).__name__ != "WorkflowAlreadyStartedError":
                raise
        return RunHandle(runtime, run_id, self)

    async def run(
        self,
        input: Any,
        *,
        id: str | None = None,
        context: Any = None,
        deps: Any = None,
        **options: Any,
    ) -> Any:
        """Run to the end and return the framework's result."""
        handle = await self.start(input, id=id, context=context, deps=deps, **options)
        return await handle.result()

    def handle(self, run_id: str, runtime: Runtime) -> RunHandle:
        """A handle on an existing run of this agent."""
        return RunHandle(runtime, run_id, self)


def durable(
    agent: object,
    *,
    name: str | None = None,
    runtime: Runtime | None = None,
    task_queue: str | None = None,
    local_worker: bool = True,
) -> DurableAgent:
    """Wrap an agent of any installed framework so its runs are durable.

    The adapter is found through the ``tether`` plugins; the agent is registered in this
    process, so a worker started here (or ``tether worker``) hosts it.
    """
    from tether.plugins import adapter_for

    return DurableAgent(
        agent,
        adapter_for(agent),
        name=name,
        runtime=runtime,
        task_queue=task_queue,
        local_worker=local_worker,
    )
