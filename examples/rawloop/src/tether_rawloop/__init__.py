"""tether-rawloop: a framework-free agent loop, made durable by Tether.

The agent is a plain ``while True`` loop over an OpenAI-compatible chat completions API:
ask the model, run the tools it asks for, repeat until it answers. ``RawLoopAdapter``
runs that loop inside a Tether run with each model call and each tool call a step. This
module is the plugin the ``tether`` entry point names; it imports only Tether.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tether import hookimpl
from tether_rawloop.agent import RawAgent, RawResult, Tool, run_plain

if TYPE_CHECKING:
    from tether import Adapter
    from tether.conformance_tests import ConformanceKit

__all__ = ["RawAgent", "RawResult", "Tool", "run_plain"]


@hookimpl
def tether_adapter() -> Adapter:
    """The raw loop's adapter."""
    from tether_rawloop.adapter import RawLoopAdapter

    return RawLoopAdapter()


@hookimpl
def tether_conformance_kit() -> ConformanceKit:
    """The kit that builds raw-loop agents for Tether's conformance scenarios."""
    from tether_rawloop.kit import RawLoopKit

    return RawLoopKit()
