"""The run: one generic Temporal workflow hosting any adapter's loop.

The adapter's loop runs inside :class:`AgentRun` unchanged, with model and tool calls
swapped for steps (activities). Everything here must be deterministic: the run is rebuilt
by replaying its history after a crash.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from tether.core import registry
    from tether.core.contract import (
        JSON,
        RunRequest,
        StepError,
        StepKind,
        StepOutcome,
        StepPolicy,
        StepRequest,
    )
    from tether.core.conversation import Transcript
    from tether.core.steps import BLOB_MISSING
    from tether.core.store import canonical_json, digest
    from tether.errors import AgentNotRegisteredError

WORKFLOW_NAME = "tether.AgentRun"
STATUS_QUERY = "tether.status"


@dataclass
class RunResult:
    """What a finished run returns (the output is the adapter's JSON)."""

    output: JSON
    usage: dict[str, int] = field(default_factory=dict)
    steps: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)


class StepFailedError(Exception):
    """A step failed after its retries; the adapter decides what the run does."""

    def __init__(self, step: str, kind: str, message: str, error_type: str | None) -> None:
        super().__init__(f"{kind} step {step!r} failed: {message}")
        self.step = step
        self.kind = kind
        self.error_type = error_type
        self.reason = message


@workflow.defn(name=WORKFLOW_NAME)
class AgentRun:
    """Hosts one agent run; its name and input shape are persisted data."""

    def __init__(self) -> None:
        self._request: RunRequest | None = None
        self._transcript = Transcript()
        self._steps = 0
        self._usage: dict[str, int] = {}
        self._failures: list[dict[str, Any]] = []
        self._phase = "starting"
        self._current: str | None = None
        self._context_ref: str | None = None
        self._shared: dict[str, Any] = {}
        self._unsent: dict[str, Any] = {}

    @workflow.run
    async def run(self, request: RunRequest) -> RunResult:
        self._request = request
        if request.context is not None:
            self._context_ref = self.share(request.context)
        try:
            entry = registry.lookup(request.agent)
        except AgentNotRegisteredError as exc:
            raise ApplicationError(
                str(exc), type="AgentNotRegistered", non_retryable=True
            ) from None
        self._phase = "running"
        try:
            output = await entry.adapter.run(self, entry.agent, request)
        except FailureError:
            self._phase = "failed"
            raise
        except StepFailedError as exc:
            self._phase = "failed"
            raise ApplicationError(
                str(exc), type=exc.error_type or "StepFailed", non_retryable=True
            ) from None
        except Exception as exc:
            # Deterministic errors of the loop (max turns, bad output, a user error) fail the
            # run with their cause; retrying the workflow task forever would only hide them.
            self._phase = "failed"
            workflow.logger.debug("run failed", exc_info=True)
            raise ApplicationError(
                f"{type(exc).__name__}: {exc}", type=type(exc).__name__, non_retryable=True
            ) from exc
        self._phase = "completed"
        return RunResult(
            output=output, usage=dict(self._usage), steps=self._steps, failures=self._failures
        )

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> dict[str, Any]:
        return {
            "phase": self._phase,
            "agent": self._request.agent if self._request else None,
            "steps": self._steps,
            "current_step": self._current,
            "usage": dict(self._usage),
            "failures": list(self._failures),
        }

    # -- RunSession ------------------------------------------------------------------------

    @property
    def run_id(self) -> str:
        return workflow.info().workflow_id

    @property
    def agent_name(self) -> str:
        assert self._request is not None
        return self._request.agent

    def transcript(self) -> Transcript:
        return self._transcript

    async def step(
        self,
        name: str,
        payload: JSON,
        *,
        kind: StepKind,
        summary: str,
        policy: StepPolicy,
        transcript: Sequence[JSON] | None = None,
    ) -> StepOutcome:
        tref = self._transcript.reference(transcript) if transcript is not None else None
        attachments, self._unsent = self._unsent, {}
        request = StepRequest(
            run_id=self.run_id,
            agent=self.agent_name,
            payload=payload,
            transcript=tref,
            context_ref=self._context_ref,
            attachments=attachments,
        )
        self._current = summary
        try:
            try:
                outcome = await self._execute(name, request, summary, policy)
            except ActivityError as exc:
                cause = exc.cause
                if not (isinstance(cause, ApplicationError) and cause.type == BLOB_MISSING):
                    raise
                # This worker's store lacks what earlier steps stored: send it all inline.
                inline = self._transcript.segments_for(tref.base if tref else None)
                inline.update(self._shared)
                request = StepRequest(
                    run_id=request.run_id,
                    agent=request.agent,
                    payload=payload,
                    transcript=tref,
                    context_ref=self._context_ref,
                    attachments=inline,
                )
                outcome = await self._execute(name, request, summary, policy)
        except ActivityError as exc:
            cause = exc.cause
            message = cause.message if isinstance(cause, FailureError) else str(exc)
            error_type = cause.type if isinstance(cause, ApplicationError) else None
            self._failures.append(
                {"step": name, "summary": summary, "type": error_type, "message": message}
            )
            raise StepFailedError(name, kind, message, error_type) from None
        finally:
            self._current = None
        self._steps += 1
        if outcome.error is not None:
            self.record_failure(summary, outcome.error)
        return outcome

    async def _execute(
        self, name: str, request: StepRequest, summary: str, policy: StepPolicy
    ) -> StepOutcome:
        outcome: StepOutcome = await workflow.execute_activity(
            name,
            request,
            result_type=StepOutcome,
            start_to_close_timeout=policy.start_to_close,
            heartbeat_timeout=policy.heartbeat,
            retry_policy=RetryPolicy(
                initial_interval=policy.initial_interval,
                backoff_coefficient=policy.backoff,
                maximum_interval=policy.max_interval,
                maximum_attempts=policy.max_attempts,
                non_retryable_error_types=list(policy.non_retryable_errors) or None,
            ),
            summary=summary[:200],
        )
        return outcome

    def share(self, value: JSON) -> str:
        ref = digest(canonical_json(value))
        if ref not in self._shared:
            self._shared[ref] = value
            self._unsent[ref] = value
        return ref

    def record_failure(self, step: str, error: StepError) -> None:
        self._failures.append(
            {
                "step": step,
                "type": error.type,
                "message": error.message,
                "attempts": error.attempts,
            }
        )

    def add_usage(self, usage: Mapping[str, int]) -> None:
        for key, value in usage.items():
            self._usage[key] = self._usage.get(key, 0) + int(value)

    def usage(self) -> dict[str, int]:
        return dict(self._usage)
