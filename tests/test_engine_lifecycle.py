"""The embedded engine's lifecycle, with real processes: `tether dev`, workers, crashes.

Every test has a TETHER_HOME (and HOME) of its own under tmp_path and free ports; every
process is stopped by its pid. Waits poll against generous deadlines, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tether.core.devserver import (
    LOCK_NAME,
    RECORD_NAME,
    EmbeddedEngine,
    EngineRecord,
    _cmdline,
    free_port,
    is_engine_process,
    local_engine,
    read_engine_record,
    running_engine,
)

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="reads /proc and relies on the Linux parent-death signal"
)

HERE = Path(__file__).parent
DEADLINE = 90.0  # seconds; generous for a loaded 2-core machine


def wait_for(check: Callable[[], object], what: str, timeout: float = DEADLINE) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def engines_on(db: Path) -> list[int]:
    """Pids of the live `temporal` processes whose command line names ``db``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        argv = _cmdline(int(entry.name))
        if argv and Path(argv[0]).name == "temporal" and str(db) in argv:
            pids.append(int(entry.name))
    return pids


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


class Tether:
    """`tether ...` subprocesses with an environment that names only TETHER_HOME."""

    def __init__(self, tmp_path: Path) -> None:
        self.home = tmp_path / "tether-home"
        self.tmp = tmp_path
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TEMPORAL_", "TETHER_")) and k != "PYTHONPATH"
        }
        # HOME too: no temporal.toml profile of the user's can name an address.
        env.update(TETHER_HOME=str(self.home), HOME=str(tmp_path / "user-home"))
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def db(self) -> Path:
        return self.home / "engine.db"

    def spawn(self, *args: str, log: str, **env: str) -> subprocess.Popen[bytes]:
        with (self.tmp / log).open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tether.cli", *args],
                env={**self.env, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        path = self.tmp / name
        return path.read_text(errors="replace") if path.exists() else ""

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tether.cli", *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=180,
            stdin=subprocess.DEVNULL,
        )

    def ready_record(self, proc: subprocess.Popen[bytes], log: str) -> EngineRecord:
        """Wait until ``proc``'s engine is up and described in engine.json."""

        def check() -> EngineRecord | None:
            if proc.poll() is not None:
                raise AssertionError(f"exited with {proc.returncode}:\n{self.log(log)}")
            record = read_engine_record(self.home)
            if record is None or record.owner_pid != proc.pid:
                return None
            return record if record.answering() else None

        record = wait_for(check, f"the engine of pid {proc.pid}")
        assert isinstance(record, EngineRecord)
        return record

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(30)
        for pid in engines_on(self.db):  # only if a test failed before its engine stopped
            if is_engine_process(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def tether(tmp_path: Path) -> Iterator[Tether]:
    t = Tether(tmp_path)
    try:
        yield t
    finally:
        t.cleanup()


def gone(pid: int) -> bool:
    return not is_engine_process(pid)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP], ids=["kill-9", "hup"])
def test_kill_9_of_tether_dev_leaves_no_engine_behind(tether: Tether, sig: signal.Signals) -> None:
    port, ui_port = free_port(), free_port()
    dev = tether.spawn("dev", "--port", str(port), "--ui-port", str(ui_port), log="dev.log")
    record = tether.ready_record(dev, "dev.log")
    assert record.address == f"127.0.0.1:{port}"
    assert record.ui_url == f"http://127.0.0.1:{ui_port}"
    assert is_engine_process(record.pid, port)
    out = tether.log("dev.log")
    assert f"127.0.0.1:{port}" in out and f"http://127.0.0.1:{ui_port}" in out
    assert str(tether.home / RECORD_NAME) in out

    os.kill(dev.pid, sig)  # SIGHUP: its terminal closed
    dev.wait(30)
    wait_for(lambda: gone(record.pid), f"engine pid {record.pid} to exit after {sig.name}")
    assert engines_on(tether.db) == []


def test_tether_dev_on_another_port_is_found_by_later_commands(tether: Tether) -> None:
    port = free_port()
    dev = tether.spawn("dev", "--port", str(port), "--ui-port", str(free_port()), log="dev.log")
    record = tether.ready_record(dev, "dev.log")

    listed = tether.run("runs", "list")
    assert listed.returncode == 0, listed.stderr
    assert "no runs" in listed.stdout
    assert "started one" not in listed.stderr  # it used the running engine

    after = read_engine_record(tether.home)
    assert after is not None and after.pid == record.pid and after.owner_pid == dev.pid
    assert engines_on(tether.db) == [record.pid]
    assert dev.poll() is None


def test_a_second_tether_dev_on_the_same_state_dir_fails_in_one_line(tether: Tether) -> None:
    port = free_port()
    dev = tether.spawn("dev", "--port", str(port), "--ui-port", str(free_port()), log="dev.log")
    record = tether.ready_record(dev, "dev.log")

    second = tether.run("dev", "--port", str(free_port()), "--ui-port", str(free_port()))
    assert second.returncode != 0
    assert "Traceback" not in second.stdout + second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert f"already runs for {tether.home} at 127.0.0.1:{port}" in lines[0]
    assert f"pid {record.pid}" in lines[0]
    assert engines_on(tether.db) == [record.pid]
    assert read_engine_record(tether.home) == record


def test_a_stale_lock_does_not_block_a_new_engine(tether: Tether) -> None:
    tether.home.mkdir(parents=True)
    (tether.home / LOCK_NAME).touch()
    stale = {
        "pid": dead_pid(),
        "owner_pid": dead_pid(),
        "address": "127.0.0.1:1",
        "port": 1,
        "ui_url": None,
        "db_path": str(tether.db),
        "state_dir": str(tether.home),
        "namespace": "default",
        "started": "2020-01-01T00:00:00+00:00",
        "log": str(tether.home / "engine-1.log"),
        "ready": True,
    }
    (tether.home / RECORD_NAME).write_text(json.dumps(stale))

    port = free_port()
    dev = tether.spawn("dev", "--port", str(port), "--ui-port", str(free_port()), log="dev.log")
    record = tether.ready_record(dev, "dev.log")
    assert record.address == f"127.0.0.1:{port}"

    # Ctrl-C (SIGINT) stops it cleanly: the engine stops and the record goes.
    os.kill(dev.pid, signal.SIGINT)
    assert dev.wait(60) == 0
    assert gone(record.pid)
    assert not (tether.home / RECORD_NAME).exists()


def test_an_orphaned_engine_from_a_crash_is_stopped_by_its_pid(tether: Tether) -> None:
    port = free_port()
    tether.home.mkdir(parents=True)
    # An engine whose owner died without a parent-death signal (another OS, or an old
    # version): started here directly, so nothing ties it to a parent.
    orphan_engine = EmbeddedEngine(port=port, state_dir=tether.home, ui=False)
    with (tether.tmp / "orphan.log").open("ab") as out:
        orphan = subprocess.Popen(
            orphan_engine.command(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    tether.procs.append(orphan)
    wait_for(lambda: is_engine_process(orphan.pid, port), "the orphan engine")
    record = EngineRecord(
        pid=orphan.pid,
        owner_pid=dead_pid(),
        address=f"127.0.0.1:{port}",
        port=port,
        ui_url=None,
        db_path=str(tether.db),
        state_dir=str(tether.home),
        namespace="default",
        started="2020-01-01T00:00:00+00:00",
        log=str(tether.tmp / "orphan.log"),
        ready=True,
    )
    (tether.home / RECORD_NAME).write_text(json.dumps(record.__dict__))

    listed = tether.run(
        "runs", "list", TETHER_ENGINE_PORT=str(free_port()), TETHER_ENGINE_UI_PORT=str(free_port())
    )
    assert listed.returncode == 0, listed.stderr
    assert "no runs" in listed.stdout
    assert orphan.wait(DEADLINE) is not None  # stopped by the new owner
    assert "started one" in listed.stderr  # and replaced by an engine of its own...
    assert engines_on(tether.db) == []  # ...which it stopped when it exited


def test_a_worker_without_an_engine_starts_one_and_takes_it_down_when_killed(
    tether: Tether,
) -> None:
    port, ui_port = free_port(), free_port()
    worker = tether.spawn(
        "worker",
        "apps.openai_apps:weather",
        log="worker.log",
        PYTHONPATH=str(HERE),
        TETHER_ENGINE_PORT=str(port),
        TETHER_ENGINE_UI_PORT=str(ui_port),
    )
    record = tether.ready_record(worker, "worker.log")
    wait_for(lambda: "worker on" in tether.log("worker.log"), "the worker's first line")
    out = tether.log("worker.log")
    assert f"127.0.0.1:{port} (pid {record.pid})" in out
    assert f"http://127.0.0.1:{ui_port}" in out
    assert str(tether.home / RECORD_NAME) in out
    assert "Traceback" not in out

    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(30)
    wait_for(lambda: gone(record.pid), f"engine pid {record.pid} to exit with its worker")
    assert engines_on(tether.db) == []


async def test_local_engine_is_shared_in_process_and_survives_its_starting_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TETHER_ENGINE_PORT", str(free_port()))
    monkeypatch.setenv("TETHER_ENGINE_UI_PORT", str(free_port()))
    home = tmp_path / "home"
    # Started from a thread that then ends: the engine must outlive that thread.
    address, engine = await asyncio.to_thread(asyncio.run, local_engine(home))
    assert engine is not None and engine.pid is not None
    try:
        again, none = await local_engine(home)
        assert (again, none) == (address, None)
        found = running_engine(home)
        assert found is not None and found.pid == engine.pid
        await asyncio.sleep(5)  # time for a wrongly delivered parent-death signal to act
        assert is_engine_process(engine.pid, engine.port)
    finally:
        engine.stop()
    assert not is_engine_process(engine.pid)
    assert read_engine_record(home) is None
    assert running_engine(home) is None


WATCHDOG_OWNER = """
import asyncio, sys, time
from tether.core import devserver
devserver.GUARD = "watchdog"  # the fallback of platforms without a parent-death signal
engine = devserver.EmbeddedEngine(port=int(sys.argv[1]), ui=False)
asyncio.run(engine.start())
print(engine.pid, engine._watchdog.pid, flush=True)
time.sleep(3600)
"""


def test_the_watchdog_fallback_stops_the_engine_when_its_owner_is_killed(
    tether: Tether,
) -> None:
    port = free_port()
    with (tether.tmp / "owner.log").open("ab") as out:
        owner = subprocess.Popen(
            [sys.executable, "-c", WATCHDOG_OWNER, str(port)],
            env=tether.env,
            stdout=subprocess.PIPE,
            stderr=out,
            start_new_session=True,
        )
    tether.procs.append(owner)
    assert owner.stdout is not None
    line = owner.stdout.readline().decode()
    assert line, tether.log("owner.log")
    engine_pid, watchdog_pid = (int(part) for part in line.split())
    assert is_engine_process(engine_pid, port)
    assert read_engine_record(tether.home) is not None

    os.kill(owner.pid, signal.SIGKILL)
    owner.wait(30)
    wait_for(lambda: gone(engine_pid), f"engine pid {engine_pid} to exit after its owner")
    wait_for(lambda: not _cmdline(watchdog_pid), f"watchdog pid {watchdog_pid} to exit")
    assert engines_on(tether.db) == []
