"""A worker's start stays lean: it imports the framework of the agents it hosts, not every
installed one (the OpenAI Agents SDK alone costs seconds of start on a loaded machine), and
``import tether`` imports no framework at all. Checked structurally (which modules were
imported), never by wall-clock time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tether.core.devserver import EmbeddedEngine
from tether.core.runtime import Runtime, agent_queue
from tether.plugins import framework_loaded, installed, loaded
from workers import WorkerProcess, wait_until_polling, worker_processes

FRAMEWORKS = ("agents", "pydantic_ai", "mcp", "fastmcp")


def imported_modules(importtime_log: str) -> set[str]:
    """Module names a ``-X importtime`` (PYTHONPROFILEIMPORTTIME) log shows imported."""
    names = set()
    for line in importtime_log.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "package":  # the header line
                names.add(name)
    return names


def test_import_tether_loads_no_framework() -> None:
    code = f"import sys, tether; print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("spec", "agent", "framework", "not_imported"),
    [
        ("apps.lean_pai:agent", "lean-pai", "pydantic_ai", ("agents", "mcp", "fastmcp")),
        ("apps.lean_oa:agent", "lean-oa", "agents", ("pydantic_ai",)),
    ],
)
async def test_a_worker_imports_only_its_agents_framework(
    runtime: Runtime,
    worker_env: dict[str, str],
    tmp_path: Path,
    spec: str,
    agent: str,
    framework: str,
    not_imported: tuple[str, ...],
) -> None:
    env = dict(worker_env, PYTHONPROFILEIMPORTTIME="1")
    log = tmp_path / "worker.log"
    with worker_processes() as procs:
        procs.append(WorkerProcess([spec], env, log))
        # Polling means the worker is built: its steps registered, its adapters loaded.
        queue = agent_queue(env["TETHER_TASK_QUEUE"], agent)
        await wait_until_polling(runtime.client, queue, timeout=300)
    modules = imported_modules(log.read_text(errors="replace"))
    assert f"tether.adapters.{framework.replace('agents', 'openai_agents')}._adapter" in modules
    assert framework in modules
    assert sorted(m for m in not_imported if m in modules) == []


def test_workers_load_adapters_of_imported_frameworks_only() -> None:
    """In a process that imported only Pydantic AI, the worker's adapters are Pydantic AI's
    (run in a subprocess: this test process has imported both frameworks)."""
    code = (
        "import sys, pydantic_ai\n"
        "from tether.plugins import loaded, installed\n"
        "print(sorted(loaded().adapters), 'agents' in sys.modules)\n"
        "print(sorted(installed().adapters), 'agents' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DISABLE_PLUGINS"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    assert first == "['pydantic_ai'] False"
    # Listing (`tether plugins`) still asks every plugin, importing its framework.
    assert second == "['openai_agents', 'pydantic_ai'] True"


def test_a_plugin_naming_no_framework_is_always_loaded() -> None:
    class Plain:
        pass

    class Named:
        @staticmethod
        def tether_framework() -> str:
            return "a_module_nobody_imported"

    assert framework_loaded(Plain())
    assert not framework_loaded(Named())
    import agents  # noqa: F401
    import pydantic_ai  # noqa: F401

    # Once both frameworks are imported, both adapters are loaded.
    assert set(loaded().adapters) == set(installed().adapters) >= {"openai_agents", "pydantic_ai"}


_BUILD_ID = """
import sys
import temporalio.worker._worker as sdk_worker
from tether.core import runtime

def refused(*args, **kwargs):
    raise AssertionError("the SDK's default build id was computed")

sdk_worker.load_default_build_id = refused
sys.path.insert(0, sys.argv[1])
import user_tools  # the user's own module: its source is part of the build id

first = runtime.build_id()
runtime.build_id.cache_clear()
assert runtime.build_id() == first
open(user_tools.__file__, "a").write("\\nCHANGED = True\\n")
runtime.build_id.cache_clear()
assert runtime.build_id() != first, "a change to the user's code changes the build id"

import asyncio
from temporalio.worker import Worker

async def build() -> None:
    rt = await runtime.Runtime.start(address=sys.argv[2], store=sys.argv[3])
    worker = rt._temporal_worker("q", 10, 10)
    assert isinstance(worker, Worker)
    await rt.close()

asyncio.run(build())
print(first)
"""


def test_a_worker_takes_tethers_build_id_not_the_sdks_scan_of_every_module(
    engine: EmbeddedEngine, tmp_path: Path
) -> None:
    """Temporal's SDK derives a worker's default build id by reading the code of every loaded
    module (0.6 s of a `tether worker` start here). Tether's workers carry their own: the
    versions of the packages, and the source of the user's own modules."""
    (tmp_path / "user_tools").mkdir()
    (tmp_path / "user_tools" / "__init__.py").write_text("def lookup() -> str:\n    return 'x'\n")
    proc = subprocess.run(
        [sys.executable, "-c", _BUILD_ID, str(tmp_path), engine.address, str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("tether-")
