"""Side by side, on one engine and one scripted model server: an OpenAI Agents SDK tool loop
of N model calls run (1) by Tether, (2) by Temporal's own OpenAI Agents plugin
(``temporalio.contrib.openai_agents``, tools as activities through ``activity_as_tool``) and
(3) as the bare engine floor (a workflow running 2N-1 no-op activities).

    bash bench/setup_native.sh          # once: the native plugin's own virtualenv
    python bench/openai_agents_vs_native.py --steps 10 50 100 --repeat 3

The native plugin pins openai-agents < 0.23, so it runs in its own virtualenv as a
subprocess of this driver, against the same engine and model server; the floor and Tether
run here. Reported per run: wall time, history events and bytes, and the input bytes of
model steps 1, 10, 50 and N (read from the history). Medians over --repeat runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from _common import Floor, median, noop, print_table, run_row, script
from agents import Agent, function_tool
from temporalio.worker import Worker

import tether
from tether.core.devserver import EmbeddedEngine
from tether.core.runtime import Runtime
from tether.core.store import BlobStore
from tether.testing import ScriptedModelServer

HERE = Path(__file__).resolve().parent
RESULT_BYTES = 2000


@function_tool
async def lookup(i: int) -> str:
    """A record of RESULT_BYTES bytes."""
    return f"record {i}: " + "x" * RESULT_BYTES


def native_rows(args: argparse.Namespace, address: str, base_url: str, n: int) -> list[Any]:
    env = dict(
        os.environ,
        OPENAI_BASE_URL=base_url,
        OPENAI_API_KEY="bench",
        OPENAI_AGENTS_DISABLE_TRACING="1",
        PYTHONPATH=str(HERE.parent / "src"),
    )
    cmd = [
        args.native_python,
        str(HERE / "_native_openai_agents.py"),
        "--address",
        address,
        "--model",
        f"bench-{n}",
        "--repeat",
        str(args.repeat),
        "--result-bytes",
        str(args.result_bytes),
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"the native side failed:\n{out.stderr[-4000:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


async def bench(args: argparse.Namespace) -> None:
    global RESULT_BYTES
    RESULT_BYTES = args.result_bytes
    rows: list[dict[str, Any]] = []
    lanes = {f"bench-{n}": script(n) for n in args.steps}
    with ScriptedModelServer(lanes) as server:
        os.environ["OPENAI_BASE_URL"] = server.base_url
        os.environ.setdefault("OPENAI_API_KEY", "bench")
        os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"
        async with EmbeddedEngine(persist=False, ui=False) as engine:
            runtime = await Runtime.start(address=engine.address, store=BlobStore(args.store))
            for n in args.steps:
                agent = Agent(
                    name=f"tether-bench-{n}",
                    instructions="Look the records up.",
                    model=f"bench-{n}",
                    tools=[lookup],
                )
                durable = tether.durable(
                    agent, runtime=runtime, task_queue="bench-tether", local_worker=False
                )
                results: dict[str, list[dict[str, Any]]] = {"floor": [], "tether": []}
                async with (
                    runtime.worker(task_queue="bench-tether"),
                    Worker(
                        runtime.client,
                        task_queue="bench-floor",
                        workflows=[Floor],
                        activities=[noop],
                    ),
                ):
                    for _ in range(args.repeat):
                        t = time.perf_counter()
                        await runtime.client.execute_workflow(
                            Floor.run,
                            2 * n - 1,
                            id=f"floor-{uuid.uuid4().hex[:8]}",
                            task_queue="bench-floor",
                        )
                        results["floor"].append({"s": time.perf_counter() - t})

                        t = time.perf_counter()
                        handle = await durable.start("go", max_turns=100_000)
                        await handle.result()
                        wall = time.perf_counter() - t
                        results["tether"].append(
                            await run_row(runtime.client, handle.id, wall, "openai_agents.model")
                        )
                native = native_rows(args, engine.address, server.base_url, n)
                row = {k: median(v) for k, v in results.items()}
                rows.append({"n": n, "native": median(native), **row})
            await runtime.close()
    print_table(
        f"OpenAI Agents SDK tool loop, {args.result_bytes}-byte tool results, median of "
        f"{args.repeat} runs (n = model calls; n-1 tool calls)",
        rows,
        "native OpenAIAgentsPlugin",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--result-bytes", type=int, default=2000)
    parser.add_argument("--store", default="/tmp/tether-bench-store")
    parser.add_argument(
        "--native-python",
        default=str(HERE / ".venv-native" / "bin" / "python"),
        help="python of the virtualenv made by bench/setup_native.sh",
    )
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
