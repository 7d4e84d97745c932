"""Step side: the agent's real model and real tools, called on a worker."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from agents import (
    Agent,
    AgentOutputSchema,
    FunctionTool,
    Handoff,
    Model,
    ModelProvider,
    ModelResponse,
    ModelSettings,
    ModelTracing,
    Tool,
    Usage,
)
from agents.agent_output import AgentOutputSchemaBase
from agents.exceptions import ModelBehaviorError, UserError
from agents.models.multi_provider import MultiProvider
from agents.tool import (
    maybe_invoke_function_tool_failure_error_function,
    set_function_tool_failure_error_function,
)
from agents.tool_context import ToolContext
from pydantic import TypeAdapter
from pydantic_core import to_jsonable_python

from tether.adapters._openai_requests import install_sdk, plain_conversation
from tether.adapters.openai_agents._graph import index_agents
from tether.core import registry
from tether.core.contract import JSON, StepContext, StepError, StepOutcome
from tether.core.steps import engine_non_retryable
from tether.core.values import pack
from tether.errors import NonRetryableError, RetryableError, StepInputError

_provider: ModelProvider | None = None
_settings = TypeAdapter(ModelSettings)
_usage: TypeAdapter[Usage] = TypeAdapter(Usage)


def set_model_provider(provider: ModelProvider | None) -> None:
    """The provider that resolves agents' model *names* on workers (default: the SDK's)."""
    global _provider
    _provider = provider


def _resolve_agent(ctx: StepContext, name: str) -> Agent[Any]:
    root = ctx.agent
    assert isinstance(root, Agent)
    found = index_agents(root).get(name)
    if found is None:
        other = registry.registered().get(name)
        if other is not None and isinstance(other.agent, Agent):
            return other.agent
        raise NonRetryableError(
            f"agent {name!r} was reached at run time but is not reachable from {root.name!r} "
            "(handoffs, agents used as tools) nor registered on this worker. Fix: add it to "
            "the agent graph, or wrap it with tether.durable() in the worker's module.",
            error_type="AgentNotFound",
        )
    return found


def _model_for(agent: Agent[Any]) -> Model:
    if isinstance(agent.model, Model):
        return agent.model
    global _provider
    if _provider is None:
        _provider = MultiProvider()
    return _provider.get_model(agent.model)


def _output_schema(agent: Agent[Any]) -> AgentOutputSchemaBase | None:
    if agent.output_type is None or agent.output_type is str:
        return None
    if isinstance(agent.output_type, AgentOutputSchemaBase):
        return agent.output_type
    return AgentOutputSchema(agent.output_type)


async def _no_invoke(ctx: Any, args: str) -> Any:
    raise RuntimeError("schema-only tool: invoked on the run side, not here")


def _tools(spec: dict[str, Any], agent: Agent[Any]) -> tuple[list[Tool], list[Handoff[Any, Any]]]:
    by_name = {getattr(t, "name", None): t for t in agent.tools}
    tools: list[Tool] = []
    for t in spec["tools"]:
        if t["kind"] == "function":
            tools.append(
                FunctionTool(
                    name=t["name"],
                    description=t["description"],
                    params_json_schema=t["params"],
                    on_invoke_tool=_no_invoke,
                    strict_json_schema=t["strict"],
                )
            )
        elif t["name"] in by_name:
            tools.append(by_name[t["name"]])  # hosted tools are configuration, not code
    handoffs: list[Handoff[Any, Any]] = [
        Handoff(
            tool_name=h["tool_name"],
            tool_description=h["tool_description"],
            input_json_schema=h["input_json_schema"],
            on_invoke_handoff=_no_invoke,
            agent_name=h["agent_name"],
            strict_json_schema=h["strict"],
        )
        for h in spec["handoffs"]
    ]
    return tools, handoffs


def _classify_provider_error(exc: Exception) -> Exception:
    """Provider 429/5xx/timeouts retry (honouring Retry-After); other 4xx fail at once."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status in (408, 409, 429) or status >= 500:
            retry_after: float | None = None
            header = exc.response.headers.get("retry-after") if exc.response else None
            if header:
                try:
                    retry_after = float(header)
                except ValueError:
                    retry_after = None
            return RetryableError(
                f"provider answered {status}: {exc.message}",
                retry_after=retry_after,
                error_type=f"ProviderHTTP{status}",
            )
        return NonRetryableError(
            f"provider refused the request ({status}): {exc.message}",
            error_type=f"ProviderHTTP{status}",
        )
    if isinstance(exc, openai.APIConnectionError | openai.APIResponseValidationError):
        return RetryableError(f"{type(exc).__name__}: {exc}", error_type=type(exc).__name__)
    if isinstance(exc, UserError):
        return NonRetryableError(f"{type(exc).__name__}: {exc}", error_type=type(exc).__name__)
    return exc


async def model_step(ctx: StepContext, payload: JSON) -> StepOutcome:
    agent = _resolve_agent(ctx, payload["agent"])
    tools, handoffs = _tools(ctx.shared(payload["spec_ref"]), agent)
    chain = payload.get("chain")
    text = payload.get("input_text")
    # A chained request reads only the items after the previous response (the run sent
    # the step those only); any other reads the whole conversation.
    start = int(chain["new_from"]) if chain is not None and text is None else 0
    items = await ctx.transcript_items(start)
    model_input: Any = text if text is not None else items
    model = _model_for(agent)
    fallback: dict[str, str] = {}
    stream = payload.get("stream")
    call = _streaming(model, ctx, stream == "raw", fallback) if stream else model.get_response
    settings = _settings.validate_python(payload["settings"])
    previous_response_id = payload.get("previous_response_id")
    state: dict[str, JSON] | None = None
    if chain is not None and isinstance(model_input, list):
        # Responses state mode: the provider holds the conversation up to the previous
        # response; only the items after it are sent. The previous response's id came from
        # the run's history, so every attempt of this step names the same one.
        if _keeps_state(model):
            previous_response_id = chain["previous_response_id"]
            state = {"previous_response_id": previous_response_id, "sent_items": len(model_input)}
        else:
            state = {"fallback": "full", "reason": "the model is not a Responses API model"}
            model_input = await ctx.transcript_items()

    install_sdk()  # the SDK hands a plain conversation on without copying it twice

    async def request(model_input: Any, previous_response_id: Any) -> ModelResponse:
        with plain_conversation():
            return await call(
                payload["system"],
                model_input,
                settings,
                tools,
                _output_schema(agent),
                handoffs,
                ModelTracing.DISABLED,
                previous_response_id=previous_response_id,
                conversation_id=payload.get("conversation_id"),
                prompt=None,
            )

    try:
        try:
            response = await request(model_input, previous_response_id)
        except Exception as exc:
            if state is None or "fallback" in state or not _state_lost(exc):
                raise
            # The provider lost the stored conversation (expired, deleted, another
            # project): the whole conversation is here, so the step sends it all.
            state = {
                "fallback": "full",
                "reason": f"the provider no longer holds response {previous_response_id!r} "
                f"({_provider_message(exc)}); the whole conversation was sent",
            }
            response = await request(await ctx.transcript_items(), None)
    except Exception as exc:
        classified = _classify_provider_error(exc)
        if classified is exc:
            raise  # never its own cause: Temporal's failure conversion would recurse
        raise classified from exc
    return StepOutcome(
        value={
            "output": [
                item.model_dump(mode="json", exclude_unset=True) for item in response.output
            ],
            "usage": _usage.dump_python(response.usage, mode="json"),
            "response_id": response.response_id,
            "request_id": response.request_id,
            "model": _model_name(model, agent),
            **({"stream_fallback": fallback["reason"]} if fallback else {}),
            **({"state": state} if state is not None else {}),
        }
    )


def _keeps_state(model: Model) -> bool:
    """Whether ``model`` calls the Responses API, which can continue a stored response."""
    from agents.models.openai_responses import OpenAIResponsesModel

    return isinstance(model, OpenAIResponsesModel)


def _state_lost(exc: Exception) -> bool:
    """The provider's answer to a ``previous_response_id`` it does not hold (anymore)."""
    import openai

    if not isinstance(exc, openai.APIStatusError):
        return False
    if exc.code == "previous_response_not_found":
        return True
    return exc.status_code in (400, 404) and exc.param == "previous_response_id"


def _provider_message(exc: Exception) -> str:
    import openai

    if isinstance(exc, openai.APIStatusError):
        return f"{exc.status_code} {exc.code or ''}".strip()
    return type(exc).__name__


def _streaming(
    model: Model, ctx: StepContext, raw: bool, fallback: dict[str, str]
) -> Callable[..., Awaitable[ModelResponse]]:
    """``get_response`` made from ``stream_response``: text deltas are published as they come
    (``model.delta``; with ``raw``, every stream event, as the SDK's own JSON), the completed
    response is the step's result.

    A provider that answers a stream request without streaming (no event at all) is asked
    again with a plain request; ``fallback`` records why, for the run to say so."""

    async def get_response(*args: Any, **kwargs: Any) -> ModelResponse:
        final: Any = None
        seen = 0
        async for event in model.stream_response(*args, **kwargs):
            seen += 1
            kind = getattr(event, "type", None)
            data = event.model_dump(mode="json", exclude_unset=True) if raw else None
            if kind == "response.output_text.delta":
                delta: dict[str, JSON] = {"text": event.delta}  # type: ignore[union-attr]
                if data is not None:
                    delta["raw"] = data
                ctx.publish("model.delta", delta)
            elif data is not None:
                ctx.publish("model.event", {"raw": data})
            if kind == "response.completed":
                final = event.response  # type: ignore[union-attr]
            elif kind in ("response.failed", "response.incomplete", "error"):
                raise RetryableError(f"the model's stream ended with {kind}", error_type=kind)
        if final is None and seen == 0:
            fallback["reason"] = (
                "the provider answered the stream request without streaming; "
                "the step made a plain request instead"
            )
            return await model.get_response(*args, **kwargs)
        if final is None:
            raise RetryableError("the model's stream ended without a completed response")
        used = final.usage
        usage = (
            Usage(
                requests=1,
                input_tokens=used.input_tokens,
                output_tokens=used.output_tokens,
                total_tokens=used.total_tokens,
                input_tokens_details=used.input_tokens_details,
                output_tokens_details=used.output_tokens_details,
            )
            if used is not None
            else Usage(requests=1)
        )
        return ModelResponse(
            output=final.output, usage=usage, response_id=final.id, request_id=None
        )

    return get_response


def _model_name(model: Model, agent: Agent[Any]) -> str | None:
    """The model's name, for the usage ledger's price lookup."""
    name = getattr(model, "model", None)
    if isinstance(name, str):
        return name
    return agent.model if isinstance(agent.model, str) else None


def _non_retryable(exc: BaseException) -> bool:
    if isinstance(exc, NonRetryableError | ModelBehaviorError | UserError | StepInputError):
        return True
    return engine_non_retryable(exc)


async def tool_step(ctx: StepContext, payload: JSON) -> StepOutcome:
    agent = _resolve_agent(ctx, payload["agent"])
    name = payload["tool"]
    tool = next((t for t in agent.tools if isinstance(t, FunctionTool) and t.name == name), None)
    if tool is None:
        return StepOutcome(
            error=StepError(
                type="ToolNotFound",
                message=(
                    f"agent {agent.name!r} on this worker has no function tool {name!r}. "
                    "Fix: deploy the same agent code to every worker."
                ),
                attempts=ctx.attempt,
                fatal=True,
            )
        )
    raising = dataclasses.replace(tool)
    set_function_tool_failure_error_function(raising, None)
    tctx = ToolContext(
        context=ctx.run_context(),
        tool_name=name,
        tool_call_id=payload.get("call_id") or "",
        tool_arguments=payload["args"],
        agent=agent,
    )
    try:
        output = await raising.on_invoke_tool(tctx, payload["args"])
    except Exception as exc:
        if not _non_retryable(exc) and not ctx.final_attempt:
            raise RetryableError(
                f"tool {name!r} raised {type(exc).__name__}: {exc}", error_type=type(exc).__name__
            ) from exc
        text = await maybe_invoke_function_tool_failure_error_function(
            function_tool=tool, context=tctx, error=exc
        )
        return StepOutcome(
            error=StepError(
                type=type(exc).__name__,
                message=f"tool {name!r}: {exc}",
                attempts=ctx.attempt,
                model_text=text,
                fatal=text is None,
            )
        )
    try:
        return StepOutcome(value=pack(output, what=f"the output of tool {name!r}"))
    except StepInputError as exc:
        return StepOutcome(
            error=StepError(
                type="StepInputError", message=str(exc), attempts=ctx.attempt, fatal=True
            )
        )


def encode_final_output(value: Any) -> JSON:
    return pack(value, what="the agent's final output")


def jsonable(value: Any) -> JSON:
    return to_jsonable_python(value)
