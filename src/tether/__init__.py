"""Tether: durable execution for AI agents, whatever framework they are written in.

import tether
durable = tether.durable(agent)      # any installed adapter's agent
result = await durable.run("...")   # a durable run on Temporal
"""

from tether.core.contract import Adapter, Capability, StepPolicy
from tether.core.devserver import EmbeddedEngine
from tether.core.handle import DurableAgent, RunDescription, RunHandle, durable
from tether.core.runtime import Runtime, default_runtime, set_default_runtime
from tether.errors import (
    AgentNotRegisteredError,
    ConfigurationError,
    EngineUnavailableError,
    NoAdapterError,
    NonRetryableError,
    RetryableError,
    RunFailedError,
    StepInputError,
    TetherError,
)
from tether.hookspecs import hookimpl

__all__ = [
    "Adapter",
    "AgentNotRegisteredError",
    "Capability",
    "ConfigurationError",
    "DurableAgent",
    "EmbeddedEngine",
    "EngineUnavailableError",
    "NoAdapterError",
    "NonRetryableError",
    "RetryableError",
    "RunDescription",
    "RunFailedError",
    "RunHandle",
    "Runtime",
    "StepInputError",
    "StepPolicy",
    "TetherError",
    "default_runtime",
    "durable",
    "hookimpl",
    "set_default_runtime",
]
__version__ = "0.1.0"
