"""Tether: durable execution for AI agents, whatever framework they are written in.

import tether
durable = tether.durable(agent)      # any installed adapter's agent
result = await durable.run("...")   # a durable run on Temporal
"""

from tether.core.codec import Keyring
from tether.core.contract import (
    Adapter,
    Budget,
    Capability,
    ContinueAsNew,
    StepPolicy,
    WaitAnswer,
    WaitPolicy,
    WaitRequest,
)
from tether.core.devserver import EmbeddedEngine
from tether.core.events import RunEvent, StreamRetracted
from tether.core.handle import (
    DurableAgent,
    PendingRequest,
    RunDescription,
    RunHandle,
    TimelinePage,
    durable,
    get_run,
)
from tether.core.ledger import StepUsage, UsageReport
from tether.core.ops import StepAttempt
from tether.core.run import StepFailedError
from tether.core.runtime import Runtime, default_runtime, set_default_runtime
from tether.core.sealed import Secret
from tether.core.steps import StepInfo, current_step
from tether.errors import (
    AgentNotRegisteredError,
    AlreadyAnsweredError,
    BudgetExceededError,
    ConfigurationError,
    DecryptionError,
    EngineUnavailableError,
    NoAdapterError,
    NonRetryableError,
    NoWorkerError,
    RetryableError,
    RetryUnsafeError,
    RunFailedError,
    RunIdConflictError,
    RunNotFoundError,
    RunNotWaitingError,
    RunStateError,
    StepInputError,
    TetherError,
    UnknownWaitRequestError,
    WaitRequestError,
    WaitTimedOutError,
    WrongAnswerKindError,
)
from tether.hookspecs import hookimpl
from tether.human import ask_human, human_input

__all__ = [
    "Adapter",
    "AgentNotRegisteredError",
    "AlreadyAnsweredError",
    "Budget",
    "BudgetExceededError",
    "Capability",
    "ConfigurationError",
    "ContinueAsNew",
    "DecryptionError",
    "DurableAgent",
    "EmbeddedEngine",
    "EngineUnavailableError",
    "Keyring",
    "NoAdapterError",
    "NoWorkerError",
    "NonRetryableError",
    "PendingRequest",
    "RetryUnsafeError",
    "RetryableError",
    "RunDescription",
    "RunEvent",
    "RunFailedError",
    "RunHandle",
    "RunIdConflictError",
    "RunNotFoundError",
    "RunNotWaitingError",
    "RunStateError",
    "Runtime",
    "Secret",
    "StepAttempt",
    "StepFailedError",
    "StepInfo",
    "StepInputError",
    "StepPolicy",
    "StepUsage",
    "StreamRetracted",
    "TetherError",
    "TimelinePage",
    "UnknownWaitRequestError",
    "UsageReport",
    "WaitAnswer",
    "WaitPolicy",
    "WaitRequest",
    "WaitRequestError",
    "WaitTimedOutError",
    "WrongAnswerKindError",
    "ask_human",
    "current_step",
    "default_runtime",
    "durable",
    "get_run",
    "hookimpl",
    "human_input",
    "set_default_runtime",
]
__version__ = "0.1.0"
