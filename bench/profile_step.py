"""Where one step's time goes, at step 10, 100 and 1,000 of a tool loop, for each adapter.

    pip install py-spy==0.4.3     # the sampling profiler (bench only)
    python bench/profile_step.py --adapter both --at 10 100 1000

One long run per adapter (N model calls, each but the last asking for a tool whose result is
--result-bytes long) on the embedded engine and the scripted model server. The agent is
hosted by a `tether worker` subprocess; the model server and the engine are outside it. At
each model call number in --at, py-spy samples the worker for --window model calls, and the
worker's CPU time is read from /proc. Each sample is put in one bucket by its innermost
frame that names one (see PARTS), so the table says, per model call, how much worker CPU
went to the run side (framework loop, engine SDK, payloads, transcript, events) and how
much to the step side (the provider client building the request, HTTP).

Printed: a table per adapter, milliseconds of worker CPU per model call by bucket, and the
wall time per model call, then a summary: the framework's parts (its loop, its provider
client, HTTP), Tether's own (tether, transcript, events) and the rest (the engine SDK, the
event loop, payload conversion). `--adapter floor` (or `all`) profiles the bare engine
floor the same way, over the same window: a workflow of no-op activities, two standing for
one model call, hosted in this process (no model server); its CPU per call is what the
engine SDK costs with no framework and no Tether. --json writes the same numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import script, worker_env

TICKS = os.sysconf("SC_CLK_TCK")

# (part, substrings of a frame's file): a sample's part is the first one, from the innermost
# frame outwards, whose pattern a frame's file contains. Its side comes from the SDK frame
# that runs it: the run task (the framework's loop, replayable) or a step (an activity).
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("openai request transform", ("openai/_utils/_transform",)),
    (
        "HTTP",
        ("httpx/", "httpcore/", "httpx2/", "httpcore2/", "h11/", "anyio/", "ssl.py", "socket.py"),
    ),
    ("provider client", ("openai/", "pydantic_ai/models/")),
    ("transcript", ("tether/core/conversation", "tether/core/store")),
    ("events", ("tether/core/events", "workflow_streams")),
    ("payload conversion", ("temporalio/converter", "tether/core/converter", "google/protobuf")),
    # Before the framework's: Tether's adapters live in tether/adapters/openai_agents/ and
    # tether/adapters/pydantic_ai/, which the framework's patterns would match too.
    ("tether", ("tether/",)),
    ("framework", ("agents/", "pydantic_ai/", "pydantic_graph/", "pydantic/")),
    ("engine SDK", ("temporalio/",)),
    ("asyncio", ("asyncio/",)),
]
FRAMEWORK = ("framework", "provider client", "HTTP")
TETHER = ("tether", "transcript", "events")
SIDES = (("run", "temporalio/worker/_workflow_instance"), ("step", "temporalio/worker/_activity"))
OTHER = "other"
AGENTS = {
    "openai_agents": ("_profile_agents:openai_agent", "profile-openai", "lookup"),
    "pydantic_ai": ("_profile_agents:pydantic_agent", "profile-pydantic", "lookup_record"),
}


IDLE = (
    "EpollSelector.select (",
    "_worker (concurrent/futures/thread.py",
    "_Heartbeats._run (",
    "Condition.wait (",
)
"""Innermost frames of a thread that waits (py-spy samples some of them as running): left
out, so the worker's CPU time is split over the samples that did work."""


def bucket_of(stack: str) -> str | None:
    frames = stack.split(";")
    if frames and any(frames[-1].startswith(idle) for idle in IDLE):
        return None
    side = next((name for name, marker in SIDES if marker in stack), "worker")
    in_asyncio = False
    for frame in reversed(frames):
        if "asyncio/" in frame:
            in_asyncio = True  # the event loop's part of whatever called it
            continue
        for name, patterns in PARTS:
            if any(p in frame for p in patterns):
                # Writing a request body to the socket is sending it (HTTP); other event
                # loop work is the loop's own.
                if in_asyncio and name not in ("HTTP", "provider client"):
                    return f"{side}: asyncio"
                return f"{side}: {name}"
        if in_asyncio:
            return f"{side}: asyncio"
    return f"{side}: asyncio" if in_asyncio else f"{side}: {OTHER}"


def read_raw(path: Path) -> collections.Counter[str]:
    """py-spy's raw (collapsed) output: ``frame;frame;... count`` per line."""
    out: collections.Counter[str] = collections.Counter()
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        part = bucket_of(stack) if stack and count.isdigit() else None
        if part is not None:
            out[part] += int(count)
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


async def wait_calls(server: Any, n: int, proc: subprocess.Popen[bytes]) -> None:
    while len(server.requests) < n:
        if proc.poll() is not None:
            sys.exit(f"the worker exited with {proc.returncode}")
        await asyncio.sleep(0.005)


async def profile(adapter: str, args: argparse.Namespace, address: str) -> dict[str, Any]:
    from tether.core.runtime import Runtime
    from tether.core.store import BlobStore
    from tether.testing import ScriptedModelServer
    from tether.testing._workers import stop_process_group

    target, name, tool = AGENTS[adapter]
    total = max(args.at) + args.window + 1
    work = Path(tempfile.mkdtemp(prefix="tether-profile-"))
    with ScriptedModelServer({"profile": script(total, tool)}) as server:
        env = worker_env(
            server.base_url, queue=f"profile-{adapter}", work=work, result_bytes=args.result_bytes
        )
        worker = subprocess.Popen(  # noqa: ASYNC220 - a bench driver
            [sys.executable, "-m", "tether.cli", "worker", target, "--address", address],
            env=env,
            start_new_session=True,
        )
        runtime = await Runtime.start(address=address, store=BlobStore(str(work / "store")))
        try:
            queue = f"profile-{adapter}.{name}"
            while await runtime.pollers(queue) == 0:
                if worker.poll() is not None:
                    sys.exit("the worker exited before polling")
                await asyncio.sleep(0.1)
            handle = await start(adapter, runtime, queue)
            rows = []
            for at in sorted(args.at):
                await wait_calls(server, at, worker)
                raw = work / f"{adapter}-{at}.txt"
                spy = spy_on(args, worker.pid, raw)
                cpu0, wall0 = cpu_seconds(worker.pid), time.perf_counter()
                await wait_calls(server, at + args.window, worker)
                cpu1, wall1 = cpu_seconds(worker.pid), time.perf_counter()
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
                rows.append(row_of(at, args.window, raw, cpu1 - cpu0, wall1 - wall0))
                print(f"  {adapter}: profiled model calls {at}..{at + args.window}", flush=True)
            await handle.result()
        finally:
            stop_process_group(worker)
            await runtime.close()
            if args.keep:
                print(f"  raw py-spy stacks kept in {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    return {"adapter": adapter, "rows": rows}


def spy_on(args: argparse.Namespace, pid: int, raw: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *(args.py_spy, "record", "--pid", str(pid), "--rate", str(args.rate)),
            *("--format", "raw", "--output", str(raw), "--nonblocking"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_activities(starts: list[float], n: int, stall: float = 60.0) -> None:
    """Until ``n`` no-op activities have started; exits if none starts for ``stall`` s."""
    while len(starts) < n:
        if time.perf_counter() - (starts[-1] if starts else time.perf_counter()) > stall:
            sys.exit(f"the floor stalled after {len(starts)} activities")
        await asyncio.sleep(0.05)


async def profile_floor(args: argparse.Namespace, address: str) -> dict[str, Any]:
    """The bare engine floor, profiled like the adapters: its worker is this process (the
    engine is a subprocess), two no-op activities stand for one model call."""
    from _common import NOOP_STARTS, Floor, noop
    from temporalio.client import Client
    from temporalio.worker import Worker

    client = await Client.connect(address)
    work = Path(tempfile.mkdtemp(prefix="tether-profile-floor-"))
    total = max(args.at) + args.window + 1
    rows = []
    NOOP_STARTS.clear()
    async with Worker(client, task_queue="profile-floor", workflows=[Floor], activities=[noop]):
        handle = await client.start_workflow(
            Floor.run, 2 * total, id=f"profile-floor-{time.time_ns()}", task_queue="profile-floor"
        )
        for at in sorted(args.at):
            await wait_activities(NOOP_STARTS, 2 * at)
            raw = work / f"floor-{at}.txt"
            spy = spy_on(args, os.getpid(), raw)
            cpu0, wall0 = cpu_seconds(os.getpid()), time.perf_counter()
            await wait_activities(NOOP_STARTS, 2 * (at + args.window))
            cpu1, wall1 = cpu_seconds(os.getpid()), time.perf_counter()
            spy.send_signal(signal.SIGINT)
            await asyncio.to_thread(spy.wait, 60)
            rows.append(row_of(at, args.window, raw, cpu1 - cpu0, wall1 - wall0))
            print(f"  floor: profiled model calls {at}..{at + args.window}", flush=True)
        await handle.result()
    if args.keep:
        print(f"  raw py-spy stacks kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return {"adapter": "floor", "rows": rows}


def row_of(at: int, window: int, raw: Path, cpu_s: float, wall_s: float) -> dict[str, Any]:
    samples = read_raw(raw)
    count = sum(samples.values()) or 1
    cpu_ms = cpu_s * 1000 / window
    return {
        "at": at,
        "wall_ms": wall_s * 1000 / window,
        "cpu_ms": cpu_ms,
        "buckets": {b: cpu_ms * c / count for b, c in samples.items()},
        "samples": sum(samples.values()),
    }


async def start(adapter: str, runtime: Any, queue: str) -> Any:
    import _profile_agents as agents

    import tether

    if adapter == "openai_agents":
        durable = tether.durable(
            agents.openai_agent, runtime=runtime, task_queue=queue, local_worker=False
        )
        return await durable.start("go", max_turns=1_000_000)
    from pydantic_ai.usage import UsageLimits

    durable = tether.durable(
        agents.pydantic_agent, runtime=runtime, task_queue=queue, local_worker=False
    )
    return await durable.start("go", usage_limits=UsageLimits(request_limit=None))


def print_report(result: dict[str, Any]) -> None:
    rows = result["rows"]
    names = sorted({b for r in rows for b in r["buckets"]})
    print(f"\n{result['adapter']}: worker CPU per model call (ms), by part\n")
    head = "| part | " + " | ".join(f"call {r['at']}" for r in rows) + " |"
    print(head)
    print("|---" * (len(rows) + 1) + "|")
    for b in names:
        print(f"| {b} | " + " | ".join(f"{r['buckets'].get(b, 0):.1f}" for r in rows) + " |")
    print("| **worker CPU** | " + " | ".join(f"{r['cpu_ms']:.1f}" for r in rows) + " |")
    print("| wall time | " + " | ".join(f"{r['wall_ms']:.1f}" for r in rows) + " |")
    print("| samples | " + " | ".join(str(r["samples"]) for r in rows) + " |")
    print("\nsummed: the framework's parts / Tether's own / the rest (engine SDK, loop, payloads)")
    for r in rows:
        b = r["buckets"]
        framework = sum(v for k, v in b.items() if k.partition(": ")[2] in FRAMEWORK)
        own = sum(v for k, v in b.items() if k.partition(": ")[2] in TETHER)
        rest = r["cpu_ms"] - framework - own
        print(f"  call {r['at']}: {framework:.1f} / {own:.1f} / {rest:.1f} ms of worker CPU")


async def main_async(args: argparse.Namespace) -> None:
    from tether.core.devserver import EmbeddedEngine

    choice = {"both": list(AGENTS), "all": ["floor", *AGENTS]}
    adapters = choice.get(args.adapter, [args.adapter])
    results = []
    async with EmbeddedEngine(persist=False, ui=False) as engine:
        for adapter in adapters:
            if adapter == "floor":
                results.append(await profile_floor(args, engine.address))
            else:
                results.append(await profile(adapter, args, engine.address))
    for result in results:
        print_report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))  # noqa: ASYNC240


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--adapter", choices=[*AGENTS, "floor", "both", "all"], default="both")
    parser.add_argument("--at", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--window", type=int, default=10, help="model calls per sample window")
    parser.add_argument("--result-bytes", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("--keep", action="store_true", help="keep py-spy's raw stacks")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
