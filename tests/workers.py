"""Worker subprocesses for crash tests: started by `tether worker`, killed by pid."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from temporalio.client import Client

from tether.testing._history import StepRecord, history_stats


class WorkerProcess:
    """One `tether worker` subprocess of a test; always stopped by its process id."""

    def __init__(self, specs: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tether.cli", "worker", *specs],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, like a machine that lost power."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.proc.poll() is None


@contextmanager
def worker_processes() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    try:
        yield started
    finally:
        for w in started:
            w.stop()


async def wait_for_completed_steps(
    client: Client, run_id: str, n: int, worker: WorkerProcess, timeout: float = 60
) -> list[StepRecord]:
    """Poll the run's history until ``n`` steps completed (the worker must stay alive)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        stats = await history_stats(client, run_id)
        done = stats.completed()
        if len(done) >= n:
            return done
        if not worker.alive():
            raise AssertionError(f"worker died early; log:\n{worker.log.read_text()[-3000:]}")
        if loop.time() > deadline:
            raise AssertionError(f"only {len(done)} of {n} steps completed in {timeout}s")
        await asyncio.sleep(0.02)


async def wait_until_polling(client: Client, task_queue: str, timeout: float = 30) -> None:
    """Wait until some worker polls ``task_queue`` (a started worker takes a moment)."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        resp = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
        if resp.pollers:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no worker polled {task_queue!r} within {timeout}s")
