"""The kit: what an adapter gives the conformance suite to build its framework's agents.

An adapter returns a :class:`ConformanceKit` from the ``tether_conformance_kit`` hook. The
kit turns a neutral :class:`~tether.conformance_tests.scenarios.Scenario` into a native
agent pointed at the scripted model server, runs it plainly (without Tether), and says
what a result means. Everything else (durable runs, crashes, replay, counting) is the
suite's, observed through the model server, the tools' own log and Temporal's history.
"""

from __future__ import annotations

import abc
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.conformance_tests.scenarios import Behaviour, Scenario, ToolSpec
from tether.core.contract import Capability, StepKind
from tether.errors import NonRetryableError

if TYPE_CHECKING:
    from tether.core.contract import Adapter
    from tether.core.handle import DurableAgent


@dataclass(frozen=True, kw_only=True)
class KitEnv:
    """Where the kit's agents talk to and record to, for one run of one scenario."""

    base_url: str
    """The scripted OpenAI-compatible server, e.g. ``http://127.0.0.1:5555/v1``."""
    calls_file: Path
    """Tools append one line per execution here (fsynced: counts survive a SIGKILL)."""
    faults: bool = True
    """False for the plain reference run: tools do not inject their scripted failures."""
    tool_delay: float = 0.0
    """Seconds each tool takes (crash tests need the kill to land between steps)."""

    def lane(self, lane: str) -> str:
        """The model name for ``lane``: the lane itself (the server picks the script by the
        request's model name)."""
        return lane

    def call_tool(self, spec: ToolSpec, arg: str) -> str:
        """Execute scenario tool ``spec`` with ``arg``: record, behave, return its result.

        Kits call this from the native tool they build (sync or async as ``spec.sync`` says).
        """
        previous = executions(self.calls_file, spec.name, arg)
        if self.tool_delay:
            time.sleep(self.tool_delay)
        if spec.behaviour is Behaviour.FATAL:
            _record(self.calls_file, spec.name, arg, "fatal")
            raise NonRetryableError("account is closed", error_type="AccountClosed")
        if spec.behaviour is Behaviour.FLAKY and self.faults and previous < spec.failures:
            _record(self.calls_file, spec.name, arg, "fail")
            raise ConnectionError(f"{spec.name}: upstream down (failure {previous + 1})")
        _record(self.calls_file, spec.name, arg, "ok")
        if spec.size:
            head = f"{spec.name}({arg}): "
            return head + "x" * (spec.size - len(head))
        return f"{spec.name}({arg}): ok"

    def tool_function(self, spec: ToolSpec) -> Callable[[str], Any]:
        """A plain function (sync or async, as ``spec.sync`` says) that runs
        :meth:`call_tool`: what a kit hands its framework's tool constructor."""
        if spec.sync:

            def run_sync(arg: str) -> str:
                return self.call_tool(spec, arg)

            func: Callable[[str], Any] = run_sync
        else:

            async def run_async(arg: str) -> str:
                return self.call_tool(spec, arg)

            func = run_async
        func.__doc__ = spec.description
        return func

    def mcp_command(self) -> tuple[str, list[str], dict[str, str]]:
        """The suite's stdio MCP server for a scenario with ``mcp=True``: (command, args,
        environment). Its tool ``forecast(arg)`` records each execution like
        :meth:`call_tool`; a kit attaches it with its framework's stdio MCP client."""
        env = dict(os.environ)
        env.update(self.to_environ())
        return sys.executable, ["-m", "tether.conformance_tests._mcp_server"], env

    def to_environ(self) -> dict[str, str]:
        """The variables a worker subprocess reads to rebuild the same agents."""
        return {
            "TETHER_CONFORMANCE_BASE_URL": self.base_url,
            "TETHER_CONFORMANCE_CALLS": str(self.calls_file),
            "TETHER_CONFORMANCE_TOOL_DELAY": str(self.tool_delay),
        }

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> KitEnv:
        return cls(
            base_url=environ["TETHER_CONFORMANCE_BASE_URL"],
            calls_file=Path(environ["TETHER_CONFORMANCE_CALLS"]),
            tool_delay=float(environ.get("TETHER_CONFORMANCE_TOOL_DELAY", "0")),
        )


def _record(path: Path, tool: str, arg: str, outcome: str) -> None:
    with path.open("a") as f:
        f.write(f"{tool}\t{arg}\t{outcome}\n")
        f.flush()
        os.fsync(f.fileno())


def read_calls(path: Path) -> list[tuple[str, str, str]]:
    """Every recorded tool execution, in order, as (tool, arg, outcome)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        tool, arg, outcome = line.split("\t")
        out.append((tool, arg, outcome))
    return out


def executions(path: Path, tool: str, arg: str) -> int:
    return sum(1 for t, a, _ in read_calls(path) if t == tool and a == arg)


@dataclass(frozen=True, kw_only=True)
class StreamedRun:
    """What a reader of a streamed run saw (see :meth:`ConformanceKit.run_streamed`)."""

    events: list[Any]
    """Each stream event as JSON-comparable data (type and content, agents by name), in
    order, with retracted model responses already dropped (see :func:`shown_events`)."""
    output: Any
    """The run's final output as JSON, as :meth:`ConformanceKit.output` gives it."""
    run_id: str | None = None
    """The durable run's id (None for the plain run)."""
    retracted: int = 0
    """How many :class:`tether.StreamRetracted` the reader got (and applied)."""


def shown_events(
    events: Iterable[Any],
    *,
    shape: Callable[[Any], Any],
    opens_response: Callable[[Any], bool],
) -> tuple[list[Any], int]:
    """What a reader keeps of a stream: each event shaped, except that a
    :class:`tether.StreamRetracted` drops what was shown of the model response it retracts
    (from the last event for which ``opens_response`` is true). Returns (shapes, retractions).
    """
    from tether.core.events import StreamRetracted

    out: list[Any] = []
    opened = 0
    retracted = 0
    for event in events:
        if isinstance(event, StreamRetracted):
            del out[opened:]
            retracted += 1
            continue
        if opens_response(event):
            opened = len(out)
        out.append(shape(event))
    return out, retracted


class ConformanceKit(abc.ABC):
    """Builds an adapter's native agents for the neutral scenarios.

    Subclass it in your adapter package (importing your framework there is fine: the kit is
    only loaded when the suite runs) and return an instance from the
    ``tether_conformance_kit`` hook.
    """

    adapter_name: str
    """The :attr:`tether.Adapter.name` this kit is for."""
    pinned_steps: Mapping[str, StepKind]
    """The persisted step names of the adapter and their kinds, written as literals (never
    imported from the adapter: a rename must fail the suite, not follow along)."""

    known_defects: Mapping[tuple[str, str], str] = {}
    """(scenario, invariant) -> why: known failures, run as strict xfails. The item fails
    once the defect is fixed, so the list has to shrink."""

    def adapter(self) -> Adapter:
        """The adapter under test (from the installed plugins)."""
        from tether.plugins import adapter_named

        return adapter_named(self.adapter_name)

    def capabilities(self) -> frozenset[Capability]:
        """What the suite may test; by default what the adapter declares."""
        return frozenset(self.adapter().capabilities)

    def agent_name(self, scenario: Scenario) -> str:
        """The registered name of the scenario's main agent."""
        return f"conf-{scenario.name}"

    def handoff_tool_name(self, scenario: Scenario) -> str:
        """The tool name the framework gives a handoff to the helper agent."""
        raise NotImplementedError(f"{type(self).__name__} does not support handoffs")

    @abc.abstractmethod
    def build(self, scenario: Scenario, env: KitEnv) -> object:
        """A native agent for ``scenario``: its model (lane ``main``) at ``env.base_url`` with
        the client's own retries off, each tool calling ``env.call_tool``; a helper agent on
        lane ``helper`` when ``scenario.helper`` is set; the structured output type when
        ``scenario.structured``."""

    @abc.abstractmethod
    async def run_plain(self, agent: object, scenario: Scenario, env: KitEnv) -> object:
        """Run ``agent`` with the framework alone (no Tether); return its result or raise."""

    def run_options(self, scenario: Scenario) -> dict[str, Any]:
        """Keyword options for ``durable.run`` (e.g. the turn limit) for ``scenario``."""
        return {}

    @abc.abstractmethod
    def output(self, result: object) -> Any:
        """The final output of a plain or durable result as JSON (text, or an object)."""

    def error_kind(self, error: BaseException) -> str | None:
        """The neutral kind of a run's failure (plain exception or
        :class:`tether.RunFailedError`): ``"max_turns"`` for a turn limit, else None."""
        return None

    async def run_streamed(
        self,
        agent: object,
        scenario: Scenario,
        env: KitEnv,
        durable: DurableAgent | None = None,
    ) -> StreamedRun:
        """Run ``agent`` with the framework's own streaming API and collect what a reader
        sees: plainly when ``durable`` is None, else through ``durable`` (the same agent made
        durable: e.g. ``durable.run_streamed``). Both runs must shape events the same way.

        Needed for adapters that declare ``Capability.STREAMING``; the default makes the
        streaming scenario skip with this reason."""
        raise NotImplementedError(
            f"{type(self).__name__} does not implement run_streamed(): implement it in the kit "
            "to test the adapter's streaming (Capability.STREAMING)"
        )
