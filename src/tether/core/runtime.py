"""How Tether reaches its engine: the embedded dev server, or any Temporal cluster.

``Runtime.start()`` connects to the address in Temporal's standard environment
configuration (``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, TLS and API key settings,
or a ``temporal.toml`` profile) when one is set, and otherwise starts the embedded engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import hashlib
import importlib.metadata
import logging
import os
import sys
import sysconfig
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from tether.core import codec, converter, ledger, ops, registry, sealed, tracing
from tether.core.codec import Keyring
from tether.core.contract import Adapter, RunRequest, StepOutcome, StepRequest, WaitAnswer
from tether.core.converter import data_converter
from tether.core.devserver import EmbeddedEngine, local_engine, private_dir, running_engine
from tether.core.logs import RunLogInterceptor, use_temporal_runtime
from tether.core.run import AgentRun
from tether.core.steps import build_activity, build_transcript_activity
from tether.core.store import BlobStore, StoreDriver, default_home, open_store
from tether.errors import ConfigurationError, EngineUnavailableError

DEFAULT_TASK_QUEUE = "tether"
"""The default task-queue prefix: agent ``weather`` runs on the queue ``tether.weather``."""
DEFAULT_EMBEDDED_PORT = 7233
logger = logging.getLogger(__name__)
ACTIVATION_LIMIT = 10.0
"""Seconds one run activation may compute before the engine SDK takes it for a deadlock (its
own limit is 2 s). A run's loop is a framework's, and some of its activations are heavy: a
continued segment restoring a conversation of thousands of items, a replay on a loaded
machine. Past 2 s such an activation failed its task, the worker could not evict the run
(Pydantic AI's task groups outlive the eviction), and the run stalled on that worker. A task
must still finish within the run task timeout (10 s), so a real deadlock is still caught."""


def patient_deadlock_detection(worker: Worker) -> None:
    """Raise the SDK's deadlock limit to :data:`ACTIVATION_LIMIT`. The SDK has no setting
    for it (only ``debug_mode``, which turns detection off): this sets its workflow worker's
    attribute, and leaves the SDK's 2 s when that attribute is not there."""
    inner = getattr(worker, "_workflow_worker", None)
    if inner is not None and isinstance(
        getattr(inner, "_deadlock_timeout_seconds", None), int | float
    ):
        inner._deadlock_timeout_seconds = ACTIVATION_LIMIT


@functools.cache
def build_id() -> str:
    """The build id of this process's workers: what code they run, computed cheaply.

    Without one, Temporal's SDK derives it by reading the code of every loaded module (some
    two thousand with a framework and its provider client: 0.6 s of a worker's start on a
    2-core machine, more where bytecode is not cached). Here it is a hash of the installed
    versions of Tether, Temporal's SDK and the frameworks, and of the source of this
    process's own modules (those outside the interpreter's and the environment's library
    directories: the user's agents and tools). Only informational unless worker versioning
    is on, which Tether's workers do not use.
    """
    digest = hashlib.md5(usedforsecurity=False)
    for dist in ("tether", "temporalio", "openai-agents", "pydantic-ai-slim", "openai"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            digest.update(f"{dist}=={importlib.metadata.version(dist)};".encode())
    paths = sysconfig.get_paths()
    dirs = [paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths]
    dirs.append(os.path.dirname(os.path.dirname(__file__)))  # Tether itself (its version)
    skip = tuple({*dirs, *map(os.path.realpath, dirs)})
    for name, module in sorted(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if not path or not path.endswith(".py") or path.startswith(skip):
            continue
        if os.path.realpath(path).startswith(skip):
            continue
        with contextlib.suppress(OSError):
            digest.update(name.encode() + Path(path).read_bytes())
    return f"tether-{digest.hexdigest()[:16]}"


STICKY_TIMEOUT = timedelta(seconds=3)
"""How long a run's next task waits on the cache of the worker that ran its last one before
any worker may take it (the SDK's default is 10 s): the time a run loses when that worker
died between two tasks."""

HEARTBEAT_SEND_INTERVAL = timedelta(seconds=0.5)
"""Longest pause between two heartbeats a worker sends for one running step. Steps beat six
times per heartbeat timeout (core/steps.py); core sends a beat at most this often (and at most
every 0.8 x the timeout), so at the default 2 s timeout the engine sees four beats per timeout,
and a beat may be 1.5 s late (a slow RPC, a loaded machine) before the step is taken for lost."""


def agent_queue(prefix: str, agent: str) -> str:
    """The task queue of ``agent``'s runs and steps under ``prefix``.

    Every agent has a queue of its own, so a worker only ever receives runs of agents it
    hosts: workers of different agents and frameworks share a namespace without taking each
    other's runs.
    """
    return f"{prefix}.{agent}"


DEFAULT_MAX_CACHED_RUNS = 500
"""Runs a worker keeps in memory between their tasks (each about 150-200 KB while it waits;
an evicted run costs nothing and is rebuilt from its history when it next has work). Sized
so that 10,000 waiting runs fit a small worker (bench/waiting_runs_memory.py)."""

POLLERS_FRESH_FOR = 5.0
"""Seconds a positive "a worker polls this queue" check stays valid (Runtime.polled). The
engine itself lists a killed worker as polling for minutes, so a fresher check knows no more."""


@dataclass
class Runtime:
    """A connected client, its blob store, and (when embedded) the engine it owns.

    ``task_queue`` is a prefix: each agent's runs go to :func:`agent_queue` of it, unless the
    agent or the worker names an exact queue.
    """

    client: Client
    store: BlobStore
    task_queue: str = DEFAULT_TASK_QUEUE
    engine: EmbeddedEngine | None = None
    keyring: Keyring | None = None
    """The encryption keyring of history, store and secrets (None: encryption off)."""
    _local: dict[str, tuple[Worker, asyncio.Task[None]]] = field(default_factory=dict)
    _built: dict[str, list[Worker]] = field(default_factory=dict)
    """Workers :meth:`worker` built, by queue: a run started here needs no local worker."""
    _polled: dict[str, float] = field(default_factory=dict)
    """When (loop time) each queue was last seen polled: many answers ask once."""

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
        encryption: Keyring | None = None,
    ) -> Runtime:
        """Connect (address or env config), or start the embedded engine when none is set.

        ``encryption`` encrypts the history, the store and secrets (default: the keyring
        ``TETHER_ENCRYPTION_KEY`` or ``TETHER_ENCRYPTION_KEY_FILE`` names, else off).
        """
        home = Path(state_dir) if state_dir is not None else default_home()
        keyring = encryption if encryption is not None else Keyring.from_env()
        codec.configure(keyring)
        sealed.use_home(home)
        if store is None and not os.environ.get("TETHER_STORE"):
            private_dir(home)  # the default store lives there: this user only (0700)
        store = await open_store(store, default=home / "store")
        if keyring is not None:
            store.encrypt_with(keyring)
        connect: dict[str, Any] = {}
        if embedded is not True:
            connect = dict(ClientConfig.load_client_connect_config(profile=profile))
            configured = connect.pop("target_host", None)
            address = address or configured
        engine: EmbeddedEngine | None = None
        if address is None:  # the state dir's engine (`tether dev`...), else one of our own
            address, engine = await local_engine(home)
        if namespace is not None:
            connect["namespace"] = namespace
        try:
            client = await Client.connect(
                address,
                data_converter=data_converter(store, keyring),
                runtime=use_temporal_runtime(),  # core's log lines through `logging`
                interceptors=tracing.client_interceptors(),
                **connect,
            )
        except Exception as exc:
            if engine is not None:
                engine.stop()
            raise EngineUnavailableError(
                f"cannot connect to Temporal at {address}: {exc}. Fix: check the address "
                "(TEMPORAL_ADDRESS / --address), that the server is up, and its TLS/API key "
                "settings; or unset TEMPORAL_ADDRESS to use the embedded engine."
            ) from exc
        storage = client.data_converter.external_storage
        for driver in storage.drivers if storage is not None else ():
            if isinstance(driver, StoreDriver):
                driver.attach_client(client)  # it ends runs whose replay needs a lost blob
        queue = task_queue or os.environ.get("TETHER_TASK_QUEUE") or DEFAULT_TASK_QUEUE
        return cls(client=client, store=store, task_queue=queue, engine=engine, keyring=keyring)

    @classmethod
    async def connect(cls, address: str | None = None, **kwargs: Any) -> Runtime:
        """Connect to a running Temporal server (never starts the embedded engine)."""
        if address is None:
            loaded = ClientConfig.load_client_connect_config(profile=kwargs.get("profile"))
            record = running_engine(kwargs.get("state_dir"))
            address = (
                loaded.get("target_host")
                or (record.address if record is not None else None)
                or f"127.0.0.1:{DEFAULT_EMBEDDED_PORT}"
            )
        return await cls.start(address=address, **kwargs)

    def queue_for(self, agent: str) -> str:
        """The task queue ``agent``'s runs go to under this runtime's prefix."""
        return agent_queue(self.task_queue, agent)

    def worker(
        self,
        agents: Iterable[tuple[str, object, Adapter]] = (),
        *,
        task_queue: str | None = None,
        max_cached_runs: int = DEFAULT_MAX_CACHED_RUNS,
        max_concurrent_steps: int = 100,
    ) -> AgentWorker:
        """A worker hosting ``agents`` and every agent already registered in this process.

        Each agent is polled on its own queue (:meth:`queue_for`); ``task_queue`` puts them
        all on that one exact queue instead.
        """
        for name, agent, adapter in agents:
            registry.register(name, agent, adapter)
        if task_queue is not None:
            queues = [task_queue]
        else:
            queues = sorted({self.queue_for(name) for name in registry.registered()})
            if not queues:
                raise ConfigurationError(
                    "a worker needs at least one agent to host. Fix: wrap it first "
                    "(tether.durable(agent)) or pass agents=[...]"
                )
        taken = sorted(q for q in queues if q in self._local)
        if taken:
            raise ConfigurationError(
                f"this process already polls {', '.join(map(repr, taken))}: a run started "
                "here before any worker existed started one (tether.durable's local "
                "worker). Fix: build the worker before the first run, or pass "
                "local_worker=False to tether.durable()"
            )
        workers = [self._temporal_worker(q, max_cached_runs, max_concurrent_steps) for q in queues]
        for queue, built in zip(queues, workers, strict=True):
            self._built.setdefault(queue, []).append(built)
        return AgentWorker(workers)

    def _temporal_worker(self, queue: str, max_cached_runs: int, max_steps: int) -> Worker:
        options = worker_options(self.store)
        # The run log lines, then the spans when tracing is on (docs/tracing.md).
        interceptors = [
            *options.pop("interceptors"),
            *tracing.worker_interceptors(self.client, step_kinds()),
        ]
        worker = Worker(
            self.client,
            task_queue=queue,
            **options,
            interceptors=interceptors,
            # The run hosts the framework's own loop, not user workflow code; the sandbox's
            # per-run module re-import costs memory and start time and breaks on framework
            # releases. Determinism is proven by replay tests instead (conformance suite).
            workflow_runner=UnsandboxedWorkflowRunner(),
            max_cached_workflows=max_cached_runs,
            max_concurrent_activities=max_steps,
            build_id=build_id(),
            sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
            graceful_shutdown_timeout=timedelta(seconds=2),
            # Steps beat from a thread (core/steps.py); core sends a beat at most this often.
            max_heartbeat_throttle_interval=HEARTBEAT_SEND_INTERVAL,
        )
        patient_deadlock_detection(worker)
        return worker

    async def pollers(self, queue: str) -> int:
        """How many workers the engine lists as polling ``queue`` for run tasks (a killed
        worker stays listed for minutes: see ``RunHandle.unserved_work`` for liveness)."""
        return await ops.pollers(self.client, queue)

    async def polled(self, queue: str, fresh_for: float = POLLERS_FRESH_FOR) -> bool:
        """Whether a worker polls ``queue``, answered from a check made in the last
        ``fresh_for`` seconds when there is one (a burst of answers asks the engine once)."""
        now = asyncio.get_running_loop().time()
        if now - self._polled.get(queue, -fresh_for - 1.0) <= fresh_for:
            return True
        if await self.pollers(queue):
            self._polled[queue] = now
            return True
        self._polled.pop(queue, None)
        return False

    async def ensure_local_worker(self, queue: str) -> bool:
        """Poll ``queue`` from this process for the agents wrapped here (once per queue).

        Returns whether this call started the worker.
        """
        if queue in self._local:
            return False
        built = self._built.get(queue, [])
        built[:] = [w for w in built if not w.is_shutdown]
        if built:
            return False  # a worker this process built polls it (or will, once it runs)
        worker = self._temporal_worker(queue, DEFAULT_MAX_CACHED_RUNS, 100)
        self._local[queue] = (worker, asyncio.create_task(worker.run()))
        await asyncio.sleep(0)
        return True

    def hosts(self, queue: str) -> bool:
        """Whether this process polls ``queue`` (:meth:`ensure_local_worker`)."""
        return queue in self._local

    async def close(self) -> None:
        """Stop local workers and, when embedded, the engine."""
        local, self._local = self._local, {}
        for worker, task in local.values():
            with contextlib.suppress(Exception):
                await worker.shutdown()
            task.cancel()
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


class AgentWorker:
    """The Temporal workers that host this process's agents: one per task queue.

    Use it like a temporalio ``Worker``: ``await w.run()``, ``await w.shutdown()``, or
    ``async with w:``.
    """

    def __init__(self, workers: Sequence[Worker]) -> None:
        self.workers = list(workers)

    @property
    def task_queues(self) -> list[str]:
        return [w.task_queue for w in self.workers]

    async def run(self) -> None:
        """Poll every queue until :meth:`shutdown` (or until one worker fails)."""
        await asyncio.gather(*(w.run() for w in self.workers))

    async def shutdown(self) -> None:
        await asyncio.gather(*(w.shutdown() for w in self.workers if w.is_running))

    async def __aenter__(self) -> AgentWorker:
        for w in self.workers:
            await w.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for w in reversed(self.workers):
            await w.__aexit__(exc_type, exc, tb)


def worker_options(store: BlobStore) -> dict[str, Any]:
    """What a worker hosting Tether runs registers: ``workflows`` (the run workflow),
    ``activities`` (the steps of the registered agents' adapters and of every adapter whose
    framework is imported, reading ``store``) and ``interceptors`` (the run log lines,
    :mod:`tether.core.logs`).

    Shared by :meth:`Runtime.worker` and ``tether.contrib.temporal.TetherPlugin``. Also starts
    (once per process, in a thread) the imports a run task would otherwise make lazily.
    """
    _warm_up(_adapters_in_use())
    activities: list[Callable[..., Any]] = [
        build_activity(step, store) for adapter in _adapters_in_use() for step in adapter.steps()
    ]
    activities.append(build_transcript_activity(store))
    return {
        "workflows": [AgentRun],
        "activities": activities,
        "interceptors": [RunLogInterceptor()],
    }


_warmed: set[str] = set()
_warming = threading.Lock()


def _warm_up(adapters: Sequence[Adapter]) -> None:
    """Load now, in a background thread, what a worker's first tasks would otherwise load
    lazily, each part once per process: the price table (its own thread), the validators of
    Tether's run and step types, each adapter's ``warm_up()``; then settle the heap
    (:func:`_settle_heap`). A new worker's first tasks are the ones a run resumed after a
    crash waits for."""
    parts: list[tuple[str, Callable[[], None]]] = []
    with _warming:
        if "tether" not in _warmed:
            _warmed.add("tether")
            parts.append(("tether", _warm_core))
        for adapter in adapters:
            if adapter.name not in _warmed:
                _warmed.add(adapter.name)
                parts.append((f"adapter {adapter.name}", adapter.warm_up))
    if not parts:
        return
    pricing = ledger.warm_up()

    def warm() -> None:
        for name, load in parts:
            try:
                load()
            except Exception:
                logger.warning("%s: warm-up failed", name, exc_info=True)
        pricing.join()
        _settle_heap()

    threading.Thread(target=warm, name="tether-warm-up", daemon=True).start()


def _warm_core() -> None:
    converter.warm_up(RunRequest, StepRequest, StepOutcome, WaitAnswer)


def _settle_heap() -> None:
    """Tune Python's cyclic garbage collector for a worker, once its warm-up is done.

    - Freeze what the process holds now (``gc.freeze``): the modules, classes and schemas
      of every framework loaded. Each full pass walked them all: 200 ms every few dozen
      model calls on this project's 2-core machine, stalling whichever step or run task
      was running. Objects made later are collected as usual.
    - Collect the youngest generation every 10,000 net allocations, not 700: a step's
      temporaries are freed by reference counting long before, and a 40-call run made
      one young collection instead of about fifty (GC time in the run 29 ms -> 8 ms).

    ``TETHER_GC=0`` leaves the collector alone."""
    if os.environ.get("TETHER_GC", "1") == "0":
        return
    gc.freeze()
    young, *older = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_GC_THRESHOLD), *older)


YOUNG_GC_THRESHOLD = 10_000


def step_kinds() -> dict[str, str]:
    """The kind (model, tool, mcp, other) of every step a worker hosts, by step name."""
    return {step.name: step.kind for adapter in _adapters_in_use() for step in adapter.steps()}


def _adapters_in_use() -> Sequence[Adapter]:
    """The registered agents' adapters, and those of every framework this process imported
    (never importing another: a worker of Pydantic AI agents does not load the OpenAI
    Agents SDK, which would add seconds to its start)."""
    from tether.plugins import loaded

    seen: dict[str, Adapter] = dict(loaded().adapters)
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
