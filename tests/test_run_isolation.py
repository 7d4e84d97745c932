"""A run's leftover code never records anything in another run's history.

A run evicted from a worker's cache can leave suspended code behind; the garbage collector
closes it later, in whatever thread it runs, and its ``finally`` / ``except`` blocks then
execute inside another run's workflow task. A phase change there used to add an upsert
command to *that* run (seen in CI as "Nondeterminism error:
UpsertWorkflowSearchAttributesMachine does not handle ... ActivityTaskScheduled" when the
other run was replayed).
"""

from __future__ import annotations

import uuid

from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from tether.core.contract import RunRequest
from tether.core.run import AgentRun
from tether.core.runtime import Runtime


@workflow.defn(name="test.HostOfLeftovers", sandboxed=False)
class HostOfLeftovers:
    """Plays the other run: inside its task, code of a run that is not it changes phase."""

    @workflow.run
    async def run(self, own: bool) -> str:
        leftover = AgentRun(RunRequest(agent="x", adapter="x", input="x"))
        if not own:
            leftover._own_run_id = "a-run-evicted-earlier"
        leftover._phase_attribute = True  # as a run started with Tether's search attributes
        leftover._set_phase("failed")
        return leftover._phase


async def _upserts(runtime: Runtime, own: bool) -> tuple[str, int]:
    queue = f"test-{uuid.uuid4().hex[:10]}"
    async with Worker(
        runtime.client,
        task_queue=queue,
        workflows=[HostOfLeftovers],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        handle = await runtime.client.start_workflow(
            HostOfLeftovers.run, own, id=f"leftovers-{uuid.uuid4().hex[:8]}", task_queue=queue
        )
        phase = await handle.result()
        history = await handle.fetch_history()
    kind = EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
    return phase, sum(1 for e in history.events if e.event_type == kind)


async def test_leftover_code_of_another_run_records_no_phase_change(runtime: Runtime) -> None:
    phase, upserts = await _upserts(runtime, own=False)
    assert phase == "failed"  # its own state changed (nobody reads it any more)
    assert upserts == 0  # but nothing reached this run's history


async def test_a_run_records_its_own_phase_change(runtime: Runtime) -> None:
    # The same call in the run's own task records the phase (search attribute upsert).
    phase, upserts = await _upserts(runtime, own=True)
    assert (phase, upserts) == ("failed", 1)
