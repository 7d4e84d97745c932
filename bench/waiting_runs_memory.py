"""Many runs waiting for approval on one worker with a small run cache: its memory stays
bounded, because an evicted waiting run is held by the engine, not by the worker.

    python bench/waiting_runs_memory.py --runs 1000 --cache 50

A `tether worker` subprocess (`--max-cached-runs`) hosts the refund agent of
tests/apps/hitl_apps.py (OpenAI Agents SDK, a tool that needs approval) against the scripted
model server. The bench starts the runs, waits until each made its model call and waits
for its approval, and prints the worker's resident memory (VmRSS) when idle, after a tenth
of the runs wait, after all wait, and after every run was approved and finished.
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
import uuid
from pathlib import Path

import tether
from tether.core.devserver import EmbeddedEngine
from tether.core.runtime import Runtime
from tether.core.store import BlobStore
from tether.testing import ScriptedModelServer, ToolCall, Turn

ROOT = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start_worker(env: dict[str, str], cache: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tether.cli",
                "worker",
                "apps.hitl_apps:openai_refunds",
                "--max-cached-runs",
                str(cache),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def settle(server: ScriptedModelServer, calls: int, timeout: float) -> None:
    """Until the server saw ``calls`` model calls, then a moment for the runs to reach
    their wait (the step's result is recorded, the run asks, the cache evicts)."""
    deadline = time.monotonic() + timeout
    while server.count() < calls:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {server.count()} of {calls} model calls in {timeout}s")
        await asyncio.sleep(0.5)
    await asyncio.sleep(3)


async def main(runs: int, cache: int, batch: int) -> None:
    os.environ.setdefault("OPENAI_API_KEY", "scripted")  # the scripted server checks none
    from apps.hitl_apps import openai_refunds

    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-"))
    engine = EmbeddedEngine(state_dir=tmp, persist=False, ui=False)
    await engine.start()
    store = BlobStore(tmp / "store")
    runtime = await Runtime.start(address=engine.address, store=store)
    queue = f"bench-{uuid.uuid4().hex[:6]}"
    script = [Turn.tool_calls(ToolCall("refund", {"order": 42})), Turn.text("refunded")]
    with ScriptedModelServer(script) as server:
        env = dict(
            os.environ,
            TEMPORAL_ADDRESS=engine.address,
            TETHER_STORE=str(store.root),
            TETHER_TASK_QUEUE=queue,
            OPENAI_BASE_URL=server.base_url,
            OPENAI_API_KEY=os.environ.get("OPENAI_API_KEY", "scripted"),
            OPENAI_AGENTS_DISABLE_TRACING="1",
            PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
        )
        worker = start_worker(env, cache, tmp / "worker.log")
        try:
            durable = tether.durable(
                openai_refunds, runtime=runtime, task_queue=queue, local_worker=False
            )
            warm = await durable.start("refund 42")  # import everything once
            await settle(server, 1, 60)
            [req] = await warm.pending()
            await warm.approve(req.id)
            await warm.result()
            base = server.count()
            print(f"worker idle (after one run):      RSS {rss_mb(worker.pid):7.1f} MB")
            handles: list[tether.RunHandle] = []
            t0 = time.monotonic()
            marks = sorted({max(runs // 10, 1), runs})
            for mark in marks:
                while len(handles) < mark:
                    n = min(batch, mark - len(handles))
                    handles += await asyncio.gather(*(durable.start("refund 42") for _ in range(n)))
                await settle(server, base + len(handles), 600)
                print(
                    f"{len(handles):5d} runs waiting (cache {cache}):   "
                    f"RSS {rss_mb(worker.pid):7.1f} MB   ({time.monotonic() - t0:.0f}s)"
                )
            sample = await handles[0].pending()
            assert [p.kind for p in sample] == ["approval"], sample
            t1 = time.monotonic()
            sem = asyncio.Semaphore(batch)

            async def finish(h: tether.RunHandle) -> None:
                async with sem:
                    await h.approve(sample[0].id)  # same script: same call id in every run
                    await h.result()

            await asyncio.gather(*(finish(h) for h in handles))
            print(
                f"all {len(handles)} approved and finished:     "
                f"RSS {rss_mb(worker.pid):7.1f} MB   ({time.monotonic() - t1:.0f}s)"
            )
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(20)
            await runtime.close()
            engine.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--cache", type=int, default=50)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    asyncio.run(main(args.runs, args.cache, args.batch))
