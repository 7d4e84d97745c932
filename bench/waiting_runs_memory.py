"""Many runs waiting for approval on one worker, side by side: the worker's memory while they
wait, and the time to approve some of them and let them finish.

    bash bench/setup_native.sh        # for native_openai (Temporal's OpenAI Agents plugin)
    python bench/waiting_runs_memory.py --runs 10000 --approve 1000

For each system, on a fresh embedded engine and one scripted model server: a worker
subprocess at its default settings (``--cache`` sets the run cache) hosts a refund agent
whose tool needs approval; the bench starts --runs runs, waits until each made its model
call and the worker is idle again (every run waits), approves --approve of them
(--concurrency at a time, each approval followed by waiting for that run's result) and
prints the worker's resident memory (VmRSS) at each mark with the times.

Systems: ``tether_openai`` and ``tether_pydantic`` (``tether worker`` hosting the agents of
tests/apps/hitl_apps.py), ``native_openai`` (bench/_native_waiting.py: Temporal's
``OpenAIAgentsPlugin``, the approval as a workflow update, in bench/.venv-native).
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from temporalio.client import Client

import tether
from tether.core.devserver import EmbeddedEngine
from tether.core.runtime import Runtime
from tether.core.store import BlobStore
from tether.testing import ScriptedModelServer, ToolCall, Turn

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "bench"
TICKS = os.sysconf("SC_CLK_TCK")
SYSTEMS = ("tether_openai", "tether_pydantic", "native_openai")
SPEC = {
    "tether_openai": "apps.hitl_apps:openai_refunds",
    "tether_pydantic": "apps.hitl_apps:pai_refunds",
}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def start_worker(
    system: str, env: dict[str, str], queue: str, cache: int | None, log: Path, native: str
) -> subprocess.Popen[bytes]:
    if system == "native_openai":
        cmd = [native, str(HERE / "_native_waiting.py"), "--address", env["TEMPORAL_ADDRESS"]]
        cmd += ["--queue", queue]
        if cache is not None:
            cmd += ["--max-cached-runs", str(cache)]
    else:
        cmd = [sys.executable, "-m", "tether.cli", "worker", SPEC[system]]
        if cache is not None:
            cmd += ["--max-cached-runs", str(cache)]
    with log.open("wb") as out:
        return subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


async def settle(
    server: ScriptedModelServer, calls: int, worker: subprocess.Popen[bytes], timeout: float
) -> None:
    """Until the server saw ``calls`` model calls and the worker is idle (under 5 % of a
    core for two seconds): every run recorded its step and waits."""
    deadline = time.monotonic() + timeout
    pid = worker.pid
    while server.count() < calls:
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited ({worker.returncode}); see its log")
        if time.monotonic() > deadline:
            raise SystemExit(f"only {server.count()} of {calls} model calls in {timeout}s")
        await asyncio.sleep(0.5)
    while True:
        before = cpu_seconds(pid)
        await asyncio.sleep(2)
        if cpu_seconds(pid) - before < 0.1 or time.monotonic() > deadline:
            return


class Side:
    """How the driver starts, asks and approves runs of one system."""

    async def start(self, n: int) -> Any: ...

    async def pending(self, run: Any) -> list[str]: ...

    async def approve_and_finish(self, run: Any, request_id: str) -> None: ...


class TetherSide(Side):
    def __init__(self, durable: tether.DurableAgent) -> None:
        self.durable = durable

    async def start(self, n: int) -> Any:
        return await self.durable.start("refund 42")

    async def pending(self, run: Any) -> list[str]:
        return [p.id for p in await run.pending()]

    async def approve_and_finish(self, run: Any, request_id: str) -> None:
        await run.approve(request_id)
        await run.result()


class NativeSide(Side):
    def __init__(self, client: Client, queue: str) -> None:
        self.client, self.queue = client, queue

    async def start(self, n: int) -> Any:
        return await self.client.start_workflow(
            "bench.NativeRefunds",
            "refund 42",
            id=f"native-{uuid.uuid4().hex}",
            task_queue=self.queue,
        )

    async def pending(self, run: Any) -> list[str]:
        return list(await run.query("pending"))

    async def approve_and_finish(self, run: Any, request_id: str) -> None:
        await run.execute_update("approve", request_id)
        await run.result()


async def bounded(n: int, fn: Callable[[int], Awaitable[Any]], limit: int) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(i: int) -> Any:
        async with sem:
            return await fn(i)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def measure(system: str, args: argparse.Namespace) -> dict[str, float]:
    os.environ.setdefault("OPENAI_API_KEY", "scripted")  # the scripted server checks none
    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-"))
    engine = EmbeddedEngine(state_dir=tmp, persist=False, ui=False)
    await engine.start()
    store = BlobStore(tmp / "store")
    queue = f"bench-{uuid.uuid4().hex[:6]}"
    runtime = await Runtime.start(address=engine.address, store=store, task_queue=queue)
    script = [Turn.tool_calls(ToolCall("refund", {"order": 42})), Turn.text("refunded")]
    if system == "tether_pydantic":
        script = [Turn.tool_calls(ToolCall("pai_refund", {"order": 42})), Turn.text("refunded")]
    out: dict[str, float] = {}
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
        worker = start_worker(
            system, env, queue, args.cache, tmp / "worker.log", args.native_python
        )
        try:
            side: Side
            if system == "native_openai":
                side = NativeSide(await Client.connect(engine.address), queue)
            else:
                from apps import hitl_apps

                agent = getattr(hitl_apps, SPEC[system].split(":")[1])
                durable = tether.durable(agent, runtime=runtime, local_worker=False)
                durable.task_queue = runtime.queue_for(durable.name)  # the worker's queue
                side = TetherSide(durable)
            warm = await side.start(0)  # the worker imports everything once
            await settle(server, 1, worker, 120)
            [request_id] = await side.pending(warm)  # the same script: the same id in every run
            await side.approve_and_finish(warm, request_id)
            base = server.count()
            out["idle"] = rss_mb(worker.pid)
            cpu0 = cpu_seconds(worker.pid)
            print(f"[{system}] worker idle (after one run): RSS {out['idle']:7.1f} MB", flush=True)
            runs: list[Any] = []
            t0 = time.monotonic()
            for mark in sorted({max(args.runs // 10, 1), args.runs}):
                runs += await bounded(mark - len(runs), side.start, args.concurrency)
                await settle(server, base + len(runs), worker, 3600)
                out[f"rss@{mark}"] = rss_mb(worker.pid)
                print(
                    f"[{system}] {len(runs):6d} runs waiting: RSS {out[f'rss@{mark}']:7.1f} MB "
                    f"({time.monotonic() - t0:.0f} s since the first start)",
                    flush=True,
                )
            out["start_s"] = time.monotonic() - t0
            out["start_cpu"] = cpu_seconds(worker.pid) - cpu0
            assert await side.pending(runs[0]) == [request_id]
            chosen = runs[: args.approve]
            cpu1 = cpu_seconds(worker.pid)
            t1 = time.monotonic()
            await bounded(
                len(chosen),
                lambda i: side.approve_and_finish(chosen[i], request_id),
                args.concurrency,
            )
            out["approve_s"] = time.monotonic() - t1
            out["approve_cpu"] = cpu_seconds(worker.pid) - cpu1
            out["rss_after"] = rss_mb(worker.pid)
            print(
                f"[{system}] {len(chosen)} approved and finished in {out['approve_s']:.1f} s "
                f"(worker CPU {out['approve_cpu']:.1f} s): RSS {out['rss_after']:7.1f} MB",
                flush=True,
            )
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
            await runtime.close()
            engine.stop()
    return out


async def main(args: argparse.Namespace) -> None:
    rows: dict[str, dict[str, float]] = {}
    for system in args.systems:
        rows[system] = await measure(system, args)
    marks = sorted({max(args.runs // 10, 1), args.runs})
    print(
        f"\n{args.runs} runs waiting, {args.approve} approved ({args.concurrency} at a time); "
        f"cache: {args.cache if args.cache is not None else 'default'}\n"
    )
    head = "".join(f"{'RSS @' + str(m):>13}" for m in marks)
    print(f"{'system':<17}{'idle':>9}{head}{'after':>9}{'start s':>9}{'approve s':>11}{'CPU s':>8}")
    for system, r in rows.items():
        cells = "".join(f"{r[f'rss@{m}']:>10.1f} MB" for m in marks)
        print(
            f"{system:<17}{r['idle']:>6.1f} MB{cells}{r['rss_after']:>6.1f} MB"
            f"{r['start_s']:>9.0f}{r['approve_s']:>11.1f}{r['approve_cpu']:>8.1f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--approve", type=int, default=1000)
    parser.add_argument(
        "--cache", type=int, default=None, help="run cache (default: each worker's)"
    )
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--native-python",
        default=str(HERE / ".venv-native" / "bin" / "python"),
        help="python of the virtualenv made by bench/setup_native.sh",
    )
    args = parser.parse_args()
    if "native_openai" in args.systems and not Path(args.native_python).exists():
        print(f"skipping native_openai: no {args.native_python} (run bench/setup_native.sh)")
        args.systems.remove("native_openai")
    sys.path.insert(0, str(ROOT / "tests"))
    asyncio.run(main(args))
