"""A `tether worker`'s resident memory (RSS) as one long run goes on: does it grow with the
step count, and by how much per step?

    python bench/run_memory.py --model-calls 1500      # 3,000 steps (model + tool)

One Pydantic AI run (a tool call per model call, small results) on a worker subprocess;
the worker's RSS (``/proc/PID/status``) is sampled every ``--every`` steps. The run's own
bounded status query gives the step count while it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENAI_API_KEY", "bench-not-used")

from pydantic_ai.usage import UsageLimits

import tether
from tether.core.devserver import EmbeddedEngine
from tether.core.runtime import Runtime, agent_queue
from tether.core.store import BlobStore
from tether.testing import ScriptedModelServer, ToolCall, Turn

HERE = Path(__file__).resolve().parent


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def spawn_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tether.cli", "worker", "_recovery_pai:agent"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def run(args: argparse.Namespace) -> None:
    turns = [Turn.tool_calls(ToolCall("lookup", {"i": i})) for i in range(args.model_calls)]
    turns.append(Turn.text("all looked up"))
    print(f"load before: {os.getloadavg()[0]:.1f} (1 min), {os.cpu_count()} cores")
    with ScriptedModelServer(turns) as server:
        async with EmbeddedEngine(persist=False, ui=False) as engine:
            store = BlobStore(tempfile.mkdtemp(prefix="tether-memory-store-"))
            runtime = await Runtime.start(address=engine.address, store=store)
            prefix = "memory"
            env = dict(
                os.environ,
                TEMPORAL_ADDRESS=engine.address,
                TETHER_STORE=store.url,
                TETHER_TASK_QUEUE=prefix,
                OPENAI_BASE_URL=server.base_url,
                PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            )
            worker = spawn_worker(env, Path(tempfile.mkdtemp()) / "worker.log")
            try:
                import _recovery_pai

                durable = tether.durable(_recovery_pai.agent, runtime=runtime, local_worker=False)
                durable.task_queue = agent_queue(prefix, "recovery-pai")
                handle = await durable.start(
                    "look them all up", usage_limits=UsageLimits(request_limit=None)
                )
                result = asyncio.ensure_future(handle.result())
                samples: list[tuple[int, float, float]] = []
                start = time.monotonic()
                next_at = args.every
                while not result.done():
                    await asyncio.wait({result}, timeout=1.0)
                    try:
                        steps = (await handle.describe()).steps
                    except Exception:
                        continue
                    if steps >= next_at:
                        samples.append((steps, rss_mb(worker.pid), time.monotonic() - start))
                        print(f"  step {steps:6d}: worker RSS {samples[-1][1]:7.1f} MB", flush=True)
                        next_at += args.every
                await result
            finally:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
                await runtime.close()
    print(f"\nload after: {os.getloadavg()[0]:.1f} (1 min)")
    if len(samples) >= 2:
        (s0, m0, _), (s1, m1, _) = samples[0], samples[-1]
        per_step = (m1 - m0) * 1024 / (s1 - s0)
        print(
            f"RSS {m0:.1f} MB at step {s0}, {m1:.1f} MB at step {s1}: x{m1 / m0:.2f}, "
            f"{per_step:.1f} KB per step"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-calls", type=int, default=1500)
    parser.add_argument("--every", type=int, default=250)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
