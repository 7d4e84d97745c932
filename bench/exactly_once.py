"""Exactly once under load: N concurrent runs on ONE worker process, counted at the provider.

Each run is an OpenAI Agents SDK agent making 2 model calls and 1 tool call against the
scripted model server (``tether.testing``). The bench counts the requests the provider saw
and the tool executions (appended to a file by the tool itself), against what the runs
needed, and reports wall time and the worker's peak RSS.

    python bench/exactly_once.py                 # 1,000 runs, plain
    python bench/exactly_once.py --mode sigstop  # the worker is paused 8 s mid-step
    python bench/exactly_once.py --mode block    # one tool blocks the worker's loop 6 s
    python bench/exactly_once.py -n 200 --mode all

Not part of CI (minutes at full scale); ``tests/test_exactly_once.py`` runs a small version.
The worker is ``tether worker exactly_once:agent`` with this directory on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agents import Agent, function_tool

HERE = Path(__file__).resolve().parent
MODES = ("plain", "sigstop", "block")
PAUSE = 8.0
BLOCK = 6.0


def _record(key: str) -> None:
    path = os.environ.get("TETHER_BENCH_CALLS")
    if path:
        with Path(path).open("a") as f:
            f.write(key + "\n")


@function_tool
async def lookup(key: str) -> str:
    """Look a record up (an async tool; one key may block the whole event loop)."""
    _record(key)
    if key == os.environ.get("TETHER_BENCH_BLOCK_KEY"):
        time.sleep(BLOCK)  # noqa: ASYNC251 - on purpose: a tool that blocks the loop
    return f"record {key}: ok"


agent = Agent(name="once", instructions="Look the key up.", tools=[lookup], model="gpt-once")


def _prompt_of(body: Any) -> str:
    items = body.get("input") if isinstance(body, dict) else None
    if isinstance(items, str):
        return items
    for item in items or []:
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list) and content:
                return str(content[0].get("text", ""))
    return "?"


def responder(delay: float) -> Any:
    from tether.testing import RecordedRequest, ToolCall, Turn

    def reply(req: RecordedRequest) -> Turn:
        key = _prompt_of(req.body)
        if req.turn == 0:
            return Turn.tool_calls(ToolCall("lookup", {"key": key}), delay=delay)
        return Turn.text(f"done {key}", delay=delay)

    return reply


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Result:
    mode: str
    runs: int
    completed: int
    failed: int
    provider_calls: int
    provider_needed: int
    tool_runs: int
    tool_needed: int
    seconds: float
    worker_peak_rss_mb: float
    duplicate_keys: list[str]
    retried_attempts: int = 0
    """Step attempts the engine started after the first (from the runs' histories): in plain
    mode each is a heartbeat timeout of a step that was still running (a false one)."""

    @property
    def exact(self) -> bool:
        return (
            self.completed == self.runs
            and self.provider_calls == self.provider_needed
            and self.tool_runs == self.tool_needed
        )


async def measure(
    n: int,
    mode: str,
    *,
    address: str,
    store: str,
    workdir: Path,
    delay: float = 0.3,
    timeout: float = 900.0,
    steps: int | None = None,
) -> Result:
    """Run ``n`` runs on one worker subprocess in ``mode``; count what the provider saw."""
    import tether
    from tether.core.runtime import Runtime, agent_queue
    from tether.testing import ScriptedModelServer, WorkerProcess, worker_processes

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    queue = f"once-{uuid.uuid4().hex[:8]}"
    calls = workdir / f"calls-{queue}.txt"
    tag = uuid.uuid4().hex[:6]
    keys = [f"{tag}-{i}" for i in range(n)]
    with ScriptedModelServer(responder=responder(delay)) as server:
        env = dict(os.environ)
        env.update(
            {
                "TEMPORAL_ADDRESS": address,
                "TETHER_STORE": store,
                "TETHER_TASK_QUEUE": queue,
                "OPENAI_BASE_URL": server.base_url,
                "OPENAI_API_KEY": env.get("OPENAI_API_KEY", "bench-key"),
                "OPENAI_AGENTS_DISABLE_TRACING": "1",
                "TETHER_BENCH_CALLS": str(calls),
                "PYTHONPATH": os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
            }
        )
        if mode == "block":
            env["TETHER_BENCH_BLOCK_KEY"] = keys[n // 2]
        runtime = await Runtime.start(address=address, store=store)
        durable = tether.durable(agent, runtime=runtime, local_worker=False)
        durable.task_queue = agent_queue(queue, durable.name)
        try:
            with worker_processes() as procs:
                spec = ["exactly_once:agent"]
                if steps is not None:
                    spec += ["--max-concurrent-steps", str(steps)]
                worker = WorkerProcess(spec, env, workdir / f"{queue}.log")
                procs.append(worker)
                began = time.monotonic()
                handles = await _start_all(durable, keys)
                pauser = None
                if mode == "sigstop":
                    pauser = asyncio.create_task(_pause_mid_step(server, worker.proc.pid, n))
                outcomes = await asyncio.wait_for(
                    asyncio.gather(*(h.result() for h in handles), return_exceptions=True),
                    timeout,
                )
                elapsed = time.monotonic() - began
                if pauser is not None:
                    await pauser
                rss = peak_rss_mb(worker.proc.pid)
                retried = await _retried_attempts(runtime, [h.id for h in handles])
        finally:
            await runtime.close()
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        for exc in failed[:3]:
            print(f"  failed run: {exc}", file=sys.stderr)
        tools = Counter(calls.read_text().split()) if calls.exists() else Counter()
        return Result(
            mode=mode,
            runs=n,
            completed=n - len(failed),
            failed=len(failed),
            provider_calls=server.count(),
            provider_needed=2 * n,
            tool_runs=sum(tools.values()),
            tool_needed=n,
            seconds=round(elapsed, 1),
            worker_peak_rss_mb=round(rss, 1),
            duplicate_keys=sorted(k for k, c in tools.items() if c > 1)[:10],
            retried_attempts=retried,
        )


async def _retried_attempts(runtime: Any, run_ids: list[str]) -> int:
    """Step attempts after the first, over the runs' histories."""
    from temporalio.api.enums.v1 import EventType

    started = EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    total = 0
    for run_id in run_ids:
        async for event in runtime.client.get_workflow_handle(run_id).fetch_history_events():
            if event.event_type == started:
                total += event.activity_task_started_event_attributes.attempt - 1
    return total


async def _start_all(durable: Any, keys: list[str], at_once: int = 50) -> list[Any]:
    """Start one run per key, ``at_once`` start requests in flight (a dev server on a loaded
    2-core machine times out a thousand at once); a timed-out start is sent again (the id
    makes it idempotent)."""
    from temporalio.service import RPCError

    gate = asyncio.Semaphore(at_once)

    async def start(key: str) -> Any:
        async with gate:
            for attempt in range(5):
                try:
                    return await durable.start(key, id=f"once-{key}")
                except RPCError:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(1 + attempt)
        raise AssertionError("unreachable")

    return await asyncio.gather(*(start(k) for k in keys))


async def _pause_mid_step(server: Any, pid: int, n: int) -> None:
    """SIGSTOP the worker for PAUSE seconds once a third of the model calls were made
    (model replies take a while, so calls are in flight when it stops)."""
    while server.count() < max(1, (2 * n) // 3):  # noqa: ASYNC110 - polling another thread
        await asyncio.sleep(0.05)
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(PAUSE)
    finally:
        os.kill(pid, signal.SIGCONT)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="concurrent runs (default 1000)")
    parser.add_argument("--mode", choices=[*MODES, "all"], default="plain")
    parser.add_argument("--delay", type=float, default=0.3, help="model reply delay (s)")
    parser.add_argument("--steps", type=int, help="the worker's --max-concurrent-steps")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args()
    from tether.core.devserver import EmbeddedEngine

    modes = list(MODES) if args.mode == "all" else [args.mode]
    with tempfile.TemporaryDirectory(prefix="tether-once-") as tmp:
        workdir = Path(tmp)
        engine = EmbeddedEngine(state_dir=workdir / "engine", persist=False, ui=False)
        await engine.start()
        results: list[Result] = []
        try:
            for mode in modes:
                r = await measure(
                    args.n,
                    mode,
                    address=engine.address,
                    store=str(workdir / "store"),
                    workdir=workdir,
                    delay=args.delay,
                    steps=args.steps,
                )
                results.append(r)
                if not args.json:
                    _print_row(r)
        finally:
            engine.stop()
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))


def _print_row(r: Result) -> None:
    """One mode's line, printed as soon as it is measured."""
    print(f"\n{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    print("mode     runs  done  provider calls  tool runs   time    worker peak RSS  exact")
    calls = f"{r.provider_calls:>6} / {r.provider_needed:<6}"
    tools = f"{r.tool_runs:>4} / {r.tool_needed:<4}"
    print(
        f"{r.mode:<8} {r.runs:>4}  {r.completed:>4}  {calls} {tools} {r.seconds:>6.1f} s  "
        f"{r.worker_peak_rss_mb:>8.0f} MB      {'yes' if r.exact else 'NO'}",
        flush=True,
    )
    print(f"         step attempts after the first: {r.retried_attempts}", flush=True)
    if r.duplicate_keys:
        print(f"         tools run more than once: {', '.join(r.duplicate_keys)}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
