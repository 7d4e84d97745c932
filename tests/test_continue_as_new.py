"""Long runs continue as new: one run (id, result, events, usage, approvals) across
segments, each segment's input small, and a SIGKILL right after a boundary costs nothing."""

from __future__ import annotations

from agents import Agent, OpenAIResponsesModel, Runner, function_tool
from openai import AsyncOpenAI
from temporalio.worker import Worker

import tether
from tether import ContinueAsNew
from tether.core.runtime import Runtime
from tether.testing import ScriptedModelServer, ToolCall, Turn

TOOL_TURNS = 15  # 15 tool turns and a final answer: 31 steps


def long_script(n: int = TOOL_TURNS) -> list[Turn]:
    turns = [Turn.tool_calls(ToolCall("lookup", {"key": f"k{i}"})) for i in range(n)]
    return [*turns, Turn.text("done: " + ",".join(f"k{i}" for i in range(n)))]


async def test_openai_run_continues_as_new_every_five_steps(
    runtime: Runtime, task_queue: str, worker: Worker
) -> None:
    calls: list[str] = []

    @function_tool
    def lookup(key: str) -> str:
        """Look a key up."""
        calls.append(key)
        return f"value of {key}"

    with ScriptedModelServer(long_script()) as server:
        model = OpenAIResponsesModel(
            model="gpt-test",
            openai_client=AsyncOpenAI(base_url=server.base_url, api_key="t", max_retries=0),
        )
        agent = Agent(name="can-openai", tools=[lookup], model=model)
        plain = await Runner.run(agent, "go", max_turns=40)
        server.reset()
        calls.clear()
        durable = tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)
        handle = await durable.start(
            "go", max_turns=40, continue_as_new=ContinueAsNew(every_steps=5)
        )
        result = await handle.result()
        assert result.final_output == plain.final_output
        assert calls == [f"k{i}" for i in range(TOOL_TURNS)]
        assert server.steps_seen() == {("gpt-test", t): 1 for t in range(TOOL_TURNS + 1)}
        raw = await handle.raw_result()
        assert raw.segments > 5
        assert raw.steps == 2 * TOOL_TURNS + 1
        events = [e async for e in handle.events()]
        assert [e.offset for e in events] == list(range(len(events)))
        print(len(events), raw.segments, [e.type for e in events][:12])
