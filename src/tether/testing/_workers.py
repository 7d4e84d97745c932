"""`tether worker` subprocesses for crash tests: started with a log file, stopped by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path


def stop_process_group(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop the process group ``proc`` leads, by its id: SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


class WorkerProcess:
    """One ``tether worker SPEC...`` subprocess, in its own process group.

    :meth:`kill` is a SIGKILL (no cleanup, like a machine losing power); :meth:`stop` asks
    politely first. Either way the process is stopped by its own id, never by name.
    """

    def __init__(self, specs: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tether.cli", "worker", *specs],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 3000) -> str:
        """The end of the worker's log (for failure messages)."""
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        stop_process_group(self.proc)


@contextlib.contextmanager
def worker_processes() -> Iterator[list[WorkerProcess]]:
    """A list to append started workers to; every one is stopped on the way out."""
    started: list[WorkerProcess] = []
    try:
        yield started
    finally:
        for w in started:
            w.stop()
