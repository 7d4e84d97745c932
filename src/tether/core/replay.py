"""Input-level replay check: does a run's loop, replayed, ask for the very same steps?

Temporal's ``Replayer`` compares *commands* (which activity, in which order), not their
inputs. A loop that schedules the same kinds of steps with other inputs when it is replayed
(tool calls started in another order, a prompt embedding the current time, ids from
``uuid4()``) passes it, yet in production a resumed run then hands one call's result to
another, or misses every stored conversation segment. :func:`replay_check` replays a
recorded history, captures every step request the loop makes, and compares each with the
recorded one (as canonical JSON), reporting the first difference of each step.

Used by the conformance suite (invariant ``replay_inputs_equal``); usable on any stored
history (``WorkflowHistory.from_json``) whose agents the calling process has registered.
"""

from __future__ import annotations

import contextlib
import json
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic_core import to_jsonable_python
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    Replayer,
    StartActivityInput,
    UnsandboxedWorkflowRunner,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)
from temporalio.workflow import ActivityHandle

from tether.core.contract import StepRequest
from tether.core.run import AgentRun
from tether.core.steps import TRANSCRIPT_ACTIVITY

DEFAULT_CLOCK_SHIFT = timedelta(days=1, hours=1, minutes=1, seconds=1, milliseconds=1)
"""How far the wall clock is moved during a shifted replay: every field of a date changes."""

DifferenceKind = Literal["input", "missing", "replay_failure"]


@dataclass(frozen=True, kw_only=True)
class ReplayDifference:
    """One step whose replayed request is not the recorded one (or a replay that failed)."""

    kind: DifferenceKind
    """``input``: another request; ``missing``: the replay did not ask for a recorded step;
    ``replay_failure``: Temporal's own replay check failed (other commands)."""
    index: int
    """The step's position among the run's scheduled steps (1-based; 0 for a failure)."""
    name: str
    """The step's persisted name (its activity type)."""
    step: int | None = None
    """The step's number in its run (``StepRequest.step``), when known."""
    path: str = ""
    """Where the two requests first differ, as a JSON path (``$.transcript.delta[0]...``)."""
    recorded: str = ""
    replayed: str = ""
    recorded_request: Any = None
    """The whole recorded request as canonical JSON data (``input`` differences)."""
    replayed_request: Any = None
    """The whole replayed request as canonical JSON data (``input`` differences)."""

    def describe(self) -> str:
        """One line naming the step, the path and both values."""
        number = f" (step {self.step})" if self.step is not None else ""
        if self.kind == "replay_failure":
            return f"replay failed: {self.replayed}"
        if self.kind == "missing":
            return f"scheduled step #{self.index} {self.name}{number}: not requested on replay"
        return (
            f"scheduled step #{self.index} {self.name}{number}: request field {self.path} "
            f"was {self.recorded}, on replay {self.replayed}"
        )


@dataclass
class ReplayReport:
    """What :func:`replay_check` saw."""

    differences: list[ReplayDifference] = field(default_factory=list)
    compared: int = 0
    """Recorded step requests compared with their replayed ones."""


class _Capture(Interceptor):
    """Records every activity the replayed workflow starts, in order."""

    def __init__(self) -> None:
        self.started: list[tuple[str, list[Any]]] = []
        self.ended: str | None = None
        """How the replayed run ended with an error (its traceback, the cause's last), if
        it did: names what made a replay leave the recorded path."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        capture = self

        class _Outbound(WorkflowOutboundInterceptor):
            def start_activity(self, input: StartActivityInput) -> ActivityHandle[Any]:
                capture.started.append((input.activity, list(input.args)))
                return super().start_activity(input)

        class _Inbound(WorkflowInboundInterceptor):
            def init(self, outbound: WorkflowOutboundInterceptor) -> None:
                super().init(_Outbound(outbound))

            async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
                try:
                    return await super().execute_workflow(input)
                except BaseException as exc:
                    # Not the engine tearing the replayed run down (an eviction cancels
                    # what still runs): that says nothing about why it left the path.
                    if capture.ended is None and "Evicted" not in type(exc).__name__:
                        root: BaseException = exc
                        while root.__cause__ is not None:
                            root = root.__cause__
                        capture.ended = "".join(traceback.format_exception(root))
                    raise

        return _Inbound


@contextlib.contextmanager
def _shifted_clock(shift: timedelta | None) -> Iterator[None]:
    if not shift:
        yield
        return
    import time_machine

    with time_machine.travel(datetime.now(UTC) + shift, tick=True):
        yield


async def replay_check(
    history: WorkflowHistory,
    *,
    data_converter: DataConverter,
    clock_shift: timedelta | None = None,
    workflows: Sequence[type] = (AgentRun,),
) -> ReplayReport:
    """Replay ``history`` and compare each step request with the recorded one.

    ``data_converter`` must read the history's payloads (the runtime's, with its store, for
    externally stored inputs). ``clock_shift`` moves the process's wall clock that far ahead
    while the loop replays (needs ``time-machine``), so a loop that reads the time shows up
    even when the replay runs within the same second; it moves it for the whole process (all
    threads) while the replay runs. The run's agents must be registered in this process (as
    on a worker). Returns every difference, the first per step.
    """
    recorded: list[tuple[str, Any]] = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled = event.activity_task_scheduled_event_attributes
            recorded.append((scheduled.activity_type.name, scheduled.input))
    capture = _Capture()
    replayer = Replayer(
        workflows=list(workflows),
        workflow_runner=UnsandboxedWorkflowRunner(),
        data_converter=data_converter,
        interceptors=[capture],
    )
    report = ReplayReport()
    with _shifted_clock(clock_shift):
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    if result.replay_failure is not None:
        failure = result.replay_failure
        text = f"{type(failure).__name__}: {failure}"[:800]
        if capture.ended is not None:
            # The loop ended (raised) where the history goes on: say with what.
            text += f" -- the replayed run ended with: ...{capture.ended[-1500:]}"
        report.differences.append(
            ReplayDifference(kind="replay_failure", index=0, name="", replayed=text)
        )
    for i, (name, payloads) in enumerate(recorded, start=1):
        if i > len(capture.started):
            report.differences.append(ReplayDifference(kind="missing", index=i, name=name))
            continue
        try:
            # A continued segment's conversation read takes its chain head (a string).
            kind: type = str if name == TRANSCRIPT_ACTIVITY else StepRequest
            [was] = await data_converter.decode(list(payloads.payloads), [kind])
        except Exception as exc:  # e.g. an externalized input whose blob is not in the store
            report.differences.append(
                ReplayDifference(
                    kind="input",
                    index=i,
                    name=name,
                    path="$ (the recorded request could not be read)",
                    recorded=f"{type(exc).__name__}: {exc}"[:300],
                )
            )
            continue
        _, args = capture.started[i - 1]
        now = args[0] if args else None
        report.compared += 1
        old_json, new_json = _plain(was), _plain(now)
        found = first_difference(old_json, new_json)
        if found is not None:
            path, a, b = found
            report.differences.append(
                ReplayDifference(
                    kind="input",
                    index=i,
                    name=name,
                    step=getattr(was, "step", None),
                    path=path,
                    recorded=a,
                    replayed=b,
                    recorded_request=old_json,
                    replayed_request=new_json,
                )
            )
    return report


def _plain(value: Any) -> Any:
    """``value`` as canonical JSON data (dataclasses and models as objects, sorted keys)."""
    return json.loads(json.dumps(to_jsonable_python(value), sort_keys=True))


def first_difference(a: Any, b: Any, path: str = "$") -> tuple[str, str, str] | None:
    """The first place two JSON values differ: (path, a there, b there), or None."""
    if type(a) is not type(b):
        return path, short(a), short(b)
    if isinstance(a, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return (
                    f"{path}.{key}",
                    short(a.get(key, "<absent>")),
                    short(b.get(key, "<absent>")),
                )
            found = first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        if len(a) != len(b):
            return f"{path} (length)", str(len(a)), str(len(b))
        return None
    if a == b:
        return None
    if isinstance(a, str) and isinstance(b, str):
        part = next((n for n, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
        i = min(len(a), len(b)) if part is None else part
        if i > 40:  # show where they part, not a shared prefix
            where = f"{path} (from character {i})"
            return where, short("..." + a[i - 40 :]), short("..." + b[i - 40 :])
    return path, short(a), short(b)


def short(value: Any, limit: int = 200) -> str:
    """A value for a message: JSON (strings quoted), cut at ``limit`` characters."""
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
