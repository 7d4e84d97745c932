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
from tether.testing import ScriptedModelServer, ToolCall, Turn

HERE = Path(__file__).parent
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


async def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tether.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,  # a Python process starting on a loaded 2-core machine can take minutes
        cwd=HERE,
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
