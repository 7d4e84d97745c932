"""The neutral scenarios: what the model says, what the tools do, what must come out.

A scenario is data. Each adapter's kit turns it into a native agent of its framework; the
suite runs that agent plainly and durably, with crashes, and checks the invariants. Model
turns are served by the scripted model server, one *lane* per agent (``main``, ``helper``).
Every tool takes one string argument ``arg`` and records each execution in a file, so
executions are counted outside the adapter, across process kills.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tether.core.contract import Capability
from tether.testing._model_server import Fault, ToolCall, Turn

MAIN = "main"
HELPER = "helper"
MCP_TOOL = "forecast"
"""The tool of the suite's MCP server (``KitEnv.mcp_command``), taking one string ``arg``."""
HANDOFF_PLACEHOLDER = "{handoff}"
"""A tool call name in a script that the kit's :meth:`handoff_tool_name` replaces."""


class Behaviour(enum.StrEnum):
    """What a scenario tool does when called."""

    RETURN = "return"
    """Returns ``"<name>(<arg>): ok"`` (or ``size`` characters when ``size`` is set)."""
    FLAKY = "flaky"
    """Raises ``ConnectionError`` on its first ``failures`` executions, then returns."""
    FATAL = "fatal"
    """Raises :class:`tether.NonRetryableError` (another attempt cannot succeed)."""


@dataclass(frozen=True, kw_only=True)
class ToolSpec:
    """A tool of a scenario: its name, behaviour, and how the framework must declare it."""

    name: str
    behaviour: Behaviour = Behaviour.RETURN
    failures: int = 0
    size: int = 0
    sync: bool = False
    """Declare the tool as a plain ``def`` (frameworks treat sync tools differently)."""
    approval: bool = False
    """The tool needs a person's approval before it runs."""
    description: str = "A scenario tool."


@dataclass(frozen=True, kw_only=True)
class Expect:
    """The outcome a scenario must have, plainly and durably."""

    output: Any = None
    """The final output: text, or a JSON object for structured output."""
    error: str | None = None
    """The run must fail with this neutral error kind (see :meth:`ConformanceKit.error_kind`)."""
    or_fails_with: str | None = None
    """The run may instead fail with an error whose text contains this (framework choice)."""
    fails: bool = False
    """The run must fail (with whatever error the framework raises: e.g. a provider's 4xx)."""


class Helper(enum.StrEnum):
    """How the ``helper`` agent joins the run."""

    HANDOFF = "handoff"
    AGENT_TOOL = "agent_tool"


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """One neutral scenario. ``needs`` are the capabilities an adapter must declare."""

    name: str
    description: str
    lanes: Mapping[str, tuple[Turn, ...]]
    tools: tuple[ToolSpec, ...] = ()
    expect: Expect
    needs: frozenset[Capability] = frozenset()
    helper: Helper | None = None
    helper_tool: str = "ask_helper"
    """The tool name of the helper agent when it is used as a tool (argument ``input``)."""
    structured: bool = False
    """The agent's output type is ``{"city": str, "alerts": int}`` (a model of the framework)."""
    max_turns: int | None = None
    long: bool = False
    """Checked for bounded step inputs and linear history."""
    classified_errors: bool = False
    """Checked for error classification (retries, fail-fast)."""
    approvals: bool = False
    sigkill: bool = False
    """Sampled for real SIGKILLed worker subprocesses."""
    budget_tokens: int | None = None
    """The durable run is started with ``Budget(max_tokens=budget_tokens)``, which its first
    model call exceeds: it must fail with ``BudgetExceeded`` (the plain run has no budget)."""
    mcp: bool = False
    """The agent has the suite's stdio MCP server (``KitEnv.mcp_command``), whose tool
    ``forecast(arg)`` the script calls."""
    stream: bool = False
    """Run with the framework's streaming API (``ConformanceKit.run_streamed``), plainly,
    durably and swept: only invariant 13 applies."""
    continue_every: int | None = None
    """The durable run is started with ``ContinueAsNew(every_steps=continue_every)``: it
    continues as new at the first step boundary after that many steps of a segment."""
    sweep: bool = True
    """Swept at every step boundary (every run task replayed from an empty cache). A long
    scenario sets False: the sweep replays O(n^2) steps, so its worker is replaced once,
    halfway, instead."""

    def tool(self, name: str) -> ToolSpec:
        for spec in self.tools:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def steps(self) -> int:
        """Model and tool calls of the script (lane ``main`` and helpers)."""
        return sum(1 + len(t.calls) for turns in self.lanes.values() for t in turns)

    def prompt(self) -> str:
        return f"conformance scenario {self.name}"


def _call(name: str, arg: str) -> ToolCall:
    return ToolCall(name, {"arg": arg})


def _long_run(tool_turns: int) -> Scenario:
    turns = tuple(Turn.tool_calls(_call("lookup", f"r{i}")) for i in range(tool_turns))
    return Scenario(
        name="long_run",
        description=f"{tool_turns} tool turns then an answer ({2 * tool_turns + 1} steps)",
        lanes={MAIN: (*turns, Turn.text(f"looked up {tool_turns} records"))},
        tools=(ToolSpec(name="lookup", description="Looks a record up."),),
        expect=Expect(output=f"looked up {tool_turns} records"),
        max_turns=tool_turns + 5,
        long=True,
        sweep=False,
    )


LONG_TOOL_TURNS = 100

REFUSED_STATUSES = (400, 401, 404)
"""Provider answers no retry can change (bad request, bad key, unknown model)."""


def retryable_status(status: int) -> bool:
    """Whether a provider's HTTP status is worth retrying (timeouts, conflicts, 429, 5xx)."""
    return status in (408, 409, 429) or status >= 500


def _model_refusal(status: int) -> Scenario:
    return Scenario(
        name=f"model_{status}",
        description=f"the provider answers {status} (can never succeed): the run fails at once, "
        "after one request",
        # One fault: an adapter that retries it gets the reply on its second request. The
        # plain run gets it too (its client does not retry): it fails as well.
        lanes={MAIN: (Turn.text("answered on a retry", faults=(Fault("refused", status),)),)},
        expect=Expect(fails=True),
        classified_errors=True,
    )


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="final_answer",
        description="the model answers at once",
        lanes={MAIN: (Turn.text("hello from the model"),)},
        expect=Expect(output="hello from the model"),
    ),
    Scenario(
        name="one_tool",
        description="one tool call, then the answer",
        lanes={MAIN: (Turn.tool_calls(_call("lookup", "CA")), Turn.text("CA is quiet"))},
        tools=(ToolSpec(name="lookup", description="Looks a state up."),),
        expect=Expect(output="CA is quiet"),
    ),
    Scenario(
        name="sequential_tools",
        description="three tool turns in a row, then the answer",
        lanes={
            MAIN: (
                Turn.tool_calls(_call("lookup", "CA")),
                Turn.tool_calls(_call("alerts", "NY")),
                Turn.tool_calls(_call("lookup", "TX")),
                Turn.text("all three looked up"),
            )
        },
        tools=(
            ToolSpec(name="lookup", description="Looks a state up."),
            ToolSpec(name="alerts", description="Alerts of a state."),
        ),
        expect=Expect(output="all three looked up"),
        sigkill=True,
    ),
    Scenario(
        name="parallel_tools",
        description="three tool calls in one model turn",
        lanes={
            MAIN: (
                Turn.tool_calls(
                    _call("lookup", "CA"), _call("alerts", "NY"), _call("lookup", "TX")
                ),
                Turn.text("three in parallel"),
            )
        },
        tools=(
            ToolSpec(name="lookup", description="Looks a state up."),
            ToolSpec(name="alerts", description="Alerts of a state."),
        ),
        expect=Expect(output="three in parallel"),
        needs=frozenset({Capability.PARALLEL_TOOLS}),
        sigkill=True,
    ),
    Scenario(
        name="flaky_tool",
        description="a tool fails once (ConnectionError), is retried, and succeeds",
        lanes={MAIN: (Turn.tool_calls(_call("flaky", "x")), Turn.text("flaky worked"))},
        tools=(ToolSpec(name="flaky", behaviour=Behaviour.FLAKY, failures=1),),
        expect=Expect(output="flaky worked"),
        classified_errors=True,
    ),
    Scenario(
        name="fatal_tool",
        description="a tool raises a non-retryable error",
        lanes={MAIN: (Turn.tool_calls(_call("refuse", "acct-7")), Turn.text("could not do it"))},
        tools=(ToolSpec(name="refuse", behaviour=Behaviour.FATAL),),
        expect=Expect(output="could not do it", or_fails_with="account is closed"),
        classified_errors=True,
    ),
    Scenario(
        name="structured_output",
        description="the final output is a structured object",
        lanes={
            MAIN: (
                Turn.tool_calls(_call("lookup", "FR")),
                Turn.json({"city": "Paris", "alerts": 2}),
            )
        },
        tools=(ToolSpec(name="lookup", description="Looks a country up."),),
        expect=Expect(output={"city": "Paris", "alerts": 2}),
        needs=frozenset({Capability.STRUCTURED_OUTPUT}),
        structured=True,
    ),
    Scenario(
        name="handoff",
        description="the main agent hands the conversation to a helper agent",
        lanes={
            MAIN: (Turn.tool_calls(ToolCall(HANDOFF_PLACEHOLDER, {})),),
            HELPER: (Turn.text("the helper answers"),),
        },
        expect=Expect(output="the helper answers"),
        needs=frozenset({Capability.HANDOFFS}),
        helper=Helper.HANDOFF,
    ),
    Scenario(
        name="agent_as_tool",
        description="the main agent calls a helper agent as a tool",
        lanes={
            MAIN: (
                Turn.tool_calls(ToolCall("ask_helper", {"input": "hello"})),
                Turn.text("the helper said bonjour"),
            ),
            HELPER: (Turn.text("bonjour"),),
        },
        expect=Expect(output="the helper said bonjour"),
        needs=frozenset({Capability.AGENT_AS_TOOL}),
        helper=Helper.AGENT_TOOL,
    ),
    Scenario(
        name="approval",
        description="a tool needs a person's approval; the wait survives a worker restart",
        lanes={MAIN: (Turn.tool_calls(_call("refund", "order-42")), Turn.text("refunded"))},
        tools=(ToolSpec(name="refund", approval=True, description="Refunds an order."),),
        expect=Expect(output="refunded"),
        needs=frozenset({Capability.APPROVALS}),
        approvals=True,
        sweep=False,
    ),
    Scenario(
        name="model_429",
        description="the provider answers 429 once, then the model call succeeds",
        lanes={MAIN: (Turn.text("made it", faults=(Fault.rate_limit(retry_after=0.2),)),)},
        expect=Expect(output="made it"),
        classified_errors=True,
    ),
    *(_model_refusal(status) for status in REFUSED_STATUSES),
    Scenario(
        name="token_budget",
        description="Budget(max_tokens=5): the first model call exceeds it and the run fails "
        "with BudgetExceeded before the next one",
        lanes={MAIN: (Turn.tool_calls(_call("lookup", "CA")), Turn.text("CA is quiet"))},
        tools=(ToolSpec(name="lookup", description="Looks a state up."),),
        expect=Expect(output="CA is quiet"),
        budget_tokens=5,
    ),
    Scenario(
        name="streamed",
        description="one tool call, then a text answer, streamed with the framework's API",
        lanes={
            MAIN: (
                Turn.tool_calls(_call("lookup", "CA")),
                Turn.text("CA is quiet today; no alerts were issued for the state"),
            )
        },
        tools=(ToolSpec(name="lookup", description="Looks a state up."),),
        expect=Expect(output="CA is quiet today; no alerts were issued for the state"),
        needs=frozenset({Capability.STREAMING}),
        stream=True,
    ),
    Scenario(
        name="mcp_tool",
        description="one call of an MCP server's tool (stdio), then the answer",
        lanes={MAIN: (Turn.tool_calls(_call(MCP_TOOL, "Oslo")), Turn.text("Oslo is sunny"))},
        expect=Expect(output="Oslo is sunny"),
        needs=frozenset({Capability.MCP}),
        mcp=True,
    ),
    _long_run(LONG_TOOL_TURNS),
    Scenario(
        name="continue_as_new",
        description="8 tool turns and an answer, the run forced to continue as new every 3 "
        "steps: one run across 5 segments, each replayed on its own",
        lanes={
            MAIN: (
                *(Turn.tool_calls(_call("lookup", f"c{i}")) for i in range(8)),
                Turn.text("looked up 8 records across segments"),
            )
        },
        tools=(ToolSpec(name="lookup", description="Looks a record up."),),
        expect=Expect(output="looked up 8 records across segments"),
        needs=frozenset({Capability.CONTINUE_AS_NEW}),
        max_turns=15,
        continue_every=3,
        sigkill=True,
    ),
    Scenario(
        name="continue_as_new_approval",
        description="a tool needs approval and the run continues as new at that boundary: "
        "the pending approval is carried and answered in the next segment",
        # continue_every=1: the model step before the approval makes the boundary due.
        lanes={
            MAIN: (
                Turn.tool_calls(_call("refund", "order-42")),
                Turn.text("refunded across segments"),
            )
        },
        tools=(ToolSpec(name="refund", approval=True, description="Refunds an order."),),
        expect=Expect(output="refunded across segments"),
        needs=frozenset({Capability.APPROVALS, Capability.CONTINUE_AS_NEW}),
        approvals=True,
        continue_every=1,
        sweep=False,
    ),
    Scenario(
        name="large_tool_result",
        description="a tool returns more than 1 MB",
        lanes={MAIN: (Turn.tool_calls(_call("dump", "all")), Turn.text("got the dump"))},
        tools=(ToolSpec(name="dump", size=1_100_000, description="Dumps a large record."),),
        expect=Expect(output="got the dump"),
    ),
    Scenario(
        name="sync_tool",
        description="a tool declared as a plain def",
        lanes={MAIN: (Turn.tool_calls(_call("blocking", "x")), Turn.text("sync worked"))},
        tools=(ToolSpec(name="blocking", sync=True, description="A blocking tool."),),
        expect=Expect(output="sync worked"),
        needs=frozenset({Capability.SYNC_TOOLS}),
    ),
    Scenario(
        name="turn_limit",
        description="the model keeps calling tools past the run's turn limit: fails cleanly",
        lanes={MAIN: tuple(Turn.tool_calls(_call("lookup", f"loop{i}")) for i in range(8))},
        tools=(ToolSpec(name="lookup", description="Looks something up."),),
        expect=Expect(error="max_turns"),
        needs=frozenset({Capability.MAX_TURNS}),
        max_turns=3,
        classified_errors=True,
    ),
)

BY_NAME: dict[str, Scenario] = {s.name: s for s in SCENARIOS}


@dataclass(frozen=True)
class Invariant:
    """One property checked for a scenario; ``id`` appears in test ids and the report."""

    id: str
    number: int
    short: str
    title: str
    applies: Any = field(default=None, compare=False, repr=False)


def _plain_comparable(s: Scenario) -> bool:
    """Runs of ``s`` can be compared with its plain run (no approval, no budget)."""
    return not s.approvals and s.budget_tokens is None


INVARIANTS: tuple[Invariant, ...] = (
    Invariant("durable_equals_plain", 1, "plain", "durable result == plain run", _plain_comparable),
    Invariant(
        "crash_every_boundary",
        2,
        "sweep",
        "crash at every step boundary (in-process, empty cache)",
        _plain_comparable,
    ),
    Invariant(
        "crash_sigkill", 2, "kill", "SIGKILLed worker subprocess (sample)", lambda s: s.sigkill
    ),
    Invariant(
        "replay_deterministic", 3, "replay", "history replays (Replayer)", lambda s: not s.approvals
    ),
    Invariant(
        "step_names_pinned", 4, "names", "persisted step names pinned", lambda s: not s.approvals
    ),
    Invariant(
        "inputs_bounded", 5, "bounded", "step inputs bounded, history linear", lambda s: s.long
    ),
    Invariant(
        "approval_survives_restart",
        6,
        "approval",
        "approval wait survives restart",
        lambda s: s.approvals,
    ),
    Invariant(
        "errors_classified",
        7,
        "errors",
        "errors classified (tool errors, model 429 retried, model 4xx fail at once)",
        lambda s: s.classified_errors,
    ),
    Invariant(
        "events_once_in_order",
        8,
        "events",
        "run events in order, once each, resumable",
        lambda s: not s.approvals,
    ),
    Invariant(
        "replay_inputs_equal",
        9,
        "inputs",
        "replayed step requests == recorded ones (wall clock moved)",
        lambda s: not s.approvals,
    ),
    Invariant(
        "once_per_run",
        10,
        "once",
        "each run's model calls reach the provider as often as the plain run's",
        _plain_comparable,
    ),
    Invariant(
        "usage_ledger",
        11,
        "usage",
        "ledger tokens and requests == what the provider served; token budget trips",
        lambda s: not s.approvals,
    ),
    Invariant(
        "step_events_match",
        12,
        "steps",
        "step events one-to-one with the history's steps",
        lambda s: not s.approvals,
    ),
    Invariant(
        "stream_equals_plain",
        13,
        "stream",
        "streamed events == plain run's, also swept at every step boundary",
        lambda s: s.stream,
    ),
)

INVARIANT_BY_ID: dict[str, Invariant] = {i.id: i for i in INVARIANTS}


def applicable(scenario: Scenario) -> list[Invariant]:
    """The invariants checked for ``scenario`` (the others do not apply to it)."""
    if scenario.stream:
        return [i for i in INVARIANTS if i.id == "stream_equals_plain"]
    return [i for i in INVARIANTS if i.applies(scenario)]
