"""The raw loop's Tether adapter: the same loop in a run, each call a step.

The whole mapping is two step types and a run that hands the loop step-backed callables.
The loop is deterministic between steps, so the run replays it from history after a crash.
"""

from __future__ import annotations

import asyncio
import urllib.error
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from tether import Adapter, Capability, NonRetryableError, RetryableError, StepPolicy
from tether.core.contract import (
    JSON,
    RunRequest,
    RunSession,
    StepContext,
    StepDefinition,
    StepOutcome,
)
from tether_rawloop.agent import (
    AskModel,
    Message,
    ModelHTTPError,
    RawAgent,
    RawResult,
    RunTool,
    agent_loop,
    chat_request,
)

MODEL_POLICY = StepPolicy(max_attempts=6, max_interval=timedelta(seconds=30))
TOOL_POLICY = StepPolicy(max_attempts=3)


class RawLoopAdapter(Adapter):
    """Runs :func:`tether_rawloop.agent.agent_loop` durably."""

    name = "rawloop"
    framework = "tether-rawloop"
    verified_versions = "0.1"
    capabilities = frozenset(
        {
            Capability.PARALLEL_TOOLS,
            Capability.SYNC_TOOLS,
            Capability.MAX_TURNS,
            Capability.STRUCTURED_OUTPUT,
            Capability.CONTINUE_AS_NEW,
        }
    )

    @property
    def model_step(self) -> str:
        return f"{self.name}.model"

    @property
    def tool_step(self) -> str:
        return f"{self.name}.tool"

    def claims(self, obj: object) -> bool:
        return isinstance(obj, RawAgent)

    def agent_name(self, agent: object) -> str:
        assert isinstance(agent, RawAgent)
        return agent.name

    def steps(self) -> Sequence[StepDefinition]:
        return (
            StepDefinition(
                name=self.model_step, kind="model", handler=self.call_model, policy=MODEL_POLICY
            ),
            StepDefinition(
                name=self.tool_step, kind="tool", handler=self.call_tool, policy=TOOL_POLICY
            ),
        )

    # -- steps (on a worker) ----------------------------------------------------------------

    async def call_model(self, ctx: StepContext, payload: JSON) -> StepOutcome:
        agent = ctx.agent
        assert isinstance(agent, RawAgent)
        try:
            response = await asyncio.to_thread(chat_request, agent, ctx.transcript())
        except ModelHTTPError as exc:
            if exc.status in (408, 409, 429) or exc.status >= 500:
                raise RetryableError(
                    str(exc), retry_after=exc.retry_after, error_type=f"HTTP{exc.status}"
                ) from None
            raise NonRetryableError(str(exc), error_type=f"HTTP{exc.status}") from None
        except urllib.error.URLError as exc:
            raise RetryableError(f"model endpoint unreachable: {exc}") from None
        return StepOutcome(
            value={
                "id": response.get("id"),
                "message": response["choices"][0]["message"],
                "usage": response.get("usage") or {},
            }
        )

    async def call_tool(self, ctx: StepContext, payload: JSON) -> StepOutcome:
        agent = ctx.agent
        assert isinstance(agent, RawAgent)
        return StepOutcome(value=await agent.tool(payload["tool"])(payload["args"]))

    # -- the run (deterministic) ------------------------------------------------------------

    def ask_model(self, session: RunSession, agent: RawAgent) -> AskModel:
        async def ask(messages: list[Message]) -> Message:
            outcome = await session.step(
                self.model_step,
                {"agent": agent.name},
                kind="model",
                summary=f"model: {agent.model}",
                policy=MODEL_POLICY,
                transcript=messages,
            )
            usage = outcome.value.get("usage") or {}
            prompt, completion = (
                int(usage.get("prompt_tokens", 0)),
                int(usage.get("completion_tokens", 0)),
            )
            # Once per model step, as the provider billed it; `model=` prices it (when
            # genai_prices knows the model) and budgets count total_tokens.
            session.add_usage(
                {
                    "requests": 1,
                    "input_tokens": prompt,
                    "output_tokens": completion,
                    "total_tokens": int(usage.get("total_tokens", prompt + completion)),
                },
                model=agent.model,
            )
            return dict(outcome.value["message"])

        return ask

    def run_tool(self, session: RunSession, agent: RawAgent) -> RunTool:
        async def run(name: str, arguments: str) -> str:
            outcome = await session.step(
                self.tool_step,
                {"tool": name, "args": arguments},
                kind="tool",
                summary=f"tool: {name}",
                policy=TOOL_POLICY,
            )
            return str(outcome.value)

        return run

    async def run(self, session: RunSession, agent: object, request: RunRequest) -> JSON:
        assert isinstance(agent, RawAgent)

        async def checkpoint(messages: list[Message], turns: int) -> None:
            # A step boundary: a long run may continue as new here, with the loop's state.
            # The conversation crosses by reference to Tether's store, the turns in the state.
            await session.checkpoint(lambda: {"turns": turns}, transcript=messages)

        saved = session.resumed()
        conversation = session.resumed_transcript()
        result = await agent_loop(
            agent,
            str(request.input),
            self.ask_model(session, agent),
            self.run_tool(session, agent),
            max_turns=int(request.options.get("max_turns", 10)),
            resume=(list(conversation or []), int(saved["turns"])) if saved else None,
            checkpoint=checkpoint,
        )
        return {"output": result.output, "turns": result.turns}

    def decode_output(self, agent: object, value: JSON) -> Any:
        return RawResult(output=value["output"], turns=int(value["turns"]))
