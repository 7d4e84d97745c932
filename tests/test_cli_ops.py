"""Operating runs from the shell: `tether runs follow/cancel/terminate/retry`, the list
filters, one-line errors and the id-reuse message (subprocesses against the dev server and
a `tether worker`)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from test_cli import tether_cli
from tether.core.runtime import Runtime, agent_queue
from tether.testing import Fault, RecordedRequest, ScriptedModelServer, ToolCall, Turn
from workers import WorkerProcess, executed, wait_until_polling, worker_processes

# Every command is a Python process (~10 s to import the frameworks on a loaded 2-core
# machine): generous per-test limits.
pytestmark = pytest.mark.timeout(900)

WEATHER = "apps.openai_apps:weather"
SCRIPT = [
    Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"})),
    Turn.text("CA: heat advisory"),
]


def one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("tether: error: "), stderr
    return lines[0]


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def until(text: str, *args: str, env: dict[str, str], timeout: float = 180) -> str:
    """Run `tether ARGS` until its stdout contains ``text``; return that stdout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        proc = await tether_cli(*args, env=env)
        if text in proc.stdout:
            return proc.stdout
        if loop.time() > deadline:
            raise AssertionError(f"{text!r} not in `tether {' '.join(args)}`:\n{proc.stdout}")
        await asyncio.sleep(0.3)


async def test_unknown_runs_are_one_line_errors(worker_env: dict[str, str]) -> None:
    run = uid("nope")
    for command in ("show", "follow", "cancel", "terminate", "retry", "pending"):
        proc = await tether_cli("runs", command, run, env=worker_env)
        assert proc.returncode == 2, (command, proc.stderr)
        line = one_line_error(proc.stderr)
        assert f"no run {run!r} in namespace 'default'" in line, line
        assert "`tether runs list`" in line, line


async def test_list_filters_and_their_bad_values(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path
) -> None:
    bad = await tether_cli("runs", "list", "--status", "sleeping", env=worker_env)
    assert bad.returncode == 2
    line = one_line_error(bad.stderr)
    for status in ("running", "waiting", "completed", "failed", "cancelled", "terminated"):
        assert status in line
    bad = await tether_cli("runs", "list", "--since", "yesterday-ish", env=worker_env)
    assert "30m, 1h, 2d" in one_line_error(bad.stderr)

    refunds = [Turn.tool_calls(ToolCall("refund", {"order": 7})), Turn.text("done")]
    waiting, done = uid("cli-wait"), uid("cli-done")
    lanes = {"gpt-4o": refunds, "gpt-weather": SCRIPT}
    with ScriptedModelServer(lanes) as server, worker_processes() as procs:
        env = dict(worker_env, OPENAI_BASE_URL=server.base_url)
        specs = ["apps.hitl_apps:openai_refunds", WEATHER]
        procs.append(WorkerProcess(specs, env, tmp_path / "w.log"))
        for name in ("refunds", "weather"):
            queue = agent_queue(env["TETHER_TASK_QUEUE"], name)
            await wait_until_polling(runtime.client, queue, timeout=180)
        started = await tether_cli(
            "run", "apps.hitl_apps:openai_refunds", "refund 7", "--id", waiting, "--no-wait",
            env=env,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        ran = await tether_cli("run", WEATHER, "alerts?", "--id", done, env=env)
        assert ran.returncode == 0, ran.stderr
        out = await until(waiting, "runs", "list", "--status", "waiting", env=env)
        assert re.search(rf"^{waiting} +waiting .* refunds$", out, re.M), out
        assert done not in out
        out = await until(
            waiting, "runs", "list", "--agent", "refunds", "--status", "waiting", env=env
        )
        assert "weather" not in out
        out = await until(done, "runs", "list", "--agent", "weather", "--since", "10m", env=env)
        assert re.search(rf"^{done} +completed ", out, re.M), out
        assert waiting not in out
        out = await until(done, "runs", "list", "--status", "completed", env=env)
        assert waiting not in out
        running = await tether_cli("runs", "list", "--status", "running", env=env)
        assert waiting not in running.stdout and done not in running.stdout
        future = await tether_cli("runs", "list", "--since", "2999-01-01", env=env)
        assert future.stdout.strip() == "no runs"
        await tether_cli("runs", "terminate", waiting, env=env)


class Switch:
    """Turn 1 of the weather script fails (a non-retryable 400) while ``failing`` is set."""

    def __init__(self) -> None:
        self.failing = threading.Event()
        self.failing.set()

    def __call__(self, req: RecordedRequest) -> Turn:
        if req.turn >= 1 and self.failing.is_set():
            return Turn.text("unused", faults=[Fault.server_error(400)] * 100)
        return SCRIPT[min(req.turn, 1)]


async def test_failed_run_id_reuse_retry_and_follow(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path
) -> None:
    run = uid("cli-retry")
    calls = tmp_path / "calls.txt"
    switch = Switch()
    with ScriptedModelServer(responder=switch) as server, worker_processes() as procs:
        env = dict(worker_env, OPENAI_BASE_URL=server.base_url, TETHER_TEST_CALLS=str(calls))
        procs.append(WorkerProcess([WEATHER], env, tmp_path / "w.log"))
        await wait_until_polling(
            runtime.client, agent_queue(env["TETHER_TASK_QUEUE"], "weather"), timeout=180
        )
        first = await tether_cli("run", WEATHER, "alerts?", "--id", run, env=env)
        assert first.returncode == 2
        assert f"run {run} started" in first.stderr
        assert "failed" in first.stderr.splitlines()[-1]
        # The same id again: says it attached to the failed run, and how to retry it.
        again = await tether_cli("run", WEATHER, "alerts?", "--id", run, env=env)
        assert f"run {run} already exists (failed " in again.stderr, again.stderr
        assert f"attached. Retry it with `tether runs retry {run}`" in again.stderr
        assert f"run {run} started" not in again.stderr
        running = await tether_cli("runs", "retry", uid("nope"), env=env)
        assert "no run" in one_line_error(running.stderr)

        switch.failing.clear()
        retried = await tether_cli("runs", "retry", run, env=env)
        assert retried.returncode == 0, retried.stderr
        assert "retrying from step 'openai_agents.model'" in retried.stdout
        followed = await tether_cli("runs", "follow", run, env=env)
        assert followed.returncode == 0, followed.stderr
        lines = followed.stdout.splitlines()
        assert lines[-1] == "CA: heat advisory"
        assert any("run finished" in line for line in lines), followed.stdout
        # Resumed after an offset: only what follows it.
        offsets = [int(m.group(1)) for m in re.finditer(r"#(\d+) ", followed.stdout)]
        tail = await tether_cli("runs", "follow", run, "--after", str(offsets[-2]), env=env)
        assert re.findall(r"#(\d+) ", tail.stdout) == [str(offsets[-1])], tail.stdout
        # No completed call was made again: turn 0 and the tool once each.
        assert server.count(turn=0) == 1
        assert server.count(turn=1) == 2
        done = await tether_cli("runs", "retry", run, env=env)
        assert "completed, so there is nothing to retry" in one_line_error(done.stderr)
    assert executed(calls) == {"get_weather_alerts:CA": 1}


async def test_cancel_terminate_and_retry_from_start(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path
) -> None:
    # Turn 1 hangs on its first two attempts (one per run; attempts are counted per
    # turn across runs): a step is in flight when we stop each run.
    script = [
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"})),
        Turn.text("CA: heat advisory", faults=[Fault.hang(60), Fault.hang(60)]),
    ]
    cancelled, terminated = uid("cli-cancel"), uid("cli-term")
    with ScriptedModelServer(script) as server, worker_processes() as procs:
        env = dict(worker_env, OPENAI_BASE_URL=server.base_url)
        procs.append(WorkerProcess([WEATHER], env, tmp_path / "w.log"))
        await wait_until_polling(
            runtime.client, agent_queue(env["TETHER_TASK_QUEUE"], "weather"), timeout=180
        )
        for run in (cancelled, terminated):
            started = await tether_cli("run", WEATHER, "x", "--id", run, "--no-wait", env=env)
            assert started.returncode == 0, started.stderr
            await until("NOW      step 3", "runs", "show", run, env=env)
        cancel = await tether_cli("runs", "cancel", cancelled, "--wait", env=env)
        assert cancel.returncode == 0, cancel.stderr
        assert "a step in flight is told to stop" in cancel.stdout
        assert cancel.stdout.strip().endswith(f"run {cancelled}: cancelled")
        show = await tether_cli("runs", "show", cancelled, env=env)
        assert "status   cancelled" in show.stdout
        twice = await tether_cli("runs", "cancel", cancelled, env=env)
        assert "already ended (cancelled)" in one_line_error(twice.stderr)

        term = await tether_cli("runs", "terminate", terminated, "--reason", "stuck", env=env)
        assert term.returncode == 0, term.stderr
        assert f"terminated run {terminated} (stuck)" in term.stdout
        again = await tether_cli("runs", "retry", terminated, "--from-start", env=env)
        assert again.returncode == 0, again.stderr
        assert "from the start" in again.stdout
        followed = await tether_cli("runs", "follow", terminated, env=env)
        assert followed.stdout.splitlines()[-1] == "CA: heat advisory", followed.stdout
        assert server.count(turn=0) >= 3  # two runs, then the second from its start


async def test_show_lists_attempts_in_progress(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path
) -> None:
    script = [Turn.text("never", faults=[Fault.server_error(500)] * 200)]
    run = uid("cli-attempts")
    with ScriptedModelServer(script) as server, worker_processes() as procs:
        env = dict(worker_env, OPENAI_BASE_URL=server.base_url)
        procs.append(WorkerProcess([WEATHER], env, tmp_path / "w.log"))
        await wait_until_polling(
            runtime.client, agent_queue(env["TETHER_TASK_QUEUE"], "weather"), timeout=180
        )
        started = await tether_cli("run", WEATHER, "x", "--id", run, "--no-wait", env=env)
        assert started.returncode == 0, started.stderr
        out = await until("last error:", "runs", "show", run, env=env)
        line = next(x for x in out.splitlines() if x.startswith("NOW"))
        assert re.search(r": attempt ([2-8]) of 8 ", line), line
        assert "step 1 " in line and "(openai_agents.model)" in line, line
        assert "last error:" in line and "500" in line, line
        now = re.search(r": attempt (\d+) of", line)
        assert now, line
        failed_before = int(now[1]) - 1
        total = next(x for x in out.splitlines() if x.startswith("total "))
        # The failed attempts of the step still retrying count, not "0 failed attempts".
        found = re.search(r"\+(\d+) of steps still retrying", total)
        assert found and int(found[1]) >= failed_before, total
        shown = await tether_cli("runs", "show", run, "--json", env=env)
        attempts = json.loads(shown.stdout)["attempts"]
        assert attempts[0]["name"] == "openai_agents.model"
        assert attempts[0]["attempt"] >= 2
        await tether_cli("runs", "terminate", run, env=env)


async def test_show_says_why_a_run_waits_and_how_an_ended_run_ended(
    worker_env: dict[str, str],
) -> None:
    # No worker hosts the agent, and this CLI does not host it either: the run waits.
    run = uid("cli-unhosted")
    started = await tether_cli(
        "run", WEATHER, "alerts?", "--id", run, "--no-local-worker", "--no-wait", env=worker_env
    )
    assert started.returncode == 0, started.stderr
    queue = agent_queue(worker_env["TETHER_TASK_QUEUE"], "weather")
    out = await until("problem  ", "runs", "show", run, env=worker_env)
    assert "status   running" in out, out
    problem = next(line for line in out.splitlines() if line.startswith("problem  "))
    assert f"no worker hosts agent 'weather' on queue {queue!r}" in problem, problem
    assert f"`tether worker {WEATHER}`" in problem, problem
    ended = await tether_cli(
        "runs", "terminate", run, "--reason", "nobody hosts it", env=worker_env
    )
    assert ended.returncode == 0, ended.stderr
    # Still no worker to answer for the run: the engine's record says how it ended, and the
    # run's input names its agent.
    show = await tether_cli("runs", "show", run, env=worker_env)
    assert show.returncode == 0, show.stderr
    lines = show.stdout.splitlines()
    assert "agent    weather" in lines, show.stdout
    assert "status   terminated" in lines, show.stdout
    error = next(line for line in lines if line.startswith("error    "))
    assert "Terminated" in error and "nobody hosts it" in error, error
    assert not any(line.startswith("problem  ") for line in lines), show.stdout


async def test_a_reader_that_goes_away_is_not_an_error(worker_env: dict[str, str]) -> None:
    """`tether runs list | head -1`: the pipe closes before tether writes; no error line."""

    def run_with_closed_reader() -> tuple[int, str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tether.cli", "runs", "list"],
            env=worker_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader is gone before anything is written
        err = proc.stderr.read().decode()
        return proc.wait(timeout=400), err

    code, err = await asyncio.to_thread(run_with_closed_reader)
    assert code == 141, err
    assert err == "", err
