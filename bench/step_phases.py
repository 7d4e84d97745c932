"""Where a step's wall time goes, from the run's own history: engine dispatch, the run task
(the framework's loop), each step kind, side by side with the bare engine floor.

    python bench/step_phases.py --calls 40 --sides floor openai_agents pydantic_ai

One tool loop per side (every model call but the last asks for one tool with a 2 KB result)
on one embedded engine; the Tether sides are hosted by a `tether worker` subprocess, the
floor (a workflow of 2N-1 no-op activities) by a worker in this process. From each history's
event times: run task scheduled -> started (dispatch) and started -> completed (the loop's
work plus the SDK's), and per step kind scheduled -> started and scheduled -> completed.
Printed: medians per phase (the first three of each are left out: start-up). The engine's
timestamps are milliseconds; compare medians of a few runs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import Floor, noop, script, worker_env
from long_run import AGENTS, LeanServer, Stamps, Worker


async def floor_history(calls: int, address: str) -> Any:
    from temporalio.client import Client
    from temporalio.worker import Worker as TemporalWorker

    client = await Client.connect(address)
    async with TemporalWorker(
        client, task_queue="phases-floor", workflows=[Floor], activities=[noop]
    ):
        handle = await client.start_workflow(
            Floor.run, 2 * calls - 1, id=f"phases-floor-{time.time_ns()}", task_queue="phases-floor"
        )
        await handle.result()
        return await handle.fetch_history()


async def tether_history(adapter: str, calls: int, address: str) -> Any:
    import _profile_agents as agents

    import tether
    from tether.core.runtime import Runtime, agent_queue
    from tether.core.store import BlobStore

    target, name, tool = AGENTS[adapter]
    work = Path(tempfile.mkdtemp(prefix="tether-phases-"))
    stamps = Stamps(script(calls, tool))
    with LeanServer(responder=stamps.respond) as server:
        env = worker_env(
            server.base_url,
            queue=f"phases-{adapter}",
            work=work,
            result_bytes=2000,
            address=address,
        )
        runtime = await Runtime.start(address=address, store=BlobStore(str(work / "store")))
        queue = agent_queue(f"phases-{adapter}", name)
        worker = Worker(target, env, work / "worker.log")
        try:
            while await runtime.pollers(queue) == 0:
                if not worker.proc.alive():
                    sys.exit(f"the worker exited before polling:\n{worker.proc.tail()}")
                await asyncio.sleep(0.1)
            agent = agents.openai_agent if adapter == "openai_agents" else agents.pydantic_agent
            durable = tether.durable(agent, runtime=runtime, task_queue=queue, local_worker=False)
            options: dict[str, Any] = {"max_turns": 10_000} if adapter == "openai_agents" else {}
            handle = await durable.start("go", **options)
            await handle.result()
            return await runtime.client.get_workflow_handle(handle.id).fetch_history()
        finally:
            worker.proc.stop()
            await runtime.close()
            shutil.rmtree(work, ignore_errors=True)


def phases(history: Any) -> dict[str, list[float]]:
    from temporalio.api.enums.v1 import EventType as E

    def at(event: Any) -> float:
        return float(event.event_time.ToDatetime().timestamp())

    out: dict[str, list[float]] = collections.defaultdict(list)
    scheduled: dict[int, tuple[float, str]] = {}
    task_scheduled = task_started = 0.0
    for e in history.events:
        kind = e.event_type
        if kind == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = e.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[e.event_id] = (at(e), name.rpartition(".")[2])
        elif kind == E.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            t, name = scheduled[e.activity_task_started_event_attributes.scheduled_event_id]
            out[f"{name} step: scheduled -> started"].append(at(e) - t)
        elif kind == E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            t, name = scheduled[e.activity_task_completed_event_attributes.scheduled_event_id]
            out[f"{name} step: scheduled -> completed"].append(at(e) - t)
        elif kind == E.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
            task_scheduled = at(e)
        elif kind == E.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            task_started = at(e)
            out["run task: scheduled -> started"].append(task_started - task_scheduled)
        elif kind == E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            out["run task: started -> completed"].append(at(e) - task_started)
    return out


async def main_async(args: argparse.Namespace) -> None:
    from tether.core.devserver import EmbeddedEngine

    async with EmbeddedEngine(persist=False, ui=False) as engine:
        for side in args.sides:
            t = time.perf_counter()
            if side == "floor":
                history = await floor_history(args.calls, engine.address)
            else:
                history = await tether_history(side, args.calls, engine.address)
            wall = time.perf_counter() - t
            print(f"\n{side}: {args.calls} model calls' worth of steps, {wall:.2f} s with start-up")
            for phase, values in sorted(phases(history).items()):
                kept = values[3:] or values
                print(
                    f"  {phase:<40} median {statistics.median(kept) * 1000:6.1f} ms (n={len(kept)})"
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument(
        "--sides", nargs="+", default=["floor", *AGENTS], choices=["floor", *AGENTS]
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
