"""How Tether reaches its engine: the embedded dev server, or any Temporal cluster.

``Runtime.start()`` connects to the address in Temporal's standard environment
configuration (``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, TLS and API key settings,
or a ``temporal.toml`` profile) when one is set, and otherwise starts the embedded engine.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from tether.core import registry
from tether.core.contract import Adapter
from tether.core.converter import data_converter
from tether.core.devserver import EmbeddedEngine, port_open
from tether.core.run import AgentRun
from tether.core.steps import build_activity
from tether.core.store import BlobStore, default_home
from tether.errors import EngineUnavailableError

DEFAULT_TASK_QUEUE = "tether"
DEFAULT_EMBEDDED_PORT = 7233


@dataclass
class Runtime:
    """A connected client, its blob store, and (when embedded) the engine it owns."""

    client: Client
    store: BlobStore
    task_queue: str = DEFAULT_TASK_QUEUE
    engine: EmbeddedEngine | None = None
    _workers: list[asyncio.Task[None]] = field(default_factory=list)
    _local_worker: Worker | None = None

    @classmethod
    async def start(
        cls,
        *,
        address: str | None = None,
        namespace: str | None = None,
        embedded: bool | None = None,
        state_dir: Path | str | None = None,
        task_queue: str | None = None,
        store: BlobStore | None = None,
        profile: str | None = None,
    ) -> Runtime:
        """Connect (address or env config), or start the embedded engine when none is set."""
        home = Path(state_dir) if state_dir is not None else default_home()
        store = store or BlobStore(os.environ.get("TETHER_STORE") or home / "store")
        connect: dict[str, Any] = {}
        if embedded is not True:
            connect = dict(ClientConfig.load_client_connect_config(profile=profile))
            configured = connect.pop("target_host", None)
            address = address or configured
        engine: EmbeddedEngine | None = None
        if address is None:
            if port_open("127.0.0.1", DEFAULT_EMBEDDED_PORT):
                address = f"127.0.0.1:{DEFAULT_EMBEDDED_PORT}"  # `tether dev` is running
            else:
                engine = EmbeddedEngine(port=DEFAULT_EMBEDDED_PORT, state_dir=home)
                await engine.start()
                address = engine.address
        if namespace is not None:
            connect["namespace"] = namespace
        try:
            client = await Client.connect(address, data_converter=data_converter(store), **connect)
        except Exception as exc:
            if engine is not None:
                engine.stop()
            raise EngineUnavailableError(
                f"cannot connect to Temporal at {address}: {exc}. Fix: check the address "
                "(TEMPORAL_ADDRESS / --address), that the server is up, and its TLS/API key "
                "settings; or unset TEMPORAL_ADDRESS to use the embedded engine."
            ) from exc
        queue = task_queue or os.environ.get("TETHER_TASK_QUEUE") or DEFAULT_TASK_QUEUE
        return cls(client=client, store=store, task_queue=queue, engine=engine)

    @classmethod
    async def connect(cls, address: str | None = None, **kwargs: Any) -> Runtime:
        """Connect to a running Temporal server (never starts the embedded engine)."""
        if address is None:
            loaded = ClientConfig.load_client_connect_config(profile=kwargs.pop("profile", None))
            address = loaded.get("target_host") or "127.0.0.1:7233"
        return await cls.start(address=address, **kwargs)

    def worker(
        self,
        agents: Iterable[tuple[str, object, Adapter]] = (),
        *,
        task_queue: str | None = None,
        max_cached_runs: int = 1000,
        max_concurrent_steps: int = 100,
    ) -> Worker:
        """A worker hosting ``agents`` (and everything already registered in this process)."""
        for name, agent, adapter in agents:
            registry.register(name, agent, adapter)
        return Worker(
            self.client,
            task_queue=task_queue or self.task_queue,
            **worker_options(self.store),
            # The run hosts the framework's own loop, not user workflow code; the sandbox's
            # per-run module re-import costs memory and start time and breaks on framework
            # releases. Determinism is proven by replay tests instead (conformance suite).
            workflow_runner=UnsandboxedWorkflowRunner(),
            max_cached_workflows=max_cached_runs,
            max_concurrent_activities=max_concurrent_steps,
            sticky_queue_schedule_to_start_timeout=timedelta(seconds=3),
            graceful_shutdown_timeout=timedelta(seconds=2),
        )

    async def ensure_local_worker(self) -> None:
        """Run a worker in this process for the agents wrapped here (started once)."""
        if self._local_worker is not None:
            return
        worker = self.worker()
        self._local_worker = worker
        self._workers.append(asyncio.create_task(worker.run()))
        await asyncio.sleep(0)

    async def close(self) -> None:
        """Stop local workers and, when embedded, the engine."""
        if self._local_worker is not None:
            await self._local_worker.shutdown()
            self._local_worker = None
        for task in self._workers:
            task.cancel()
        self._workers.clear()
        if self.engine is not None:
            self.engine.stop()
            self.engine = None

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def worker_options(store: BlobStore) -> dict[str, Any]:
    """What a worker hosting Tether runs registers: ``workflows`` (the run workflow) and
    ``activities`` (every installed or registered adapter's steps, reading ``store``).

    Shared by :meth:`Runtime.worker` and ``tether.contrib.temporal.TetherPlugin``.
    """
    activities = [
        build_activity(step, store) for adapter in _adapters_in_use() for step in adapter.steps()
    ]
    return {"workflows": [AgentRun], "activities": activities}


def _adapters_in_use() -> Sequence[Adapter]:
    from tether.plugins import installed

    seen: dict[str, Adapter] = dict(installed().adapters)
    for entry in registry.registered().values():
        seen.setdefault(entry.adapter.name, entry.adapter)
    return list(seen.values())


_default: Runtime | None = None


async def default_runtime() -> Runtime:
    """The process-wide runtime used when none is given (created on first use)."""
    global _default
    if _default is None:
        _default = await Runtime.start()
    return _default


def set_default_runtime(runtime: Runtime | None) -> None:
    """Use ``runtime`` wherever none is given (None resets)."""
    global _default
    _default = runtime
