"""Pieces shared by the side-by-side benchmarks: the bare-engine floor, history readings and
the printed table. Run the benchmarks from the repository root (``python bench/...py``)."""

from __future__ import annotations

import os
import statistics
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client

from tether.testing import ToolCall, Turn, history_stats

NOOP_STARTS: list[float] = []
"""When each no-op activity of this process ran (``time.perf_counter``, which is the
system's monotonic clock: comparable across processes on one machine)."""


@activity.defn(name="bench.noop")
async def noop(i: int) -> int:
    NOOP_STARTS.append(time.perf_counter())
    return i


@workflow.defn(name="bench.Floor", sandboxed=False)
class Floor:
    """The engine's floor: a workflow running ``n`` no-op activities one after another."""

    @workflow.run
    async def run(self, n: int) -> int:
        for i in range(n):
            await workflow.execute_activity(noop, i, start_to_close_timeout=timedelta(seconds=30))
        return n


def script(n: int, tool: str = "lookup") -> list[Turn]:
    """``n`` model calls: ``n - 1`` tool calls, then a final answer."""
    turns = [Turn.tool_calls(ToolCall(tool, {"i": i})) for i in range(n - 1)]
    return [*turns, Turn.text(f"looked up {n - 1} records")]


async def run_row(client: Client, run_id: str, wall: float, model_step: str) -> dict[str, Any]:
    """Wall time, history events and bytes, and model-step input sizes of one run."""
    stats = await history_stats(client, run_id)
    inputs = [s.input_bytes for s in stats.steps if model_step in s.name]
    row: dict[str, Any] = {"s": wall, "events": stats.events, "bytes": stats.total_bytes}
    row.update({f"in@{k}": inputs[k - 1] for k in (1, 10, 50) if k <= len(inputs)})
    row[f"in@{len(inputs)}"] = inputs[-1]
    return row


def median(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def print_table(title: str, rows: list[dict[str, Any]], native_label: str) -> None:
    """One block per n: floor, native and Tether, with Tether's ratios to both."""
    print(f"\n{title}\n")
    for row in rows:
        n, nat, tet, floor = row["n"], row["native"], row["tether"], row["floor"]
        print(f"n={n}")
        print(f"  floor  (2n-1 bare activities)  {floor['s']:7.2f} s")
        for label, r in ((native_label, nat), ("tether", tet)):
            print(
                f"  {label:<30} {r['s']:7.2f} s  {r['events']:6.0f} events "
                f"{r['bytes'] / 1024:9.1f} KiB"
            )
        print(
            f"  ratios tether/native: time {tet['s'] / nat['s']:.2f}, history bytes "
            f"{tet['bytes'] / nat['bytes']:.3f}; tether/floor time {tet['s'] / floor['s']:.2f}"
        )
        keys = [k for k in nat if k.startswith("in@") and k in tet]
        print("  model step input bytes  " + "  ".join(f"{k:>7}" for k in keys))
        print("    native                " + "  ".join(f"{nat[k]:>7.0f}" for k in keys))
        print("    tether                " + "  ".join(f"{tet[k]:>7.0f}" for k in keys))


def worker_env(
    base_url: str, *, queue: str, work: Path, result_bytes: int, address: str | None = None
) -> dict[str, str]:
    """The environment of a `tether worker` subprocess hosting bench/_profile_agents.py's
    agents against the scripted model server at ``base_url``, its store and home in
    ``work``; this process's OpenAI clients are pointed at the same server."""
    here = Path(__file__).resolve().parent
    env = dict(
        os.environ,
        OPENAI_BASE_URL=base_url,
        OPENAI_API_KEY="bench",
        OPENAI_AGENTS_DISABLE_TRACING="1",
        BENCH_MODEL="profile",
        BENCH_RESULT_BYTES=str(result_bytes),
        TETHER_TASK_QUEUE=queue,
        TETHER_STORE=str(work / "store"),
        TETHER_HOME=str(work),
        PYTHONPATH=os.pathsep.join([str(here), str(here.parent / "src")]),
    )
    if address is not None:
        env["TETHER_ADDRESS"] = address
    os.environ.update({k: env[k] for k in ("OPENAI_BASE_URL", "OPENAI_API_KEY")})
    return env
