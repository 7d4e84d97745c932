"""The invariants: each check reads what runs did and fails naming what it saw.

Every failure names the adapter, the scenario, the invariant, the step, what was expected
and what was seen.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from tether.conformance_tests._harness import Harness, History, Observed, model_calls_in
from tether.conformance_tests.kit import ConformanceKit
from tether.conformance_tests.scenarios import (
    INVARIANT_BY_ID,
    MCP_TOOL,
    Behaviour,
    Invariant,
    Scenario,
    retryable_status,
)
from tether.core.replay import DEFAULT_CLOCK_SHIFT, first_difference


class ConformanceFailure(AssertionError):
    """An invariant does not hold for an adapter on a scenario."""

    def __init__(
        self,
        kit: ConformanceKit,
        scenario: Scenario,
        invariant: Invariant,
        *,
        step: str,
        expected: str,
        seen: str,
        hint: str = "",
    ) -> None:
        self.adapter = kit.adapter_name
        self.scenario = scenario.name
        self.invariant = invariant.id
        text = (
            f"[{kit.adapter_name} / {scenario.name} / invariant {invariant.number} "
            f"{invariant.id}] {invariant.title}\n"
            f"  step:     {step}\n"
            f"  expected: {expected}\n"
            f"  seen:     {seen}"
        )
        if hint:
            text += f"\n  hint:     {hint}"
        super().__init__(text)


class Skip(Exception):
    """The invariant cannot be checked here; the reason is shown in the report."""


@dataclass
class Runs:
    """The runs of one (adapter, scenario), made once and shared by its invariants."""

    harness: Harness
    kit: ConformanceKit
    scenario: Scenario
    _cache: dict[str, Observed] = field(default_factory=dict)

    def get(self, key: str, make: Callable[[], Observed]) -> Observed:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def plain(self) -> Observed:
        return self.get("plain", lambda: self.harness.plain(self.kit, self.scenario))

    def durable(self) -> Observed:
        """The durable run; for a scenario too long to sweep, its worker is replaced by one
        with an empty cache halfway (a crash at that boundary, checked by invariant 2)."""
        restart = None if self.scenario.sweep else self.scenario.steps() // 2
        return self.get(
            "durable",
            lambda: self.harness.durable(self.kit, self.scenario, restart_after=restart),
        )

    def sweep(self) -> Observed:
        if not self.scenario.sweep:
            return self.durable()
        return self.get("sweep", lambda: self.harness.durable(self.kit, self.scenario, sweep=True))


class Checker:
    """The checks of one invariant on one (adapter, scenario)."""

    def __init__(self, runs: Runs, invariant: Invariant) -> None:
        self.runs = runs
        self.kit = runs.kit
        self.scenario = runs.scenario
        self.invariant = invariant

    def fail(self, step: str, expected: str, seen: str, hint: str = "") -> ConformanceFailure:
        return ConformanceFailure(
            self.kit,
            self.scenario,
            self.invariant,
            step=step,
            expected=expected,
            seen=seen,
            hint=hint,
        )

    # -- shared checks ----------------------------------------------------------------------

    def expected_outcome(self, obs: Observed) -> None:
        expect = self.scenario.expect
        if obs.status == "timed_out":
            raise self.fail(
                f"the {obs.label}",
                "the run ends",
                obs.outcome(),
                _task_hint(obs.history),
            )
        if expect.error is not None:
            if obs.error is None or obs.error_kind != expect.error:
                raise self.fail(
                    f"the {obs.label}",
                    f"failed [{expect.error}]",
                    obs.outcome(),
                    "error_kind() of the kit maps the framework's error to the neutral kind",
                )
            return
        if expect.fails:
            if obs.error is None:
                raise self.fail(f"the {obs.label}", "the run fails", obs.outcome())
            return
        if obs.error is not None:
            if expect.or_fails_with and expect.or_fails_with in obs.error:
                return
            raise self.fail(
                f"the {obs.label}", f"output {json.dumps(expect.output)}", obs.outcome()
            )
        if obs.output != expect.output:
            raise self.fail(
                f"the {obs.label}", f"output {json.dumps(expect.output)}", obs.outcome()
            )

    def same_outcome(self, reference: Observed, obs: Observed) -> None:
        self.expected_outcome(obs)
        same = (reference.error is None) == (obs.error is None) and (
            reference.output == obs.output
            if reference.error is None
            else reference.error_kind == obs.error_kind
        )
        if not same:
            raise self.fail(f"the {obs.label}", reference.outcome(), obs.outcome())

    def events_of(self, obs: Observed) -> None:
        """The checks of invariant 8 on one run's event log."""
        where = f"the event log of the {obs.label}"
        events = obs.events
        if events is None:
            raise self.fail(where, "readable once the run ended", obs.events_error or "none")
        offsets = [e.offset for e in events]
        if offsets != list(range(len(events))):
            raise self.fail(where, "offsets 0, 1, 2, ... without gaps", f"{offsets[:20]}")
        last = "run.failed" if obs.error is not None else "run.finished"
        types = [e.type for e in events]
        if not types or types[0] != "run.started" or types[-1] != last:
            raise self.fail(where, f"run.started first, {last} last", f"{types[:3]}...{types[-3:]}")
        opened: dict[int, str] = {}
        closed: set[int] = set()
        for e in events:
            step = e.data.get("step")
            kind, _, phase = e.type.partition(".")
            if step is None or phase not in ("started", "finished", "failed"):
                continue
            if phase == "started":
                if step in opened:
                    raise self.fail(where, f"step {step} started once", f"again at #{e.offset}")
                opened[step] = kind
            elif step not in opened or step in closed:
                raise self.fail(
                    where, f"step {step} ends once, after it started", f"{e.type} at #{e.offset}"
                )
            else:
                closed.add(step)
        if set(opened) != closed:
            raise self.fail(
                where, "every started step ends", f"open: {sorted(set(opened) - closed)}"
            )
        history = obs.history.steps if obs.history else []
        for kind in ("model", "tool"):
            scheduled = sum(1 for s in history if self.kit.pinned_steps.get(s.name) == kind)
            published = sum(1 for k in opened.values() if k == kind)
            if scheduled != published:
                raise self.fail(
                    where,
                    f"one {kind}.started per {kind} step in the history ({scheduled})",
                    f"{published}",
                    "a step retried or replayed must not publish its events again",
                )
        after = obs.resumed_after
        resumed = [(e.offset, e.type) for e in obs.events_resumed or []]
        rest = [(e.offset, e.type) for e in events if e.offset > after]
        if resumed != rest:
            raise self.fail(
                f"{where}, read again after offset {after}",
                f"exactly the rest of the log ({len(rest)} events)",
                f"{len(resumed)} events: {[o for o, _ in resumed][:10]}",
            )

    def steps_of(self, history: History | None, kind: str) -> list[Any]:
        if history is None:
            return []
        return [s for s in history.completed() if self.kit.pinned_steps.get(s.name) == kind]

    def one_call_per_step(self, obs: Observed) -> None:
        """A completed step must hold one model call (or one tool call), never a batch:
        a crash inside a batch makes its finished calls again."""
        for i, step in enumerate(self.steps_of(obs.history, "model")):
            quoted = model_calls_in(step.result_text)
            if len(quoted) > 1:
                raise self.fail(
                    f"model step #{i + 1} ({step.name})",
                    "one model call per step",
                    f"{len(quoted)} model calls in one step: {sorted(quoted)}",
                    "a crash inside this step makes every call in it again; make each call "
                    "its own step",
                )
        models, calls = self.steps_of(obs.history, "model"), obs.served()
        if len(models) < len(calls):
            raise self.fail(
                "model steps",
                f"one step per model call ({len(calls)} calls answered by the model server)",
                f"{len(models)} completed model steps",
                "a model call made outside a step, or several in one step, is made again "
                "after a crash",
            )
        tools = self.steps_of(obs.history, "tool") + self.steps_of(obs.history, "mcp")
        distinct = obs.tool_runs("ok")
        if self.kit.pinned_steps and len(tools) < len(distinct):
            raise self.fail(
                "tool steps",
                f"one step per tool call ({len(distinct)} calls: {sorted(distinct)})",
                f"{len(tools)} completed tool steps",
                "a tool that runs outside a step, or several tools in one step, runs again "
                "after a crash",
            )

    def no_call_twice(self, obs: Observed) -> None:
        for (lane, turn), n in sorted(obs.served().items()):
            if n != 1:
                raise self.fail(
                    f"model call (lane {lane}, turn {turn})",
                    "made once (it had completed)",
                    f"answered {n} times by the model server",
                    "a completed model call was made again on replay: the model is called "
                    "outside a step, or the step is not recognised as completed",
                )
        for (tool, arg), n in sorted(obs.tool_runs("ok").items()):
            if n != 1:
                raise self.fail(
                    f"tool call {tool}({arg})",
                    "executed once (it had completed)",
                    f"executed {n} times",
                    "a completed tool call ran again on replay: the tool runs outside a step",
                )

    def mcp_called_once(self, obs: Observed) -> None:
        """Each MCP tool call of the script reached the suite's MCP server exactly once."""
        if not self.scenario.mcp:
            return
        runs = obs.tool_runs()
        for turns in self.scenario.lanes.values():
            for turn in turns:
                for call in turn.calls:
                    if call.name != MCP_TOOL:
                        continue
                    args = call.arguments if isinstance(call.arguments, dict) else {}
                    arg = str(args.get("arg"))
                    n = runs.get((MCP_TOOL, arg), 0)
                    if n != 1:
                        raise self.fail(
                            f"MCP tool call {MCP_TOOL}({arg}) of the {obs.label}",
                            "executed once by the MCP server",
                            f"executed {n} times",
                            "the kit attaches the suite's MCP server (KitEnv.mcp_command) to "
                            "the agent; the adapter calls an MCP tool in one step, once"
                            if n == 0
                            else "a completed MCP call was made again: call MCP tools in a "
                            "step of their own",
                        )

    def no_task_failures(self, obs: Observed) -> None:
        if obs.history and obs.history.task_failures:
            raise self.fail(
                f"the {obs.label}",
                "no failed run task",
                f"{len(obs.history.task_failures)} failed run task(s): "
                f"{obs.history.task_failures[0][:400]}",
                "the loop is not deterministic: it took another path when replayed",
            )


# -- the invariants ---------------------------------------------------------------------------


def durable_equals_plain(c: Checker) -> None:
    plain = c.runs.plain()
    c.expected_outcome(plain)  # the plain run must itself be right, or the kit is wrong
    c.mcp_called_once(plain)
    durable = c.runs.durable()
    c.same_outcome(plain, durable)
    c.mcp_called_once(durable)
    plain_bodies, durable_bodies = plain.bodies(), durable.bodies()
    if set(plain_bodies) != set(durable_bodies):
        raise c.fail(
            "model calls",
            f"the calls of the plain run {sorted(plain_bodies)}",
            f"{sorted(durable_bodies)}",
        )
    for key in sorted(plain_bodies):
        where = first_difference(plain_bodies[key], durable_bodies[key])
        if where is not None:
            path, a, b = where
            raise c.fail(
                f"model call (lane {key[0]}, turn {key[1]}): request field {path}",
                f"what the plain run sent: {a}",
                f"{b}",
                "the durable run must send the provider what the framework sends alone",
            )
    if plain.tool_runs("ok") != durable.tool_runs("ok"):
        raise c.fail(
            "tool calls",
            f"the plain run's {sorted(plain.tool_runs('ok').items())}",
            f"{sorted(durable.tool_runs('ok').items())}",
        )


def crash_every_boundary(c: Checker) -> None:
    plain, sweep = c.runs.plain(), c.runs.sweep()
    c.no_task_failures(sweep)
    c.same_outcome(plain, sweep)
    c.no_call_twice(sweep)
    c.mcp_called_once(sweep)
    c.one_call_per_step(sweep)


def crash_sigkill(c: Checker, kill_points: list[int]) -> None:
    plain = c.runs.plain()
    for k in kill_points:
        obs = c.runs.get(f"kill{k}", partial(c.runs.harness.sigkill, c.kit, c.scenario, k))
        if obs.status == "timed_out":
            raise c.fail(f"the {obs.label}", "the run resumes and ends", obs.outcome(), obs.log)
        c.same_outcome(plain, obs)
        served, ok = obs.served(), obs.tool_runs("ok")
        assert obs.at_kill is not None
        checkpointed = c.steps_of(obs.at_kill, "model")
        keys = {k for step in checkpointed for k in model_calls_in(step.result_text)}
        if checkpointed and not keys:
            # Step results do not quote the server's ids: the first calls served, in order.
            first: list[tuple[str, int]] = []
            for r in obs.requests:
                if 200 <= r.status < 300 and (r.lane, r.turn) not in first:
                    first.append((r.lane, r.turn))
            keys = set(first[: len(checkpointed)])
        for key in sorted(keys):
            if served.get(key, 0) != 1:
                raise c.fail(
                    f"model call (lane {key[0]}, turn {key[1]}), checkpointed before "
                    f"the kill ({obs.label})",
                    "made once",
                    f"answered {served.get(key, 0)} times",
                )
        for step in c.steps_of(obs.at_kill, "tool"):
            text = step.input_text.replace("\\", "")
            done = [(t, a) for t, a in ok if t in text and f'"{a}"' in text]
            for tool, arg in done:
                if ok[(tool, arg)] != 1:
                    raise c.fail(
                        f"tool call {tool}({arg}), checkpointed before the kill ({obs.label})",
                        "executed once",
                        f"executed {ok[(tool, arg)]} times",
                    )
        for (lane, turn), n in served.items():
            if n > 2:
                raise c.fail(
                    f"model call (lane {lane}, turn {turn}) ({obs.label})",
                    "made at most twice (once more only if in flight at the kill)",
                    f"{n} times",
                )
        c.one_call_per_step(obs)


def replay_deterministic(c: Checker) -> None:
    durable = c.runs.durable()
    c.no_task_failures(durable)
    if durable.replay_failure is not None:
        raise c.fail(
            "replaying the recorded history (temporalio.worker.Replayer)",
            "the same commands as recorded",
            durable.replay_failure[:2500],
            "the loop must not read clocks, random values or I/O outside steps",
        )
    if durable.replay_side_effects:
        raise c.fail(
            "replaying the recorded history",
            "no model call and no tool execution",
            ", ".join(durable.replay_side_effects[:5]),
            "side effects must happen in steps, which replay reads from the history",
        )


def step_names_pinned(c: Checker) -> None:
    durable = c.runs.durable()
    pinned = dict(c.kit.pinned_steps)
    declared = {s.name: s.kind for s in c.kit.adapter().steps()}
    for name, kind in sorted(pinned.items()):
        if name not in declared:
            raise c.fail(
                f"pinned step {name!r}",
                "registered by the adapter (Adapter.steps())",
                f"missing; the adapter registers {sorted(declared)}",
                "a renamed step strands every run in flight: keep the old name registered",
            )
        if declared[name] != kind:
            raise c.fail(f"pinned step {name!r}", f"kind {kind}", f"kind {declared[name]}")
    seen = [s.name for s in (durable.history.steps if durable.history else [])]
    for name in seen:
        if name not in pinned:
            raise c.fail(
                f"step {name!r} in the run's history",
                f"one of the pinned names {sorted(pinned)}",
                repr(name),
                "persisted step names must be stable (no per-run or random parts); pin new "
                "names in the kit",
            )


def inputs_bounded(c: Checker) -> None:
    durable = c.runs.durable()
    c.expected_outcome(durable)
    assert durable.history is not None
    models = [s for s in durable.history.steps if c.kit.pinned_steps.get(s.name) == "model"]
    if len(models) < 20:
        raise c.fail("model steps", "at least 20 model steps", f"{len(models)}")
    early, last = models[5].input_bytes, models[-1].input_bytes
    if last > 2 * early + 4096:
        raise c.fail(
            f"model step #{len(models)} input",
            f"bounded: at most 2 x step #6's {early} bytes + 4 KB",
            f"{last} bytes (the whole conversation is sent into every step?)",
            "send a reference to the conversation plus the new items, not the conversation",
        )
    steps = durable.history.completed()
    half = steps[len(steps) // 2].bytes_at_completion
    total = durable.history.total_bytes
    if total > 2.6 * half:
        raise c.fail(
            "the run's history",
            f"linear growth: at most 2.6 x the {half} bytes at half the steps",
            f"{total} bytes at the end ({total / half:.1f}x: quadratic)",
        )


def approval_survives_restart(c: Checker) -> None:
    obs = c.runs.get("approval", lambda: c.runs.harness.approval(c.kit, c.scenario))
    c.same_outcome(c.runs.plain(), obs)
    runs = obs.tool_runs("ok")
    if any(n != 1 for n in runs.values()) or not runs:
        raise c.fail("the approved tool", "executed once, after approval", f"{runs}")
    if c.scenario.continue_every is not None and not obs.asked_before_boundary:
        raise c.fail(
            "the approval across a boundary",
            "the run continued as new while the approval was pending (answered after it)",
            f"{obs.segments} segment(s); the wait was not carried across one",
            "call session.checkpoint(..., asking=[the waits]) where the loop is about to wait",
        )


def errors_classified(c: Checker) -> None:
    s = c.scenario
    durable = c.runs.durable()
    if s.expect.error is not None:  # a limit: fail cleanly and promptly, not hang
        c.expected_outcome(durable)
        limit = s.max_turns or 0
        made = len(durable.served())
        if made > limit + 1:
            raise c.fail("model calls", f"at most {limit + 1} (the turn limit)", f"{made}")
        return
    for (lane, turn), statuses in _faults(s).items():
        attempts = durable.attempts().get((lane, turn), 0)
        served = durable.served().get((lane, turn), 0)
        if retryable_status(statuses[0]):
            if attempts != len(statuses) + 1 or served != 1:
                raise c.fail(
                    f"model call (lane {lane}, turn {turn}) answered {len(statuses)}x with "
                    f"{statuses[0]}",
                    f"{len(statuses) + 1} requests, 1 served (retried after Retry-After)",
                    f"{attempts} requests, {served} served",
                )
        elif attempts != 1 or durable.error is None:
            raise c.fail(
                f"model call (lane {lane}, turn {turn}) answered {statuses[0]} by the provider",
                "1 request, then the run fails at once (no request can succeed: not retried)",
                f"{attempts} requests; {durable.outcome()}",
                f"classify a provider's {statuses[0]} as non-retryable in the model step (raise "
                "tether.NonRetryableError); retry only 408, 409, 429 and 5xx",
            )
    c.expected_outcome(durable)
    runs = durable.tool_runs()
    for spec in s.tools:
        calls = {k: n for k, n in runs.items() if k[0] == spec.name}
        for (tool, arg), n in calls.items():
            failed = durable.tool_runs("fail").get((tool, arg), 0)
            if spec.behaviour is Behaviour.FLAKY and (failed != spec.failures or n != failed + 1):
                raise c.fail(
                    f"tool call {tool}({arg}) raising ConnectionError (transient)",
                    f"retried: {spec.failures} failure(s) then 1 success",
                    f"{failed} failure(s), {n - failed} success(es)",
                )
            if spec.behaviour is Behaviour.FATAL:
                if n != 1:
                    raise c.fail(
                        f"tool call {tool}({arg}) raising NonRetryableError",
                        "executed once (fails fast, no retry)",
                        f"executed {n} times",
                        "a non-retryable error must not be retried",
                    )
                where = [durable.error or ""]
                where += [json.dumps(r.body) for r in durable.requests]
                where += [str(f.get("message", "")) for f in durable.failures]
                if not any("account is closed" in w for w in where):
                    raise c.fail(
                        f"tool call {tool}({arg}) raising NonRetryableError",
                        "its cause ('account is closed') in the run's error or the model's "
                        "next request",
                        "the cause is nowhere",
                    )


def _faults(s: Scenario) -> dict[tuple[str, int], list[int]]:
    """The HTTP statuses scripted for each model call, in the order they are served."""
    return {
        (lane, i): [f.status for f in t.faults]
        for lane, turns in s.lanes.items()
        for i, t in enumerate(turns)
        if t.faults
    }


def _task_hint(history: History | None) -> str:
    if history and history.task_failures:
        return f"run task failure: {history.task_failures[-1][:400]}"
    return ""


def events_once_in_order(c: Checker) -> None:
    """The run's event log: contiguous offsets, started first and ended last, one start and
    one end per step (retries and replays publish nothing again), a step event for every
    step in the history, and a reader resuming from an offset sees exactly the rest."""
    runs = [c.runs.durable()]
    if c.scenario.sweep:
        runs.append(c.runs.sweep())
    for obs in runs:
        c.events_of(obs)


def replay_inputs_equal(c: Checker) -> None:
    """Temporal's replay compares commands; this compares what each replayed step asks for
    with what the recorded step got, while the process's wall clock is a day ahead."""
    durable = c.runs.durable()
    if not durable.replay_differences:
        if durable.replay_compared == 0 and durable.history and durable.history.steps:
            raise c.fail(
                "replaying the recorded history",
                f"its {len(durable.history.steps)} step requests made again",
                durable.replay_failure or "none compared",
            )
        return
    first = durable.replay_differences[0]
    clock = (
        f" (wall clock moved {DEFAULT_CLOCK_SHIFT} ahead)" if durable.replay_clock_shifted else ""
    )
    more = len(durable.replay_differences) - 1
    if first.kind == "missing":
        raise c.fail(
            f"step #{first.index} {first.name}, replayed{clock}",
            "requested again, as recorded",
            "not requested on replay",
        )
    raise c.fail(
        f"step #{first.index} {first.name} (step {first.step}), replayed{clock}: request "
        f"field {first.path}",
        f"the recorded {first.recorded}",
        f"{first.replayed}" + (f" ({more} more step(s) differ)" if more else ""),
        "the loop must ask for the same steps with the same inputs when replayed: no wall "
        "clock (session.now()), no uuid4() (session.uuid()), tool calls started in the "
        "model's order; a resumed run otherwise hands results to the wrong calls",
    )


def once_per_run(c: Checker) -> None:
    """Each durable run has its own model server, so a server's requests are that run's."""
    reference = c.runs.plain().served()
    runs = [c.runs.durable()]
    if c.scenario.sweep:
        runs.append(c.runs.sweep())
    for obs in runs:
        served = obs.served()
        for lane, turn in sorted(set(reference) | set(served)):
            want, got = reference.get((lane, turn), 0), served.get((lane, turn), 0)
            if got < want:
                raise c.fail(
                    f"model call (lane {lane}, turn {turn}) of the {obs.label} (run {obs.run_id})",
                    f"made by this run: answered {want} time(s) by the provider, as in the "
                    "plain run",
                    f"answered {got} time(s): the run got its reply without asking",
                    "a reply was reused from another run (a process-wide cache?): every run "
                    "makes each of its own model calls exactly once",
                )
            if got > want:
                raise c.fail(
                    f"model call (lane {lane}, turn {turn}) of the {obs.label} (run {obs.run_id})",
                    f"answered {want} time(s) by the provider, as in the plain run",
                    f"answered {got} times",
                    "a completed model call was made again",
                )


def usage_ledger(c: Checker) -> None:
    obs = c.runs.durable()
    where = f"the usage ledger of the {obs.label} (handle.usage())"
    ledger = obs.ledger
    if ledger is None:
        raise c.fail(where, "readable once the run ended", "none")
    served = sum(obs.served().values())
    served_in, served_out = obs.served_tokens
    hint = (
        "call session.add_usage once per model step with what the provider reported: "
        "requests=1, input_tokens, output_tokens (total_tokens is derived), model=..."
    )
    for key, want, got in (
        ("requests", served, ledger.requests),
        ("input_tokens", served_in, ledger.input_tokens),
        ("output_tokens", served_out, ledger.output_tokens),
        ("total_tokens", served_in + served_out, ledger.total_tokens),
    ):
        if want != got:
            raise c.fail(
                f"{where}: {key}",
                f"{want} (what the model server served this run)",
                f"{got}",
                hint,
            )
    budget = c.scenario.budget_tokens
    if budget is None:
        return
    if obs.error is None or obs.error_type != "BudgetExceeded":
        raise c.fail(
            f"the {obs.label} with Budget(max_tokens={budget})",
            "fails with BudgetExceeded",
            f"{obs.outcome()}" + (f" (type {obs.error_type})" if obs.error_type else ""),
            "the budget counts total_tokens from session.add_usage: report usage after "
            "every model step",
        )
    if served != 1:
        raise c.fail(
            f"the {obs.label} with Budget(max_tokens={budget})",
            "stops before the second model call (the first exceeds the budget)",
            f"{served} model calls served",
        )


STEP_KINDS = ("model", "tool", "mcp", "other")


def step_events_match(c: Checker) -> None:
    """Every step event names a step of the history; each step has one start and one end."""
    obs = c.runs.durable()
    where = f"the event log of the {obs.label}"
    events = obs.events
    if events is None:
        raise c.fail(where, "readable once the run ended", obs.events_error or "none")
    history = obs.history.steps if obs.history else []
    kinds: dict[int, str | None] = {}
    for i, scheduled in enumerate(history, start=1):
        number = scheduled.number if scheduled.number is not None else i
        kinds.setdefault(number, c.kit.pinned_steps.get(scheduled.name))
    hint = (
        "the run publishes <kind>.started and <kind>.finished for every step itself; an "
        "adapter must not publish its own (a UI would show every call twice)"
    )
    seen: dict[int, dict[str, list[int]]] = {n: {"started": [], "ended": []} for n in kinds}
    for e in events:
        kind, _, phase = e.type.partition(".")
        if kind not in STEP_KINDS or phase not in ("started", "finished", "failed"):
            continue
        step = e.data.get("step")
        if not isinstance(step, int) or step not in kinds:
            raise c.fail(
                f"{where}: {e.type} at #{e.offset}",
                f"a step event of one of the history's {len(kinds)} steps",
                f"step={step!r}, data {json.dumps(e.data, default=repr)[:200]}",
                hint,
            )
        if kinds[step] is not None and kinds[step] != kind:
            raise c.fail(
                f"{where}: {e.type} at #{e.offset}",
                f"step {step} is a {kinds[step]} step in the history",
                f"a {kind} event",
                hint,
            )
        seen[step]["started" if phase == "started" else "ended"].append(e.offset)
    for number, marks in sorted(seen.items()):
        if len(marks["started"]) != 1 or len(marks["ended"]) != 1:
            raise c.fail(
                f"{where}: step {number} ({kinds[number]})",
                "one started and one finished (or failed) event",
                f"{len(marks['started'])} started at {marks['started']}, "
                f"{len(marks['ended'])} ended at {marks['ended']}",
                hint,
            )


def stream_equals_plain(c: Checker) -> None:
    """A reader of the durable streamed run sees the plain streamed run's events: same
    types, same content, same order, same final output; also when every run task is
    replayed from an empty cache (a crash at every step boundary). Retracted model responses
    are dropped as the reader is told to (``StreamRetracted``)."""
    runs = c.runs
    try:
        plain = runs.get(
            "stream-plain", lambda: runs.harness.streamed(c.kit, c.scenario, mode="plain")
        )
    except NotImplementedError as exc:
        raise Skip(str(exc)) from None
    c.expected_outcome(plain)
    if not plain.stream:
        raise c.fail(f"the {plain.label}", "stream events", "none (the kit collected nothing)")
    for mode in ("durable", "sweep"):
        obs = runs.get(
            f"stream-{mode}",
            lambda mode=mode: runs.harness.streamed(c.kit, c.scenario, mode=mode),  # type: ignore[misc]
        )
        c.no_task_failures(obs)
        c.same_outcome(plain, obs)
        c.no_call_twice(obs)
        seen = obs.stream or []
        want = plain.stream
        for i, (a, b) in enumerate(zip(want, seen, strict=False)):
            if a != b:
                raise c.fail(
                    f"stream event #{i} of the {obs.label} (run {obs.run_id})",
                    f"the plain run's {json.dumps(a, default=repr)[:300]}",
                    f"{json.dumps(b, default=repr)[:300]}",
                    "the durable stream must yield the framework's own events, as the plain "
                    "run does, each once (a replayed step must not publish again)",
                )
        if len(seen) != len(want):
            extra = want[len(seen) :] or seen[len(want) :]
            raise c.fail(
                f"the stream of the {obs.label} (run {obs.run_id})",
                f"{len(want)} events, as the plain run",
                f"{len(seen)} events; first unmatched: {json.dumps(extra[0], default=repr)[:300]}"
                + (
                    f" ({obs.stream_retracted} retraction(s) applied)"
                    if obs.stream_retracted
                    else ""
                ),
            )


CHECKS: dict[str, Callable[..., None]] = {
    "durable_equals_plain": durable_equals_plain,
    "crash_every_boundary": crash_every_boundary,
    "crash_sigkill": crash_sigkill,
    "replay_deterministic": replay_deterministic,
    "step_names_pinned": step_names_pinned,
    "inputs_bounded": inputs_bounded,
    "approval_survives_restart": approval_survives_restart,
    "errors_classified": errors_classified,
    "events_once_in_order": events_once_in_order,
    "replay_inputs_equal": replay_inputs_equal,
    "once_per_run": once_per_run,
    "usage_ledger": usage_ledger,
    "step_events_match": step_events_match,
    "stream_equals_plain": stream_equals_plain,
}

assert set(CHECKS) == set(INVARIANT_BY_ID)
