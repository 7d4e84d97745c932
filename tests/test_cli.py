"""The `tether` command, run as a user runs it (subprocesses against the dev server)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from tether.core.runtime import Runtime, agent_queue
from tether.testing import ScriptedModelServer, ToolCall, Turn
from workers import WorkerProcess, wait_until_polling, worker_processes

ROOT = Path(__file__).resolve().parents[1]


async def tether_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tether.cli", *args],
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
        timeout=400,  # a Python process starting on a loaded 2-core machine can take minutes
    )


async def test_plugins_lists_installed_adapters_with_versions() -> None:
    proc = await tether_cli("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    oa = rows["openai_agents"]
    assert oa["status"] == "available"
    assert oa["framework_version"] == "0.24.0"
    assert ">=0.24" in oa["verified_versions"]
    assert "handoffs" in oa["capabilities"]
    assert oa["steps"][:2] == ["openai_agents.model", "openai_agents.tool"]
    assert {"openai_agents.mcp_list_tools", "openai_agents.mcp_call_tool"} <= set(oa["steps"])


def script() -> list[Turn]:
    return [
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"})),
        Turn.text("CA: heat advisory"),
    ]


async def test_run_against_a_worker_prints_progress_and_the_answer(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path
) -> None:
    with ScriptedModelServer(script()) as server, worker_processes() as procs:
        env = dict(worker_env, OPENAI_BASE_URL=server.base_url)
        procs.append(WorkerProcess(["apps.openai_apps:weather"], env, tmp_path / "w.log"))
        await wait_until_polling(runtime.client, agent_queue(env["TETHER_TASK_QUEUE"], "weather"))
        proc = await tether_cli(
            "run", "apps.openai_apps:weather", "Any alerts in CA?", "--id", "cli-run-1", env=env
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "CA: heat advisory"
        assert "run cli-run-1 started" in proc.stderr
        assert "no worker polls" not in proc.stderr
        # The same id again: the finished run's answer, no new model call.
        again = await tether_cli(
            "run", "apps.openai_apps:weather", "Any alerts in CA?", "--id", "cli-run-1", env=env
        )
        assert again.stdout.strip() == "CA: heat advisory"
        assert server.count() == 2


async def test_run_without_a_worker_hosts_the_agent_itself(
    worker_env: dict[str, str],
) -> None:
    with ScriptedModelServer(script()) as server:
        env = dict(worker_env, OPENAI_BASE_URL=server.base_url)
        proc = await tether_cli("run", "apps.openai_apps:weather", "alerts?", env=env)
        assert proc.returncode == 0, proc.stderr
        assert "no worker polls queue" in proc.stderr
        assert proc.stdout.strip() == "CA: heat advisory"


async def test_bad_object_spec_is_a_clear_error(worker_env: dict[str, str]) -> None:
    proc = await tether_cli("run", "apps.nope:agent", "hi", env=worker_env)
    assert proc.returncode == 2
    assert "cannot import module 'apps.nope'" in proc.stderr
    proc = await tether_cli("worker", "apps.openai_apps", env=worker_env)
    assert proc.returncode == 2
    assert "MODULE:OBJECT" in proc.stderr


async def test_the_pydantic_example_runs_with_the_same_cli(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path
) -> None:
    root = ROOT
    script = [
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"})),
        Turn.text("Heat Advisory in the Central Valley."),
    ]
    with ScriptedModelServer(script) as server, worker_processes() as procs:
        env = dict(worker_env, OPENAI_BASE_URL=server.base_url)
        env["PYTHONPATH"] = os.pathsep.join([str(root), env["PYTHONPATH"]])
        spec = "examples.pydantic_ai_weather:agent"
        procs.append(WorkerProcess([spec], env, tmp_path / "w.log"))
        await wait_until_polling(
            runtime.client, agent_queue(env["TETHER_TASK_QUEUE"], "weather-pai")
        )
        proc = await tether_cli(
            "run", spec, "Alerts in CA?", "--context", '{"units": "imperial"}', env=env
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "Heat Advisory in the Central Valley."
        # The deps reached the tool on the worker, as the Settings type.
        assert "(units: imperial)" in server.requests[-1].body_text
