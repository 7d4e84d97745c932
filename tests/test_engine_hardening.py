"""The embedded engine is private to its user: it listens on loopback only, its state
directory is 0700 and its files (database, journal, log, record, lock) 0600, also when an
older release left them world-readable."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tether.core.devserver import EmbeddedEngine
from tether.core.runtime import Runtime

pytestmark = pytest.mark.skipif(
    not Path("/proc/net/tcp").exists(), reason="reads listening sockets from /proc (Linux)"
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def listening_addresses(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket process ``pid`` listens on (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:[") : -1])
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            address, port = fields[1].split(":")
            found.append((address, int(port, 16)))
    return found


LOOPBACK = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1


@pytest.fixture
async def hardened(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedEngine, Path]]:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    old_log = state / "engine-1.log"  # what an older release left behind
    old_log.write_text("old log\n")
    old_log.chmod(0o644)
    engine = EmbeddedEngine(state_dir=state, persist=True, ui=True, register=True)
    await engine.start()
    try:
        yield engine, state
    finally:
        engine.stop()


async def test_engine_listens_on_loopback_only(hardened: tuple[EmbeddedEngine, Path]) -> None:
    engine, _ = hardened
    assert engine.pid is not None
    sockets = listening_addresses(engine.pid)
    ports = {port for _, port in sockets}
    assert engine.port in ports and engine.ui_port in ports, sockets
    exposed = [(a, p) for a, p in sockets if a not in LOOPBACK]
    assert not exposed, f"listening beyond loopback: {exposed}"


async def test_state_dir_and_files_are_private(hardened: tuple[EmbeddedEngine, Path]) -> None:
    engine, state = hardened
    assert mode(state) == 0o700
    assert engine.db_path is not None and engine.db_path.exists()
    expected = {engine.db_path, engine.log_path, engine.record_path, state / "engine.lock"}
    files = {p for p in state.iterdir() if p.is_file()}
    assert expected <= files
    loose = {p.name: oct(mode(p)) for p in files if mode(p) & 0o077}
    assert not loose, f"readable by other users: {loose}"


async def test_runtime_keeps_its_default_home_private(
    engine: EmbeddedEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TETHER_STORE", raising=False)
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    rt = await Runtime.start(address=engine.address, state_dir=home)
    try:
        assert mode(home) == 0o700
        assert rt.store.is_local and rt.store.root.is_relative_to(home)
    finally:
        await rt.close()


async def test_a_private_in_memory_engine_leaves_no_log_behind(tmp_path: Path) -> None:
    """A bench's or a test's in-memory engine writes its log beside the others in the state
    directory while it runs; stopped after serving, it removes it (a hundred benches left a
    hundred logs in ~/.tether before)."""
    engine = EmbeddedEngine(state_dir=tmp_path, persist=False, ui=False)
    await engine.start()
    try:
        assert engine.log_path.exists()
    finally:
        engine.stop()
    assert not engine.log_path.exists()
