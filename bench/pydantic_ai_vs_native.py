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
import statistics
import time
import uuid
from datetime import timedelta
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.durable_exec.temporal import (
    PydanticAIPlugin,
    PydanticAIWorkflow,
    TemporalDurability,
)
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

import tether
from tether.core.devserver import EmbeddedEngine
from tether.core.runtime import Runtime
from tether.core.store import BlobStore
from tether.testing import ScriptedModelServer, ToolCall, Turn, history_stats

RESULT_BYTES = 2000


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
        return (await NATIVE_AGENTS[0].run(prompt)).output


@activity.defn(name="bench.noop")
async def noop(i: int) -> int:
    return i


@workflow.defn(name="bench.Floor", sandboxed=False)
class Floor:
    @workflow.run
    async def run(self, n: int) -> int:
        for i in range(n):
            await workflow.execute_activity(noop, i, start_to_close_timeout=timedelta(seconds=30))
        return n


def script(n: int) -> list[Turn]:
    turns = [Turn.tool_calls(ToolCall("lookup", {"i": i})) for i in range(n - 1)]
    return [*turns, Turn.text(f"looked up {n - 1} records")]


async def model_inputs(client: Client, run_id: str, step_name: str) -> tuple[list[int], Any]:
    stats = await history_stats(client, run_id)
    return [s.input_bytes for s in stats.steps if step_name in s.name], stats


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
                tether_agent = build_agent(server, "tether-bench", native=False)
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
                        inputs, stats = await model_inputs(native_client, run_id, "model_request")
                        results["native"].append(_row(wall, inputs, stats))

                        t = time.perf_counter()
                        handle = await durable.start("go")
                        await handle.result()
                        wall = time.perf_counter() - t
                        inputs, stats = await model_inputs(
                            runtime.client, handle.id, "pydantic_ai.model"
                        )
                        results["tether"].append(_row(wall, inputs, stats))
                rows.append({"n": n, **{k: _median(v) for k, v in results.items()}})
        await runtime.close()
    _print(rows, args)


def _row(wall: float, inputs: list[int], stats: Any) -> dict[str, Any]:
    pick = {f"in@{k}": inputs[k - 1] for k in (1, 10, 50) if k <= len(inputs)}
    pick[f"in@{len(inputs)}"] = inputs[-1]
    return {"s": wall, "events": stats.events, "bytes": stats.total_bytes, **pick}


def _median(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def _print(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\nPydantic AI tool loop, {args.result_bytes}-byte tool results, "
        f"median of {args.repeat} runs (n = model calls; n-1 tool calls)\n"
    )
    for row in rows:
        n, nat, tet, floor = row["n"], row["native"], row["tether"], row["floor"]
        print(f"n={n}")
        print(f"  floor  (2n-1 bare activities)  {floor['s']:7.2f} s")
        print(
            f"  native TemporalDurability      {nat['s']:7.2f} s  {nat['events']:6.0f} events "
            f"{nat['bytes'] / 1024:9.1f} KiB"
        )
        print(
            f"  tether                         {tet['s']:7.2f} s  {tet['events']:6.0f} events "
            f"{tet['bytes'] / 1024:9.1f} KiB"
        )
        print(
            f"  ratios tether/native: time {tet['s'] / nat['s']:.2f}, history bytes "
            f"{tet['bytes'] / nat['bytes']:.3f}; tether/floor time {tet['s'] / floor['s']:.2f}"
        )
        keys = [k for k in nat if k.startswith("in@")]
        print("  model step input bytes  " + "  ".join(f"{k}" for k in keys))
        print("    native                " + "  ".join(f"{nat[k]:>6.0f}" for k in keys))
        print("    tether                " + "  ".join(f"{tet[k]:>6.0f}" for k in keys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--result-bytes", type=int, default=2000)
    parser.add_argument("--store", default="/tmp/tether-bench-store")
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
