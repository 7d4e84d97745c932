"""`tether replay-check`: before a deploy, would the new agent code break runs in flight?

Replays recorded runs (from the engine, or history files) against the agent code of this
checkout and reports, per run, ``ok`` or the first step whose request would differ, with
a diff. Exit status: 0 every run checked is ok, 1 some run would break or could not be
checked, 2 bad usage (made for CI).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.cli._common import add_connection, add_logging, as_durable, positive_int
from tether.errors import EngineUnavailableError, TetherError

if TYPE_CHECKING:
    from tether.core.replaycheck import Verdict


async def cmd_replay_check(args: argparse.Namespace) -> int:
    from tether.cli.runs import STATUSES, parse_since, parse_status

    status = parse_status(args.status)
    since = parse_since(args.since)
    files = [Path(f) for f in args.history_file]
    engine = bool(args.id or args.status or args.since or args.agent or not files)
    if args.agent is not None and ("'" in args.agent or "\\" in args.agent):
        raise TetherError(f"--agent {args.agent!r} contains a quote or backslash; remove it")
    from tether.core.replaycheck import history_from_file

    histories = [history_from_file(f) for f in files]  # bad files fail before any I/O
    loaded = _load_agents(args.agents)
    runtime: Any = None
    checks: list[Any] = []
    try:
        if engine:
            from tether.core.runtime import Runtime

            try:
                runtime = await Runtime.connect(
                    args.address, namespace=args.namespace, task_queue=args.task_queue
                )
            except EngineUnavailableError as exc:
                first = str(exc).split(". Fix:")[0]
                raise EngineUnavailableError(
                    f"{first}. Fix: point TEMPORAL_ADDRESS / --address at the engine whose "
                    "runs to check (replay-check never starts one), or check exported "
                    "histories with --history-file FILE"
                ) from None
            converter = runtime.client.data_converter
        else:
            from tether.core.replaycheck import offline_converter

            converter = await offline_converter()
        items = _items(
            runtime,
            histories,
            ids=args.id,
            status=STATUSES[status] if status else (None if since or files else "Running"),
            since=since,
            agent=args.agent,
            limit=args.limit,
            engine=engine,
        )
        async for item in items:
            check = await _check(item, converter, loaded, args.agent)
            if check is None:
                continue
            checks.append(check)
            if not args.json:
                _print(check)
    finally:
        if runtime is not None:
            await runtime.close()
    return _summary(checks, as_json=args.json)


def _load_agents(specs: Sequence[str]) -> dict[str, str]:
    """Register the agents ``specs`` name: {agent name: spec}."""
    loaded: dict[str, str] = {}
    for spec in specs:
        durable = as_durable(spec, local_worker=False)
        loaded[durable.name] = spec
    return loaded


async def _items(
    runtime: Any,
    histories: Sequence[Any],
    *,
    ids: Sequence[str],
    status: str | None,
    since: Any,
    agent: str | None,
    limit: int,
    engine: bool,
) -> AsyncIterator[Any]:
    from tether.core.replaycheck import HistoryItem, engine_histories, visibility_query

    for history in histories:
        yield HistoryItem(history.workflow_id, history)
    if not engine:
        return
    from tether.core import attributes

    indexed = await attributes.registered(runtime.client)
    query = visibility_query(status=status, since=since, agent=agent, indexed=indexed)
    async for item in engine_histories(runtime.client, ids=ids, query=query, limit=limit):
        yield item


async def _check(item: Any, converter: Any, loaded: dict[str, str], only: str | None) -> Any:
    """The verdict on one history (None: another agent's run, left out by --agent)."""
    from tether.core import registry
    from tether.core.replaycheck import RunCheck, check_history, recorded_request

    if item.history is None:
        return RunCheck(run_id=item.run_id, verdict="unchecked", reason=item.error)
    try:
        request = await recorded_request(item.history, converter)
    except ValueError as exc:
        return RunCheck(run_id=item.run_id, verdict="unchecked", reason=str(exc))
    if only is not None and request.agent != only:
        return None
    if request.agent not in registry.registered():
        problem = _load_recorded(request.agent, request.source)
        if problem is not None:
            verdict, reason = problem
            return RunCheck(
                run_id=item.run_id,
                verdict=verdict,
                agent=request.agent,
                source=request.source,
                reason=reason,
            )
    try:
        return await check_history(item.run_id, item.history, data_converter=converter)
    except Exception as exc:  # the replay itself could not run
        first = str(exc).splitlines()[0] if str(exc) else ""
        return RunCheck(
            run_id=item.run_id,
            verdict="unchecked",
            agent=request.agent,
            source=request.source,
            reason=f"the replay could not run ({type(exc).__name__}: {first[:300]})",
        )


def _load_recorded(agent: str, source: str | None) -> tuple[Verdict, str] | None:
    """Load the run's agent from its recorded MODULE:OBJECT: None when it is now registered,
    else (verdict, reason)."""
    from tether.core import registry

    if not source:
        return (
            "unchecked",
            f"its agent {agent!r} is not loaded and the run did not record where it is "
            f"defined. Fix: name it: tether replay-check MODULE:OBJECT ...",
        )
    try:
        durable = as_durable(source, local_worker=False)
    except Exception as exc:  # not importable, not an agent, another agent of that name
        return (
            "unchecked",
            f"its agent {agent!r} could not be loaded from its recorded source {source}: {exc}. "
            "Fix: run from the directory that holds it, or name it: "
            "tether replay-check MODULE:OBJECT ...",
        )
    if agent not in registry.registered():
        return (
            "breaks",
            f"its agent {agent!r} is not defined by {source} any more (it defines "
            f"{durable.name!r}): the run cannot resume on workers of this code",
        )
    return None


def _print(check: Any) -> None:
    agent = f" [{check.agent}]" if check.agent else ""
    if check.verdict == "ok":
        print(f"ok           {check.run_id}{agent}: {check.compared} steps replay as recorded")
    elif check.verdict == "breaks":
        print(f"WOULD BREAK  {check.run_id}{agent}: {check.reason}")
        if check.diff:
            for line in check.diff.splitlines():
                print(f"    {line}")
    else:
        print(f"NOT CHECKED  {check.run_id}{agent}: {check.reason}")
    sys.stdout.flush()


def _summary(checks: Sequence[Any], *, as_json: bool) -> int:
    counts = {v: sum(1 for c in checks if c.verdict == v) for v in ("ok", "breaks", "unchecked")}
    code = 1 if counts["breaks"] or counts["unchecked"] else 0
    if as_json:
        summary = {
            "ok": code == 0,
            "counts": {
                "ok": counts["ok"],
                "breaks": counts["breaks"],
                "unchecked": counts["unchecked"],
            },
            "runs": [c.to_json() for c in checks],
        }
        print(json.dumps(summary))
        return code
    if not checks:
        print("no runs to check", file=sys.stderr)
        return 0
    print(
        f"{len(checks)} run(s): {counts['ok']} ok, {counts['breaks']} would break, "
        f"{counts['unchecked']} could not be checked",
        file=sys.stderr,
    )
    return code


def register(sub: Any) -> None:
    """Add this group's commands to the `tether` parser."""
    p = sub.add_parser(
        "replay-check",
        help="would this checkout's agent code break recorded runs? (run it before a deploy)",
        description=(
            "Replay recorded runs against the agent code of this checkout and report, per "
            "run, ok or the first step whose input would differ. Default: the running runs. "
            "Exit status 0: all ok; 1: some run would break or could not be checked; "
            "2: bad usage."
        ),
    )
    p.add_argument(
        "agents",
        nargs="*",
        metavar="MODULE:OBJECT",
        help="agents to check the runs against (default: each run's recorded MODULE:OBJECT)",
    )
    p.add_argument(
        "--id", action="append", default=[], metavar="RUN", help="a run to check (repeatable)"
    )
    p.add_argument(
        "--status",
        help="check runs in this status (running, completed, failed, ...; default: running)",
    )
    p.add_argument("--since", help="check runs started since: 30m, 24h, 7d or an ISO date")
    p.add_argument("--agent", metavar="NAME", help="only the runs of this agent")
    p.add_argument(
        "--limit", type=positive_int, default=100, help="check at most N runs (default 100)"
    )
    p.add_argument(
        "--history-file",
        action="append",
        default=[],
        metavar="FILE",
        help="a history exported with `temporal workflow show -w RUN -o json` (repeatable; "
        "with no other selection, the engine is not contacted)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object on stdout (for CI)")
    add_connection(p)
    add_logging(p, "warning")
    p.set_defaults(func=cmd_replay_check, is_async=True)
