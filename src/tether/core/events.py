"""The run's event schema: what ``handle.events()`` and ``tether run --follow`` show.

Events are published by the run itself (steps publish only ``model.delta``) onto a
Temporal Workflow Stream (``temporalio.contrib.workflow_streams``). The run is
deterministic, so its event log is rebuilt identically when the run is replayed after a
crash or an eviction: no event is published twice, and a step's retries (inside one
activity) publish no run event again. Offsets
are global and stable, so a reader that reconnects with the last offset it saw misses
nothing and sees nothing twice.

Types (``RunEvent.type``) and their ``data``:

``run.started``         ``agent``, ``adapter``
``model.started``       ``step``, ``summary``
``model.finished``      ``step``, ``summary``, ``attempt``
``model.delta``         ``step``, ``attempt``, ``text`` (runs started with ``stream_text=True``)
``model.response``      ``text`` (the model's text, if any), ``tool_calls`` (names and ids)
``usage``               ``step``, ``model``, tokens of the step, ``cost``, ``total_tokens_run``
``tool.started``        ``step``, ``summary``, ``tool``, ``call_id``
``tool.finished``       ``step``, ``summary``, ``tool``, ``call_id``, ``attempt``, ``error``
``<kind>.failed``       ``step``, ``summary``, ``error`` (a step failed after its retries)
``approval.requested``  ``id``, ``tool``, ``args``, ``timeout``
``approval.answered``   ``id``, ``approved``, ``reason``, ``timed_out``
``question.asked``      ``id``, ``question``, ``timeout``
``question.answered``   ``id``, ``value``, ``timed_out``
``run.finished``        ``usage`` (totals), ``cost``
``run.failed``          ``error``, ``type``
``run.cancelled``       ``steps`` (completed steps; the run was cancelled)

``model.delta`` events are the one kind a *step* publishes (through a signal, batched every
200 ms and flushed before the step's result is recorded): they are a live preview. Each
carries its step and attempt; if an attempt fails after streaming some text, the next
attempt streams again under its own attempt number, so a reader showing a preview restarts
it when the attempt changes. The authoritative text is the run's ``model.response``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

EVENTS_TOPIC = "tether.events"

RUN_STARTED = "run.started"
RUN_FINISHED = "run.finished"
RUN_FAILED = "run.failed"
RUN_CANCELLED = "run.cancelled"
MODEL_RESPONSE = "model.response"
MODEL_DELTA = "model.delta"
USAGE = "usage"
APPROVAL_REQUESTED = "approval.requested"
APPROVAL_ANSWERED = "approval.answered"
QUESTION_ASKED = "question.asked"
QUESTION_ANSWERED = "question.answered"


@dataclass(frozen=True)
class RunEvent:
    """One event of a run. ``offset`` is its position in the run's stream (from 0)."""

    offset: int
    type: str
    time: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        """Whether this is the run's last event."""
        return self.type in (RUN_FINISHED, RUN_FAILED, RUN_CANCELLED)

    def describe(self) -> str:
        """One human-readable line (what ``tether run --follow`` prints)."""
        d = self.data
        if self.type == RUN_STARTED:
            text = f"run started: {d.get('agent')} ({d.get('adapter')})"
        elif self.type.endswith(".started") and "summary" in d:
            text = f"{d['summary']} started"
        elif self.type.endswith(".finished") and "summary" in d:
            err = f" -> error {d['error']}" if d.get("error") else ""
            retry = f" (attempt {d['attempt']})" if d.get("attempt", 1) > 1 else ""
            text = f"{d['summary']} finished{retry}{err}"
        elif self.type == MODEL_DELTA:
            text = f"model text: {d.get('text')!r}"
        elif self.type == MODEL_RESPONSE:
            calls = ", ".join(c["name"] for c in d.get("tool_calls", []))
            text = f"model says: {d.get('text')!r}" if d.get("text") else f"model calls: {calls}"
        elif self.type == USAGE:
            cost = f", ${d['cost']:.6f}" if d.get("cost") is not None else ""
            text = (
                f"usage: {d.get('input_tokens', 0)} in / {d.get('output_tokens', 0)} out"
                f"{cost} (run total {d.get('total_tokens_run', 0)} tokens)"
            )
        elif self.type == APPROVAL_REQUESTED:
            text = f"WAITING for approval {d['id']}: {d.get('tool')}({d.get('args')})"
        elif self.type == APPROVAL_ANSWERED:
            verdict = "approved" if d.get("approved") else "denied"
            why = f" ({d['reason']})" if d.get("reason") else ""
            text = f"{d['id']} {verdict}{why}" + (" [timed out]" if d.get("timed_out") else "")
        elif self.type == QUESTION_ASKED:
            text = f"WAITING for an answer {d['id']}: {d.get('question')}"
        elif self.type == QUESTION_ANSWERED:
            late = " [timed out]" if d.get("timed_out") else ""
            text = f"{d['id']} answered: {d.get('value')!r}{late}"
        elif self.type == RUN_FINISHED:
            text = f"run finished ({d.get('usage', {}).get('total_tokens', 0)} tokens)"
        elif self.type == RUN_FAILED:
            text = f"run failed: {d.get('error')}"
        elif self.type == RUN_CANCELLED:
            text = f"run cancelled (after {d.get('steps', 0)} steps)"
        else:
            text = f"{self.type} {d}"
        return f"#{self.offset} {text}"
