"""Tether adapter for Pydantic AI (plugin entry point; imports cheaply)."""

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
    return "pydantic_ai"


@hookimpl
def tether_adapter() -> Adapter | None:
    """The Pydantic AI adapter, when ``pydantic-ai`` is installed."""
    try:
        import pydantic_ai  # noqa: F401
    except ImportError:
        raise AdapterUnavailable(
            "pydantic-ai is not installed. Fix: pip install 'tether[pydantic-ai]'"
        ) from None
    from tether.adapters.pydantic_ai._adapter import PydanticAIAdapter

    return PydanticAIAdapter()


@hookimpl
def tether_conformance_kit() -> ConformanceKit | None:
    """The conformance kit that builds pydantic_ai agents for the suite's scenarios."""
    try:
        import pydantic_ai  # noqa: F401
    except ImportError:
        return None
    from tether.adapters.pydantic_ai._kit import PydanticAIKit

    return PydanticAIKit()
