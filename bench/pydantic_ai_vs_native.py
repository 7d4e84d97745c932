"""Side by side, in one process and on one engine: a Pydantic AI tool loop of N steps run
(1) by Tether, (2) by Pydantic AI's own Temporal integration (TemporalDurability), and
(3) as the bare engine floor (a workflow running N no-op activities).

    python bench/pydantic_ai_vs_native.py --steps 10 50 100 --repeat 3 --result-bytes 2000

Both agent runs use Pydantic AI's real OpenAIChatModel against Tether's scripted
OpenAI-compatible server (no network, no key). Reported per run: wall time, history
events and bytes, and the input bytes of model steps 1, 10, 50 and N (read from the
history). Medians over --repeat runs; ratios are against the native integration.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

from _common import Floor, median, noop, print_table, run_row, script
from pydantic_ai import Agent
from pydantic_ai.durable_exec.temporal import (
    PydanticAIPlugin,
    PydanticAIWorkflow,
    TemporalDurability,
)
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.usage import UsageLimits
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

import tether
from tether.core.devserver import EmbeddedEngine
from tether.core.runtime import Runtime
from tether.core.store import BlobStore
from tether.testing import ScriptedModelServer

RESULT_BYTES = 2000
NO_LIMIT = UsageLimits(request_limit=None)  # the default stops a loop at 50 requests


def build_agent(server: ScriptedModelServer, name: str, native: bool) -> Agent[None, str]:
    model = OpenAIChatModel(
        "bench", provider=OpenAIProvider(base_url=server.base_url, api_key="bench")
    )
    caps = [TemporalDurability()] if native else []
    agent: Agent[None, str] = Agent(model, name=name, capabilities=caps)

    @agent.tool_plain
    def lookup(i: int) -> str:
        """A record of RESULT_BYTES bytes."""
        return f"record {i}: " + "x" * RESULT_BYTES

    return agent


NATIVE_AGENTS: list[Agent[None, str]] = []


@workflow.defn(name="bench.NativeLoop", sandboxed=False)
class NativeLoop(PydanticAIWorkflow):
    __pydantic_ai_agents__ = NATIVE_AGENTS

    @workflow.run
    async def run(self, prompt: str) -> str:
        return (await NATIVE_AGENTS[0].run(prompt, usage_limits=NO_LIMIT)).output


async def bench(args: argparse.Namespace) -> None:
    global RESULT_BYTES
    RESULT_BYTES = args.result_bytes
    rows: list[dict[str, Any]] = []
    async with EmbeddedEngine(persist=False, ui=False) as engine:
        runtime = await Runtime.start(address=engine.address, store=BlobStore(args.store))
        native_client = await Client.connect(engine.address, plugins=[PydanticAIPlugin()])
        for n in args.steps:
            with ScriptedModelServer(script(n)) as server:
                native_agent = build_agent(server, "native", native=True)
                NATIVE_AGENTS[:] = [native_agent]
                tether_agent = build_agent(server, f"tether-bench-{n}", native=False)
                durable = tether.durable(tether_agent, runtime=runtime, local_worker=False)
                results: dict[str, list[dict[str, Any]]] = {"floor": [], "native": [], "tether": []}
                async with (
                    runtime.worker(task_queue="bench-tether"),
                    Worker(
                        native_client,
                        task_queue="bench-native",
                        workflows=[NativeLoop, Floor],
                        activities=[noop],
                    ),
                ):
                    durable.task_queue = "bench-tether"
                    for _ in range(args.repeat):
                        run_id = f"floor-{uuid.uuid4().hex[:8]}"
                        t = time.perf_counter()
                        await native_client.execute_workflow(
                            Floor.run, 2 * n - 1, id=run_id, task_queue="bench-native"
                        )
                        results["floor"].append({"s": time.perf_counter() - t})

                        run_id = f"native-{uuid.uuid4().hex[:8]}"
                        t = time.perf_counter()
                        await native_client.execute_workflow(
                            NativeLoop.run, "go", id=run_id, task_queue="bench-native"
                        )
                        wall = time.perf_counter() - t
                        results["native"].append(
                            await run_row(native_client, run_id, wall, "model_request")
                        )

                        t = time.perf_counter()
                        handle = await durable.start("go", usage_limits=NO_LIMIT)
                        await handle.result()
                        wall = time.perf_counter() - t
                        results["tether"].append(
                            await run_row(runtime.client, handle.id, wall, "pydantic_ai.model")
                        )
                rows.append({"n": n, **{k: median(v) for k, v in results.items()}})
        await runtime.close()
    print_table(
        f"Pydantic AI tool loop, {args.result_bytes}-byte tool results, median of "
        f"{args.repeat} runs (n = model calls; n-1 tool calls)",
        rows,
        "native TemporalDurability",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--result-bytes", type=int, default=2000)
    parser.add_argument("--store", default="/tmp/tether-bench-store")
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
