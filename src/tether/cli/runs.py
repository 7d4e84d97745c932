"""`tether runs ...` and `tether approve`: operating runs from the terminal."""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from tether.cli._common import (
    add_connection,
    follow_events,
    jsonable,
    non_negative_int,
    positive_int,
    runtime_from,
    seconds,
    table,
)
from tether.errors import ConfigurationError, TetherError

STATUSES = {
    "running": "Running",
    "waiting": "Running",
    "completed": "Completed",
    "failed": "Failed",
    "cancelled": "Canceled",
    "terminated": "Terminated",
    "timed_out": "TimedOut",
}
"""``--status`` values and the Temporal execution status each reads (``waiting`` is a Tether
phase of a running run, kept in the TetherPhase search attribute)."""


def parse_status(value: str | None) -> str | None:
    if value is None:
        return None
    status = value.strip().lower().replace("-", "_").replace("canceled", "cancelled")
    if status not in STATUSES:
        raise ConfigurationError(
            f"--status {value!r} is not a run status. Fix: use one of {', '.join(STATUSES)}"
        )
    return status


def parse_since(value: str | None, now: datetime | None = None) -> datetime | None:
    """``30m``, ``1h``, ``2d``, ``45s``, ``1w`` before now, or an ISO date/time (UTC if naive)."""
    if value is None:
        return None
    now = now or datetime.now(UTC)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", value.lower())
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
        return now - timedelta(seconds=float(m.group(1)) * unit)
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConfigurationError(
            f"--since {value!r} is neither a duration nor a date. Fix: use e.g. 30m, 1h, 2d "
            "or an ISO date such as 2026-11-25 or 2026-11-25T08:00"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _literal(value: str, option: str) -> str:
    if "'" in value or "\\" in value:
        raise ConfigurationError(f"{option} {value!r} contains a quote or backslash; remove it")
    return f"'{value}'"


async def cmd_runs_list(args: argparse.Namespace) -> int:
    from tether.core import attributes
    from tether.core.handle import get_run
    from tether.core.ops import status_name
    from tether.core.run import WORKFLOW_NAME

    status = parse_status(args.status)
    since = parse_since(args.since)
    agent = args.agent
    if agent is not None:
        _literal(agent, "--agent")
    runtime = await runtime_from(args)
    try:
        indexed = await attributes.registered(runtime.client)
        query = f"WorkflowType = '{WORKFLOW_NAME}'"
        if status is not None:
            query += f" AND ExecutionStatus = '{STATUSES[status]}'"
            if indexed and status == "waiting":
                query += " AND TetherPhase = 'waiting'"
            elif indexed and status == "running":
                query += " AND (TetherPhase IS NULL OR TetherPhase != 'waiting')"
        if agent is not None and indexed:
            query += f" AND TetherAgent = {_literal(agent, '--agent')}"
        if since is not None:
            query += f" AND StartTime >= '{since.isoformat()}'"
        # Without the search attributes, --agent and running/waiting read each run.
        exact = indexed or (agent is None and status not in ("running", "waiting"))
        rows: list[tuple[str, ...]] = []
        limit = args.limit if exact else None
        async for wf in runtime.client.list_workflows(query, limit=limit):
            name = wf.typed_search_attributes.get(attributes.AGENT)
            if name is None:
                memo = await wf.memo()
                name = memo.get("agent") if isinstance(memo.get("agent"), str) else None
            if agent is not None and name != agent:
                continue
            shown = status_name(wf.status)
            if shown == "running":
                phase = wf.typed_search_attributes.get(attributes.PHASE)
                if phase is None and not indexed:
                    phase = (await (await get_run(wf.id, runtime)).describe()).status
                shown = "waiting" if phase == "waiting" else "running"
            if status is not None and shown != status:
                continue
            started = wf.start_time.strftime("%Y-%m-%d %H:%M:%S") if wf.start_time else "-"
            took = (
                f"{(wf.close_time - wf.start_time).total_seconds():.1f}s"
                if wf.close_time and wf.start_time
                else "-"
            )
            rows.append((wf.id, shown, started, took, name or "?"))
            if len(rows) >= args.limit:
                break
        if not rows:
            print("no runs")
            return 0
        table(("RUN", "STATUS", "STARTED (UTC)", "TOOK", "AGENT"), rows)
        return 0
    finally:
        await runtime.close()


async def cmd_runs_show(args: argparse.Namespace) -> int:
    import dataclasses

    from tether.core.handle import get_run

    runtime = await runtime_from(args)
    try:
        handle = await get_run(args.run_id, runtime)
        desc = await handle.describe()
        timeline, first = desc.timeline, desc.timeline_total - len(desc.timeline)
        usage = desc.ledger.steps if desc.ledger else []
        if args.from_step is not None:
            page = await handle.timeline(args.from_step, args.limit)
            timeline, first, usage = page.entries, page.offset, page.usage
            desc = dataclasses.replace(desc, timeline=timeline)
        if args.json:
            from dataclasses import asdict

            print(json.dumps(jsonable(asdict(desc)), indent=2))
            return 0
        print(f"run      {desc.run_id}")
        print(f"agent    {desc.agent or '?'}")
        print(f"status   {desc.status}")
        print(f"started  {desc.started or '-'}   closed {desc.closed or '-'}")
        if desc.problem:
            print(f"problem  {desc.problem}")
        if desc.error:
            print(f"error    {desc.error}")
        tokens = {s.step: s for s in usage}
        rows = []
        for t in timeline:
            u = tokens.get(t["step"])
            rows.append(
                (
                    str(t["step"]),
                    t["summary"],
                    f"{seconds(t['started'], t['finished']):.2f}s",
                    str(t["attempts"]),
                    f"{u.input_tokens}/{u.output_tokens}" if u else "",
                    f"${u.cost:.6f}" if u and u.cost is not None else "",
                    "failed" if t["failed"] else ("error" if t.get("error") else "ok"),
                )
            )
        if rows:
            print()
            table(("#", "STEP", "TOOK", "ATTEMPTS", "TOKENS IN/OUT", "COST", ""), rows)
        if len(timeline) < desc.timeline_total:
            print(
                f"  (timeline entries {first}-{first + len(timeline) - 1} of "
                f"{desc.timeline_total}; `tether runs show {desc.run_id} --from N` shows others)"
            )
        for w in desc.waits:
            verdict = (
                "approved"
                if w.get("approved") is True
                else "denied"
                if w.get("approved") is False
                else f"answered {w.get('value')!r}"
            )
            why = f" ({w['reason']})" if w.get("reason") else ""
            waited = seconds(w["asked_at"], w["answered_at"])
            print(
                f"  wait {w['id']}: {w['kind']} {w.get('tool') or ''} -> {verdict}{why} "
                f"after {waited:.1f}s"
            )
        for p in desc.pending:
            print(f"  WAITING {p.id}: {p.kind} {p.tool or p.question} {p.args or ''}")
        for attempt in desc.attempts:
            print(f"NOW      {attempt.describe()}")
        if desc.task_attempt > 1:
            print(
                f"NOW      run task: attempt {desc.task_attempt} (the run's own code fails on "
                "the worker; its log says why)"
            )
        if desc.ledger:
            total = desc.ledger
            cost = f"${total.cost:.6f}" if total.cost is not None else "unknown (model not priced)"
            # Attempts of steps still retrying are not in the ledger until the step ends.
            retrying = sum(a.attempt - 1 for a in desc.attempts if a.attempt > 1)
            more = f" (+{retrying} of steps still retrying, above)" if retrying else ""
            print(
                f"\ntotal    {total.requests} model requests, {total.input_tokens} in / "
                f"{total.output_tokens} out tokens, cost {cost}, "
                f"{total.failed_attempts} failed attempts{more}"
            )
        for f in desc.failures:
            print(f"  failure: {f.get('step')}: {f.get('type')}: {f.get('message')}")
        return 0
    finally:
        await runtime.close()


async def cmd_runs_pending(args: argparse.Namespace) -> int:
    from tether.core.handle import get_run

    runtime = await runtime_from(args)
    try:
        pending = await (await get_run(args.run_id, runtime)).pending()
        if args.json:
            from dataclasses import asdict

            print(json.dumps([asdict(p) for p in pending], indent=2))
            return 0
        if not pending:
            print(f"run {args.run_id} waits for nothing")
            return 0
        for p in pending:
            what = (
                f"approve {p.tool}({json.dumps(p.args)})"
                if p.kind == "approval"
                else f"answer {p.question!r}"
            )
            print(f"{p.id}  {p.kind}  {what}  (asked {p.asked_at})")
        return 0
    finally:
        await runtime.close()


async def cmd_approve(args: argparse.Namespace) -> int:
    from tether.core.handle import get_run

    if args.answer is not None and args.deny:
        raise TetherError("pass --answer (a question) or --deny (an approval), not both")
    runtime = await runtime_from(args)
    try:
        handle = await get_run(args.run_id, runtime)
        if args.answer is not None:
            await handle.answer(args.request_id, args.answer)
            print(f"answered {args.request_id}: {args.answer!r}")
        elif args.deny:
            await handle.deny(args.request_id, args.reason)
            print(f"denied {args.request_id}" + (f": {args.reason}" if args.reason else ""))
        else:
            await handle.approve(args.request_id, reason=args.reason)
            print(f"approved {args.request_id}")
        return 0
    finally:
        await runtime.close()


async def cmd_runs_follow(args: argparse.Namespace) -> int:

    from tether.core.handle import get_run

    runtime = await runtime_from(args)
    try:
        handle = await get_run(args.run_id, runtime)
        desc = await handle.describe()  # RunNotFoundError before anything is printed
        print(f"run {handle.id} ({desc.agent or '?'}): {desc.status}", file=sys.stderr)
        last = await follow_events(handle, after=args.after, out=sys.stdout)
        if last is None and desc.status != "running":
            print(
                "(no events shown: an ended run's events are read through a worker that "
                "hosts its agent, and none answered. Fix: start one, `tether worker "
                "MODULE:OBJECT`, and follow again)",
                file=sys.stderr,
            )
        result = _final_output(await handle.result())  # RunFailedError for a failed run
        print(result if isinstance(result, str) else json.dumps(jsonable(result), indent=2))
        return 0
    finally:
        await runtime.close()


def _final_output(raw: Any) -> Any:
    """The answer in a run's JSON output (adapters keep it under final_output / output)."""
    from tether.core.values import unpack

    for key in ("final_output", "output"):
        if isinstance(raw, dict) and key in raw:
            try:
                return unpack(raw[key])
            except Exception:
                return raw[key]
    return raw


async def _wait_closed(handle: Any, timeout: float) -> str:
    import asyncio

    from tether.core.ops import status_name

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status = status_name((await handle._handle.describe()).status)
        if status != "running" or loop.time() > deadline:
            return status
        await asyncio.sleep(0.25)


async def cmd_runs_cancel(args: argparse.Namespace) -> int:

    from tether.core.handle import get_run

    runtime = await runtime_from(args)
    try:
        handle = await get_run(args.run_id, runtime)
        await handle.cancel()
        print(
            f"cancel requested for run {handle.id}: a step in flight is told to stop at its "
            "next heartbeat (its result is discarded); the run ends cancelled"
        )
        if args.wait:
            print(f"run {handle.id}: {await _wait_closed(handle, args.timeout)}")
        return 0
    finally:
        await runtime.close()


async def cmd_runs_terminate(args: argparse.Namespace) -> int:

    from tether.core.handle import get_run

    runtime = await runtime_from(args)
    try:
        handle = await get_run(args.run_id, runtime)
        await handle.terminate(args.reason)
        why = f" ({args.reason})" if args.reason else ""
        print(f"terminated run {handle.id}{why}; `tether runs retry {handle.id}` resumes it")
        return 0
    finally:
        await runtime.close()


async def cmd_runs_retry(args: argparse.Namespace) -> int:
    from tether.core.handle import get_run

    runtime = await runtime_from(args)
    try:
        handle = await (await get_run(args.run_id, runtime)).retry(from_start=args.from_start)
        print(f"run {handle.id} retried: {handle.note}")
        print(f"follow it: tether runs follow {handle.id}")
        return 0
    finally:
        await runtime.close()


async def cmd_runs_setup(args: argparse.Namespace) -> int:
    from tether.core import attributes

    runtime = await runtime_from(args)
    try:
        client = runtime.client
        added = await attributes.register(client)
        names = ", ".join(attributes.NAMES)
        if added:
            print(f"registered {', '.join(added)} (Keyword) in namespace {client.namespace!r}")
        else:
            print(f"{names} are already registered in namespace {client.namespace!r}")
        return 0
    finally:
        await runtime.close()


def register(sub: Any) -> None:
    """Add this group's commands to the `tether` parser."""
    runs = sub.add_parser(
        "runs", help="list, show, follow, cancel, terminate and retry runs; see what one waits for"
    )
    runs_sub = runs.add_subparsers(dest="runs_command", required=True)
    p = runs_sub.add_parser("list", help="recent runs with their status")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--status", help=f"only runs in this status: {', '.join(STATUSES)}")
    p.add_argument("--agent", help="only runs of this agent (its registered name)")
    p.add_argument("--since", help="only runs started since: 30m, 1h, 2d, or an ISO date")
    add_connection(p)
    p.set_defaults(func=cmd_runs_list, is_async=True)
    p = runs_sub.add_parser("follow", help="print a run's events live, then its result")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("--after", type=int, help="resume after this event offset")
    add_connection(p)
    p.set_defaults(func=cmd_runs_follow, is_async=True)
    p = runs_sub.add_parser("cancel", help="cancel a run (graceful: it ends cancelled)")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("--wait", action="store_true", help="wait until the run has ended")
    p.add_argument("--timeout", type=float, default=60.0, help="with --wait: seconds")
    add_connection(p)
    p.set_defaults(func=cmd_runs_cancel, is_async=True)
    p = runs_sub.add_parser("terminate", help="end a run at once (no cleanup)")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("--reason", help="recorded on the run")
    add_connection(p)
    p.set_defaults(func=cmd_runs_terminate, is_async=True)
    p = runs_sub.add_parser(
        "retry", help="run a failed/cancelled/terminated run again from its failed step"
    )
    p.add_argument("run_id", metavar="RUN")
    p.add_argument(
        "--from-start", action="store_true", help="start over with the same input instead"
    )
    add_connection(p)
    p.set_defaults(func=cmd_runs_retry, is_async=True)
    p = runs_sub.add_parser(
        "setup", help="register the TetherAgent/TetherAdapter/TetherPhase search attributes"
    )
    add_connection(p)
    p.set_defaults(func=cmd_runs_setup, is_async=True)
    p = runs_sub.add_parser("show", help="a run's steps, timings, tokens, cost and waits")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--from",
        dest="from_step",
        type=non_negative_int,
        help="show the timeline from this entry on (0: the first step); default: the latest",
    )
    p.add_argument(
        "--limit",
        type=positive_int,
        default=100,
        help="timeline entries shown with --from (default 100, at most 1000)",
    )
    add_connection(p)
    p.set_defaults(func=cmd_runs_show, is_async=True)
    p = runs_sub.add_parser("pending", help="what a run waits for (approvals, questions)")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("--json", action="store_true")
    add_connection(p)
    p.set_defaults(func=cmd_runs_pending, is_async=True)

    p = sub.add_parser("approve", help="approve (or --deny, or --answer) what a run waits for")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("request_id", metavar="CALL", help="the request id (`tether runs pending`)")
    p.add_argument("--deny", action="store_true", help="deny: the tool never runs")
    p.add_argument("--reason", help="why (the model is told when denied)")
    p.add_argument("--answer", help="answer a question (tether.ask_human) with this text")
    add_connection(p)
    p.set_defaults(func=cmd_approve, is_async=True)
