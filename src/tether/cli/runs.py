"""`tether runs ...` and `tether approve`: operating runs from the terminal."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tether.cli._common import add_connection, jsonable, runtime_from, seconds, table
from tether.errors import TetherError


async def cmd_runs_list(args: argparse.Namespace) -> int:
    from tether.core.handle import get_run
    from tether.core.run import WORKFLOW_NAME

    runtime = await runtime_from(args)
    try:
        query = f"WorkflowType = '{WORKFLOW_NAME}'"
        if args.status:
            query += f" AND ExecutionStatus = '{args.status.capitalize()}'"
        rows: list[tuple[str, ...]] = []
        async for wf in runtime.client.list_workflows(query, limit=args.limit):
            status = wf.status.name.lower() if wf.status else "unknown"
            if status == "running":
                desc = await (await get_run(wf.id, runtime)).describe()
                status = desc.status
            started = wf.start_time.strftime("%Y-%m-%d %H:%M:%S") if wf.start_time else "-"
            took = (
                f"{(wf.close_time - wf.start_time).total_seconds():.1f}s"
                if wf.close_time and wf.start_time
                else "-"
            )
            rows.append((wf.id, status, started, took))
        if not rows:
            print("no runs")
            return 0
        table(("RUN", "STATUS", "STARTED (UTC)", "TOOK"), rows)
        return 0
    finally:
        await runtime.close()


async def cmd_runs_show(args: argparse.Namespace) -> int:
    from tether.core.handle import get_run

    runtime = await runtime_from(args)
    try:
        desc = await (await get_run(args.run_id, runtime)).describe()
        if args.json:
            from dataclasses import asdict

            print(json.dumps(jsonable(asdict(desc)), indent=2))
            return 0
        print(f"run      {desc.run_id}")
        print(f"agent    {desc.agent or '?'}")
        print(f"status   {desc.status}")
        print(f"started  {desc.started or '-'}   closed {desc.closed or '-'}")
        tokens = {s.step: s for s in (desc.ledger.steps if desc.ledger else [])}
        rows = []
        for t in desc.timeline:
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
        if desc.ledger:
            total = desc.ledger
            cost = f"${total.cost:.6f}" if total.cost is not None else "unknown (model not priced)"
            print(
                f"\ntotal    {total.requests} model requests, {total.input_tokens} in / "
                f"{total.output_tokens} out tokens, cost {cost}, "
                f"{total.failed_attempts} failed attempts"
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


def register(sub: Any) -> None:
    """Add this group's commands to the `tether` parser."""
    runs = sub.add_parser("runs", help="list runs, show one, see what it waits for")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True)
    p = runs_sub.add_parser("list", help="recent runs with their status")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--status", help="only runs in this status (running, completed, failed)")
    add_connection(p)
    p.set_defaults(func=cmd_runs_list, is_async=True)
    p = runs_sub.add_parser("show", help="a run's steps, timings, tokens, cost and waits")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("--json", action="store_true")
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
