"""`tether worker` subprocesses on hosts without a shared disk: one s3:// store, or none.

Each worker gets a local directory of its own (TETHER_HOME); the store is what they share.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

import tether
from s3 import S3Server
from test_cli import tether_cli
from tether.core.runtime import Runtime, agent_queue
from tether.core.steps import BLOB_MISSING
from tether.core.store import PAYLOAD_MISSING
from tether.testing import ScriptedModelServer, ToolCall, Turn, WorkerProcess, worker_processes
from tether.testing._history import history_stats
from workers import DELAY, executed, wait_for_completed_steps, wait_until_polling

# Worker subprocesses take seconds to start (minutes on a loaded 2-core machine): generous
# bounds, never tight wall-clock limits.
pytestmark = pytest.mark.timeout(900)
STEPS_WITHIN = 300.0
RESULT_WITHIN = 400.0
LOOP_TOOLS = 10  # 10 x (model + tool) + the final model call: 21 steps


def worker_env_for(
    base: dict[str, str], tmp_path: Path, role: str, server: ScriptedModelServer, store: str
) -> dict[str, str]:
    home = tmp_path / f"home-{role}"
    home.mkdir(exist_ok=True)
    return dict(
        base,
        TETHER_HOME=str(home),
        TETHER_STORE=store,
        OPENAI_BASE_URL=server.base_url,
        TETHER_TEST_CALLS=str(tmp_path / f"calls-{role}.txt"),
        TETHER_TEST_TOOL_DELAY=str(DELAY),
    )


async def step_workers(client: Client, run_id: str) -> Counter[int]:
    """Steps started per worker process id (a worker's identity is ``pid@host``)."""
    history = await client.get_workflow_handle(run_id).fetch_history()
    pids: Counter[int] = Counter()
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            identity = event.activity_task_started_event_attributes.identity
            pids[int(identity.split("@", 1)[0])] += 1
    return pids


async def failure_types(client: Client, run_id: str) -> list[str]:
    """The error types of every failed step attempt the history records."""
    history = await client.get_workflow_handle(run_id).fetch_history()
    out = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
            failure = event.activity_task_failed_event_attributes.failure
            out.append(failure.application_failure_info.type)
    return out


async def test_tool_loop_alternates_between_workers_sharing_one_s3_store(
    runtime: Runtime,
    worker_env: dict[str, str],
    tmp_path: Path,
    s3_server: S3Server,
    s3_env: dict[str, str],
) -> None:
    from apps.store_apps import looper

    store = f"s3://{s3_server.create_bucket()}/tether"
    script = [
        *(Turn.tool_calls(ToolCall("lookup", {"n": n}), delay=DELAY) for n in range(LOOP_TOOLS)),
        Turn.text("looked up everything", delay=DELAY),
    ]
    base = dict(worker_env, **s3_env)
    durable = tether.durable(looper, runtime=runtime, local_worker=False)
    durable.task_queue = agent_queue(base["TETHER_TASK_QUEUE"], durable.name)
    with ScriptedModelServer({"gpt-looper": script}) as server, worker_processes() as procs:
        envs = {r: worker_env_for(base, tmp_path, r, server, store) for r in ("a", "b")}
        roles: dict[int, str] = {}

        def start(role: str, n: int) -> WorkerProcess:
            log = tmp_path / f"{role}{n}.log"
            proc = WorkerProcess(["apps.store_apps:looper"], envs[role], log)
            procs.append(proc)
            roles[proc.proc.pid] = role
            return proc

        current = start("a", 0)
        handle = await durable.start(
            "look everything up", id=f"shared-{uuid.uuid4().hex[:6]}", max_turns=30
        )
        # A takes the first steps; then B starts and A is killed; then A (a new process, same
        # local directory) and B is killed; then B again. Every hand-over is a SIGKILL.
        for n, target in enumerate((4, 9, 14)):
            await wait_for_completed_steps(runtime.client, handle.id, target, current, STEPS_WITHIN)
            nxt = start("b" if roles[current.proc.pid] == "a" else "a", n + 1)
            current.kill()
            current = nxt
        result = await asyncio.wait_for(handle.result(), RESULT_WITHIN)
        assert result.final_output == "looked up everything"

    stats = await history_stats(runtime.client, handle.id)
    assert len(stats.completed()) == 2 * LOOP_TOOLS + 1
    # Zero fallback resends: no step failed for a missing blob, and no step was scheduled
    # twice (a resend schedules the step again with the conversation inline).
    assert BLOB_MISSING not in await failure_types(runtime.client, handle.id)
    assert len(stats.steps) == 2 * LOOP_TOOLS + 1
    # Both workers' processes executed steps.
    by_pid = await step_workers(runtime.client, handle.id)
    by_role = Counter({r: 0 for r in ("a", "b")})
    for pid, count in by_pid.items():
        by_role[roles[pid]] += count
    assert by_role["a"] > 0 and by_role["b"] > 0, (by_role, by_pid)
    tools = executed(tmp_path / "calls-a.txt") + executed(tmp_path / "calls-b.txt")
    assert len(tools) == LOOP_TOOLS  # every lookup ran (a killed one may have run twice)
    # Linear history: the last model step's input is as small as the second one's.
    models = [s.input_bytes for s in stats.steps if s.name == "openai_agents.model"]
    assert max(models[1:]) < models[1] + 1024, models


async def test_large_tool_result_survives_its_workers_death(
    runtime: Runtime,
    worker_env: dict[str, str],
    tmp_path: Path,
    s3_server: S3Server,
    s3_env: dict[str, str],
) -> None:
    """Worker A stores a 300 KB tool result in S3 and dies; worker B (own disk) finishes."""
    from apps.store_apps import REPORT_BYTES, reporter

    store = f"s3://{s3_server.create_bucket()}/tether"
    script = [
        Turn.tool_calls(ToolCall("fetch_report", {"name": "q3"}), delay=DELAY),
        Turn.text("the report says all systems are nominal", delay=DELAY),
    ]
    base = dict(worker_env, **s3_env)
    durable = tether.durable(reporter, runtime=runtime, local_worker=False)
    durable.task_queue = agent_queue(base["TETHER_TASK_QUEUE"], durable.name)
    with ScriptedModelServer({"gpt-reporter": script}) as server, worker_processes() as procs:
        env_a = worker_env_for(base, tmp_path, "a", server, store)
        env_b = worker_env_for(base, tmp_path, "b", server, store)
        a = WorkerProcess(["apps.store_apps:reporter"], env_a, tmp_path / "a.log")
        procs.append(a)
        handle = await durable.start("report?", id=f"bulky-{uuid.uuid4().hex[:6]}")
        await wait_for_completed_steps(runtime.client, handle.id, 2, a, STEPS_WITHIN)
        a.kill()
        procs.append(WorkerProcess(["apps.store_apps:reporter"], env_b, tmp_path / "b.log"))
        result = await asyncio.wait_for(handle.result(), RESULT_WITHIN)
        assert result.final_output == "the report says all systems are nominal"
    stats = await history_stats(runtime.client, handle.id)
    tool = next(s for s in stats.steps if s.name == "openai_agents.tool")
    assert tool.completed and tool.result_bytes < 10_000  # a reference: the data is in S3
    assert stats.total_bytes < REPORT_BYTES
    assert executed(tmp_path / "calls-a.txt")["fetch_report:q3"] == 1
    assert "fetch_report:q3" not in executed(tmp_path / "calls-b.txt")


async def test_missing_large_payload_fails_the_run_with_the_fix(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path
) -> None:
    """Workers that do not share a store: the run fails naming the store and the fix
    (it used to hang, its workflow task failing forever in the worker's log)."""
    from apps.store_apps import reporter

    script = [
        Turn.tool_calls(ToolCall("fetch_report", {"name": "q4"}), delay=DELAY),
        Turn.text("never reached", delay=DELAY),
    ]
    store_a, store_b = (tmp_path / "store-a").as_uri(), (tmp_path / "store-b").as_uri()
    durable = tether.durable(reporter, runtime=runtime, local_worker=False)
    durable.task_queue = agent_queue(worker_env["TETHER_TASK_QUEUE"], durable.name)
    with ScriptedModelServer({"gpt-reporter": script}) as server, worker_processes() as procs:
        env_a = worker_env_for(worker_env, tmp_path, "a", server, store_a)
        env_b = worker_env_for(worker_env, tmp_path, "b", server, store_b)
        a = WorkerProcess(["apps.store_apps:reporter"], env_a, tmp_path / "a.log")
        procs.append(a)
        handle = await durable.start("report?", id=f"lost-{uuid.uuid4().hex[:6]}")
        await wait_for_completed_steps(runtime.client, handle.id, 2, a, STEPS_WITHIN)
        a.kill()
        b = WorkerProcess(["apps.store_apps:reporter"], env_b, tmp_path / "b.log")
        procs.append(b)
        with pytest.raises(Exception) as info:
            await asyncio.wait_for(handle.result(), RESULT_WITHIN)
        text = _chain_text(info.value)
        assert store_b in text, (text, b.tail())
        assert "TETHER_STORE" in text and "s3://" in text, text
        # Found by the step on the new worker, the run fails; found while the new worker
        # replays the run (the SDK cannot fail a run mid-replay), it is terminated with the
        # same reason (docs/operations.md, "Lost blobs"). Which comes first is a race.
        assert (await handle.describe()).status in ("failed", "terminated")
        # `tether runs follow` on it, answered by a fresh worker with B's store (one that
        # must replay the run for the query, and cannot: the payload is missing): how the
        # run ended, in one line, not a replay error called a bug.
        b.kill()
        since = datetime.now(UTC)
        procs.append(WorkerProcess(["apps.store_apps:reporter"], env_b, tmp_path / "b2.log"))
        await wait_until_polling(runtime.client, durable.task_queue, since=since)
        follow = await tether_cli("runs", "follow", handle.id, env=env_b)
        assert follow.returncode == 2, follow.stderr
        assert "Traceback" not in follow.stderr, follow.stderr
        last = follow.stderr.strip().splitlines()[-1]
        assert last.startswith(f"tether: error: run {handle.id!r} failed"), follow.stderr
        assert store_b in last and "TETHER_STORE" in last, last
        assert "likely a bug" not in follow.stderr, follow.stderr


def _chain_text(exc: BaseException) -> str:
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        parts.append(f"{type(seen).__name__}: {seen}")
        for attr in ("reason", "message"):
            value: Any = getattr(seen, attr, None)
            if isinstance(value, str):
                parts.append(value)
        seen = seen.__cause__
    return "\n".join(parts) + f"\n(type {PAYLOAD_MISSING}?)"
