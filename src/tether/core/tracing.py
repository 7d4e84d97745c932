"""OpenTelemetry spans of runs, steps, waits and step attempts that survive replay.

Opt-in: spans are made when the process's global tracer provider is a replay-safe one
(:func:`tracer_provider`, or ``temporalio.contrib.opentelemetry.create_tracer_provider``),
unless ``TETHER_TRACING=0``. Off, nothing of OpenTelemetry is imported.

What is emitted when (docs/tracing.md):

- ``tether.run`` opens when the run starts and ends when it ends; ``tether.step.<kind>``
  opens when the run schedules the step and ends when the run receives its outcome;
  ``tether.wait.<kind>`` spans a wait. These live in the run (the workflow): their ids come
  from the run's deterministic random, so a worker that replays the run after a crash
  rebuilds the same spans, and a span is exported only by the worker that ends it *live*
  (never during replay). A span open when its worker died (the step in flight) is ended,
  once, by the worker that resumes the run.
- ``tether.attempt`` is one attempt of a step on the worker that ran it, a child of its
  step span (a retried step has several). An attempt killed with its worker is lost with
  the process: its step span counts the attempts (``tether.step.attempts``).

Built on ``temporalio.contrib.opentelemetry`` (its interceptor carries the context from the
client to the run and from the run to its steps, its provider makes ids deterministic and
skips spans ended during replay).
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    ExecuteWorkflowInput,
    Interceptor,
    StartActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from tether.errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

    from tether.core.contract import WaitAnswer, WaitRequest

logger = logging.getLogger(__name__)

TRACER_NAME = "tether"
ENV = "TETHER_TRACING"
"""``0`` turns Tether's spans off whatever the provider; ``1`` requires them (a worker whose
global tracer provider is not replay-safe refuses to start)."""
_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")
_warned = False
_traced: contextvars.ContextVar[bool] = contextvars.ContextVar("tether_traced_run", default=False)
"""Set in a traced run's task (and so in every task the run's loop starts)."""


def tracer_provider(**kwargs: Any) -> TracerProvider:
    """A replay-safe OpenTelemetry tracer provider: set it as the global one
    (``opentelemetry.trace.set_tracer_provider``) and add your span processors to it.

    Keyword arguments go to ``temporalio.contrib.opentelemetry.create_tracer_provider``
    (``resource``, ``sampler``, ...). Needs the ``tracing`` extra (``tether[tracing]``)."""
    try:
        from temporalio.contrib.opentelemetry import create_tracer_provider
    except ImportError as exc:
        raise ConfigurationError(
            f"tracing needs the OpenTelemetry SDK ({exc}). Fix: pip install 'tether[tracing]'"
        ) from exc
    return create_tracer_provider(**kwargs)  # type: ignore[return-value]


def enabled() -> bool:
    """Whether this process makes Tether's spans (see the module's docstring)."""
    global _warned
    setting = os.environ.get(ENV, "").strip().lower()
    if setting in _OFF:
        return False
    if "opentelemetry.trace" not in sys.modules and setting not in _ON:
        return False  # nobody configured OpenTelemetry: cost nothing
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if type(provider).__name__ == "ReplaySafeTracerProvider":
        return True
    if setting in _ON:
        raise ConfigurationError(
            f"{ENV}=1 but the global OpenTelemetry tracer provider is "
            f"{type(provider).__name__}, which would emit a run's spans again on every "
            "replay. Fix: set tether.tracing.tracer_provider() as the global provider "
            "(opentelemetry.trace.set_tracer_provider) before the worker starts"
        )
    if type(provider).__name__ not in ("ProxyTracerProvider", "NoOpTracerProvider") and not _warned:
        _warned = True
        logger.warning(
            "runs are not traced: the global tracer provider (%s) is not replay-safe. Fix: "
            "create it with tether.tracing.tracer_provider() (see docs/tracing.md)",
            type(provider).__name__,
        )
    return False


def client_interceptors() -> list[Any]:
    """What a client adds when tracing is on: the caller's span reaches the run. (Only
    workers refuse to start for ``TETHER_TRACING=1``: a client without the provider just
    starts runs without a parent span.)"""
    try:
        if not enabled():
            return []
    except ConfigurationError:
        return []
    from temporalio.contrib.opentelemetry import OpenTelemetryInterceptor

    return [OpenTelemetryInterceptor()]


def worker_interceptors(client: Client, kinds: Mapping[str, str]) -> list[Interceptor]:
    """What a worker adds when tracing is on (the context interceptor only when its client
    does not bring one already). ``kinds`` maps step names to their kind."""
    if not enabled():
        return []
    from temporalio.contrib.opentelemetry import OpenTelemetryInterceptor

    found: list[Interceptor] = []
    if not any(isinstance(i, OpenTelemetryInterceptor) for i in client.config()["interceptors"]):
        found.append(OpenTelemetryInterceptor())
    found.append(TetherTracing(kinds))  # inner: it sees the context the first one attached
    return found


def _tracer() -> Any:
    from opentelemetry import trace

    return trace.get_tracer(TRACER_NAME)


class TetherTracing(Interceptor):
    """Spans of Tether's runs (``tether.run``), steps (``tether.step.<kind>``) and step
    attempts (``tether.attempt``). Comes after ``OpenTelemetryInterceptor`` in a worker's
    interceptors."""

    def __init__(self, kinds: Mapping[str, str]) -> None:
        self.kinds = dict(kinds)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        kinds = self.kinds

        class _Inbound(_RunInbound):
            step_kinds = kinds

        return _Inbound

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _AttemptInbound(next, self.kinds)


def _is_run() -> bool:
    from tether.core.run import WORKFLOW_NAME

    return workflow.info().workflow_type == WORKFLOW_NAME


class _RunInbound(WorkflowInboundInterceptor):
    step_kinds: Mapping[str, str] = {}

    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_RunOutbound(outbound, self.step_kinds))

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        if not _is_run():
            return await super().execute_workflow(input)
        request = input.args[0] if input.args else None
        agent = getattr(request, "agent", None)
        info = workflow.info()
        attributes = {
            "tether.run_id": info.workflow_id,
            "tether.agent": str(agent),
            "tether.adapter": str(getattr(request, "adapter", None)),
            "temporalWorkflowID": info.workflow_id,
            "temporalRunID": info.run_id,
        }
        _traced.set(True)
        with _tracer().start_as_current_span("tether.run", attributes=attributes) as span:
            from opentelemetry.trace import StatusCode

            try:
                result = await super().execute_workflow(input)
            except BaseException as exc:
                if workflow.is_failure_exception(exc):
                    span.set_status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}")
                raise
            span.set_attribute("tether.steps", int(getattr(result, "steps", 0) or 0))
            return result


class _RunOutbound(WorkflowOutboundInterceptor):
    def __init__(self, next: WorkflowOutboundInterceptor, kinds: Mapping[str, str]) -> None:
        super().__init__(next)
        self._kinds = kinds

    def start_activity(self, input: StartActivityInput) -> workflow.ActivityHandle[Any]:
        if not _is_run():
            return super().start_activity(input)
        from opentelemetry import context, trace

        kind = self._kinds.get(input.activity, "other")
        request = input.args[0] if input.args else None
        attributes: dict[str, Any] = {
            "tether.step.name": input.activity,
            "tether.step.kind": kind,
            "tether.step": int(getattr(request, "step", 0) or 0),
            "tether.step.summary": input.summary or "",
        }
        span = _tracer().start_span(f"tether.step.{kind}", attributes=attributes)
        token = context.attach(trace.set_span_in_context(span))
        try:
            handle = super().start_activity(input)  # the context interceptor injects `span`
        except BaseException:
            span.end()
            raise
        finally:
            context.detach(token)
        handle.add_done_callback(lambda done: _step_done(span, done))
        return handle


def _step_done(span: Span, done: Any) -> None:
    from opentelemetry.trace import StatusCode

    if done.cancelled():
        span.set_attribute("tether.step.cancelled", True)
        span.set_status(StatusCode.ERROR, "cancelled")
    elif (exc := done.exception()) is not None:
        cause = getattr(exc, "cause", None)
        message = getattr(cause, "message", None) or str(exc)
        span.set_attribute("tether.step.error", str(message)[:500])
        span.set_status(StatusCode.ERROR, str(message)[:200])
    else:
        outcome = done.result()
        span.set_attribute("tether.step.attempts", int(getattr(outcome, "attempt", 1)))
        error = getattr(outcome, "error", None)
        if error is not None:
            span.set_attribute("tether.step.error", f"{error.type}: {error.message}"[:500])
    span.end()


class _AttemptInbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, kinds: Mapping[str, str]) -> None:
        super().__init__(next)
        self._kinds = kinds

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        kind = self._kinds.get(info.activity_type)
        if kind is None or info.workflow_type is None:
            return await super().execute_activity(input)
        attributes = {
            "tether.step.name": info.activity_type,
            "tether.step.kind": kind,
            "tether.attempt": info.attempt,
            "tether.run_id": info.workflow_id or "",
        }
        with _tracer().start_as_current_span("tether.attempt", attributes=attributes):
            return await super().execute_activity(input)


@contextmanager
def wait_span(request: WaitRequest) -> Iterator[list[WaitAnswer]]:
    """A span over one wait of the run (no-op when tracing is off); append the answer to the
    yielded list to record it."""
    answers: list[WaitAnswer] = []
    if not _traced.get():
        yield answers
        return
    attributes: dict[str, Any] = {"tether.wait.id": request.id, "tether.wait.kind": request.kind}
    if request.tool:
        attributes["tether.wait.tool"] = request.tool
    with _tracer().start_as_current_span(f"tether.wait.{request.kind}", attributes=attributes) as s:
        yield answers
        for answer in answers:
            s.set_attribute("tether.wait.timed_out", answer.timed_out)
            if answer.approved is not None:
                s.set_attribute("tether.wait.approved", answer.approved)
