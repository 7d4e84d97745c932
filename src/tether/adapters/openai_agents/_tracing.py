"""The SDK's own tracing inside durable runs: one trace per run, each event emitted once.

The SDK's trace processors (``add_trace_processor``, ``set_trace_processors``, the default
export to OpenAI) receive a run's trace, agent, generation, function, handoff and MCP spans
as they would outside Tether. Inside a run:

- ids (trace, span, group) come from the run's own deterministic random: a worker that
  replays the run after a crash rebuilds the same trace and spans;
- a processor is called only when the run executes that point for the first time (not
  while it replays its history), so each trace start, span start and span end reaches the
  processors once over all the workers that ran the run. A span open when its worker died
  (the step in flight) is ended by the worker that resumes the run.

On when the SDK's tracing is on (its default); off with ``OPENAI_AGENTS_DISABLE_TRACING=1``
or ``agents.set_tracing_disabled(True)``, and then nothing of this runs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agents.tracing import Span, Trace, get_trace_provider, set_trace_provider, trace
from agents.tracing.provider import DefaultTraceProvider, SynchronousMultiTracingProcessor

from tether.core.contract import RunSession

RANDOM = "openai_agents.tracing"


def _session() -> RunSession | None:
    from tether.adapters.openai_agents._workflow_side import current_run

    run = current_run()
    return run.session if run is not None else None


def _live() -> bool:
    """False while the run this code runs in replays its history."""
    session = _session()
    return session is None or not session.replaying()


class _ReplayGate(SynchronousMultiTracingProcessor):
    """The SDK's processor list, silent while a run replays."""

    def on_trace_start(self, trace: Trace) -> None:
        if _live():
            super().on_trace_start(trace)

    def on_trace_end(self, trace: Trace) -> None:
        if _live():
            super().on_trace_end(trace)

    def on_span_start(self, span: Span[Any]) -> None:
        if _live():
            super().on_span_start(span)

    def on_span_end(self, span: Span[Any]) -> None:
        if _live():
            super().on_span_end(span)


class DurableTraceProvider(DefaultTraceProvider):
    """The SDK's default provider, replay-safe inside Tether runs (the same outside)."""

    def __init__(self, previous: object) -> None:
        super().__init__()
        gate = _ReplayGate()  # type: ignore[no-untyped-call]
        # Keep the processors (and the on/off switch) the process set up already.
        old = getattr(previous, "_multi_processor", None)
        gate.set_processors(list(getattr(old, "_processors", ())))
        self._multi_processor = gate
        self._manual_disabled = getattr(previous, "_manual_disabled", None)

    def _random_hex(self, bits: int) -> str | None:
        session = _session()
        if session is None:
            return None
        return f"{session.random(RANDOM).getrandbits(bits):0{bits // 4}x}"

    def gen_trace_id(self) -> str:
        found = self._random_hex(128)
        return f"trace_{found}" if found else super().gen_trace_id()

    def gen_span_id(self) -> str:
        found = self._random_hex(96)
        return f"span_{found}" if found else super().gen_span_id()

    def gen_group_id(self) -> str:
        found = self._random_hex(96)
        return f"group_{found}" if found else super().gen_group_id()

    def time_iso(self) -> str:
        session = _session()
        if session is not None and session.replaying():
            return session.now().isoformat()  # when this point of the run first ran
        return super().time_iso()


def disabled_by_env() -> bool:
    return os.environ.get("OPENAI_AGENTS_DISABLE_TRACING", "false").lower() in ("true", "1")


def install() -> None:
    """Make the SDK's global trace provider replay-safe (once per process)."""
    provider = get_trace_provider()
    if isinstance(provider, DurableTraceProvider) or type(provider) is not DefaultTraceProvider:
        return  # already, or a provider of the user's own: left as it is
    set_trace_provider(DurableTraceProvider(provider))


@contextmanager
def run_trace(session: RunSession, workflow_name: str) -> Iterator[bool]:
    """The one SDK trace of a run (yields whether the run is traced)."""
    if disabled_by_env():
        yield False
        return
    install()
    current = trace(
        workflow_name,
        trace_id=get_trace_provider().gen_trace_id(),
        group_id=session.run_id,
        metadata={"tether.run_id": session.run_id, "tether.agent": session.agent_name},
    )
    current.start(mark_as_current=True)
    try:
        yield current.export() is not None
    finally:
        # A run evicted from the cache is closed by the garbage collector, in another
        # context than the one that entered the trace: nothing to restore there.
        with contextlib.suppress(ValueError):
            current.finish(reset_current=True)
