"""Steps realized as Temporal activities: heartbeats, error classification, context."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.contrib.workflow_streams import WorkflowStreamClient
from temporalio.exceptions import ApplicationError

from tether.core import registry
from tether.core.contract import JSON, StepDefinition, StepOutcome, StepRequest, TranscriptRef
from tether.core.conversation import materialize
from tether.core.events import EVENTS_TOPIC
from tether.core.sealed import unseal_tree
from tether.core.store import MISSING_INPUT_KEY, PAYLOAD_MISSING, BlobStore, canonical_json
from tether.core.values import unpack
from tether.errors import (
    AgentNotRegisteredError,
    BlobMissingError,
    NonRetryableError,
    RetryableError,
)

logger = logging.getLogger(__name__)

BLOB_MISSING = "TetherBlobMissing"
DELTA_BATCH = timedelta(milliseconds=200)


class _ActivityStepContext:
    """What a handler sees. Everything it reads from the store is fetched before it runs
    (:meth:`prefetch`, awaited), so the synchronous accessors adapters call do no I/O."""

    def __init__(self, store: BlobStore, request: StepRequest) -> None:
        self._store = store
        self._request = request
        self._agent = registry.lookup(request.agent)
        info = activity.info()
        self._attempt = info.attempt
        limit = info.retry_policy.maximum_attempts if info.retry_policy else 0
        self._final = limit > 0 and info.attempt >= limit
        self._values: dict[str, JSON] = {}
        self._transcript: list[JSON] = []
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
            self._transcript = await materialize(store, ref)

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
        return list(self._transcript)

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


async def _beat(every: float) -> None:
    while True:
        await asyncio.sleep(every)
        activity.heartbeat()


def build_activity(
    definition: StepDefinition, store: BlobStore
) -> Callable[[StepRequest], Awaitable[StepOutcome]]:
    """A Temporal activity named ``definition.name`` that runs the step's handler."""
    every = max(definition.policy.heartbeat.total_seconds() / 3, 0.2)

    async def run_step(request: StepRequest) -> StepOutcome:
        beat = asyncio.create_task(_beat(every))
        ctx: _ActivityStepContext | None = None
        try:
            payload = request.payload
            missing = payload.get(MISSING_INPUT_KEY) if isinstance(payload, dict) else None
            if isinstance(missing, str):
                # This worker's store lacks the step's (large) input: no retry can help here.
                raise ApplicationError(missing, type=PAYLOAD_MISSING, non_retryable=True)
            ctx = _ActivityStepContext(store, request)
            await ctx.prefetch()
            outcome = await definition.handler(ctx, unseal_tree(request.payload))
            if outcome.attempt != ctx.attempt:
                outcome = dataclasses.replace(outcome, attempt=ctx.attempt)
            await ctx.close()
            return outcome
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
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    run_step.__name__ = run_step.__qualname__ = definition.name.replace(".", "_")
    return activity.defn(name=definition.name)(run_step)


def engine_non_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is the engine's own "do not retry" error (a tool written for Temporal
    raising ``ApplicationError(non_retryable=True)``), so adapters need not import it."""
    return isinstance(exc, ApplicationError) and exc.non_retryable


def describe_error(exc: BaseException) -> dict[str, Any]:
    return {"type": type(exc).__name__, "message": str(exc)}
