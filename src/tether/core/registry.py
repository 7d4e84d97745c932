"""The worker-side registry: agents by name, never serialized."""

from __future__ import annotations

from dataclasses import dataclass

from tether.core.contract import Adapter
from tether.errors import AgentNotRegisteredError, DuplicateAgentError


@dataclass(frozen=True)
class Registered:
    name: str
    agent: object
    adapter: Adapter


_agents: dict[str, Registered] = {}


def register(name: str, agent: object, adapter: Adapter) -> Registered:
    """Host ``agent`` under ``name`` in this process; the same object twice is fine."""
    current = _agents.get(name)
    if current is not None and current.agent is not agent:
        raise DuplicateAgentError(
            f"two different agents are registered under the name {name!r}. "
            "Fix: give each agent a distinct name (or pass name=... to tether.durable)."
        )
    entry = Registered(name, agent, adapter)
    _agents[name] = entry
    return entry


def lookup(name: str, source: str | None = None) -> Registered:
    """The agent registered as ``name``; ``source`` (its ``MODULE:OBJECT``) goes into the
    error when this process does not host it."""
    try:
        return _agents[name]
    except KeyError:
        raise AgentNotRegisteredError(name, list(_agents), source) from None


def registered() -> dict[str, Registered]:
    return dict(_agents)


def clear() -> None:
    """Forget every agent (tests)."""
    _agents.clear()
