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
``run.continued``       ``segment``, ``steps``: a long run continued as new (a new segment of
                        the same run, first event of that segment; offsets go on)
``model.started``       ``step``, ``summary``
``model.finished``      ``step``, ``summary``, ``attempt``
``model.delta``         ``step``, ``attempt``, ``text`` (runs started with ``stream_text=True``);
                        ``raw``: the framework's own stream event, in streamed runs
                        (``run_streamed``, ``run_stream``, ``iter``, event handlers)
``model.event``         ``step``, ``attempt``, ``raw``: a framework stream event without text
``model.unstreamed``    ``agent``, ``reason``: the provider did not stream; the step made a plain
                        request (once), and the run's later model steps do not ask to stream
``<adapter>.stream``    a framework event the *run* produced (e.g. the Agents SDK's run item
                        and agent-updated events), for the framework-shaped streams
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
:class:`AttemptFilter` does that bookkeeping for framework-shaped streams: a retried attempt
that repeats what the dead one streamed continues seamlessly, one that differs is announced
by a :class:`StreamRetracted` first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

EVENTS_TOPIC = "tether.events"

RUN_STARTED = "run.started"
RUN_FINISHED = "run.finished"
RUN_FAILED = "run.failed"
RUN_CANCELLED = "run.cancelled"
RUN_CONTINUED = "run.continued"
MODEL_RESPONSE = "model.response"
MODEL_DELTA = "model.delta"
MODEL_EVENT = "model.event"
MODEL_UNSTREAMED = "model.unstreamed"
MODEL_STATE_FALLBACK = "model.state_fallback"
"""A model step chained to a stored response (Responses state mode) found it gone and sent the
whole conversation instead."""
MODEL_STARTED = "model.started"
MODEL_FINISHED = "model.finished"
MODEL_FAILED = "model.failed"
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
        elif self.type == RUN_CONTINUED:
            text = f"run continued: segment {d.get('segment')} (after {d.get('steps')} steps)"
        elif self.type.endswith(".started") and "summary" in d:
            text = f"{d['summary']} started"
        elif self.type.endswith(".finished") and "summary" in d:
            err = f" -> error {d['error']}" if d.get("error") else ""
            retry = f" (attempt {d['attempt']})" if d.get("attempt", 1) > 1 else ""
            text = f"{d['summary']} finished{retry}{err}"
        elif self.type == MODEL_DELTA:
            text = f"model text: {d.get('text')!r}"
        elif self.type == MODEL_EVENT:
            raw = d.get("raw")
            kind = raw.get("type", raw.get("event_kind")) if isinstance(raw, dict) else None
            text = f"model stream: {kind}"
        elif self.type == MODEL_UNSTREAMED:
            text = f"model did not stream: {d.get('reason')}"
        elif self.type == MODEL_STATE_FALLBACK:
            text = f"model state lost, full request: {d.get('reason')}"
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


@dataclass(frozen=True)
class StreamRetracted:
    """What a framework-shaped stream yields when a model step's attempt died after streaming
    part of its reply and the next attempt streamed something else: drop what was shown of
    step ``step``'s reply (``text``, from attempt ``attempt``); the next attempt's events
    follow from its start. Never yielded when the retry repeats what was shown."""

    step: int
    attempt: int
    text: str
    type: str = "stream_retracted"


class AttemptFilter:
    """Turns a run's streamed model events (``model.delta``/``model.event``, several
    attempts per step) into what a reader should show, exactly once.

    :meth:`feed` takes each run event and returns the model events to show now, in order,
    possibly led by a :class:`StreamRetracted`. Events of a later attempt that repeat what the
    previous attempt showed are skipped (a deterministic retry continues seamlessly); at the
    first difference, or if the step finishes with less than was shown, the previous
    attempt's events are retracted and the new attempt's are shown from its start. A step
    that fails after its retries has what it streamed retracted.
    """

    def __init__(self) -> None:
        self._step: int | None = None
        self._attempt = 0
        self._shown: list[RunEvent] = []  # the attempt whose events the reader holds
        self._prior: list[RunEvent] | None = None  # while comparing a retry against them
        self._matched = 0
        self._pending: list[RunEvent] = []  # the retry's events, while they match

    @staticmethod
    def _same(a: RunEvent, b: RunEvent) -> bool:
        return a.data.get("raw", a.data.get("text")) == b.data.get("raw", b.data.get("text"))

    def _retract(self) -> list[RunEvent | StreamRetracted]:
        prior = self._prior or []
        text = "".join(str(e.data.get("text") or "") for e in prior)
        gone = StreamRetracted(
            step=self._step or 0, attempt=prior[0].data.get("attempt", 0) if prior else 0, text=text
        )
        out: list[RunEvent | StreamRetracted] = [gone, *self._pending]
        self._shown = list(self._pending)
        self._prior, self._pending, self._matched = None, [], 0
        return out

    def feed(self, event: RunEvent) -> list[RunEvent | StreamRetracted]:
        if event.type in (MODEL_FINISHED, MODEL_FAILED):
            out: list[RunEvent | StreamRetracted] = []
            if self._prior is not None and self._matched < len(self._prior):
                out = self._retract()
            if event.type == MODEL_FAILED and self._shown and self._prior is None:
                # The step failed for good: nothing it streamed is an answer.
                self._prior, self._pending = self._shown, []
                out = self._retract()[:1]
            self._step, self._attempt, self._shown, self._prior = None, 0, [], None
            self._pending, self._matched = [], 0
            return out
        if event.type not in (MODEL_DELTA, MODEL_EVENT):
            return []
        step, attempt = event.data.get("step"), int(event.data.get("attempt", 1))
        if step != self._step:
            self._step, self._attempt, self._shown = step, attempt, []
            self._prior, self._pending, self._matched = None, [], 0
        elif attempt < self._attempt:
            return []  # a late batch of an attempt already replaced
        elif attempt > self._attempt:
            # A new attempt: compare it with everything shown so far of this step.
            self._prior = list(self._shown) if self._prior is None else self._prior
            self._pending, self._matched, self._attempt = [], 0, attempt
        if self._prior is None:
            self._shown.append(event)
            return [event]
        self._pending.append(event)
        if self._matched < len(self._prior) and self._same(self._prior[self._matched], event):
            self._matched += 1
            return []
        if self._matched == len(self._prior):
            # The retry repeated all that was shown and goes on: show the rest as usual.
            self._shown = list(self._pending)
            self._prior, self._pending, self._matched = None, [], 0
            return [event]
        return self._retract()


class _EventSource(Protocol):
    def events(
        self, after: int | None = None, *, poll_interval: float = ..., idle_interval: float = ...
    ) -> AsyncIterator[RunEvent]: ...


async def reader_events(
    handle: _EventSource,
    stream_type: str,
    from_offset: int = 0,
    *,
    poll_interval: float = 0.05,
    idle_interval: float = 0.2,
) -> AsyncIterator[tuple[int, RunEvent | StreamRetracted]]:
    """What a streaming reader shows of a run, from ``from_offset``: retractions, the model
    events of the attempt to show (see :class:`AttemptFilter`) and the adapter's own stream
    events (``stream_type``), each with the offset to resume from once it is handled (the
    offset after the run event it came from). Adapters decode the items into their
    framework's event types."""
    attempts = AttemptFilter()
    after = from_offset - 1 if from_offset > 0 else None
    async for event in handle.events(
        after, poll_interval=poll_interval, idle_interval=idle_interval
    ):
        shown: list[RunEvent | StreamRetracted] = list(attempts.feed(event))
        if event.type == stream_type:
            shown.append(event)
        for i, item in enumerate(shown):
            yield (event.offset + 1 if i == len(shown) - 1 else event.offset), item
