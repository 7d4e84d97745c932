"""Tether's conformance suite: proves an adapter keeps the durability promise.

Adapter authors implement a :class:`ConformanceKit` (returned by the
``tether_conformance_kit`` hook) and run ``pytest -p tether.conformance_tests
--tether-adapter NAME`` or ``tether conformance NAME``. See ``docs/adapter-authors.md``.
Names are imported lazily: the pytest plugin in this package must stay cheap to load.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tether.conformance_tests.kit import ConformanceKit, KitEnv, StreamedRun, shown_events
    from tether.conformance_tests.scenarios import (
        SCENARIOS,
        Behaviour,
        Expect,
        Helper,
        Scenario,
        ToolSpec,
    )

_WHERE = {
    "ConformanceKit": "kit",
    "KitEnv": "kit",
    "StreamedRun": "kit",
    "shown_events": "kit",
    "SCENARIOS": "scenarios",
    "Behaviour": "scenarios",
    "Expect": "scenarios",
    "Helper": "scenarios",
    "Scenario": "scenarios",
    "ToolSpec": "scenarios",
}

__all__ = [
    "SCENARIOS",
    "Behaviour",
    "ConformanceKit",
    "Expect",
    "Helper",
    "KitEnv",
    "Scenario",
    "StreamedRun",
    "ToolSpec",
    "shown_events",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'tether.conformance_tests' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tether.conformance_tests.{module}"), name)
