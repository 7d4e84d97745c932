"""Steps realized as Temporal activities: heartbeats, error classification, context.

Exactly once, as far as one worker can make it (docs/architecture.md, "Exactly once"):

- Heartbeats come from a thread of their own, straight into the SDK's core, so a tool or a
  framework that holds the event loop for seconds does not make a healthy step look dead.
  A process that is stopped or killed stops beating and its step is retried after the
  heartbeat timeout, as before.
- A step's work runs as a task kept by ``(run, activity)``: when the engine retries a step
  whose earlier attempt is still running (or finished, but its completion was refused) in
  this process, the new attempt joins that work instead of calling the model or the tool
  again.
- A step whose work succeeded never runs again because its result could not be stored: the
  result is kept and only the write is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic_core import to_json
from temporalio import activity
from temporalio.api.common.v1 import Payload, Payloads, WorkflowExecution
from temporalio.api.workflowservice.v1 import (
    RecordActivityTaskHeartbeatRequest,
    ResetStickyTaskQueueRequest,
)
from temporalio.bridge.proto import ActivityHeartbeat
from temporalio.client import Client
from temporalio.contrib.workflow_streams import WorkflowStreamClient
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.service import RPCError, RPCStatusCode

from tether.core import registry
from tether.core.contract import JSON, StepDefinition, StepOutcome, StepRequest, TranscriptRef
from tether.core.conversation import SegmentWrite, items_from, materialize
from tether.core.events import EVENTS_TOPIC
from tether.core.ops import run_closed
from tether.core.sealed import unseal_tree
from tether.core.store import (
    MISSING_INPUT_KEY,
    PAYLOAD_MISSING,
    BlobStore,
    canonical_json,
    expect_chain_payload,
)
from tether.core.values import unpack
from tether.errors import (
    AgentNotRegisteredError,
    BlobMissingError,
    NonRetryableError,
    RetryableError,
    StoreUnavailableError,
)

logger = logging.getLogger(__name__)

BLOB_MISSING = "TetherBlobMissing"
ERRORS_DETAIL = "tether_errors"
"""Heartbeat detail key: how many earlier attempts of the step ended in an error. Each
attempt beats it, so an attempt lost with its worker leaves the count as it found it."""
ATTEMPTS_DETAIL = "tether_attempts"
"""Error detail key: how many attempts the step made, on the error that ends it."""
DELTA_BATCH = timedelta(milliseconds=200)

LOOP_STALL_LIMIT = 60.0
"""Seconds the worker's event loop may stay blocked while its steps still heartbeat (from the
heartbeat thread). Past it the loop counts as wedged: beats stop and the engine retries the
step elsewhere after its heartbeat timeout."""
KEEP_FINISHED = 60.0
"""Seconds a finished step's outcome is kept in the worker for a retry of the same step to
take (a completion the engine refused: the attempt had timed out while it finished). The
retry of a timed-out attempt arrives within seconds of the worker running again."""
KEEP_FINISHED_MAX = 2000
"""At most this many finished outcomes are kept (the oldest go first)."""
STORE_RETRY_MAX = 30.0
"""Longest pause between two tries of a failing store read or write inside a step."""
BEATS_PER_TIMEOUT = 6
"""A running step beats this many times per heartbeat timeout, the first one a sixth of it
after its code starts (most steps end sooner and send none); the worker sends a beat at most
every ``HEARTBEAT_SEND_INTERVAL`` (0.5 s, see core/runtime.py), so the engine sees four beats
per timeout at the default 2 s."""
LATE_START = 0.25
"""A step whose code starts later than this share of its heartbeat timeout after the engine
handed the attempt over (a busy worker's event loop) asks the engine whether the attempt is
still its own before doing any work (:func:`_still_current`)."""
BEAT_TICK = 0.1
"""How often the heartbeat thread looks for a step due to beat (seconds)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepInfo:
    """The step running now (``tether.current_step()``), as a tool or model call sees it.

    ``idempotency_key`` is the same for every attempt of one step of one run (derived from
    the run id and the tool call id, or the step's number when the framework gives no call
    id) and different for every other step: hand it to a service that deduplicates (a
    payment API's ``Idempotency-Key``), or record it beside the side effect and skip work
    already recorded under it.
    """

    run_id: str
    step: int
    kind: str
    attempt: int
    idempotency_key: str


_current: contextvars.ContextVar[StepInfo | None] = contextvars.ContextVar(
    "tether_current_step", default=None
)


def current_step() -> StepInfo | None:
    """The step this code runs in (a tool, a model call), or None outside steps."""
    return _current.get()


def idempotency_key(request: StepRequest) -> str:
    """The key every attempt of ``request``'s step shares (see :class:`StepInfo`)."""
    payload = request.payload
    call_id = None
    if isinstance(payload, dict):
        call_id = payload.get("call_id") or payload.get("tool_call_id")
    if isinstance(call_id, str) and call_id:
        return f"{request.run_id}:{call_id}"
    return f"{request.run_id}:step-{request.step}"


class _Heartbeats:
    """One thread that heartbeats every running step straight into the SDK's core.

    The SDK's own ``activity.heartbeat()`` hands the beat to the event loop; a loop held by
    a blocking tool or a CPU-bound request build then misses beats and the engine retries a
    step that is still running. Core's recorder is thread-safe and throttles what it sends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._beating: dict[bytes, tuple[Callable[[Any], None], float, float, list[Payload]]] = {}
        self._thread: threading.Thread | None = None
        self.loop_tick = time.monotonic()
        self._ticker: asyncio.Task[None] | None = None
        self._ticker_loop: asyncio.AbstractEventLoop | None = None

    def add(
        self,
        token: bytes,
        record: Callable[[Any], None],
        every: float,
        details: list[Payload] | None = None,
    ) -> None:
        with self._lock:
            # The first beat one interval in: a step shorter than that sends the engine no
            # heartbeat at all (the engine counts the timeout from the attempt's start; a
            # step whose code starts late beats at once, in _still_current).
            self._beating[token] = (record, every, time.monotonic() + every, details or [])
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tether-heartbeats", daemon=True
                )
                self._thread.start()
        loop = asyncio.get_running_loop()
        if self._ticker is None or self._ticker.done() or self._ticker_loop is not loop:
            self._ticker, self._ticker_loop = loop.create_task(self._tick()), loop

    def remove(self, token: bytes) -> None:
        with self._lock:
            self._beating.pop(token, None)

    async def _tick(self) -> None:
        while True:
            self.loop_tick = time.monotonic()
            await asyncio.sleep(0.5)

    def _run(self) -> None:
        while True:
            time.sleep(BEAT_TICK)
            now = time.monotonic()
            if now - self.loop_tick > LOOP_STALL_LIMIT:
                continue  # the loop is wedged, not slow: let the engine retry the steps
            with self._lock:
                for token, (record, every, due, details) in list(self._beating.items()):
                    if now < due:
                        continue
                    self._beating[token] = (record, every, now + every, details)
                    try:
                        record(ActivityHeartbeat(task_token=token, details=details))
                    except Exception:
                        logger.debug("heartbeat thread: record failed", exc_info=True)


_heartbeats = _Heartbeats()


def _core_recorder() -> Callable[[Any], None] | None:
    """Core's heartbeat recorder of the running activity's worker, or None.

    The SDK has no public thread-safe heartbeat: this reaches its activity worker through
    the context's outbound heartbeat. When that shape changes (an SDK release, an
    interceptor in front), steps fall back to heartbeats from the event loop.
    """
    try:
        outbound = getattr(activity._Context.current().heartbeat, "__self__", None)
        for _ in range(16):  # past interceptors (each holds the next as ``next``)
            if outbound is None or hasattr(outbound, "_worker"):
                break
            outbound = getattr(outbound, "next", None)
        bridge = outbound._worker._bridge_worker()  # type: ignore[union-attr]
        record = bridge.record_activity_heartbeat
    except Exception:
        return None
    return record if callable(record) else None


_warned_fallback = False


class _Attempts:
    """Each step's work by (workflow id, run id, activity id), kept across its attempts.

    Finished work is kept :data:`KEEP_FINISHED` seconds (at most :data:`KEEP_FINISHED_MAX`
    of it), in the order it finished, so expiring it costs what expires, not what is kept.
    """

    def __init__(self) -> None:
        self._work: dict[tuple[str, str, str], asyncio.Task[Any]] = {}
        self._done: deque[tuple[float, tuple[str, str, str], asyncio.Task[Any]]] = deque()

    def get(self, key: tuple[str, str, str]) -> asyncio.Task[Any] | None:
        self._expire()
        task = self._work.get(key)
        if task is None:
            return None
        if task.done() and (task.cancelled() or task.exception() is not None):
            del self._work[key]
            return None  # a failed attempt is retried for real
        return task

    def put(self, key: tuple[str, str, str], task: asyncio.Task[Any]) -> None:
        self._work[key] = task
        task.add_done_callback(lambda t: self._finished(key, t))

    def _finished(self, key: tuple[str, str, str], task: asyncio.Task[Any]) -> None:
        if not task.cancelled():
            task.exception()  # retrieved: a superseded attempt's failure is not "unhandled"
        if self._work.get(key) is task:
            self._done.append((time.monotonic(), key, task))

    def _expire(self) -> None:
        now = time.monotonic()
        while self._done:
            done_at, key, task = self._done[0]
            if len(self._done) <= KEEP_FINISHED_MAX and now - done_at <= KEEP_FINISHED:
                break
            self._done.popleft()
            if self._work.get(key) is task:
                del self._work[key]

    def __len__(self) -> int:
        return len(self._work)

    def running(self) -> int:
        return sum(1 for task in self._work.values() if not task.done())


_attempts = _Attempts()


def running_steps() -> int:
    """How many steps' work runs in this process now (an attempt the engine gave up on, or
    whose run ended, may still be running here until its model or tool call returns)."""
    return _attempts.running()


class _ActivityStepContext:
    """What a handler sees. Everything it reads from the store is fetched before it runs
    (:meth:`prefetch`, awaited), so the synchronous accessors adapters call do no I/O."""

    def __init__(self, store: BlobStore, request: StepRequest, errors: int = 0) -> None:
        self._store = store
        self._request = request
        self._agent = registry.lookup(request.agent)
        info = activity.info()
        self._attempt = info.attempt
        if request.error_attempts is not None:
            # The last attempt an error may end (attempts lost with a worker do not count).
            self._final = errors + 1 >= request.error_attempts
        else:
            limit = info.retry_policy.maximum_attempts if info.retry_policy else 0
            self._final = limit > 0 and info.attempt >= limit
        self._values: dict[str, JSON] = {}
        self._transcript: list[JSON] = []
        self._transcript_start = 0  # where the prefetched part of the conversation starts
        self.segment: SegmentWrite | None = None
        """The write of the step's new transcript segment, awaited before its result is
        recorded (``run_step``)."""
        self._stream: WorkflowStreamClient | None = None
        self._flusher: asyncio.Future[WorkflowStreamClient] | None = None

    async def prefetch(self) -> None:
        """Store what the run sent inline, then read the transcript and the shared values."""
        store, request = self._store, self._request
        wanted = [r for r in dict.fromkeys([request.context_ref, *request.shared_refs]) if r]

        async def attach(ref: str, value: JSON) -> None:
            data = canonical_json(value)
            await store.put(data, ref)
            if ref in wanted:
                store.keep_value(ref, data)

        # Inline values first: the transcript's chain may start in them (the resend path).
        await asyncio.gather(*(attach(r, v) for r, v in request.attachments.items()))

        async def value(ref: str) -> None:
            if ref not in request.attachments:
                self._values[ref] = await store.get_value(ref)

        async def transcript(ref: TranscriptRef) -> None:
            if self.segment is None:
                self.segment = SegmentWrite(store, ref)
            self._transcript = await materialize(store, ref)
            self._transcript_start = ref.start

        jobs = [value(ref) for ref in wanted]
        if request.transcript is not None:
            jobs.append(transcript(request.transcript))
        await asyncio.gather(*jobs)

    @property
    def agent(self) -> object:
        return self._agent.agent

    @property
    def attempt(self) -> int:
        return self._attempt

    @property
    def final_attempt(self) -> bool:
        return self._final

    def shared(self, ref: str) -> JSON:
        if ref in self._request.attachments:
            return self._request.attachments[ref]
        if ref in self._values:
            return self._values[ref]
        # A ref the payload does not name (so the run could not list it): read it now. This
        # blocks the event loop for one store read; name refs in the payload to avoid it.
        logger.warning(
            "step %s read shared value %s without prefetch (blocking); an adapter should "
            "name shared refs in the step payload",
            self._request.step,
            ref,
        )
        self._values[ref] = self._store.get_value_blocking(ref)
        return self._values[ref]

    def run_context(self) -> object:
        ref = self._request.context_ref
        if ref is None:
            return None
        adapter, agent = self._agent.adapter, self._agent.agent
        return adapter.decode_context(agent, unpack(self.shared(ref), adapter.context_type(agent)))

    def transcript(self) -> list[JSON]:
        if self._transcript_start:
            raise RuntimeError(
                f"step {self._request.step} was sent the conversation from position "
                f"{self._transcript_start} on only (transcript_from); read it with "
                "`await ctx.transcript_items(start)`"
            )
        return list(self._transcript)

    async def transcript_items(self, start: int = 0) -> list[JSON]:
        have = self._transcript_start
        if start >= have:
            return self._transcript[start - have :]
        ref = self._request.transcript
        assert ref is not None  # have > 0 only when a transcript was sent
        return await items_from(self._store, ref, start)

    @property
    def idempotency_key(self) -> str:
        return idempotency_key(self._request)

    def heartbeat(self, *details: object) -> None:
        activity.heartbeat(*details)

    def publish(self, type: str, data: Mapping[str, JSON]) -> None:
        if self._stream is None:
            self._stream = WorkflowStreamClient.from_within_activity(batch_interval=DELTA_BATCH)
            self._flusher = asyncio.ensure_future(self._stream.__aenter__())
        item = {
            "type": type,
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "data": {"step": self._request.step, "attempt": self._attempt, **data},
        }
        self._stream.topic(EVENTS_TOPIC).publish(item)

    async def close(self) -> None:
        """Flush what the step published (before its result is recorded)."""
        if self._stream is not None and self._flusher is not None:
            await self._flusher
            await self._stream.__aexit__(None, None, None)
            self._stream = None


async def _beat(every: float, *details: Any) -> None:
    while True:
        await asyncio.sleep(every)
        activity.heartbeat(*details)


async def _still_current(
    info: activity.Info, heartbeat: timedelta, details: list[Payload] | None = None
) -> bool:
    """Whether this attempt is still the engine's to run, asked only when its code starts late.

    The engine counts the heartbeat timeout from the moment it handed the attempt to this
    worker; a worker whose event loop is busy (hundreds of steps at once on a loaded machine)
    may start the step's code a good part of that timeout later, when the engine may already
    have given the step to another worker. A late start therefore beats once, synchronously,
    before any work: the engine answers "not found" when the attempt is no longer current
    (the step is not run here: the next attempt runs it, no second model or tool call), and
    otherwise counts the timeout afresh from that beat. An on-time start costs nothing; an
    unreachable engine counts as current (the step runs, as it would without the check).
    Lateness compares the engine's clock with this host's: a skewed clock only makes the
    check run more or less often.
    """
    started = info.started_time
    if started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    late = (datetime.now(UTC) - started).total_seconds()
    if late <= heartbeat.total_seconds() * LATE_START or not info.task_token:
        return True
    try:
        client = activity.client()
        await client.workflow_service.record_activity_task_heartbeat(
            RecordActivityTaskHeartbeatRequest(
                task_token=info.task_token,
                namespace=info.namespace,
                identity=client.identity,
                details=Payloads(payloads=details) if details else None,
            ),
            timeout=heartbeat,
        )
    except Exception as exc:
        if isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND:
            logger.info(
                "step attempt %d of %s started %.1fs late, after the engine gave the step to "
                "a next attempt: not run here",
                info.attempt,
                info.activity_type,
                late,
            )
            return False
        logger.debug("late step start: the engine was not asked", exc_info=True)
    return True


async def _store_retrying(op: Callable[[], Awaitable[Any]], what: str, deadline: float) -> Any:
    """``op()``, retried with backoff while the store fails (disk full, permission, network)
    and the step's own deadline allows: a store outage is waited out, not a step failure."""
    delay = 1.0
    while True:
        try:
            return await op()
        except StoreUnavailableError as exc:
            if time.monotonic() + delay > deadline:
                raise
            logger.warning("%s: %s (retrying in %.0fs)", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, STORE_RETRY_MAX)


def _deadline() -> float:
    """When this attempt's start-to-close timeout ends (monotonic), less a margin."""
    info = activity.info()
    limit = info.start_to_close_timeout or timedelta(minutes=10)
    return time.monotonic() + max(limit.total_seconds() - 5.0, 1.0)


async def _store_outcome(outcome: StepOutcome, deadline: float) -> None:
    """Write a large outcome to the store now (retrying), so that the engine's own encoding
    of the result finds it stored instead of failing the step after its work was done."""
    try:
        converter = activity.client().data_converter
    except RuntimeError:
        return  # no client (an activity test environment): the engine encodes as usual
    if converter.external_storage is None:
        return
    await _store_retrying(
        lambda: converter.encode([outcome]), "step result not stored yet", deadline
    )


def build_activity(
    definition: StepDefinition, store: BlobStore
) -> Callable[[StepRequest], Awaitable[StepOutcome]]:
    """A Temporal activity named ``definition.name`` that runs the step's handler."""
    every = max(definition.policy.heartbeat.total_seconds() / BEATS_PER_TIMEOUT, BEAT_TICK)

    async def work(
        request: StepRequest, deadline: float, errors: int
    ) -> tuple[StepOutcome, SegmentWrite | None]:
        ctx: _ActivityStepContext | None = None
        try:
            payload = request.payload
            missing = payload.get(MISSING_INPUT_KEY) if isinstance(payload, dict) else None
            if isinstance(missing, str):
                # This worker's store lacks the step's (large) input: no retry can help here.
                raise ApplicationError(missing, type=PAYLOAD_MISSING, non_retryable=True)
            ctx = _ActivityStepContext(store, request, errors)
            _current.set(
                StepInfo(
                    run_id=request.run_id,
                    step=request.step,
                    kind=definition.kind,
                    attempt=ctx.attempt,
                    idempotency_key=idempotency_key(request),
                )
            )
            await _store_retrying(ctx.prefetch, f"step {request.step} inputs not read", deadline)
            outcome = await definition.handler(ctx, unseal_tree(request.payload))
            if outcome.attempt != ctx.attempt:
                outcome = dataclasses.replace(outcome, attempt=ctx.attempt)
            await ctx.close()
            return outcome, ctx.segment
        except BlobMissingError as exc:
            raise ApplicationError(
                str(exc), exc.ref, type=BLOB_MISSING, non_retryable=True
            ) from exc
        except AgentNotRegisteredError as exc:
            # Retryable: on a queue shared by workers of different agents, the next attempt
            # may land on a worker that hosts this one (per-agent queues avoid the case).
            raise ApplicationError(str(exc), type="AgentNotRegistered") from exc
        except NonRetryableError as exc:
            raise ApplicationError(str(exc), type=exc.error_type, non_retryable=True) from exc
        except RetryableError as exc:
            delay = timedelta(seconds=exc.retry_after) if exc.retry_after is not None else None
            raise ApplicationError(str(exc), type=exc.error_type, next_retry_delay=delay) from exc
        finally:
            if ctx is not None:
                with contextlib.suppress(Exception):
                    await ctx.close()  # a failed attempt's published events still go out

    async def run_step(request: StepRequest) -> StepOutcome:
        global _warned_fallback
        info = activity.info()
        deadline = _deadline()
        key = (info.workflow_id or "", info.workflow_run_id or "", info.activity_id)
        task = _attempts.get(key)
        if task is not None:
            # An earlier attempt of this step is still running here, or finished but the
            # engine refused its completion (it had timed out meanwhile): take its outcome
            # instead of calling the model or the tool a second time.
            logger.info(
                "step %s of run %s attempt %d joins the work of an earlier attempt",
                request.step,
                request.run_id,
                info.attempt,
            )
        errors = _errors_before(request, info)
        counted = await _encoded({ERRORS_DETAIL: errors}) if errors else []
        if task is None:
            if not await _still_current(info, definition.policy.heartbeat, counted):
                raise ApplicationError(
                    f"step {request.step} of run {request.run_id}: attempt {info.attempt} "
                    "started after its heartbeat timeout; the engine runs the next attempt",
                    type="TetherAttemptSuperseded",
                    category=ApplicationErrorCategory.BENIGN,
                )
            task = asyncio.get_running_loop().create_task(work(request, deadline, errors))
            _attempts.put(key, task)
        record = _core_recorder()
        beat: asyncio.Task[None] | None = None
        if record is not None:
            _heartbeats.add(info.task_token, record, every, counted)
        else:
            if not _warned_fallback:
                _warned_fallback = True
                logger.warning(
                    "steps heartbeat from the event loop (the SDK's core recorder was not "
                    "found): a step that blocks the loop may be retried while it runs"
                )
            beat = asyncio.create_task(_beat(every, *([{ERRORS_DETAIL: errors}] if errors else [])))
        # A retry (most often: the earlier attempt's worker died) resets the run's sticky queue
        # while its work runs, so that its result's task goes to live workers (``_unstick``).
        unstick = asyncio.create_task(_unstick(info)) if info.attempt > 1 else None
        try:
            outcome: StepOutcome
            segment: SegmentWrite | None
            outcome, segment = await asyncio.shield(task)
            if segment is not None:
                # Written while the work ran; a retry that joins finished work (its write
                # failed) writes it again here instead of calling the model a second time.
                await _store_retrying(
                    segment.stored, f"step {request.step} transcript not stored", deadline
                )
            await _store_outcome(outcome, deadline)
            if unstick is not None:
                await unstick
            return outcome
        except Exception as exc:
            # Paced by the errors counted so far (by the attempt number for a request
            # from before error counting, whose errors are not counted).
            paced = _paced(exc, request, info, errors if request.error_attempts else None)
            ended = _counted(paced, request, info, errors)
            if request.error_attempts is not None and ended is paced and _counts(paced, info):
                # Not the last: the next attempt finds one more error in the step's details
                # (core sends the latest beat before this attempt's failure).
                _heartbeats.remove(info.task_token)
                if beat is not None:
                    beat.cancel()
                await _record_errors(record, info, errors + 1)
            _log_failed_attempt(definition, request, info, ended)
            if ended is exc:
                raise
            raise ended from ended.__cause__
        except asyncio.CancelledError:
            details = activity.cancellation_details()
            superseded = details is not None and (details.timed_out or details.not_found)
            if not superseded:
                task.cancel()  # the run was cancelled, or the worker shuts down
            elif details is not None and not details.timed_out and info.workflow_id:
                # "Not found": a next attempt took over (its retry joins this work), or the
                # run ended (cancelled, terminated) and nothing will: then stop the model or
                # tool call instead of paying for the rest of it.
                check = _stop_if_run_ended(activity.client(), info, task)
                _ending.add(asyncio.create_task(check))
            raise
        finally:
            if unstick is not None and not unstick.done():
                unstick.cancel()  # this attempt failed or was cancelled: no result follows
            _heartbeats.remove(info.task_token)
            if beat is not None:
                beat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beat

    run_step.__name__ = run_step.__qualname__ = definition.name.replace(".", "_")
    return activity.defn(name=definition.name)(run_step)


_ending: set[asyncio.Task[None]] = set()
"""The checks of :func:`_stop_if_run_ended` in flight (held here: the loop keeps only a weak
reference to a task)."""


async def _stop_if_run_ended(client: Client, info: activity.Info, work: asyncio.Task[Any]) -> None:
    """Cancel ``work`` when the run of the step it does is no longer running."""
    try:
        handle = client.get_workflow_handle(info.workflow_id or "", run_id=info.workflow_run_id)
        if await run_closed(handle):
            logger.info(
                "step %s of run %s: the run ended while the step ran; its call is stopped",
                info.activity_id,
                info.workflow_id,
            )
            work.cancel()
    except Exception:
        logger.debug("whether the step's run ended was not learned", exc_info=True)
    finally:
        current = asyncio.current_task()
        if current is not None:
            _ending.discard(current)


def _log_failed_attempt(
    definition: StepDefinition, request: StepRequest, info: activity.Info, exc: Exception
) -> None:
    """One line per failed attempt of a step: run, agent, step, attempt, error, and whether
    the engine retries it."""
    from tether.core.logs import STEP_LOG, log

    policy = info.retry_policy
    error_type = exc.type if isinstance(exc, ApplicationError) else type(exc).__name__
    final = (
        (isinstance(exc, ApplicationError) and exc.non_retryable)
        or (policy is not None and 0 < policy.maximum_attempts <= info.attempt)
        or (policy is not None and error_type in (policy.non_retryable_error_types or ()))
    )
    message = exc.message if isinstance(exc, ApplicationError) else str(exc)
    log(
        STEP_LOG,
        logging.WARNING,
        "step attempt failed" if not final else "step failed",
        run_id=request.run_id,
        agent=request.agent,
        step=request.step,
        name=definition.name,
        kind=definition.kind,
        attempt=info.attempt,
        error_type=error_type,
        error=message.splitlines()[0] if message else "",
        retrying=not final,
    )


def retry_delay(
    request: StepRequest, info: activity.Info, errors: int | None = None
) -> timedelta | None:
    """How long the engine waits before retrying this attempt after an error: the step's
    policy (``initial_interval`` times ``backoff`` per earlier error, at most
    ``max_interval``). None when the engine's retry policy holds that interval itself (a
    request from before ``retry_interval``)."""
    policy = info.retry_policy
    if request.retry_interval is None or policy is None:
        return None
    earlier = errors if errors is not None else max(info.attempt - 1, 0)
    delay = request.retry_interval * policy.backoff_coefficient**earlier
    if policy.maximum_interval is not None:
        delay = min(delay, policy.maximum_interval.total_seconds())
    return timedelta(seconds=delay)


def _paced(
    exc: Exception, request: StepRequest, info: activity.Info, errors: int | None = None
) -> Exception:
    """``exc`` with the step policy's retry delay on it (``next_retry_delay``).

    The engine's retry policy holds :data:`~tether.core.contract.LOST_STEP_RETRY` so that a
    step lost with its worker is retried at once; a failed attempt tells the engine its own
    delay instead. A delay the error already names (a provider's Retry-After) is kept, and a
    final error is left as it is. Type and message stay the same: the run sees the same
    failure it saw before."""
    if isinstance(exc, ApplicationError) and (
        exc.non_retryable or exc.next_retry_delay is not None
    ):
        return exc
    delay = retry_delay(request, info, errors)
    if delay is None:
        return exc
    if isinstance(exc, ApplicationError):
        paced = ApplicationError(
            exc.message,
            *exc.details,
            type=exc.type,
            next_retry_delay=delay,
            category=exc.category,
        )
        paced.__cause__ = exc.__cause__
        return paced.with_traceback(exc.__traceback__)
    wrapped = ApplicationError(str(exc), type=type(exc).__name__, next_retry_delay=delay)
    wrapped.__cause__ = exc
    return wrapped


def _errors_before(request: StepRequest, info: activity.Info) -> int:
    """How many earlier attempts of this step ended in an error: the count the step's
    heartbeat details hold (0 when none did, or for a request that does not count them)."""
    if request.error_attempts is None or info.attempt <= 1:
        return 0
    for detail in info.heartbeat_details:
        if isinstance(detail, dict) and isinstance(detail.get(ERRORS_DETAIL), int):
            return max(int(detail[ERRORS_DETAIL]), 0)
    return 0


async def _encoded(value: JSON) -> list[Payload]:
    """``value`` as heartbeat details, encoded (and encrypted) as the engine SDK would."""
    try:
        return list(await activity.client().data_converter.encode([value]))
    except Exception:
        logger.debug("heartbeat details not encoded", exc_info=True)
        return []


def _counts(exc: Exception, info: activity.Info) -> bool:
    """Whether the engine retries the step after this error (so the error uses up one of
    the step's attempts for errors)."""
    if isinstance(exc, ApplicationError):
        if exc.non_retryable or exc.category == ApplicationErrorCategory.BENIGN:
            return False
        kind = exc.type
    else:
        kind = type(exc).__name__
    policy = info.retry_policy
    return not (policy is not None and kind in (policy.non_retryable_error_types or ()))


def _counted(exc: Exception, request: StepRequest, info: activity.Info, errors: int) -> Exception:
    """``exc``, final (not retried) when it ends the last attempt the step's policy allows
    for errors, and naming the attempts made (:data:`ATTEMPTS_DETAIL`) for the run."""
    if request.error_attempts is None or not _counts(exc, info):
        return exc
    if errors + 1 < request.error_attempts:
        return exc
    made = {ATTEMPTS_DETAIL: info.attempt}
    if isinstance(exc, ApplicationError):
        final = ApplicationError(
            exc.message,
            *exc.details,
            made,
            type=exc.type,
            non_retryable=True,
            category=exc.category,
        )
        final.__cause__ = exc.__cause__
        return final.with_traceback(exc.__traceback__)
    wrapped = ApplicationError(str(exc), made, type=type(exc).__name__, non_retryable=True)
    wrapped.__cause__ = exc
    return wrapped


async def _record_errors(
    record: Callable[[Any], None] | None, info: activity.Info, errors: int
) -> None:
    """Leave ``errors`` in the step's heartbeat details for its next attempt."""
    try:
        if record is None:
            activity.heartbeat({ERRORS_DETAIL: errors})
            return
        details = await _encoded({ERRORS_DETAIL: errors})
        if details:
            record(ActivityHeartbeat(task_token=info.task_token, details=details))
    except Exception:
        logger.debug("the error count was not recorded", exc_info=True)


UNSTICK_TIMEOUT = timedelta(seconds=2)


async def _unstick(info: activity.Info) -> None:
    """Point the run's next task at its queue, not at the sticky queue of the worker that ran
    the earlier attempt.

    A retried step most often means that worker died (its beats stopped): the engine would
    otherwise hold the run's next task on the dead worker's sticky queue for the sticky
    schedule-to-start timeout before any live worker may take it. Done before this attempt
    reports its result (it runs beside the step's work), so the task that result schedules
    goes straight to live workers. When the earlier worker is alive after all, it costs one
    replay of the run there, nothing else.
    """
    if not info.workflow_id:
        return
    try:
        client = activity.client()
        await client.workflow_service.reset_sticky_task_queue(
            ResetStickyTaskQueueRequest(
                namespace=info.namespace,
                execution=WorkflowExecution(
                    workflow_id=info.workflow_id, run_id=info.workflow_run_id or ""
                ),
            ),
            timeout=UNSTICK_TIMEOUT,
        )
    except Exception:  # only a shortcut: without it the engine's own timeout applies
        logger.debug("step retry: resetting the run's sticky queue failed", exc_info=True)


def engine_non_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is the engine's own "do not retry" error (a tool written for Temporal
    raising ``ApplicationError(non_retryable=True)``), so adapters need not import it."""
    return isinstance(exc, ApplicationError) and exc.non_retryable


def describe_error(exc: BaseException) -> dict[str, Any]:
    return {"type": type(exc).__name__, "message": str(exc)}


TRANSCRIPT_ACTIVITY = "tether.transcript"
"""The activity a continued segment of a long run reads its conversation with (persisted)."""


def build_transcript_activity(store: BlobStore) -> Callable[[str], Awaitable[list[Any]]]:
    """The activity that loads a conversation from ``store`` by its chain head: a long run's
    next segment gets its loop's conversation by reference (docs/architecture.md)."""

    async def load_transcript(head: str) -> list[Any]:
        items = await store.load_chain(head)
        # The result is this chain whole: the store records it as the chain, not anew.
        expect_chain_payload(to_json(items), head)
        return items

    return activity.defn(name=TRANSCRIPT_ACTIVITY)(load_transcript)
