"""Step side: the agent's real model and real tools, called on a worker."""

from __future__ import annotations

import functools
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter
from pydantic_ai import Agent, RunContext
from pydantic_ai.exceptions import (
    ApprovalRequired,
    CallDeferred,
    ModelAPIError,
    ModelHTTPError,
    ModelRequestRejectedError,
    ModelRetry,
    UnexpectedModelBehavior,
    UserError,
)
from pydantic_ai.messages import (
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelResponse,
    ModelResponseStreamEvent,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
)
from pydantic_ai.models import Model, ModelRequestParameters, infer_model
from pydantic_ai.usage import RunUsage

from tether.adapters._openai_requests import plain_conversation
from tether.adapters.pydantic_ai._mcp import without_mcp
from tether.core.contract import JSON, StepContext, StepError, StepOutcome
from tether.core.steps import current_step
from tether.core.values import pack
from tether.errors import NonRetryableError, RetryableError, StepInputError

_params: TypeAdapter[ModelRequestParameters] = TypeAdapter(ModelRequestParameters)

_parsed: OrderedDict[str, tuple[list[JSON], list[ModelMessage]]] = OrderedDict()
"""Per run (latest first out): the history its last model step here read, and as messages."""
PARSED_RUNS_KEPT = 32


def _messages(items: list[JSON]) -> list[ModelMessage]:
    """The history as Pydantic AI messages, validating only the messages after the longest
    prefix equal to what this run's previous model step on this worker read (the history
    grows by a message or two per step; validating all of it took 0.5 s at 9,000
    messages). Compared by value, so a changed message is validated again."""
    info = current_step()
    key = info.run_id if info is not None else ""
    kept = _parsed.get(key) if key else None
    same = 0
    parsed: list[ModelMessage] = []
    if kept is not None:
        raw, parsed = kept
        n = min(len(raw), len(items))
        same = n if items[:n] == raw[:n] else next(i for i in range(n) if items[i] != raw[i])
    messages = parsed[:same] + ModelMessagesTypeAdapter.validate_python(items[same:])
    if key:
        _parsed[key] = (items, messages)
        _parsed.move_to_end(key)
        while len(_parsed) > PARSED_RUNS_KEPT:
            _parsed.popitem(last=False)
    return list(messages)


@functools.cache
def _events() -> TypeAdapter[ModelResponseStreamEvent]:
    """Built at the first raw event a step streams, not at import (a worker's start)."""
    return TypeAdapter(ModelResponseStreamEvent)


def resolve_model(agent: Agent[Any, Any], override: str | None = None) -> Model:
    """The agent's model on this worker: a registered instance, or one built from its name."""
    chosen = override or agent.model
    if isinstance(chosen, Model):
        return chosen
    if chosen is None:
        raise NonRetryableError(
            f"agent {agent.name!r} has no model. Fix: Agent('openai:gpt-4o', ...) or pass "
            "model=... to durable.run",
            error_type="NoModel",
        )
    try:
        return infer_model(chosen)
    except UserError as exc:
        raise NonRetryableError(
            f"unknown model {chosen!r}: {exc}", error_type="UnknownModel"
        ) from exc


def _agent(ctx: StepContext) -> Agent[Any, Any]:
    agent = ctx.agent
    assert isinstance(agent, Agent)
    return agent


def _classify(exc: Exception) -> Exception:
    if isinstance(exc, ModelHTTPError):
        if exc.status_code in (408, 409, 429) or exc.status_code >= 500:
            return RetryableError(
                f"provider answered {exc.status_code}: {exc.body}",
                error_type=f"ProviderHTTP{exc.status_code}",
                retry_after=_retry_after(exc),
            )
        return NonRetryableError(
            f"provider refused the request ({exc.status_code}): {exc.body}",
            error_type=f"ProviderHTTP{exc.status_code}",
        )
    if isinstance(exc, UserError):
        return NonRetryableError(f"{type(exc).__name__}: {exc}", error_type=type(exc).__name__)
    if isinstance(exc, ModelRequestRejectedError):
        return NonRetryableError(
            f"provider refused the request: {exc}", error_type=type(exc).__name__
        )
    if isinstance(exc, ModelAPIError):
        # Connection, timeout, overload, rate limit, server error without an HTTP status.
        return RetryableError(
            f"{type(exc).__name__}: {exc}",
            error_type=type(exc).__name__,
            retry_after=exc.retry_after,
        )
    try:
        import openai
    except ImportError:  # pragma: no cover - the openai extra is optional
        return exc
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status in (408, 409, 429) or status >= 500:
            header = exc.response.headers.get("retry-after") if exc.response else None
            return RetryableError(
                f"provider answered {status}: {exc.message}",
                error_type=f"ProviderHTTP{status}",
                retry_after=float(header) if header else None,
            )
        return NonRetryableError(
            f"provider refused the request ({status}): {exc.message}",
            error_type=f"ProviderHTTP{status}",
        )
    if isinstance(exc, openai.APIConnectionError | openai.APIResponseValidationError):
        return RetryableError(f"{type(exc).__name__}: {exc}", error_type=type(exc).__name__)
    return exc


def _retry_after(exc: Exception) -> float | None:
    cause = exc.__cause__
    response = getattr(cause, "response", None)
    header = response.headers.get("retry-after") if response is not None else None
    try:
        return float(header) if header else None
    except ValueError:
        return None


async def model_step(ctx: StepContext, payload: JSON) -> StepOutcome:
    agent = _agent(ctx)
    model = resolve_model(agent, payload.get("model_override"))
    params = _params.validate_python(ctx.shared(payload["params_ref"]))
    fallback: dict[str, str] = {}
    settings = payload.get("settings")
    after = await _continued(model, ctx, payload.get("chain"))
    if after is not None:
        # Only the messages after the stored response: its id is the seed Pydantic AI
        # continues from (the run checked the history before it is what the provider holds).
        messages = after
        settings = {**settings, "openai_previous_response_id": payload["chain"]["response_id"]}
    else:
        messages = _messages(await ctx.transcript_items())
        if isinstance(settings, dict) and settings.get("openai_previous_response_id"):
            _steady_timestamps(messages)
    state: dict[str, Any] | None = None

    async def request(settings: Any) -> ModelResponse:
        with plain_conversation():
            if payload.get("stream"):
                raw = payload["stream"] == "raw"
                return await _streamed(model, ctx, messages, settings, params, raw, fallback)
            return await model.request(messages, settings, params)

    try:
        try:
            response = await request(settings)
        except ModelHTTPError as exc:
            chained = isinstance(settings, dict) and settings.get("openai_previous_response_id")
            if not chained or not _state_lost(exc):
                raise
            # The provider no longer holds the response the model chained to (expired,
            # deleted): the whole history is here, so the step sends all of it.
            state = {
                "fallback": "full",
                "reason": f"the provider no longer holds the previous response "
                f"({exc.status_code} previous_response_not_found); the whole history was sent",
            }
            unchained = {k: v for k, v in settings.items() if k != "openai_previous_response_id"}
            if payload.get("chain") is not None:
                messages = _messages(await ctx.transcript_items())
            response = await request(unchained)
    except Exception as exc:
        classified = _classify(exc)
        if classified is exc:
            raise
        raise classified from exc
    [dumped] = ModelMessagesTypeAdapter.dump_python([response], mode="json")
    value: dict[str, Any] = {"response": dumped}
    if fallback:
        value["stream_fallback"] = fallback["reason"]
    if state is not None:
        value["state"] = state
    return StepOutcome(value=value)


async def _continued(
    model: Model, ctx: StepContext, chain: dict[str, Any] | None
) -> list[ModelMessage] | None:
    """The messages after the stored response the run chained this request to, read from
    the store from that response on; None when the whole history is needed (no chain, a
    model that is not the Responses API's, or a history that does not match)."""
    if chain is None:
        return None
    from pydantic_ai.models.openai import OpenAIResponsesModel

    if not isinstance(model, OpenAIResponsesModel):
        return None
    items = await ctx.transcript_items(int(chain["from"]))
    if len(items) < 2:
        return None
    head, *after = ModelMessagesTypeAdapter.validate_python(items)
    if not isinstance(head, ModelResponse):
        return None
    if head.provider_response_id != chain["response_id"]:
        return None
    return after


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _steady_timestamps(messages: list[ModelMessage]) -> None:
    """One fixed time on every message and part the transcript left without one.

    The run side leaves timestamps out of the transcript (they differ between a run and its
    replay), so validation stamps them with the worker's clock, differently at each step.
    The Responses model continues a stored response only while the digest of the history
    before it is unchanged, and that digest covers the timestamps: fixed ones keep it
    stable from step to step. The provider is never sent them.
    """
    for message in messages:
        if hasattr(message, "timestamp"):
            message.timestamp = _EPOCH
        for part in message.parts:
            if hasattr(part, "timestamp"):
                part.timestamp = _EPOCH


def _state_lost(exc: ModelHTTPError) -> bool:
    """The Responses API's answer to a ``previous_response_id`` it does not hold (anymore)."""
    body = exc.body
    if not isinstance(body, dict):
        return False
    error = body.get("error", body)
    if not isinstance(error, dict):
        return False
    if error.get("code") == "previous_response_not_found":
        return True
    return exc.status_code in (400, 404) and error.get("param") == "previous_response_id"


async def _streamed(
    model: Model,
    ctx: StepContext,
    messages: list[ModelMessage],
    settings: Any,
    params: ModelRequestParameters,
    raw: bool,
    fallback: dict[str, str],
) -> ModelResponse:
    """The model's streamed response: text deltas are published as they come
    (``model.delta``; with ``raw``, every stream event as Pydantic AI's own JSON), the whole
    response is the step's result. A provider that answers without streaming (no event at
    all) is asked again with a plain request; ``fallback`` records why."""
    seen = 0
    try:
        async with model.request_stream(messages, settings, params) as stream:
            async for event in stream:
                seen += 1
                text = None
                if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
                    text = event.part.content
                elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
                    text = event.delta.content_delta
                data = _events().dump_python(event, mode="json") if raw else None
                if text:
                    delta: dict[str, Any] = {"text": text}
                    if data is not None:
                        delta["raw"] = data
                    ctx.publish("model.delta", delta)
                elif data is not None:
                    ctx.publish("model.event", {"raw": data})
            response = stream.get()
    except UnexpectedModelBehavior:
        if seen:
            raise
        response = None
    if seen == 0 and not response_has_content(response):
        fallback["reason"] = (
            "the provider answered the stream request without streaming; "
            "the step made a plain request instead"
        )
        return await model.request(messages, settings, params)
    assert response is not None
    return response


def response_has_content(response: ModelResponse | None) -> bool:
    return response is not None and bool(response.parts)


async def tool_step(ctx: StepContext, payload: JSON) -> StepOutcome:
    agent = _agent(ctx)
    name = payload["tool"]
    info = payload.get("ctx", {})
    run_ctx: RunContext[Any] = RunContext(
        deps=ctx.run_context(),
        model=resolve_model(agent),
        usage=RunUsage(),
        tool_call_id=info.get("tool_call_id"),
        tool_name=name,
        retry=int(info.get("retry", 0)),
        run_step=int(info.get("run_step", 0)),
        tool_call_approved=bool(info.get("tool_call_approved", False)),
    )
    for toolset in without_mcp(agent.toolsets):
        tools = await toolset.get_tools(run_ctx)
        if name in tools:
            tool = tools[name]
            break
    else:
        return StepOutcome(
            error=StepError(
                type="ToolNotFound",
                message=(
                    f"agent {agent.name!r} on this worker has no tool {name!r}. "
                    "Fix: deploy the same agent code to every worker."
                ),
                attempts=ctx.attempt,
                fatal=True,
            )
        )
    try:
        args = tool.args_validator.validate_python(payload["args"])
        result = await toolset.call_tool(name, args, run_ctx, tool)
    except ModelRetry as exc:
        return _control("ModelRetry", str(exc), ctx)
    except ApprovalRequired as exc:
        return _control("ApprovalRequired", str(exc), ctx)
    except CallDeferred as exc:
        return _control("CallDeferred", str(exc), ctx)
    except Exception as exc:
        fatal = isinstance(exc, NonRetryableError | UserError | StepInputError)
        if not fatal and not ctx.final_attempt:
            raise RetryableError(
                f"tool {name!r} raised {type(exc).__name__}: {exc}", error_type=type(exc).__name__
            ) from exc
        return StepOutcome(
            error=StepError(
                type=type(exc).__name__,
                message=f"tool {name!r}: {exc}",
                attempts=ctx.attempt,
                fatal=True,
            )
        )
    try:
        return StepOutcome(value=pack(result, what=f"the output of tool {name!r}"))
    except StepInputError as exc:
        return StepOutcome(
            error=StepError(
                type="StepInputError", message=str(exc), attempts=ctx.attempt, fatal=True
            )
        )


def _control(kind: str, message: str, ctx: StepContext) -> StepOutcome:
    """Control flow, not failure: returned as data and raised again in the run."""
    return StepOutcome(error=StepError(type=kind, message=message, attempts=ctx.attempt))
