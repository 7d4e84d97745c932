"""Replaying a recorded run's history: the run must rebuild itself without a difference."""

from __future__ import annotations

from tether.core.runtime import Runtime


async def replays_cleanly(runtime: Runtime, run_id: str) -> None:
    """The recorded history replays without a difference (and without reaching a server)."""
    from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

    from tether.core.run import AgentRun

    history = await runtime.client.get_workflow_handle(run_id).fetch_history()
    replayer = Replayer(
        workflows=[AgentRun],
        workflow_runner=UnsandboxedWorkflowRunner(),
        data_converter=runtime.client.data_converter,
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure
