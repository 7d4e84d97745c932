"""Tether's exception types. Every message names the cause and the fix."""

from __future__ import annotations

from collections.abc import Sequence

from temporalio.exceptions import ApplicationError


class TetherError(Exception):
    """Base class of every error Tether raises on purpose."""


class ConfigurationError(TetherError):
    """Tether was set up in a way that cannot work (bad option, missing piece)."""


class NoAdapterError(TetherError):
    """No installed adapter claims the object given to :func:`tether.durable`."""

    def __init__(self, obj: object, installed: Sequence[str], unavailable: Sequence[str]) -> None:
        kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
        have = ", ".join(installed) or "none"
        msg = (
            f"no installed Tether adapter claims an object of type {kind}. "
            f"Installed adapters: {have}."
        )
        if unavailable:
            msg += f" Unavailable (framework not installed): {', '.join(unavailable)}."
        msg += (
            " Fix: pass an agent of a supported framework, or install its adapter (e.g. "
            "`pip install 'tether[openai-agents]'`); `tether plugins` lists what is installed."
        )
        super().__init__(msg)
        self.installed = list(installed)


class AgentNotRegisteredError(TetherError):
    """A run names an agent that this worker does not host."""

    def __init__(self, name: str, hosted: Sequence[str], source: str | None = None) -> None:
        have = ", ".join(sorted(hosted)) or "none"
        spec = source or "MODULE:OBJECT"
        super().__init__(
            f"agent {name!r} is not registered on this worker (it hosts: {have}). "
            f"Fix: start a worker that hosts it: `tether worker {spec}`"
            + ("" if source else " (the module and name that define the agent)")
        )
        self.name = name
        self.source = source


class DuplicateAgentError(TetherError):
    """Two different agents were registered under one name."""


class EngineUnavailableError(TetherError):
    """The Temporal engine could not be reached or started."""


class EngineAlreadyRunningError(EngineUnavailableError):
    """An embedded engine already runs on this state directory (one engine per database)."""

    def __init__(self, state_dir: str, address: str, pid: int, owner_pid: int) -> None:
        self.state_dir = state_dir
        self.address = address
        self.pid = pid
        self.owner_pid = owner_pid
        super().__init__(
            f"an engine already runs for {state_dir} at {address} (pid {pid}, started by "
            f"pid {owner_pid}). Use it: tether commands with TETHER_HOME={state_dir} find it "
            f"on their own (other tools: TEMPORAL_ADDRESS={address}). Or stop it: Ctrl-C in "
            f"its terminal, or `kill {owner_pid}`."
        )


class StepInputError(TetherError):
    """A value crossing a step boundary cannot be serialized."""


class RunFailedError(TetherError):
    """A durable run ended in failure; ``cause`` carries the run's own error text."""

    def __init__(self, run_id: str, message: str, *, error_type: str | None = None) -> None:
        self.run_id = run_id
        self.error_type = error_type
        self.reason = message
        kind = f" ({error_type})" if error_type else ""
        super().__init__(f"run {run_id!r} failed{kind}: {message}")


class BlobMissingError(TetherError):
    """A referenced blob is not in this worker's store (workers do not share one)."""

    def __init__(self, ref: str, store: str) -> None:
        self.ref = ref
        self.store = store
        super().__init__(
            f"blob {ref} is not in the store {store}. Workers of one namespace must share "
            "TETHER_STORE (e.g. s3://bucket/tether, or one shared directory); Tether re-sends "
            "a conversation inline meanwhile. See docs/storage.md."
        )


class StoreConfigurationError(ConfigurationError):
    """The blob store named by ``TETHER_STORE`` cannot be used (bad URL, bucket, credentials)."""

    def __init__(self, store: str, cause: str, fix: str) -> None:
        self.store = store
        self.cause = cause
        super().__init__(
            f"the blob store {store!r} (TETHER_STORE) cannot be used: {cause}. Fix: {fix}."
        )


class StoreUnavailableError(TetherError):
    """A read or write to the blob store failed after its retries (network, service)."""

    def __init__(self, store: str, operation: str, ref: str, detail: str) -> None:
        self.store = store
        self.ref = ref
        super().__init__(
            f"cannot {operation} blob {ref} in the store {store}: {detail}. Fix: check that "
            "the store's service is reachable from this worker; the step is retried."
        )


class DecryptionError(TetherError):
    """An encrypted payload, blob or secret cannot be decrypted with the keys this process
    holds (a key missing from ``TETHER_ENCRYPTION_KEY``, or data changed at rest)."""


class AdapterUnavailable(TetherError):
    """An adapter's framework is not installed; the message names the install command."""


class RetryableError(TetherError):
    """Raise in a step (or a tool) to ask for another attempt, optionally after a delay."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, error_type: str | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.error_type = error_type or type(self).__name__


class NonRetryableError(TetherError):
    """Raise in a step (or a tool) when another attempt cannot succeed."""

    def __init__(self, message: str, *, error_type: str | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type or type(self).__name__


class WaitRequestError(TetherError):
    """An answer to a run's wait was refused (base of the specific cases below)."""

    def __init__(self, run_id: str, request_id: str, message: str) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.request_id = request_id


class UnknownWaitRequestError(WaitRequestError):
    """The run is not waiting for a request with this id (wrong id, or not asked yet)."""


class AlreadyAnsweredError(WaitRequestError):
    """The request was already approved, denied or answered; answers cannot change."""


class WrongAnswerKindError(WaitRequestError):
    """An approval was answered with a value, or a question approved/denied."""


class RunNotWaitingError(WaitRequestError):
    """The run has ended (or does not exist), so it waits for nothing."""


class NoWorkerError(RunNotWaitingError):
    """No live worker hosts the run's agent, so it cannot answer a query or take an answer
    now; nothing was recorded (start a worker and try again)."""


class BudgetExceededError(RunFailedError):
    """The run stopped because its budget (tokens, requests or cost) was exceeded."""


class WaitTimedOutError(RunFailedError):
    """The run failed because a wait with the ``fail`` timeout policy got no answer in time."""


class AgentRunFailedError(ApplicationError, TetherError):
    """An agent run started from a workflow (``tether.contrib.temporal``) failed.

    Raised in the calling workflow; it is a Temporal ``ApplicationError`` (type: the run's
    own error type, e.g. ``MaxTurnsExceeded``), so left uncaught it fails that workflow with
    the run's cause instead of retrying its task. ``__cause__`` is the child workflow error.
    """

    def __init__(
        self, run_id: str, agent: str, message: str, *, error_type: str | None = None
    ) -> None:
        # Temporal puts the type in front of the text: "MaxTurnsExceeded: agent 'x' failed ..."
        super().__init__(
            f"agent {agent!r} failed in run {run_id!r}: {message}",
            type=error_type or "AgentRunFailed",
            non_retryable=True,
        )
        self.run_id = run_id
        self.agent = agent
        self.error_type = error_type
        self.reason = message


class RunNotFoundError(TetherError):
    """No run with this id exists in the namespace."""

    def __init__(self, run_id: str, namespace: str) -> None:
        self.run_id = run_id
        self.namespace = namespace
        super().__init__(
            f"no run {run_id!r} in namespace {namespace!r}. Fix: check the id with "
            "`tether runs list` (or the namespace: --namespace / TEMPORAL_NAMESPACE)"
        )


class RunStateError(TetherError):
    """The run is in a state where the operation does not apply (e.g. retrying a running
    run, cancelling a completed one); the message says the state and what to do instead."""

    def __init__(self, run_id: str, status: str, message: str) -> None:
        self.run_id = run_id
        self.status = status
        super().__init__(message)


class RunIdConflictError(RunStateError):
    """A run with this id exists and was started with a different input (or the caller
    asked for a new id); the message says the run's state and what to do instead."""


class RetryUnsafeError(RunStateError):
    """Retrying from the last completed step would make a completed step run again; the
    message names the step and the alternative (``--from-start``)."""
