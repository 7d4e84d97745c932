"""Kill -9 a worker in the middle of a run and time how long until the run's result, for
Tether (both adapters) and for the two native Temporal integrations, on one embedded engine.

    python bench/recovery.py --repeat 5          # needs bench/setup_native.sh for native-oa
    python bench/recovery.py --repeat 1 --systems tether-pai native-pai --setups standby

Each run: the model asks for a tool, the tool answers, and the second model call hangs on
its first attempt (the scripted server holds it; a retry is answered at once). While it
hangs, the worker running it is killed with SIGKILL. Two set-ups:

- ``standby``: a second worker already polls the queue; recovery is bound by how fast the
  engine notices the lost step (heartbeat timeout, retry backoff, sticky queue).
- ``cold``: the only worker is killed and a fresh one started at once (as a new user would,
  ``tether worker MODULE:OBJECT``); recovery is bound by the new worker's start as well.

Kill -> result is the time from the kill until the engine reports the run completed
(medians of ``--repeat``). Beside it: each worker's start (spawn -> first poll the engine
sees from it), and for ``tether worker`` the share of its start spent importing (from one
extra start under ``-X importtime``). Every system runs with its defaults. The machine's
load average is printed with the numbers: on a loaded 2-core machine starts are slower.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import WorkflowHistoryEventFilterType
from temporalio.service import RPCError, RPCStatusCode

import tether
from tether.core.devserver import EmbeddedEngine
from tether.core.runtime import Runtime, agent_queue
from tether.core.store import BlobStore
from tether.testing import Fault, ScriptedModelServer, ToolCall, Turn

os.environ.setdefault("OPENAI_API_KEY", "bench-not-used")  # the agents are built here too
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

HERE = Path(__file__).resolve().parent
NATIVE_PYTHON = HERE / ".venv-native" / "bin" / "python"
SYSTEMS = ("tether-pai", "tether-oa", "native-pai", "native-oa")
SETUPS = ("standby", "cold")
HANG = 600.0  # the hung model call's first attempt; the kill lands during it
RESULT_TIMEOUT = 600.0

SCRIPT = [
    Turn.tool_calls(ToolCall("lookup", {"i": 1})),
    Turn.text("record 1 looked up", faults=[Fault.hang(HANG)]),
]


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    spawned: float
    log: Path
    first_poll: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)


@dataclass
class Trial:
    system: str
    setup: str
    kill_to_result: float | None = None
    starts: list[float] = field(default_factory=list)
    error: str | None = None
    phases: dict[str, float] = field(default_factory=dict)


class Bench:
    def __init__(self, args: argparse.Namespace, engine: EmbeddedEngine, runtime: Runtime):
        self.args = args
        self.engine = engine
        self.runtime = runtime
        self.client = runtime.client
        self.logs = Path(tempfile.mkdtemp(prefix="tether-recovery-"))
        self.workers: list[Worker] = []

    def env(self, server: ScriptedModelServer, prefix: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "TEMPORAL_ADDRESS": self.engine.address,
                "TETHER_STORE": self.runtime.store.url,
                "TETHER_TASK_QUEUE": prefix,
                "OPENAI_BASE_URL": server.base_url,
                "OPENAI_API_KEY": "bench-not-used",
                "OPENAI_AGENTS_DISABLE_TRACING": "1",
                "PYTHONPATH": os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
            }
        )
        return env

    def command(self, system: str, queue: str) -> list[str]:
        if system == "tether-pai":
            return [sys.executable, "-m", "tether.cli", "worker", "_recovery_pai:agent"]
        if system == "tether-oa":
            return [sys.executable, "-m", "tether.cli", "worker", "_recovery_oa:agent"]
        script = HERE / f"_recovery_{system.replace('-', '_')}.py"
        python = str(NATIVE_PYTHON) if system == "native-oa" else sys.executable
        return [python, str(script), "--address", self.engine.address, "--queue", queue]

    def spawn(self, cmd: list[str], env: dict[str, str]) -> Worker:
        log = self.logs / f"worker-{len(self.workers)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        worker = Worker(proc, time.monotonic(), log)
        self.workers.append(worker)
        return worker

    async def pollers(self, queue: str) -> set[str]:
        resp = await self.client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=self.client.namespace,
                task_queue=TaskQueue(name=queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
        return {p.identity for p in resp.pollers}

    async def until_polling(self, worker: Worker, queue: str, timeout: float = 300) -> float:
        """Seconds from the worker's spawn to the first poll the engine lists from it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                polling = await self.pollers(queue)
            except RPCError as exc:  # cancelled under load: ask again
                if exc.status not in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED):
                    raise
                continue
            if any(i.startswith(f"{worker.pid}@") for i in polling):
                worker.first_poll = time.monotonic()
                return worker.first_poll - worker.spawned
            if worker.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {worker.log.read_text()[-2000:]}")
            await asyncio.sleep(0.05)
        raise RuntimeError(f"worker did not poll {queue} in {timeout}s")

    async def start_run(self, system: str, queue: str, run_id: str) -> None:
        if system.startswith("tether"):
            module = __import__(f"_recovery_{system.split('-')[1]}")
            durable = tether.durable(module.agent, runtime=self.runtime, local_worker=False)
            durable.task_queue = queue
            await durable.start(f"look record 1 up ({run_id})", id=run_id)
        else:
            workflow = {
                "native-pai": "bench.RecoveryNativePAI",
                "native-oa": "bench.RecoveryNativeOA",
            }
            await self.client.start_workflow(
                workflow[system], f"look record 1 up ({run_id})", id=run_id, task_queue=queue
            )

    async def step_worker(self, run_id: str, workers: list[Worker]) -> Worker:
        """The worker running the run's pending step (the hung model call)."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            desc = await self.client.get_workflow_handle(run_id).describe()
            for act in desc.raw_description.pending_activities:
                pid = act.last_worker_identity.split("@", 1)[0]
                for w in workers:
                    if str(w.pid) == pid:
                        return w
            await asyncio.sleep(0.05)
        raise RuntimeError(f"run {run_id}: no pending step on a known worker")

    async def closed(self, run_id: str) -> float:
        """The moment the engine reports the run closed (it must have completed)."""
        handle = self.client.get_workflow_handle(run_id)
        while True:
            try:
                async for event in handle.fetch_history_events(
                    wait_new_event=True,
                    event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT,
                ):
                    kind = event.event_type
                    if kind != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
                        raise RuntimeError(f"run {run_id} closed as {EventType.Name(kind)}")
                    return time.monotonic()
            except RPCError as exc:  # the long poll's own deadline: poll again
                if exc.status not in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED):
                    raise

    async def trial(self, server: ScriptedModelServer, system: str, setup: str) -> Trial:
        trial = Trial(system, setup)
        prefix = f"rec-{uuid.uuid4().hex[:8]}"
        queue = agent_queue(prefix, f"recovery-{system.split('-')[1]}")
        if system.startswith("native"):
            queue = prefix
        env = self.env(server, prefix)
        cmd = self.command(system, queue)
        started: list[Worker] = []
        watching: asyncio.Task[dict[str, float]] | None = None
        try:
            for _ in range(2 if setup == "standby" else 1):
                started.append(self.spawn(cmd, env))
            for w in started:
                trial.starts.append(await self.until_polling(w, queue))
            server.reset()
            run_id = f"{system}-{setup}-{uuid.uuid4().hex[:6]}"
            await self.start_run(system, queue, run_id)
            await until_requested(server, turn=1)  # the second model call, hung, in flight
            victim = await self.step_worker(run_id, started)
            closing = asyncio.create_task(self.closed(run_id))
            watching = asyncio.create_task(self.watch_step(run_id, closing))
            await asyncio.sleep(0)
            victim.kill()
            killed, killed_at = time.monotonic(), time.time()
            if setup == "cold":
                fresh = self.spawn(cmd, env)
                started.append(fresh)
                trial.starts.append(await self.until_polling(fresh, queue))
            done = await asyncio.wait_for(closing, RESULT_TIMEOUT)
            trial.kill_to_result = done - killed
            trial.phases = await self.phases(run_id, killed_at, await watching)
        except Exception as exc:
            trial.error = f"{type(exc).__name__}: {exc}"
        finally:
            for w in started:
                w.kill()
            if watching is not None and not watching.done():
                watching.cancel()
        return trial

    async def watch_step(self, run_id: str, closing: asyncio.Task[float]) -> dict[str, float]:
        """The engine's own times of the lost step, seen from ``describe()`` until its retry
        is due: when its first attempt started and last beat, when that attempt timed out,
        and when the retry was due (the retry interval after the timeout)."""
        handle = self.client.get_workflow_handle(run_id)
        seen: dict[str, float] = {}

        def at(stamp: Any) -> float:
            return float(stamp.ToMicroseconds()) / 1e6

        while not closing.done():
            try:
                desc = await handle.describe()
            except RPCError:
                await asyncio.sleep(0.05)
                continue
            for act in desc.raw_description.pending_activities:
                if act.attempt == 1:
                    seen["started"] = at(act.last_started_time)
                    if act.HasField("last_heartbeat_time"):
                        seen["beat"] = at(act.last_heartbeat_time)
                elif act.HasField("next_attempt_schedule_time"):
                    seen["retry_due"] = at(act.next_attempt_schedule_time)
                    return seen
            await asyncio.sleep(0.05)
        return seen

    async def phases(
        self, run_id: str, killed_at: float, step: dict[str, float]
    ) -> dict[str, float]:
        """Seconds after the kill at which each part of the recovery happened (engine times):
        the lost step timed out, its retry started and completed, the run's next task was
        scheduled and started, the run completed. ``beat`` is the last beat before the kill
        (negative: before it)."""
        handle = self.client.get_workflow_handle(run_id)
        events = [e async for e in handle.fetch_history_events()]

        def at(event: object) -> float:
            return event.event_time.ToMicroseconds() / 1e6 - killed_at  # type: ignore[attr-defined]

        out = {k: v - killed_at for k, v in step.items()}
        retried = [
            e
            for e in events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
            and e.activity_task_started_event_attributes.attempt > 1
        ]
        if retried:
            out["retry_started"] = at(retried[-1])
            after = [e for e in events if e.event_id > retried[-1].event_id]
            for name, kind in (
                ("step_done", EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED),
                ("task_scheduled", EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED),
                ("task_started", EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED),
                ("closed", EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED),
            ):
                found = next((e for e in after if e.event_type == kind), None)
                if found is not None:
                    out[name] = at(found)
        return out

    async def import_share(self, server: ScriptedModelServer, system: str) -> tuple[float, float]:
        """One start of ``tether worker`` under ``-X importtime``: (start s, import s)."""
        prefix = f"rec-imp-{uuid.uuid4().hex[:8]}"
        queue = agent_queue(prefix, f"recovery-{system.split('-')[1]}")
        env = dict(self.env(server, prefix), PYTHONPROFILEIMPORTTIME="1")
        worker = self.spawn(self.command(system, queue), env)
        try:
            start = await self.until_polling(worker, queue)
        finally:
            worker.kill()
        micros = 0
        for line in worker.log.read_text(errors="replace").splitlines():
            parts = line.split("|")
            # top-level imports only (one space before the name): their times include
            # their children's
            if line.startswith("import time:") and len(parts) == 3 and parts[2][1:2] != " ":
                try:
                    micros += int(parts[1])
                except ValueError:
                    continue  # the header line
        return start, micros / 1e6


async def until_requested(server: ScriptedModelServer, turn: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not server.arrived(turn=turn):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no model call for turn {turn} in {timeout}s")
        await asyncio.sleep(0.02)


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{med:6.1f} s ({min(values):.1f}-{max(values):.1f})"


async def run(args: argparse.Namespace) -> None:
    systems = list(args.systems)
    if "native-oa" in systems and not NATIVE_PYTHON.exists():
        print("native-oa skipped: run bench/setup_native.sh first", file=sys.stderr)
        systems.remove("native-oa")
    print(f"load before: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} (1, 5 min)")
    trials: list[Trial] = []
    shares: dict[str, tuple[float, float]] = {}
    with ScriptedModelServer(SCRIPT) as server:
        async with EmbeddedEngine(persist=False, ui=False) as engine:
            runtime = await Runtime.start(address=engine.address, store=BlobStore(args.store))
            bench = Bench(args, engine, runtime)
            try:
                for system in systems:
                    if system.startswith("tether"):
                        shares[system] = await bench.import_share(server, system)
                    for setup in args.setups:
                        for i in range(args.repeat):
                            t = await bench.trial(server, system, setup)
                            trials.append(t)
                            what = f"{t.kill_to_result:.1f} s" if t.error is None else t.error
                            starts = ", ".join(f"{s:.1f}" for s in t.starts)
                            print(
                                f"  {system:<10} {setup:<7} #{i + 1}: kill -> result {what}; "
                                f"worker starts {starts} s",
                                flush=True,
                            )
                            if t.phases:
                                parts = ", ".join(
                                    f"{k} {v:+.2f}"
                                    for k, v in sorted(t.phases.items(), key=lambda kv: kv[1])
                                )
                                print(f"      after the kill (s): {parts}", flush=True)
            finally:
                for w in bench.workers:
                    w.kill()
                await runtime.close()
    load = os.getloadavg()
    print(
        f"\nkill -9 -> result, median of {args.repeat} (min-max); load after: "
        f"{load[0]:.1f} {load[1]:.1f} (1, 5 min), {os.cpu_count()} cores\n"
    )
    header = f"{'system':<11}{'standby':<22}{'cold restart':<22}worker start (spawn -> poll)"
    print(header)
    for system in systems:
        cells = []
        for setup in SETUPS:
            ok = [t.kill_to_result for t in trials if t.system == system and t.setup == setup]
            cells.append(fmt([v for v in ok if v is not None]))
        starts = [s for t in trials if t.system == system for s in t.starts]
        failed = sum(1 for t in trials if t.system == system and t.error)
        note = f"  [{failed} failed]" if failed else ""
        print(f"{system:<11}{cells[0]:<22}{cells[1]:<22}{fmt(starts)}{note}")
    for system, (start, imports) in shares.items():
        print(
            f"\n`tether worker` ({system}) under -X importtime: first poll after {start:.1f} s, "
            f"imports {imports:.1f} s of it ({100 * imports / start:.0f}%)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--setups", nargs="+", choices=SETUPS, default=list(SETUPS))
    parser.add_argument("--store", default="/tmp/tether-bench-recovery-store")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
