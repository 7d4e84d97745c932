"""`tether replay-check`: recorded runs of both adapters checked against changed agent code.

Runs of ``apps.rc_base`` (an OpenAI Agents SDK agent and a Pydantic AI agent) are recorded
on the dev server by `tether run`, their histories exported with `temporal workflow show
-o json`, and the command (a subprocess, as CI runs it) checks them against the versions
in ``tests/apps/rc_*.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tether.core.devserver import EmbeddedEngine, find_temporal_binary
from tether.core.runtime import Runtime
from tether.testing import Fault, ScriptedModelServer, ToolCall, Turn

HERE = Path(__file__).parent
# The first test records the runs (two `tether run` processes); each check is a process.
pytestmark = pytest.mark.timeout(600)
OA, PAI = "rc-oa", "rc-pai"


def script() -> dict[str, list[Turn]]:
    return {
        "gpt-rc-oa": [
            Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "ca"})),
            Turn.tool_calls(ToolCall("translate", {"text": "heat advisory"})),
            Turn.text("CA: heat advisory (avis de chaleur)"),
        ],
        "gpt-rc-translator": [Turn.text("avis de chaleur")],
        "gpt-rc-pai": [
            Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "ca"})),
            Turn.text("CA: heat advisory"),
        ],
    }


async def cli(
    *args: str, env: dict[str, str], cwd: Path = HERE
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tether.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,  # a Python process starting on a loaded 2-core machine can take minutes
        cwd=cwd,
    )


@dataclass
class Recorded:
    env: dict[str, str]
    """The environment of a CI job: the engine's address, the store, no model server."""
    runs: dict[str, str]
    """Run id by agent name."""
    files: dict[str, Path]
    """The exported history file by agent name."""


@pytest.fixture(scope="module")
async def recorded(
    engine: EmbeddedEngine, runtime: Runtime, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Recorded]:
    """One run of each agent of ``apps.rc_base``, finished, and its exported history."""
    tmp = tmp_path_factory.mktemp("replay-check")
    env = dict(os.environ)
    env.update(
        {
            "TEMPORAL_ADDRESS": engine.address,
            "TETHER_STORE": runtime.store.url,
            "TETHER_HOME": str(tmp / "home"),
            "TETHER_TASK_QUEUE": f"rc-{uuid.uuid4().hex[:8]}",
            "PYTHONPATH": os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
        }
    )
    runs = {OA: f"rc-oa-{uuid.uuid4().hex[:8]}", PAI: f"rc-pai-{uuid.uuid4().hex[:8]}"}
    with ScriptedModelServer(script()) as server:
        run_env = dict(env, OPENAI_BASE_URL=server.base_url)
        done = await asyncio.gather(
            *(
                cli("run", f"apps.rc_base:{obj}", "Any alerts in CA?", "--id", runs[agent],
                    "--local-worker", "--quiet", env=run_env)
                for agent, obj in ((OA, "oa"), (PAI, "pai"))
            )
        )  # fmt: skip
    for proc in done:
        assert proc.returncode == 0, proc.stderr
    files: dict[str, Path] = {}
    for agent, run_id in runs.items():
        shown = await asyncio.to_thread(
            subprocess.run,
            [find_temporal_binary(), "workflow", "show", "-w", run_id, "-o", "json",
             "--address", engine.address],
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        files[agent] = tmp / f"{run_id}.json"
        files[agent].write_text(shown.stdout)
    yield Recorded(env=env, runs=runs, files=files)


async def check(rec: Recorded, *args: str) -> tuple[int, dict[str, Any], str]:
    proc = await cli("replay-check", *args, "--json", env=rec.env)
    assert proc.stdout.strip(), proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is (proc.returncode == 0)
    assert sum(report["counts"].values()) == len(report["runs"])
    return proc.returncode, {r["agent"]: r for r in report["runs"]}, proc.stderr


def files(rec: Recorded) -> list[str]:
    return [a for agent in (OA, PAI) for a in ("--history-file", str(rec.files[agent]))]


async def test_the_same_code_passes_from_files_and_from_the_engine(rec: Recorded) -> None:
    code, runs, err = await check(rec, "apps.rc_base:oa", "apps.rc_base:pai", *files(rec))
    assert code == 0, (runs, err)
    assert runs[OA]["verdict"] == "ok" and runs[OA]["compared"] == 5
    assert runs[PAI]["verdict"] == "ok" and runs[PAI]["compared"] == 3
    # From the engine by id, the agents loaded from the runs' recorded MODULE:OBJECT.
    code, runs, err = await check(rec, "--id", rec.runs[OA], "--id", rec.runs[PAI])
    assert code == 0, (runs, err)
    assert {r["verdict"] for r in runs.values()} == {"ok"}
    assert runs[OA]["source"] == "apps.rc_base:oa"


@pytest.fixture
def rec(recorded: Recorded) -> Recorded:
    return recorded


async def test_a_tool_added_before_an_existing_one_breaks_the_first_model_step(
    rec: Recorded,
) -> None:
    code, runs, _ = await check(
        rec, "apps.rc_tool_before:oa", "apps.rc_tool_before:pai", *files(rec)
    )
    assert code == 1
    for agent in (OA, PAI):
        run = runs[agent]
        assert run["verdict"] == "breaks", run
        assert run["step"] == 1 and run["step_name"] == f"model: {agent}", run
    assert runs[OA]["path"] == "$.payload.spec_ref.tools[0].description"
    assert '+          "name": "get_air_quality"' in runs[OA]["diff"], runs[OA]["diff"]
    assert "get_air_quality_pai" in runs[PAI]["diff"], runs[PAI]["diff"]


async def test_a_changed_system_prompt_breaks_the_first_model_step(rec: Recorded) -> None:
    code, runs, _ = await check(rec, "apps.rc_prompt:oa", "apps.rc_prompt:pai", *files(rec))
    assert code == 1
    for agent in (OA, PAI):
        run = runs[agent]
        assert run["verdict"] == "breaks" and run["step"] == 1, run
        assert '-    "system": "Answer with the alerts."' in run["diff"] or (
            "Answer with the alerts, in one line." in run["diff"]
        ), run["diff"]
    assert runs[OA]["path"] == "$.payload.system"


async def test_tool_arguments_built_differently_break_the_step_that_gets_them(
    rec: Recorded,
) -> None:
    code, runs, _ = await check(rec, "apps.rc_args:oa", "apps.rc_args:pai", *files(rec))
    assert code == 1
    # The SDK: the translator agent-as-tool builds its input from the arguments another way;
    # its model step (the run's 4th) is the first whose request differs.
    oa = runs[OA]
    assert oa["verdict"] == "breaks" and oa["step"] == 4, oa
    assert oa["step_name"] == "model: rc-translator", oa
    assert "Translate into French, keep it short: heat advisory" in oa["diff"], oa["diff"]
    # Pydantic AI: the tool's argument is validated into another value (same JSON schema):
    # the model steps are the same, the tool step (2nd) gets "CA" instead of "ca".
    pai = runs[PAI]
    assert pai["verdict"] == "breaks" and pai["step"] == 2, pai
    assert pai["step_name"] == "tool: get_weather_alerts", pai
    assert pai["path"] == "$.payload.args.state", pai
    assert '-      "state": "ca"' in pai["diff"] and '+      "state": "CA"' in pai["diff"]


async def test_replay_safe_changes_pass(rec: Recorded) -> None:
    """A tool only an agent the run never handed off to has (SDK), a tool offered only from
    the 10th model call on (Pydantic AI), and a tool whose code changed (both)."""
    code, runs, err = await check(rec, "apps.rc_safe:oa", "apps.rc_safe:pai", *files(rec))
    assert code == 0, (runs, err)
    assert runs[OA]["verdict"] == runs[PAI]["verdict"] == "ok"


async def test_human_report_names_the_step_and_shows_the_diff(rec: Recorded) -> None:
    """Runs selected on the engine (--since, --agent), the agent code named on the line."""
    proc = await cli(
        "replay-check", "apps.rc_args:pai", "--since", "1h", "--agent", PAI, env=rec.env
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == (
        f"WOULD BREAK  {rec.runs[PAI]} [{PAI}]: step 2 (tool: get_weather_alerts) would be "
        "asked for with another input: $.payload.args.state differs"
    ), proc.stdout
    assert '    -      "state": "ca"' in lines and '    +      "state": "CA"' in lines
    assert rec.runs[OA] not in proc.stdout  # --agent left the other run out
    assert "1 run(s): 0 ok, 1 would break, 0 could not be checked" in proc.stderr


async def test_a_run_that_cannot_be_checked_fails_the_check(rec: Recorded) -> None:
    code, runs, _ = await check(
        rec, "--id", "no-such-run-anywhere", "--history-file", str(rec.files[PAI])
    )
    assert code == 1
    assert runs[PAI]["verdict"] == "ok"  # loaded from the run's recorded source
    [missing] = [r for r in runs.values() if r["run_id"] == "no-such-run-anywhere"]
    assert missing["verdict"] == "unchecked"
    assert "could not be fetched" in missing["reason"], missing
    # Elsewhere, the run's recorded MODULE:OBJECT cannot be imported: not checked, and why.
    elsewhere = dict(rec.env, PYTHONPATH="")
    proc = await cli(
        "replay-check", "--history-file", str(rec.files[PAI]), "--json", env=elsewhere,
        cwd=rec.files[PAI].parent,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    [run] = json.loads(proc.stdout)["runs"]
    assert run["verdict"] == "unchecked" and run["agent"] == PAI
    assert "could not be loaded from its recorded source apps.rc_base:pai" in run["reason"]
    assert "cannot import module 'apps.rc_base'" in run["reason"], run


async def test_bad_usage_exits_2_with_one_line(rec: Recorded, tmp_path: Path) -> None:
    bad = tmp_path / "not-a-history.json"
    bad.write_text('{"events": []}')
    proc = await cli("replay-check", "--history-file", str(bad), env=rec.env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"tether: error: history file {str(bad)!r} holds no history events (no 'events' "
        "list). Fix: export it with `temporal workflow show -w RUN_ID -o json > FILE`"
    ]


async def step_scheduled(runtime: Runtime, run_id: str) -> bool:
    from temporalio.api.enums.v1 import EventType

    history = await runtime.client.get_workflow_handle(run_id).fetch_history()
    return any(e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED for e in history.events)


async def test_by_default_the_running_runs_are_checked(
    rec: Recorded, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run in flight (its first model step hangs) is what a deploy affects: the default."""
    import tether
    from apps.rc_agents import build

    queue = f"rc-live-{uuid.uuid4().hex[:8]}"
    with ScriptedModelServer({"gpt-rc-pai": [Turn.text("x", faults=[Fault.hang(300)])]}) as s:
        monkeypatch.setenv("OPENAI_BASE_URL", s.base_url)
        _, pai = build()
        durable = tether.durable(
            pai, runtime=runtime, task_queue=queue, local_worker=False, source="apps.rc_base:pai"
        )
        async with runtime.worker(task_queue=queue):
            handle = await durable.start("Any alerts in CA?", id=f"rc-live-{queue}")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 120
            while not await step_scheduled(runtime, handle.id):
                assert loop.time() < deadline, "the run's model step was never scheduled"
                await asyncio.sleep(0.2)
            try:
                code, runs, err = await check(rec, "--agent", PAI)
            finally:
                await runtime.client.get_workflow_handle(handle.id).terminate("test done")
    assert code == 0, (runs, err)
    [live] = runs.values()  # the finished run of the same agent is not checked
    assert live["run_id"] == handle.id and live["verdict"] == "ok", live
    assert live["compared"] == 1 and live["source"] == "apps.rc_base:pai"
