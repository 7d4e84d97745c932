"""Token latency of a streamed run: a text piece leaving the model server -> the client's
iterator yielding it. Durable ``run_streamed`` against a plain ``Runner.run_streamed`` on the
same script (Agents SDK, Responses API, in-process worker and dev server).

    python bench/stream_latency.py [--pieces 200] [--delay 0.01] [--runs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

from agents import Agent, OpenAIResponsesModel, Runner
from openai import AsyncOpenAI

import tether
from tether.core.devserver import EmbeddedEngine
from tether.core.runtime import Runtime
from tether.core.store import BlobStore
from tether.testing import ScriptedModelServer, Turn


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _measure(run: Any, sent: dict[str, float]) -> list[float]:
    """Latencies (ms) of each text piece: sent by the server -> yielded to the client."""
    latencies = []
    async for event in run.stream_events():
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
            at = sent.get(event.data.delta)
            if at is not None:
                latencies.append((time.perf_counter() - at) * 1000)
    return latencies


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pieces", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.01, help="seconds between pieces")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    # Distinct 16-character pieces, so each one's send time is known.
    text = "".join(f"piece{i:010d}|" for i in range(args.pieces))
    sent: dict[str, float] = {}

    def on_piece(piece: str) -> None:
        sent[piece] = time.perf_counter()

    state = Path(tempfile.mkdtemp(prefix="tether-bench-"))
    results: dict[str, list[float]] = {"plain": [], "durable": []}
    async with EmbeddedEngine(persist=False, ui=False) as engine:
        runtime = await Runtime.start(address=engine.address, store=BlobStore(state / "store"))
        try:
            await _bench(runtime, args, text, sent, on_piece, results)
        finally:
            await runtime.close()
    for name, values in results.items():
        print(
            f"{name:8s} pieces={len(values):5d}  median={statistics.median(values):8.1f} ms  "
            f"p99={_percentile(values, 0.99):8.1f} ms"
        )


async def _bench(
    runtime: Runtime,
    args: argparse.Namespace,
    text: str,
    sent: dict[str, float],
    on_piece: Any,
    results: dict[str, list[float]],
) -> None:
    turns = [Turn.text(text)]
    with ScriptedModelServer(turns, piece_delay=args.delay, on_piece=on_piece) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="t", max_retries=0)
        agent = Agent(name="bench", model=OpenAIResponsesModel("gpt-b", openai_client=client))
        durable = tether.durable(
            agent, runtime=runtime, task_queue="bench-stream", local_worker=False
        )
        async with runtime.worker(task_queue="bench-stream"):
            for _ in range(args.runs):
                sent.clear()
                results["plain"] += await _measure(Runner.run_streamed(agent, "go"), sent)
                server.reset()
                sent.clear()
                results["durable"] += await _measure(durable.run_streamed("go"), sent)
                server.reset()


if __name__ == "__main__":
    asyncio.run(main())
