"""The agents reachable from a registered agent (handoffs, agents used as tools), by name."""

from __future__ import annotations

from typing import Any

from agents import Agent, FunctionTool, Handoff

from tether.errors import DuplicateAgentError


def handoff_target(h: Handoff[Any, Any]) -> Agent[Any] | None:
    ref = getattr(h, "_agent_ref", None)
    target = ref() if ref is not None else None
    return target if isinstance(target, Agent) else None


def agent_tool_target(tool: object) -> Agent[Any] | None:
    if isinstance(tool, FunctionTool) and getattr(tool, "_is_agent_tool", False):
        target = getattr(tool, "_agent_instance", None)
        return target if isinstance(target, Agent) else None
    return None


def index_agents(root: Agent[Any]) -> dict[str, Agent[Any]]:
    """Every agent reachable from ``root`` keyed by name; two agents with one name is an error."""
    found: dict[str, Agent[Any]] = {}
    stack: list[Agent[Any]] = [root]
    while stack:
        agent = stack.pop()
        seen = found.get(agent.name)
        if seen is agent:
            continue
        if seen is not None:
            raise DuplicateAgentError(
                f"two different agents named {agent.name!r} are reachable from {root.name!r}; "
                "steps find agents by name. Fix: give each agent a distinct name."
            )
        found[agent.name] = agent
        for h in agent.handoffs:
            target = h if isinstance(h, Agent) else handoff_target(h)
            if target is not None:
                stack.append(target)
        for tool in agent.tools:
            sub = agent_tool_target(tool)
            if sub is not None:
                stack.append(sub)
    return found
