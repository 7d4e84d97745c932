"""Tether adapter for the OpenAI Agents SDK (plugin entry point; imports cheaply)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tether.errors import AdapterUnavailable
from tether.hookspecs import hookimpl

if TYPE_CHECKING:
    from tether.conformance_tests.kit import ConformanceKit
    from tether.core.contract import Adapter


@hookimpl
def tether_framework() -> str:
    """The module this adapter's agents import: workers load the adapter only after it."""
    return "agents"


@hookimpl
def tether_adapter() -> Adapter:
    """The OpenAI Agents SDK adapter, when ``openai-agents`` is installed."""
    try:
        import agents  # noqa: F401
    except ImportError:
        raise AdapterUnavailable(
            "openai-agents is not installed. Fix: pip install 'tether[openai-agents]'"
        ) from None
    from tether.adapters.openai_agents._adapter import OpenAIAgentsAdapter

    return OpenAIAgentsAdapter()


@hookimpl
def tether_conformance_kit() -> ConformanceKit | None:
    """The conformance kit that builds openai_agents agents for the suite's scenarios."""
    try:
        import agents  # noqa: F401
    except ImportError:
        return None
    from tether.adapters.openai_agents._kit import OpenAIAgentsKit

    return OpenAIAgentsKit()
