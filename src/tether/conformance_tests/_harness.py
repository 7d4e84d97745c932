"""Running a scenario: plainly, durably, swept with an empty cache, and with SIGKILLs.

Everything observed here comes from outside the adapter: requests at the scripted model
server, executions in the tools' own log, and the run's Temporal history. Every run gets a
model server of its own, so the requests a server saw are that run's (what invariants 10
and 11 compare per run).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar, cast

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from tether.conformance_tests.kit import ConformanceKit, KitEnv, read_calls
from tether.conformance_tests.scenarios import (
    HANDOFF_PLACEHOLDER,
    MAIN,
    Scenario,
    retryable_status,
)
from tether.core import registry
from tether.core.contract import Budget, ContinueAsNew
from tether.core.devserver import EmbeddedEngine
from tether.core.events import RunEvent
from tether.core.handle import DurableAgent
from tether.core.ledger import UsageReport
from tether.core.replay import DEFAULT_CLOCK_SHIFT, ReplayDifference, replay_check
from tether.core.runtime import Runtime, agent_queue
from tether.core.steps import TRANSCRIPT_ACTIVITY
from tether.core.store import BlobStore
from tether.errors import RunFailedError
from tether.testing._model_server import RecordedRequest, ScriptedModelServer, ToolCall, Turn
from tether.testing._workers import WorkerProcess, worker_processes

T = TypeVar("T")

RUN_TIMEOUT = 90.0
HOSTED = "tether.conformance_tests._hosted:agent"
"""The agent the SIGKILL check's `tether worker` subprocesses host."""
"""A durable run that has not ended by then is reported as hung (and terminated)."""
CRASH_DELAY = 0.2
"""In SIGKILL runs each model reply and tool takes this long, so kills land between steps."""
_TAG = re.compile(r"(?:resp_|chatcmpl-|msg_|fc_|call_)([A-Za-z0-9]+)_(\d+)(?![0-9])")


class ScenarioScript:
    """Serves a scenario's lanes to the scripted model server.

    Lane ``main`` is indexed by the request's turn index. A helper lane starts at the turn
    index of its first request: a handoff target sees the turns before it, an agent used as
    a tool starts afresh, and which one a framework does is not the suite's business.
    """

    def __init__(
        self, scenario: Scenario, kit: ConformanceKit, *, faults: bool, delay: float = 0.0
    ) -> None:
        handoff = kit.handoff_tool_name(scenario) if scenario.helper else ""
        self.lanes: dict[str, list[Turn]] = {}
        for lane, turns in scenario.lanes.items():
            out = []
            for turn in turns:
                calls = tuple(
                    ToolCall(handoff, c.arguments) if c.name == HANDOFF_PLACEHOLDER else c
                    for c in turn.calls
                )
                out.append(
                    replace(
                        turn,
                        calls=calls,
                        # The plain run's client does not retry: it gets only the faults
                        # that no retry could get past.
                        faults=turn.faults
                        if faults
                        else tuple(f for f in turn.faults if not retryable_status(f.status)),
                        delay=max(turn.delay, delay),
                    )
                )
            self.lanes[lane] = out
        self._base: dict[str, int] = {MAIN: 0}
        self._lock = threading.Lock()

    def responder(self) -> Callable[[RecordedRequest], Turn]:
        """For the server, which answers a request without a turn with a clear 400."""
        return cast(Callable[[RecordedRequest], Turn], self)

    def __call__(self, request: RecordedRequest) -> Turn | None:
        turns = self.lanes.get(request.lane)
        if turns is None:
            return None
        with self._lock:
            base = self._base.setdefault(request.lane, request.turn)
        index = request.turn - base
        return turns[index] if 0 <= index < len(turns) else None


@dataclass
class StepEvent:
    """One scheduled step of a run, read from its Temporal history."""

    name: str
    input_bytes: int
    input_text: str
    number: int | None = None
    """The step's number in its run (``StepRequest.step``; None for an externalized input)."""
    completed: bool = False
    result_text: str = ""
    bytes_at_completion: int = 0


@dataclass
class History:
    steps: list[StepEvent]
    total_bytes: int
    task_failures: list[str]

    def completed(self) -> list[StepEvent]:
        return [s for s in self.steps if s.completed]


def _payload_text(payloads: Any) -> str:
    return " ".join(p.data.decode("utf-8", "replace") for p in payloads.payloads)


async def segment_histories(client: Client, run_id: str) -> list[Any]:
    """The histories of a run's segments, oldest first (one, unless it continued as new)."""
    history = await client.get_workflow_handle(run_id).fetch_history()
    chain = [history]
    while True:
        started = chain[-1].events[0].workflow_execution_started_event_attributes
        previous = started.continued_execution_run_id
        if not previous:
            break
        chain.append(await client.get_workflow_handle(run_id, run_id=previous).fetch_history())
    return list(reversed(chain))


async def read_history(client: Client, run_id: str) -> History:
    """The run's steps across all its segments, in order (``total_bytes``: the largest
    segment's history; ``bytes_at_completion`` counts within the step's segment)."""
    histories = await segment_histories(client, run_id)
    steps: dict[tuple[int, int], StepEvent] = {}
    order: list[tuple[int, int]] = []
    failures: list[str] = []
    largest = 0
    for segment, history in enumerate(histories):
        total = 0
        for event in history.events:
            total += event.ByteSize()
            _read_event(event, segment, steps, order, failures, total)
        largest = max(largest, total)
    return History([steps[i] for i in order], largest, failures)


def _read_event(
    event: Any,
    segment: int,
    steps: dict[tuple[int, int], StepEvent],
    order: list[tuple[int, int]],
    failures: list[str],
    total: int,
) -> None:
    kind = event.event_type
    if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
        a = event.activity_task_scheduled_event_attributes
        if a.activity_type.name == TRANSCRIPT_ACTIVITY:
            return  # a continued segment reading its conversation: not a step
        text = _payload_text(a.input)
        steps[(segment, event.event_id)] = StepEvent(
            name=a.activity_type.name,
            input_bytes=a.input.ByteSize(),
            input_text=text,
            number=_step_number(text),
        )
        order.append((segment, event.event_id))
    elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
        c = event.activity_task_completed_event_attributes
        step = steps.get((segment, c.scheduled_event_id))
        if step is None:
            return
        step.completed = True
        step.result_text = _payload_text(c.result)
        step.bytes_at_completion = total
    elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
        f = event.workflow_task_failed_event_attributes
        failures.append(f.failure.message)


def _step_number(text: str) -> int | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    number = value.get("step") if isinstance(value, dict) else None
    return number if isinstance(number, int) else None


def model_calls_in(text: str) -> set[tuple[str, int]]:
    """The (lane, turn) of model replies quoted in a step's payload (the server's ids)."""
    return {(m.group(1), int(m.group(2))) for m in _TAG.finditer(text)}


@dataclass
class Observed:
    """What one run of a scenario did, seen from outside the adapter."""

    label: str
    output: Any = None
    error: str | None = None
    error_kind: str | None = None
    status: str = "completed"
    error_type: str | None = None
    """The failed run's error type (``RunFailedError.error_type``), e.g. ``BudgetExceeded``."""
    requests: list[RecordedRequest] = field(default_factory=list)
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    run_id: str | None = None
    history: History | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0
    replay_failure: str | None = None
    replay_side_effects: list[str] = field(default_factory=list)
    replay_differences: list[ReplayDifference] = field(default_factory=list)
    """Step requests of the replay (wall clock moved ahead) that differ from the recorded."""
    replay_compared: int = 0
    segments: int = 1
    """How many segments the run had (it continued as new ``segments - 1`` times)."""
    asked_before_boundary: bool = False
    """The run's approval was pending while the run continued as new (a later segment took
    the answer)."""
    replay_clock_shifted: bool = False
    ledger: UsageReport | None = None
    """The run's usage ledger (``handle.describe().ledger``), read once it ended."""
    served_tokens: tuple[int, int] = (0, 0)
    """Input and output tokens the model server billed in its successful replies."""
    at_kill: History | None = None
    log: str = ""
    events: list[RunEvent] | None = None
    """The run's event log, read once the run ended (None: it could not be read)."""
    events_resumed: list[RunEvent] | None = None
    """The log read again after ``resumed_after``, as a reader that reconnects would."""
    resumed_after: int = 0
    events_error: str | None = None
    stream: list[Any] | None = None
    """A streamed run: the events its reader saw (shaped by the kit, retractions applied)."""
    stream_retracted: int = 0

    def served(self) -> dict[tuple[str, int], int]:
        """Successful replies per model call (lane, turn)."""
        out: dict[tuple[str, int], int] = {}
        for r in self.requests:
            if 200 <= r.status < 300 and not r.malformed:
                out[(r.lane, r.turn)] = out.get((r.lane, r.turn), 0) + 1
        return out

    def attempts(self) -> dict[tuple[str, int], int]:
        out: dict[tuple[str, int], int] = {}
        for r in self.requests:
            out[(r.lane, r.turn)] = out.get((r.lane, r.turn), 0) + 1
        return out

    def bodies(self) -> dict[tuple[str, int], Any]:
        """The last successfully served request body per model call."""
        out: dict[tuple[str, int], Any] = {}
        for r in self.requests:
            if 200 <= r.status < 300:
                out[(r.lane, r.turn)] = r.body
        return out

    def tool_runs(self, outcome: str | None = None) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for tool, arg, result in self.calls:
            if outcome is None or result == outcome:
                out[(tool, arg)] = out.get((tool, arg), 0) + 1
        return out

    def outcome(self) -> str:
        if self.status == "timed_out":
            return f"no end within {RUN_TIMEOUT:.0f}s (hung)"
        if self.error is not None:
            kind = f" [{self.error_kind}]" if self.error_kind else ""
            return f"failed{kind}: {self.error}"
        return f"output {json.dumps(self.output, default=repr)[:300]}"


class Harness:
    """An event loop thread, a Temporal dev server and a runtime for one pytest session."""

    def __init__(self, workdir: Path, *, address: str | None = None, plugins: str = "") -> None:
        self.workdir = workdir
        self.plugins = plugins
        self._address = address
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.engine: EmbeddedEngine | None = None
        self.store = BlobStore(workdir / "store")
        self.runtime: Runtime = self.call(self._start(), timeout=120)

    async def _start(self) -> Runtime:
        address = self._address
        if address is None:
            self.engine = EmbeddedEngine(state_dir=self.workdir, persist=False, ui=False)
            await self.engine.start()
            address = self.engine.address
        return await Runtime.start(address=address, store=self.store)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = RUN_TIMEOUT * 2) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self.runtime.close(), timeout=30)
        if self.engine is not None:
            self.engine.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # -- runs -------------------------------------------------------------------------------

    def plain(self, kit: ConformanceKit, scenario: Scenario) -> Observed:
        return self.call(self._plain(kit, scenario))

    async def _plain(self, kit: ConformanceKit, scenario: Scenario) -> Observed:
        obs = Observed("plain run")
        calls = self._file(kit, scenario, "plain")
        script = ScenarioScript(scenario, kit, faults=False)
        with ScriptedModelServer(responder=script.responder()) as server:
            env = KitEnv(base_url=server.base_url, calls_file=calls, faults=False)
            agent = kit.build(scenario, env)
            start = time.monotonic()
            try:
                result = await asyncio.wait_for(
                    kit.run_plain(agent, scenario, env), timeout=RUN_TIMEOUT
                )
                obs.output = kit.output(result)
            except TimeoutError:
                obs.status = "timed_out"
            except Exception as exc:
                obs.status = "failed"
                obs.error = f"{type(exc).__name__}: {exc}"
                obs.error_kind = kit.error_kind(exc)
            obs.elapsed = time.monotonic() - start
            obs.requests = server.requests
        obs.calls = read_calls(calls)
        return obs

    def durable(
        self,
        kit: ConformanceKit,
        scenario: Scenario,
        *,
        sweep: bool = False,
        restart_after: int | None = None,
    ) -> Observed:
        return self.call(self._durable(kit, scenario, sweep=sweep, restart_after=restart_after))

    async def _durable(
        self, kit: ConformanceKit, scenario: Scenario, *, sweep: bool, restart_after: int | None
    ) -> Observed:
        if sweep:
            label = "durable run, replayed at every step boundary"
        elif restart_after:
            label = f"durable run, worker replaced (empty cache) after {restart_after} steps"
        else:
            label = "durable run"
        obs = Observed(label)
        tag = "sweep" if sweep else "durable"
        calls = self._file(kit, scenario, tag)
        queue = f"conf-{uuid.uuid4().hex[:10]}"
        registry.clear()
        script = ScenarioScript(scenario, kit, faults=True)
        with ScriptedModelServer(responder=script.responder()) as server:
            env = KitEnv(base_url=server.base_url, calls_file=calls)
            agent = kit.build(scenario, env)
            durable = DurableAgent(
                agent,
                kit.adapter(),
                name=kit.agent_name(scenario),
                runtime=self.runtime,
                task_queue=queue,
                local_worker=False,
            )
            # max_cached_runs=0: every run task starts from an empty cache and replays the
            # history, which is what a fresh worker does after a crash at that boundary.
            first = self.runtime.worker(task_queue=queue, max_cached_runs=0 if sweep else 100)
            start = time.monotonic()
            async with first:
                handle = await durable.start(
                    scenario.prompt(),
                    id=f"conf-{kit.adapter_name}-{scenario.name}-{tag}-{uuid.uuid4().hex[:6]}",
                    budget=_budget(scenario),
                    **_start_options(kit, scenario),
                )
                obs.run_id = handle.id
                if restart_after:
                    await _wait_for_steps(self.runtime.client, handle.id, restart_after)
                else:
                    await self._finish(kit, handle, obs)
                    await _read_after(handle, obs)
            if restart_after:  # the first worker is gone; a new one rebuilds the run
                async with self.runtime.worker(task_queue=queue):
                    await self._finish(kit, handle, obs)
                    await _read_after(handle, obs)
            obs.elapsed = time.monotonic() - start
            obs.history = await read_history(self.runtime.client, handle.id)
            obs.requests, obs.calls = server.requests, read_calls(calls)
            usage = server.total_usage()
            obs.served_tokens = (usage.input_tokens, usage.output_tokens)
            if not sweep:
                await self._replay(obs, server, calls)
        return obs

    async def _finish(self, kit: ConformanceKit, handle: Any, obs: Observed) -> None:
        try:
            result = await asyncio.wait_for(handle.result(), timeout=RUN_TIMEOUT)
            obs.output = kit.output(result)
        except TimeoutError:
            obs.status = "timed_out"
            with contextlib.suppress(Exception):
                await self.runtime.client.get_workflow_handle(handle.id).terminate("hung")
        except RunFailedError as exc:
            obs.status = "failed"
            obs.error = exc.reason
            obs.error_type = exc.error_type
            obs.error_kind = kit.error_kind(exc)

    async def _replay(self, obs: Observed, server: ScriptedModelServer, calls: Path) -> None:
        """Replay the finished run's history with the wall clock moved a day ahead: nothing
        may reach the model or the tools, and every step request must be the recorded one."""
        assert obs.run_id is not None
        before_requests, before_calls = len(server.requests), len(read_calls(calls))
        shift = DEFAULT_CLOCK_SHIFT if _can_shift_clock() else None
        obs.replay_clock_shifted = shift is not None
        # Each segment of a run that continued as new replays on its own.
        for history in await segment_histories(self.runtime.client, obs.run_id):
            report = await replay_check(
                history, data_converter=self.runtime.client.data_converter, clock_shift=shift
            )
            obs.replay_compared += report.compared
            for difference in report.differences:
                if difference.kind == "replay_failure":
                    obs.replay_failure = difference.replayed
                else:
                    obs.replay_differences.append(difference)
        for r in server.requests[before_requests:]:
            obs.replay_side_effects.append(f"model call (lane {r.lane}, turn {r.turn})")
        for tool, arg, _ in read_calls(calls)[before_calls:]:
            obs.replay_side_effects.append(f"tool {tool}({arg})")

    # -- streamed runs (the framework's streaming API) --------------------------------------

    def streamed(self, kit: ConformanceKit, scenario: Scenario, *, mode: str) -> Observed:
        """``mode``: ``plain``, ``durable`` or ``sweep`` (every run task from an empty cache).
        Raises NotImplementedError when the kit cannot stream."""
        return self.call(self._streamed(kit, scenario, mode))

    async def _streamed(self, kit: ConformanceKit, scenario: Scenario, mode: str) -> Observed:
        labels = {
            "plain": "plain streamed run",
            "durable": "durable streamed run",
            "sweep": "durable streamed run, replayed at every step boundary",
        }
        obs = Observed(labels[mode])
        calls = self._file(kit, scenario, f"stream-{mode}")
        queue = f"conf-{uuid.uuid4().hex[:10]}"
        registry.clear()
        script = ScenarioScript(scenario, kit, faults=mode != "plain")
        with ScriptedModelServer(responder=script.responder()) as server:
            env = KitEnv(base_url=server.base_url, calls_file=calls, faults=mode != "plain")
            agent = kit.build(scenario, env)
            start = time.monotonic()
            if mode == "plain":
                await self._stream_into(obs, kit, kit.run_streamed(agent, scenario, env))
            else:
                durable = DurableAgent(
                    agent,
                    kit.adapter(),
                    name=kit.agent_name(scenario),
                    runtime=self.runtime,
                    task_queue=queue,
                    local_worker=False,
                )
                cached = 0 if mode == "sweep" else 100
                async with self.runtime.worker(task_queue=queue, max_cached_runs=cached):
                    await self._stream_into(
                        obs, kit, kit.run_streamed(agent, scenario, env, durable=durable)
                    )
                if obs.run_id is not None:
                    obs.history = await read_history(self.runtime.client, obs.run_id)
            obs.elapsed = time.monotonic() - start
            obs.requests = server.requests
        obs.calls = read_calls(calls)
        return obs

    async def _stream_into(
        self, obs: Observed, kit: ConformanceKit, run: Coroutine[Any, Any, Any]
    ) -> None:
        try:
            streamed = await asyncio.wait_for(run, timeout=RUN_TIMEOUT)
        except NotImplementedError:
            raise
        except TimeoutError:
            obs.status = "timed_out"
            return
        except Exception as exc:
            obs.status = "failed"
            obs.error = f"{type(exc).__name__}: {exc}"
            obs.error_kind = kit.error_kind(exc)
            return
        obs.stream = streamed.events
        obs.stream_retracted = streamed.retracted
        obs.output = streamed.output
        obs.run_id = streamed.run_id

    # -- approvals (run-side waits) ---------------------------------------------------------

    def approval(self, kit: ConformanceKit, scenario: Scenario) -> Observed:
        return self.call(self._approval(kit, scenario))

    async def _approval(self, kit: ConformanceKit, scenario: Scenario) -> Observed:
        """Run until the approval wait shows, restart the worker (empty cache), approve."""
        obs = Observed("durable run, worker restarted during the approval wait")
        calls = self._file(kit, scenario, "approval")
        queue = f"conf-{uuid.uuid4().hex[:10]}"
        registry.clear()
        with ScriptedModelServer(
            responder=ScenarioScript(scenario, kit, faults=True).responder()
        ) as server:
            env = KitEnv(base_url=server.base_url, calls_file=calls)
            durable = DurableAgent(
                kit.build(scenario, env),
                kit.adapter(),
                name=kit.agent_name(scenario),
                runtime=self.runtime,
                task_queue=queue,
                local_worker=False,
            )
            start = time.monotonic()
            async with self.runtime.worker(task_queue=queue):
                handle: Any = await durable.start(
                    scenario.prompt(),
                    id=f"conf-{kit.adapter_name}-{scenario.name}-{uuid.uuid4().hex[:6]}",
                    **_start_options(kit, scenario),
                )
                obs.run_id = handle.id
                pending = await _pending(handle)
                asked_in = len(await segment_histories(self.runtime.client, handle.id))
            before = len(read_calls(calls))
            async with self.runtime.worker(task_queue=queue, max_cached_runs=0):
                for wait in pending:
                    await handle.approve(wait.id)
                await self._finish(kit, handle, obs)
            obs.elapsed = time.monotonic() - start
            obs.history = await read_history(self.runtime.client, handle.id)
            obs.segments = len(await segment_histories(self.runtime.client, handle.id))
            # The segment that shows the wait began after the one that asked (a wait asked
            # at the boundary), and the run went on after the answer.
            obs.asked_before_boundary = asked_in >= 2
            obs.requests = server.requests
        obs.calls = read_calls(calls)
        if before:
            obs.error = f"the tool ran {before} time(s) before it was approved"
            obs.status = "failed"
        return obs

    # -- SIGKILL ----------------------------------------------------------------------------

    def sigkill(self, kit: ConformanceKit, scenario: Scenario, kill_after: int) -> Observed:
        return self.call(self._sigkill(kit, scenario, kill_after), timeout=RUN_TIMEOUT * 3)

    async def _sigkill(self, kit: ConformanceKit, scenario: Scenario, kill_after: int) -> Observed:
        obs = Observed(f"durable run, worker SIGKILLed after {kill_after} completed calls")
        tag = f"kill{kill_after}"
        calls = self._file(kit, scenario, tag)
        queue = f"conf-{uuid.uuid4().hex[:10]}"
        registry.clear()
        script = ScenarioScript(scenario, kit, faults=True, delay=CRASH_DELAY)
        with ScriptedModelServer(responder=script.responder()) as server:
            env = KitEnv(base_url=server.base_url, calls_file=calls, tool_delay=CRASH_DELAY)
            durable = DurableAgent(
                kit.build(scenario, env),
                kit.adapter(),
                name=kit.agent_name(scenario),
                runtime=self.runtime,
                # The `tether worker` subprocess takes ``queue`` as its prefix.
                task_queue=agent_queue(queue, kit.agent_name(scenario)),
                local_worker=False,
            )
            proc_env = dict(os.environ)
            proc_env.update(env.to_environ())
            proc_env.update(
                {
                    "TEMPORAL_ADDRESS": self.runtime.client.service_client.config.target_host,
                    "TETHER_STORE": self.store.url,
                    "TETHER_TASK_QUEUE": queue,
                    "TETHER_CONFORMANCE_ADAPTER": kit.adapter_name,
                    "TETHER_CONFORMANCE_SCENARIO": scenario.name,
                    "TETHER_CONFORMANCE_PLUGINS": self.plugins,
                    "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path]),
                }
            )
            log = self.workdir / f"{kit.adapter_name}-{scenario.name}-{tag}.log"
            with worker_processes() as procs:
                first = WorkerProcess([HOSTED], proc_env, log)
                procs.append(first)
                start = time.monotonic()
                handle = await durable.start(
                    scenario.prompt(),
                    id=f"conf-{kit.adapter_name}-{scenario.name}-{tag}-{uuid.uuid4().hex[:6]}",
                    **_start_options(kit, scenario),
                )
                obs.run_id = handle.id
                await _wait_for_calls(server, calls, kill_after, first)
                first.kill()
                obs.at_kill = await read_history(self.runtime.client, handle.id)
                procs.append(WorkerProcess([HOSTED], proc_env, log))
                await self._finish(kit, handle, obs)
                obs.elapsed = time.monotonic() - start
                obs.history = await read_history(self.runtime.client, handle.id)
            obs.log = log.read_text()[-3000:] if log.exists() else ""
            obs.requests = server.requests
        obs.calls = read_calls(calls)
        return obs

    def _file(self, kit: ConformanceKit, scenario: Scenario, tag: str) -> Path:
        name = f"{kit.adapter_name}-{scenario.name}-{tag}-{uuid.uuid4().hex[:6]}.calls"
        return self.workdir / name


def completed_calls(server: ScriptedModelServer, calls: Path) -> int:
    """Model replies served plus tool executions that returned, so far."""
    served = sum(1 for r in server.requests if 200 <= r.status < 300 and not r.malformed)
    return served + sum(1 for _, _, outcome in read_calls(calls) if outcome == "ok")


async def _wait_for_steps(client: Client, run_id: str, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len((await read_history(client, run_id)).completed()) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {n} steps completed within {timeout:.0f}s")
        await asyncio.sleep(0.05)


async def _wait_for_calls(
    server: ScriptedModelServer, calls: Path, n: int, worker: WorkerProcess, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while completed_calls(server, calls) < n:
        if not worker.alive():
            raise AssertionError(f"the worker subprocess died early; log:\n{worker.tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {n} calls completed within {timeout:.0f}s")
        await asyncio.sleep(0.01)


def _start_options(kit: ConformanceKit, scenario: Scenario) -> dict[str, Any]:
    """The kit's run options, plus the scenario's forced continue-as-new."""
    options = dict(kit.run_options(scenario))
    if scenario.continue_every is not None:
        options["continue_as_new"] = ContinueAsNew(every_steps=scenario.continue_every)
    return options


def _budget(scenario: Scenario) -> Budget | None:
    return Budget(max_tokens=scenario.budget_tokens) if scenario.budget_tokens else None


def _can_shift_clock() -> bool:
    import importlib.util

    return importlib.util.find_spec("time_machine") is not None


async def _read_after(handle: Any, obs: Observed) -> None:
    """What the ended run reports through queries, read while a worker can answer them."""
    for _ in range(2):  # a query that fails once (e.g. a worker restarting) is asked again
        try:
            description = await handle.describe()
        except Exception:
            continue
        obs.failures = description.failures
        obs.ledger = description.ledger
        break
    await _read_events(handle, obs)


async def _read_events(handle: Any, obs: Observed, timeout: float = 20) -> None:
    """The ended run's whole event log, then its second half again from the middle offset
    (a worker must be up: the log is read through the run)."""

    async def read(after: int | None) -> list[RunEvent]:
        return [e async for e in handle.events(after=after)]

    if obs.status == "timed_out":
        return
    try:
        obs.events = await asyncio.wait_for(read(None), timeout)
        if obs.events:
            obs.resumed_after = obs.events[len(obs.events) // 2].offset
            obs.events_resumed = await asyncio.wait_for(read(obs.resumed_after), timeout)
    except TimeoutError:
        obs.events_error = f"no complete log within {timeout:.0f} s"
    except Exception as exc:  # e.g. a run that cannot be rebuilt cannot serve its log
        obs.events_error = f"{type(exc).__name__}: {exc}"[:400]


async def _pending(handle: Any, timeout: float = 30) -> list[Any]:
    """The run's pending waits, once there are some."""
    deadline = time.monotonic() + timeout
    while True:
        pending = list(await handle.pending())
        if pending:
            return pending
        if time.monotonic() > deadline:
            raise AssertionError(f"no pending approval within {timeout:.0f}s")
        await asyncio.sleep(0.05)
