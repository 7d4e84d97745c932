"""`tether runs ...`, `tether approve` and `tether run --follow`, run as a user runs them
(subprocesses against the dev server and a `tether worker`)."""

from __future__ import annotations

import asyncio
import re
import sys
import uuid
from pathlib import Path

from test_cli import tether_cli
from tether.core.runtime import Runtime, agent_queue
from tether.testing import ScriptedModelServer, ToolCall, Turn, Usage
from workers import WorkerProcess, executed, wait_until_polling, worker_processes


async def test_follow_pending_approve_and_show_from_the_shell(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path
) -> None:
    script = [
        Turn.tool_calls(ToolCall("refund", {"order": 42}), usage=Usage(180, 14)),
        Turn.text("Order 42 is refunded.", usage=Usage(290, 12)),
    ]
    calls = tmp_path / "calls.txt"
    run_id = f"cli-refund-{uuid.uuid4().hex[:6]}"
    with ScriptedModelServer(script) as server, worker_processes() as procs:
        env = dict(worker_env, OPENAI_BASE_URL=server.base_url, TETHER_TEST_CALLS=str(calls))
        procs.append(WorkerProcess(["apps.hitl_apps:openai_refunds"], env, tmp_path / "w.log"))
        await wait_until_polling(runtime.client, agent_queue(env["TETHER_TASK_QUEUE"], "refunds"))
        follow = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tether.cli", "run", "apps.hitl_apps:openai_refunds",
            "Refund order 42", "--id", run_id, "--follow",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            for _ in range(100):
                pending = await tether_cli("runs", "pending", run_id, env=env)
                if "approval" in pending.stdout:
                    break
                await asyncio.sleep(0.2)
            assert pending.returncode == 0, pending.stderr
            call = pending.stdout.split()[0]
            assert 'approve refund({"order": 42})' in pending.stdout
            listed = await tether_cli("runs", "list", env=env)
            assert re.search(rf"^{run_id} +waiting ", listed.stdout, re.M), listed.stdout
            approved = await tether_cli("approve", run_id, call, env=env)
            assert approved.returncode == 0, approved.stderr
            assert approved.stdout.strip() == f"approved {call}"
            again = await tether_cli("approve", run_id, call, "--deny", env=env)
            assert again.returncode == 2
            assert "already answered (approved)" in again.stderr
            out, err = await asyncio.wait_for(follow.communicate(), 60)
        finally:
            if follow.returncode is None:
                follow.kill()
                await follow.wait()
        assert follow.returncode == 0, err.decode()
        assert out.decode().strip() == "Order 42 is refunded."
        lines = err.decode()
        for expected in (
            f"WAITING for approval {call}: refund({{'order': 42}})",
            f"-> tether approve {run_id} {call}",
            f"{call} approved",
            "tool: refund finished",
            "run finished (496 tokens)",
        ):
            assert expected in lines, lines
        show = await tether_cli("runs", "show", run_id, env=env)
    assert show.returncode == 0, show.stderr
    assert "agent    refunds" in show.stdout
    assert "status   completed" in show.stdout
    assert "180/14" in show.stdout and "290/12" in show.stdout
    assert f"wait {call}: approval refund -> approved" in show.stdout
    assert "total    2 model requests, 470 in / 26 out tokens, cost $" in show.stdout
    assert executed(calls) == {"refund:42": 1}


async def test_approving_an_unknown_run_or_call_is_a_clear_error(
    worker_env: dict[str, str],
) -> None:
    proc = await tether_cli("approve", "no-such-run", "call_1", env=worker_env)
    assert proc.returncode == 2
    assert "has ended or does not exist" in proc.stderr
