"""The engine's per-step floor on the embedded dev server, with Temporal's default dynamic
config and with Tether's (``tether.core.devserver.FAST_DISPATCH``), and where the time goes.

    python bench/engine_floor.py --steps 20 --runs 10

Each run is a workflow of N no-op activities in sequence. Printed per configuration: ms per
activity for each run in order (the default limiter's burst makes the first runs faster),
the median of the steady-state runs, and the mean gap between history events, which shows
that the wait is between a workflow task being scheduled and a worker starting it.

    python bench/engine_floor.py --local-tools --steps 40 --runs 8

What a tool loop's call would cost the engine if its tool step ran as a *local* activity
(inside the run task that follows the model step) instead of an activity of its own:
model-step activity + tool-step activity per call against model-step activity + local
activity, interleaved runs, ms per call. Tether runs every tool step as an activity; this
measures the one lever on the floor itself (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
import uuid
from collections import defaultdict
from datetime import timedelta
from typing import Any

from _common import Floor, noop
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Worker

from tether.core.devserver import FAST_DISPATCH, EmbeddedEngine


def _name(event_type: int) -> str:
    return EventType.Name(event_type).removeprefix("EVENT_TYPE_")  # type: ignore[arg-type]


async def measure(label: str, config: dict[str, object | None], args: argparse.Namespace) -> None:
    per_run: list[float] = []
    gaps: dict[str, list[float]] = defaultdict(list)
    async with EmbeddedEngine(persist=False, ui=False, dynamic_config=config) as engine:
        client = await Client.connect(engine.address)
        async with Worker(client, task_queue="floor", workflows=[Floor], activities=[noop]):
            for _ in range(args.runs):
                run_id = f"floor-{uuid.uuid4().hex[:8]}"
                t = time.perf_counter()
                await client.execute_workflow(Floor.run, args.steps, id=run_id, task_queue="floor")
                per_run.append((time.perf_counter() - t) / args.steps * 1000)
                history = await client.get_workflow_handle(run_id).fetch_history()
                events = history.events
                for a, b in itertools.pairwise(events):
                    dt = b.event_time.ToDatetime() - a.event_time.ToDatetime()
                    key = f"{_name(a.event_type)} -> {_name(b.event_type)}"
                    gaps[key].append(dt.total_seconds() * 1000)
    steady = per_run[args.runs // 2 :]
    print(f"\n{label}")
    print("  ms per activity, run by run: " + " ".join(f"{v:.1f}" for v in per_run))
    print(f"  median of the last {len(steady)} runs: {statistics.median(steady):.1f} ms")
    for key, values in sorted(gaps.items(), key=lambda kv: -sum(kv[1]))[:3]:
        print(f"  {key:<52} mean {statistics.fmean(values):6.1f} ms  (n={len(values)})")


@workflow.defn(name="bench.FloorLocalTools", sandboxed=False)
class FloorLocalTools:
    """``calls`` model-step activities, each but the last followed by a local activity."""

    @workflow.run
    async def run(self, calls: int) -> int:
        timeout = timedelta(seconds=30)
        for i in range(calls):
            await workflow.execute_activity(noop, i, start_to_close_timeout=timeout)
            if i < calls - 1:
                await workflow.execute_local_activity(noop, i, start_to_close_timeout=timeout)
        return calls


async def local_tools(args: argparse.Namespace) -> None:
    # (workflow, its argument) per variant: a call is two activities, or one and a local one.
    variants: dict[str, tuple[Any, int]] = {
        "tool step as an activity": (Floor.run, 2 * args.steps - 1),
        "as a local activity": (FloorLocalTools.run, args.steps),
    }
    per_call: dict[str, list[float]] = {label: [] for label in variants}
    async with EmbeddedEngine(persist=False, ui=False) as engine:
        client = await Client.connect(engine.address)
        workflows = [Floor, FloorLocalTools]
        async with Worker(client, task_queue="floor", workflows=workflows, activities=[noop]):
            for _ in range(args.runs):
                for label, (run, arg) in variants.items():
                    t = time.perf_counter()
                    await client.execute_workflow(
                        run, arg, id=f"floor-{uuid.uuid4().hex[:8]}", task_queue="floor"
                    )
                    per_call[label].append((time.perf_counter() - t) / args.steps * 1000)
    for label, times in per_call.items():
        runs = " ".join(f"{v:.1f}" for v in times)
        print(f"{label}: median {statistics.median(times):.1f} ms per call ({runs})")


async def main(args: argparse.Namespace) -> None:
    if args.local_tools:
        await local_tools(args)
        return
    defaults = {key: None for key in FAST_DISPATCH}
    await measure("Temporal's defaults (queue readers limited to 20 polls/s)", defaults, args)
    await measure("Tether's FAST_DISPATCH", {}, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--local-tools", action="store_true", help="calls with the tool step as a local activity"
    )
    asyncio.run(main(parser.parse_args()))
