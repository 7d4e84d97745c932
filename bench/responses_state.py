"""Bytes sent to the provider per model step, with and without the Responses state mode.

    python bench/responses_state.py --calls 500 --at 10 100 500

One OpenAI Agents SDK tool loop (a Responses API model, every model call but the last asks
for one tool whose result is --result-bytes long) runs durably on an embedded engine against
the scripted model server, once as usual and once with ``auto_previous_response_id=True``.
The server records each request's body size; printed: the body size at the chosen calls and
the total, per mode, and each run's wall time (a loaded machine inflates the times, not the
bytes).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

from _common import script
from agents import Agent, OpenAIResponsesModel, function_tool
from openai import AsyncOpenAI

import tether
from tether.core.devserver import EmbeddedEngine
from tether.core.runtime import Runtime
from tether.core.store import BlobStore
from tether.testing import ScriptedModelServer


async def main(calls: int, marks: list[int], result_bytes: int) -> None:
    os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")
    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-"))
    engine = EmbeddedEngine(state_dir=tmp, persist=False, ui=False)
    await engine.start()
    runtime = await Runtime.start(address=engine.address, store=BlobStore(tmp / "store"))

    @function_tool
    def lookup(i: int) -> str:
        """A record."""
        return f"record {i}: " + "x" * result_bytes

    rows: dict[str, tuple[list[int], float]] = {}
    try:
        with ScriptedModelServer(script(calls)) as server:
            client = AsyncOpenAI(base_url=server.base_url, api_key="bench", max_retries=0)
            agent = Agent(
                name="responses-state-bench",
                instructions="Look the records up.",
                tools=[lookup],
                model=OpenAIResponsesModel(model="gpt-bench", openai_client=client),
            )
            queue = f"bench-{uuid.uuid4().hex[:6]}"
            durable = tether.durable(agent, runtime=runtime, task_queue=queue, local_worker=False)
            async with runtime.worker(task_queue=queue):
                for label, options in (
                    ("whole conversation", {}),
                    ("auto_previous_response_id", {"auto_previous_response_id": True}),
                ):
                    server.reset()
                    server.expire_responses()
                    t0 = time.perf_counter()
                    await durable.run("go", max_turns=calls + 1, **options)
                    wall = time.perf_counter() - t0
                    sizes = [r.size for r in server.requests if r.status == 200]
                    assert len(sizes) == calls, (label, len(sizes))
                    rows[label] = (sizes, wall)
    finally:
        await runtime.close()
        engine.stop()

    shown = [m for m in marks if m <= calls]
    print(f"\nrequest body bytes per model call ({calls} calls, {result_bytes} B tool results)\n")
    print(f"{'mode':<28}" + "".join(f"{'@' + str(m):>11}" for m in shown) + f"{'total':>14}  wall")
    for label, (sizes, wall) in rows.items():
        cells = "".join(f"{sizes[m - 1]:>11,}" for m in shown)
        print(f"{label:<28}{cells}{sum(sizes):>14,}  {wall:5.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--at", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--result-bytes", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.at, args.result_bytes))
