"""A run without an end: per-step cost, history segments, worker memory and kill -9 recovery
over a long tool loop that continues as new (issue 13). Not in CI.

    pip install -c constraints.txt -e '.[bench]'      # matplotlib
    python bench/long_run.py --steps 10000 --png long_run.png --json long_run.json
    python bench/long_run.py --steps 400 --every-steps 50 --adapter pydantic_ai   # quick

One run per adapter on the embedded engine and the scripted model server (both in this
process), hosted by a `tether worker` subprocess (bench/_profile_agents.py) so that it can be
SIGKILLed. The run is a tool loop of --steps steps: every model call but the last asks for one
tool whose result is --result-bytes long, so steps = 2 x model calls. The run starts with
``continue_as_new=ContinueAsNew()`` (its defaults; --every-steps forces smaller segments).

Measured:
- per-step wall time versus step: the model server stamps every request; the time from model
  call k to call k+1 is one model step plus one tool step, so half of it is one step;
- bytes per model request (the conversation the framework sends the provider; it grows with
  the run whatever the engine does, and the provider's own time grows with it);
- per-segment history bytes and events, from each segment's history (the chain of run ids);
- worker RSS (/proc/PID/status VmRSS), sampled at every model request;
- kill -9 recovery: the worker is SIGKILLed at step --kill-early (default 50) and at step
  N - --kill-late-before (default 1,000), a new `tether worker` is started at once, and the
  time from the kill to the next model request (the run resumed: segment replayed, next step
  made) is reported, with the new worker's start time (until its log says it polls).

Printed: a table per adapter (step-time medians over --window model calls at steps 100,
1,000, 5,000 and 9,000 as far as the run goes; largest segment; RSS; recovery seconds).
--png plots per-step latency, request bytes, segment history bytes and RSS against the step;
--json writes everything.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import script, worker_env

from tether.core.contract import REPLAY_ITEMS
from tether.testing import RecordedRequest, ScriptedModelServer, Turn

TICKS = os.sysconf("SC_CLK_TCK")
AGENTS = {
    "openai_agents": ("_profile_agents:openai_agent", "profile-openai", "lookup"),
    "pydantic_ai": ("_profile_agents:pydantic_agent", "profile-pydantic", "lookup_record"),
}
MARKS = (100, 1000, 2000, 3000, 5000, 9000)


class LeanServer(ScriptedModelServer):
    """The scripted model server, keeping no request bodies (they reach megabytes each)."""

    def _record(self, req: RecordedRequest, usage: Any) -> None:
        super()._record(dataclasses.replace(req, body={}, headers={}), usage)


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / TICKS


HOLD_S = 2.0


class Stamps:
    """Every model request: (turn, time, request bytes, worker pid, worker RSS KiB)."""

    def __init__(self, turns: list[Turn], hold: set[int] | None = None) -> None:
        self.turns = turns
        self.hold = set(hold or ())
        """Turns whose first request is answered after HOLD_S: a kill then lands while the
        model step is in flight (else it races the step's end and often lands in the run
        task after it)."""
        self.lock = threading.Lock()
        self.pid = 0
        self.seen: list[tuple[int, float, int, int, int | None]] = []
        self.first: dict[int, float] = {}

    def respond(self, request: RecordedRequest) -> Turn:
        now = time.perf_counter()
        pid = self.pid
        with self.lock:
            self.seen.append((request.turn, now, request.size, pid, rss_kib(pid)))
            self.first.setdefault(request.turn, now)
            held = request.turn in self.hold
            self.hold.discard(request.turn)
        if held:
            time.sleep(HOLD_S)  # this server thread only: the kill comes meanwhile
        return self.turns[min(request.turn, len(self.turns) - 1)]

    def calls(self) -> int:
        with self.lock:
            return len(self.first)

    def first_after(self, t: float) -> float | None:
        with self.lock:
            later = [s[1] for s in self.seen if s[1] > t]
        return min(later) if later else None


class Worker:
    """One `tether worker` subprocess in its own process group, with its log and start time."""

    def __init__(self, target: str, env: dict[str, str], log: Path) -> None:
        from tether.testing._workers import WorkerProcess

        self.started = time.perf_counter()
        self.proc = WorkerProcess([target, "--address", env["TETHER_ADDRESS"]], env, log)
        self.log = log
        self.polling: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.proc.pid

    def check_polling(self) -> None:
        if self.polling is None and "worker on " in self.proc.tail(20_000):
            self.polling = time.perf_counter() - self.started


async def segments_of(client: Any, workflow_id: str, replay: bool) -> list[dict[str, Any]]:
    """Each segment's history, oldest first: run id, events, bytes, steps (activities), and
    with ``replay`` the seconds this process takes to replay it (what a recovering worker
    does before the run goes on)."""
    from temporalio.api.enums.v1 import EventType, TaskQueueKind, TimeoutType
    from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

    from tether.core.run import AgentRun

    replayer = Replayer(
        workflows=[AgentRun],
        workflow_runner=UnsandboxedWorkflowRunner(),
        data_converter=client.data_converter,
    )

    def _task_timeout(event: Any, by_id: dict[int, Any]) -> dict[str, Any]:
        """Which run task timed out: its queue (a sticky one is a dead worker's), the
        timeout's kind and how long after it was scheduled."""
        attrs = event.workflow_task_timed_out_event_attributes
        scheduled = by_id[attrs.scheduled_event_id]
        queue = scheduled.workflow_task_scheduled_event_attributes.task_queue
        around = [by_id[i] for i in range(event.event_id - 8, event.event_id + 4) if i in by_id]
        return {
            "event": event.event_id,
            "around": [
                f"{e.event_id} {EventType.Name(e.event_type)[11:]} "
                f"{e.event_time.ToMilliseconds() - event.event_time.ToMilliseconds():+d} ms"
                for e in around
            ],
            "kind": TimeoutType.Name(attrs.timeout_type),
            "sticky": queue.kind == TaskQueueKind.TASK_QUEUE_KIND_STICKY,
            "after_s": event.event_time.ToSeconds() - scheduled.event_time.ToSeconds(),
        }

    chain: list[dict[str, Any]] = []
    run: str | None = None
    while True:
        handle = client.get_workflow_handle(workflow_id, run_id=run)
        history = await handle.fetch_history()
        steps = task_timeouts = task_failures = 0
        by_id = {event.event_id: event for event in history.events}
        timed_out: list[dict[str, Any]] = []
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
                task_timeouts += 1
                timed_out.append(_task_timeout(event, by_id))
            task_failures += event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                name = event.activity_task_scheduled_event_attributes.activity_type.name
                steps += name != "tether.transcript"
        started = history.events[0].workflow_execution_started_event_attributes
        replay_s = None
        if replay:
            t = time.perf_counter()
            result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
            replay_s = time.perf_counter() - t
            if result.replay_failure is not None:
                print(f"  segment {run or history.run_id}: replay failed: {result.replay_failure}")
        chain.append(
            {
                "run_id": run or history.run_id,
                "events": len(history.events),
                "bytes": sum(e.ByteSize() for e in history.events),
                "input_bytes": started.input.ByteSize(),
                "steps": steps,
                # A run task that timed out or failed: after a kill, a replay slower than
                # the run task timeout shows here.
                "task_timeouts": task_timeouts,
                "task_timeout_details": timed_out,
                "task_failures": task_failures,
                "replay_s": replay_s,
            }
        )
        run = started.continued_execution_run_id
        if not run:
            break
    chain.reverse()
    at = 0
    for seg in chain:
        seg["first_step"] = at + 1
        at += seg["steps"]
    return chain


async def long_run(adapter: str, args: argparse.Namespace, address: str) -> dict[str, Any]:
    import _profile_agents as agents

    import tether
    from tether import ContinueAsNew
    from tether.core.runtime import Runtime, agent_queue
    from tether.core.store import BlobStore

    target, name, tool = AGENTS[adapter]
    if args.responses_state and adapter == "pydantic_ai":
        target = "_profile_agents:pydantic_responses_agent"
    calls = args.steps // 2 + 1  # calls - 1 tool turns (2 steps each) and a final answer
    kill_calls = sorted(
        {
            c
            for c in (args.kill_early // 2, (args.steps - args.kill_late_before) // 2)
            if 1 < c < calls - 1
        }
    )
    stamps = Stamps(script(calls, tool), set(kill_calls) if args.kill_in == "model" else None)
    work = Path(tempfile.mkdtemp(prefix="tether-longrun-"))
    workers: list[Worker] = []
    kills: list[dict[str, Any]] = []
    with LeanServer(responder=stamps.respond) as server:
        env = worker_env(
            server.base_url,
            queue=f"longrun-{adapter}",
            work=work,
            result_bytes=args.result_bytes,
            address=address,
        )
        runtime = await Runtime.start(address=address, store=BlobStore(str(work / "store")))
        queue = agent_queue(f"longrun-{adapter}", name)

        def spawn() -> Worker:
            w = Worker(target, env, work / f"worker{len(workers) + 1}.log")
            workers.append(w)
            stamps.pid = w.pid
            return w

        try:
            first = spawn()
            while await runtime.pollers(queue) == 0:
                if not first.proc.alive():
                    sys.exit(f"the worker exited before polling:\n{first.proc.tail()}")
                await asyncio.sleep(0.1)
            first_poll = time.perf_counter() - first.started
            agent = (
                agents.openai_agent
                if adapter == "openai_agents"
                else agents.pydantic_responses_agent
                if args.responses_state
                else agents.pydantic_agent
            )
            durable = tether.durable(agent, runtime=runtime, task_queue=queue, local_worker=False)
            can = ContinueAsNew(
                every_steps=args.every_steps,
                replay_items=args.replay_items or None,
            )
            if adapter == "openai_agents":
                handle = await durable.start(
                    "go",
                    continue_as_new=can,
                    max_turns=1_000_000,
                    auto_previous_response_id=args.responses_state,
                )
            else:
                from pydantic_ai.usage import UsageLimits

                handle = await durable.start(
                    "go", continue_as_new=can, usage_limits=UsageLimits(request_limit=None)
                )
            t0 = time.perf_counter()
            result_task = asyncio.ensure_future(handle.result())
            last_print = t0
            while not result_task.done():
                for w in workers:
                    w.check_polling()
                seen = stamps.calls()
                if kill_calls and seen > kill_calls[0]:
                    kill_calls.pop(0)
                    victim = workers[-1]
                    killed_at = time.perf_counter()
                    victim.proc.kill()
                    spawn()
                    kills.append({"step": 2 * (seen - 1), "t": killed_at})
                    print(f"  {adapter}: SIGKILL at step ~{2 * (seen - 1)}", flush=True)
                if not workers[-1].proc.alive():
                    sys.exit(f"the worker exited:\n{workers[-1].proc.tail()}")
                if time.perf_counter() - last_print > 60:
                    last_print = time.perf_counter()
                    print(
                        f"  {adapter}: step ~{2 * seen} of {args.steps} after "
                        f"{last_print - t0:.0f} s",
                        flush=True,
                    )
                if time.perf_counter() - t0 > args.timeout:
                    result_task.cancel()
                    sys.exit(f"{adapter}: not finished after {args.timeout:.0f} s")
                await asyncio.sleep(0.05)
            await result_task
            wall = time.perf_counter() - t0
            end_rss = rss_kib(workers[-1].pid)
            for w in workers:
                w.check_polling()
            for kill in kills:
                nxt = stamps.first_after(kill["t"])
                kill["to_next_request_s"] = nxt - kill["t"] if nxt else None
            for kill, w in zip(kills, workers[1:], strict=True):
                kill["new_worker_polling_s"] = w.polling
                kill.pop("t")
            segments = await segments_of(runtime.client, handle.id, args.replay)
            raw = await handle.raw_result()
        finally:
            for w in workers:
                w.proc.stop()
            await runtime.close()
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    return {
        "adapter": adapter,
        "responses_state": args.responses_state,
        "steps": args.steps,
        "run_steps": raw.steps,
        "wall_s": wall,
        "first_worker_polling_s": first_poll,
        "segments": segments,
        "kills": kills,
        "end_rss_kib": end_rss,
        "load": os.getloadavg(),
        "stamps": stamps.seen,
    }


def per_step(run: dict[str, Any]) -> tuple[list[int], list[float], list[int]]:
    """Step numbers, ms per step (half a model-call-to-model-call interval) and request bytes,
    from the first request of each turn; intervals spanning a kill are left out."""
    first: dict[int, tuple[float, int]] = {}
    for turn, t, size, _pid, _rss in run["stamps"]:
        if turn not in first:
            first[turn] = (t, size)
    turns = sorted(first)
    killed = {k["step"] // 2 for k in run["kills"]}
    xs, ms, sizes = [], [], []
    for a, b in itertools.pairwise(turns):
        if b != a + 1 or a in killed or b in killed:
            continue
        xs.append(2 * b)
        ms.append((first[b][0] - first[a][0]) * 1000 / 2)
        sizes.append(first[b][1])
    return xs, ms, sizes


def at_mark(xs: list[int], values: list[float], mark: int, window: int) -> float | None:
    part = [v for x, v in zip(xs, values, strict=True) if mark <= x < mark + 2 * window]
    return statistics.median(part) if len(part) >= max(1, window // 2) else None


def summarize(run: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    xs, ms, sizes = per_step(run)
    marks = [m for m in MARKS if m + 2 * args.window <= run["steps"]]
    out: dict[str, Any] = {
        "step_ms": {m: at_mark(xs, ms, m, args.window) for m in marks},
        "request_kib": {m: (at_mark(xs, [s / 1024 for s in sizes], m, args.window)) for m in marks},
    }
    # Progress after each kill: the first request for a turn past every turn seen before the
    # kill (the request in flight at the kill may be made again first, before the run task
    # has replayed its segment).
    st = run["stamps"]
    changes = [j for j in range(1, len(st)) if st[j][3] != st[j - 1][3]]
    out["kills"] = []
    for kill, j in zip(run["kills"], changes, strict=False):
        before = max(turn for turn, *_ in st[:j])
        nxt = kill["to_next_request_s"]
        progress = next((row[1] for row in st[j:] if row[0] > before), None)
        out["kills"].append(
            {
                "step": kill["step"],
                "to_next_request_s": nxt,
                "to_next_step_s": nxt + progress - st[j][1] if nxt and progress else None,
                "new_worker_started_s": kill["new_worker_polling_s"],
            }
        )
    segs = run["segments"]
    biggest = max(segs, key=lambda s: s["bytes"])
    out["segments"] = len(segs)
    out["largest_segment"] = {k: biggest[k] for k in ("bytes", "events", "steps", "first_step")}
    out["largest_segment_input_bytes"] = max(s["input_bytes"] for s in segs)
    # RSS of the worker that hosted the run longest: 1,000 steps (or a tenth of its span)
    # after it took over, and at its last request.
    by_pid: dict[int, list[tuple[int, int]]] = {}
    for turn, _t, _s, pid, rss in run["stamps"]:
        if rss:
            by_pid.setdefault(pid, []).append((2 * turn, rss))
    samples = max(by_pid.values(), key=lambda v: v[-1][0] - v[0][0], default=[])
    early = late = None
    if samples:
        offset = min(1000, (samples[-1][0] - samples[0][0]) // 10)
        early = next(p for p in samples if p[0] >= samples[0][0] + offset)
        late = samples[-1]
    out["rss"] = {
        "early_step": early[0] if early else None,
        "early_kib": early[1] if early else None,
        "late_step": late[0] if late else None,
        "late_kib": late[1] if late else None,
        "end_kib": run["end_rss_kib"],
    }
    return out


def print_report(run: dict[str, Any], summary: dict[str, Any], args: argparse.Namespace) -> None:
    load = run.get("load") or (float("nan"),) * 3
    print(
        f"\n{run['adapter']}: {run['run_steps']} steps in {run['wall_s']:.0f} s, "
        f"{summary['segments']} segments, {args.result_bytes}-byte tool results; "
        f"medians over {args.window} model calls from each step; load average at the end "
        f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores\n"
    )
    marks = list(summary["step_ms"])
    print("| | " + " | ".join(f"step {m}" for m in marks) + " |")
    print("|---" * (len(marks) + 1) + "|")

    def cells(values: dict[int, float | None], fmt: str) -> str:
        return " | ".join(format(v, fmt) if v is not None else "-" for v in values.values())

    print("| wall ms per step | " + cells(summary["step_ms"], ".1f") + " |")
    print("| KiB per model request | " + cells(summary["request_kib"], ".0f") + " |")
    first, last = summary["step_ms"].get(100), summary["step_ms"].get(marks[-1] if marks else 0)
    if first and last and marks and marks[-1] != 100:
        print(f"\nstep {marks[-1]} / step 100: {last / first:.2f}x")
    big = summary["largest_segment"]
    print(
        f"largest segment: {big['bytes'] / 1e6:.2f} MB, {big['events']} events, "
        f"{big['steps']} steps (from step {big['first_step']}); largest segment input "
        f"{summary['largest_segment_input_bytes'] / 1024:.1f} KiB"
    )
    rss = summary["rss"]
    if rss["early_kib"] and rss["late_kib"]:
        print(
            f"worker RSS (one worker): {rss['early_kib'] / 1024:.0f} MiB at step "
            f"{rss['early_step']}, {rss['late_kib'] / 1024:.0f} MiB at step {rss['late_step']} "
            f"({rss['late_kib'] / rss['early_kib']:.2f}x); last worker at the end: "
            f"{(rss['end_kib'] or 0) / 1024:.0f} MiB"
        )
    print(f"first `tether worker` polling after {run['first_worker_polling_s']:.1f} s")
    for kill in summary["kills"]:
        print(
            f"SIGKILL at step ~{kill['step']}: next model request after "
            f"{_s(kill['to_next_request_s'])}, first new model step after "
            f"{_s(kill['to_next_step_s'])} (the new `tether worker` printed its start after "
            f"{_s(kill['new_worker_started_s'])})"
        )
    segs = run["segments"]
    timeouts = sum(s.get("task_timeouts", 0) for s in segs)
    failures = sum(s.get("task_failures", 0) for s in segs)
    print(f"run tasks timed out: {timeouts}, failed: {failures}")
    for seg in segs:
        for t in seg.get("task_timeout_details", []):
            queue = "a dead worker's sticky queue" if t["sticky"] else "the run's task queue"
            print(
                f"  segment from step {seg['first_step']}: event {t['event']}, {t['kind']} on "
                f"{queue}, {t['after_s']:.1f} s after it was scheduled"
            )
    print("\nsegments (first step+steps: events/MB[/replay seconds]):")
    print(
        "  "
        + ", ".join(
            f"{s['first_step']}+{s['steps']}:{s['events']}/{s['bytes'] / 1e6:.2f}"
            + (f"/{s['replay_s']:.1f}s" if s.get("replay_s") is not None else "")
            for s in segs
        )
    )


def _s(value: float | None) -> str:
    return f"{value:.1f} s" if value is not None else "-"


def plot(path: str, runs: list[dict[str, Any]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no matplotlib: pip install -e '.[bench]' for the plot")
        return
    fig, axes = plt.subplots(4, 1, figsize=(9, 13), sharex=True)
    for run in runs:
        label = run["adapter"]
        xs, ms, sizes = per_step(run)
        axes[0].plot(xs, _rolling(ms), label=label)
        axes[1].plot(xs, [s / 1024 for s in sizes], label=label)
        segs = run["segments"]
        axes[2].step(
            [s["first_step"] for s in segs],
            [s["bytes"] / 1e6 for s in segs],
            where="post",
            label=label,
            marker="o",
        )
        pts = [(2 * turn, rss / 1024) for turn, _t, _s, _pid, rss in run["stamps"] if rss]
        axes[3].plot([p[0] for p in pts], [p[1] for p in pts], ".", ms=2, label=label)
        for kill in run["kills"]:
            for ax in axes:
                ax.axvline(kill["step"], color="grey", lw=0.6, ls="--")
    axes[0].set_ylabel("wall ms per step\n(rolling median of 9)")
    axes[1].set_ylabel("KiB per model request")
    axes[2].set_ylabel("segment history MB\n(at its first step)")
    axes[3].set_ylabel("worker RSS MiB")
    axes[3].set_xlabel("step (dashed: SIGKILL of the worker)")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle("A long tool loop with continue-as-new")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}")


def _rolling(values: list[float], k: int = 9) -> list[float]:
    out = []
    for i in range(len(values)):
        part = values[max(0, i - k // 2) : i + k // 2 + 1]
        out.append(statistics.median(part))
    return out


async def main_async(args: argparse.Namespace) -> None:
    from tether.core.devserver import EmbeddedEngine

    adapters = list(AGENTS) if args.adapter == "both" else [args.adapter]
    runs: list[dict[str, Any]] = []
    if args.from_json:  # report a saved run again, without running
        runs = json.loads(Path(args.from_json).read_text())["runs"]  # noqa: ASYNC240
    else:
        async with EmbeddedEngine(persist=False, ui=False) as engine:
            for adapter in adapters:
                print(f"{adapter}: {args.steps} steps", flush=True)
                runs.append(await long_run(adapter, args, engine.address))
    summaries = [summarize(run, args) for run in runs]
    for run, summary in zip(runs, summaries, strict=True):
        print_report(run, summary, args)
    if args.png:
        plot(args.png, runs)
    if args.json:
        text = json.dumps(
            {"args": vars(args), "runs": runs, "summaries": summaries}, indent=1, default=str
        )
        Path(args.json).write_text(text)  # noqa: ASYNC240 - once, at the end


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--adapter", choices=[*AGENTS, "both"], default="both")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--every-steps", type=int, help="ContinueAsNew(every_steps=...)")
    parser.add_argument("--result-bytes", type=int, default=2000)
    parser.add_argument(
        "--replay-items",
        type=int,
        default=REPLAY_ITEMS,
        help="ContinueAsNew(replay_items=...); 0: no such limit",
    )
    parser.add_argument(
        "--replay",
        action="store_true",
        help="after the run, time the replay of each segment's history in this process",
    )
    parser.add_argument(
        "--responses-state",
        action="store_true",
        help="chain each model request to the previous response (Responses API state): "
        "requests send only the new items",
    )
    parser.add_argument("--window", type=int, default=20, help="model calls per median")
    parser.add_argument("--kill-early", type=int, default=50, help="step of the first kill")
    parser.add_argument(
        "--kill-in",
        choices=["model", "anywhere"],
        default="model",
        help="model: each kill lands while a model step is in flight (its response is held "
        "for a while), as most crashes of a real agent do; anywhere: as it comes (often in "
        "the run task after a step, whose loss costs the run task timeout, 10 s)",
    )
    parser.add_argument(
        "--kill-late-before",
        type=int,
        default=1000,
        help="second kill this many steps before the end",
    )
    parser.add_argument("--timeout", type=float, default=6 * 3600, help="seconds per run")
    parser.add_argument("--png", help="write the plot here")
    parser.add_argument("--json", help="write the numbers here")
    parser.add_argument("--from-json", help="report the runs saved by an earlier --json again")
    parser.add_argument("--keep", action="store_true", help="keep the worker logs and store")
    args = parser.parse_args()
    if args.steps < 10:
        parser.error("--steps must be at least 10")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
