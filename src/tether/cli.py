"""`tether`: run the engine, host agents, start runs, list plugins, show the demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import json
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tether.errors import TetherError


def load_object(spec: str) -> object:
    """Import ``module:attribute`` (dots in the attribute walk into it)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise TetherError(
            f"{spec!r} is not of the form MODULE:OBJECT (e.g. myapp.agents:weather_agent)"
        )
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise TetherError(f"cannot import module {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise TetherError(f"module {module_name!r} has no attribute {attr!r}") from None
    return target


def as_durable(obj: object, **kwargs: Any) -> Any:
    from tether.core.handle import DurableAgent, durable

    if isinstance(obj, DurableAgent):
        return obj
    return durable(obj, **kwargs)


async def _runtime(args: argparse.Namespace) -> Any:
    from tether.core.runtime import Runtime

    return await Runtime.start(
        address=args.address, namespace=args.namespace, task_queue=args.task_queue
    )


# -- tether dev -----------------------------------------------------------------------------


async def cmd_dev(args: argparse.Namespace) -> int:
    from tether.core.devserver import EmbeddedEngine

    engine = EmbeddedEngine(
        port=args.port, ui_port=args.ui_port, state_dir=args.state_dir, persist=not args.memory
    )
    await engine.start()
    print(f"Temporal engine on {engine.address} (namespace {engine.namespace})")
    if engine.ui_url:
        print(f"Web UI: {engine.ui_url}")
    print(f"State: {engine.db_path or 'in memory'}   Stop with Ctrl-C.", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():
            if engine.process is not None and engine.process.poll() is not None:
                print(f"engine exited:\n{engine.log_tail()}", file=sys.stderr)
                return 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        engine.stop()
    return 0


# -- tether worker --------------------------------------------------------------------------


async def cmd_worker(args: argparse.Namespace) -> int:
    durables = [as_durable(load_object(spec), local_worker=False) for spec in args.agents]
    runtime = await _runtime(args)
    worker = runtime.worker(max_cached_runs=args.max_cached_runs)
    names = ", ".join(f"{d.name} ({d.adapter.name})" for d in durables)
    print(
        f"worker on {runtime.client.service_client.config.target_host} "
        f"task queue {runtime.task_queue!r}: {names}",
        flush=True,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(worker.shutdown()))
    try:
        await worker.run()
    finally:
        await runtime.close()
    return 0


# -- tether run -----------------------------------------------------------------------------


async def _has_pollers(runtime: Any) -> bool:
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    resp = await runtime.client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=runtime.client.namespace,
            task_queue=TaskQueue(name=runtime.task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return len(resp.pollers) > 0


async def cmd_run(args: argparse.Namespace) -> int:
    durable = as_durable(load_object(args.agent), local_worker=False)
    runtime = await _runtime(args)
    durable._runtime = runtime
    try:
        if args.local_worker or not await _has_pollers(runtime):
            if not args.local_worker:
                print(
                    f"no worker polls task queue {runtime.task_queue!r}: hosting the agent in "
                    "this process (start `tether worker` to run it elsewhere)",
                    file=sys.stderr,
                )
            await runtime.ensure_local_worker()
        options: dict[str, Any] = {}
        if args.max_turns is not None:
            options["max_turns"] = args.max_turns
        context = json.loads(args.context) if args.context else None
        from tether.core.contract import Budget, WaitPolicy

        if args.max_tokens is not None or args.max_cost is not None:
            options["budget"] = Budget(max_tokens=args.max_tokens, max_cost=args.max_cost)
        if args.wait_timeout is not None:
            options["waits"] = WaitPolicy(timeout=args.wait_timeout, on_timeout=args.on_timeout)
        if args.follow:
            options["stream_text"] = True  # model text as it is generated
        handle = await durable.start(args.prompt, id=args.id, context=context, **options)
        print(f"run {handle.id} started", file=sys.stderr, flush=True)
        if args.no_wait:
            print(handle.id)
            return 0
        if args.follow:
            result = await _follow_events(handle)
        else:
            result = await _follow(handle, quiet=args.quiet)
        output = getattr(result, "final_output", getattr(result, "output", result))
        print(output if isinstance(output, str) else json.dumps(_jsonable(output), indent=2))
        return 0
    finally:
        await runtime.close()


async def _follow(handle: Any, *, quiet: bool = False) -> Any:
    """Await the result, printing each step as the run reports it."""
    task = asyncio.ensure_future(handle.result())
    last = (-1, None)
    start = time.monotonic()
    while not task.done():
        await asyncio.wait({task}, timeout=0.5)
        if quiet or task.done():
            continue
        try:
            desc = await handle.describe()
        except Exception:
            continue
        now = (desc.steps, desc.current_step)
        if now != last:
            last = now
            current = f", now {desc.current_step}" if desc.current_step else ""
            print(
                f"  [{time.monotonic() - start:5.1f}s] {desc.steps} steps done{current}",
                file=sys.stderr,
                flush=True,
            )
    return task.result()


async def _follow_events(handle: Any) -> Any:
    """Print the run's events live (stderr) until it ends; return its result."""
    streaming = False
    async for event in handle.events():
        if event.type == "model.delta":
            if not streaming:
                print(
                    f"  {event.time[11:23]} #{event.offset} model text: ", end="", file=sys.stderr
                )
                streaming = True
            print(event.data.get("text", ""), end="", file=sys.stderr, flush=True)
            continue
        if streaming:
            print(file=sys.stderr)
            streaming = False
        print(f"  {event.time[11:23]} {event.describe()}", file=sys.stderr, flush=True)
        if event.type in ("approval.requested", "question.asked"):
            verb = "--answer TEXT" if event.type == "question.asked" else "[--deny --reason R]"
            print(
                f"    -> tether approve {handle.id} {event.data['id']} {verb}",
                file=sys.stderr,
                flush=True,
            )
    return await handle.result()


def _jsonable(value: Any) -> Any:
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(value)


# -- tether runs / tether approve -----------------------------------------------------------


async def cmd_runs_list(args: argparse.Namespace) -> int:
    from tether.core.handle import get_run
    from tether.core.run import WORKFLOW_NAME

    runtime = await _runtime(args)
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
        _table(("RUN", "STATUS", "STARTED (UTC)", "TOOK"), rows)
        return 0
    finally:
        await runtime.close()


async def cmd_runs_show(args: argparse.Namespace) -> int:
    from tether.core.handle import get_run

    runtime = await _runtime(args)
    try:
        desc = await (await get_run(args.run_id, runtime)).describe()
        if args.json:
            from dataclasses import asdict

            print(json.dumps(_jsonable(asdict(desc)), indent=2))
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
                    f"{_seconds(t['started'], t['finished']):.2f}s",
                    str(t["attempts"]),
                    f"{u.input_tokens}/{u.output_tokens}" if u else "",
                    f"${u.cost:.6f}" if u and u.cost is not None else "",
                    "failed" if t["failed"] else ("error" if t.get("error") else "ok"),
                )
            )
        if rows:
            print()
            _table(("#", "STEP", "TOOK", "ATTEMPTS", "TOKENS IN/OUT", "COST", ""), rows)
        for w in desc.waits:
            verdict = (
                "approved"
                if w.get("approved") is True
                else "denied"
                if w.get("approved") is False
                else f"answered {w.get('value')!r}"
            )
            why = f" ({w['reason']})" if w.get("reason") else ""
            waited = _seconds(w["asked_at"], w["answered_at"])
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

    runtime = await _runtime(args)
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
    runtime = await _runtime(args)
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


def _seconds(start: str, end: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


# -- tether plugins -------------------------------------------------------------------------


def cmd_plugins(args: argparse.Namespace) -> int:
    from tether.plugins import installed

    report = installed()
    rows: list[dict[str, Any]] = []
    for adapter in report.adapters.values():
        rows.append(
            {
                "name": adapter.name,
                "status": "available",
                "framework": adapter.framework,
                "framework_version": adapter.framework_version(),
                "verified_versions": adapter.verified_versions,
                "capabilities": sorted(c.value for c in adapter.capabilities),
                "steps": [s.name for s in adapter.steps()],
            }
        )
    for name, why in report.unavailable.items():
        rows.append({"name": name, "status": "unavailable", "reason": why})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        if row["status"] == "available":
            print(
                f"{row['name']}: {row['framework']} {row['framework_version']} "
                f"(verified {row['verified_versions']})"
            )
            print(f"  capabilities: {', '.join(row['capabilities'])}")
            print(f"  steps: {', '.join(row['steps'])}")
        else:
            print(f"{row['name']}: unavailable: {row['reason']}")
    return 0


# -- tether demo ----------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from tether._demo import run_demo

    return asyncio.run(run_demo(kill_after=args.kill_after, state_dir=args.state_dir))


# -- tether conformance ---------------------------------------------------------------------


def cmd_conformance(args: argparse.Namespace) -> int:
    """Run the conformance suite (pytest in a subprocess) and print the report table."""
    import importlib.util
    import os
    import subprocess
    import tempfile

    from tether.conformance_tests._discovery import find_kit, kits, load_plugins
    from tether.conformance_tests._report import failed, render

    if importlib.util.find_spec("pytest") is None:
        raise TetherError(
            "the conformance suite runs on pytest, which is not installed. "
            "Fix: pip install 'tether[conformance]'"
        )
    load_plugins(args.plugins)
    found, broken = kits()
    adapters = args.adapters or sorted(found)
    for name in adapters:
        find_kit(name)  # a clear error naming the installed kits
    if not adapters:
        why = "".join(f"; {n}: {r}" for n, r in broken.items())
        raise TetherError(f"no installed adapter has a conformance kit{why}")
    with tempfile.TemporaryDirectory(prefix="tether-conformance-") as tmp:
        # An empty ini in an empty directory: the caller's pytest configuration stays out.
        Path(tmp, "pytest.ini").write_text("[pytest]\n")
        report_json = Path(tmp, "report.json")
        cmd = [sys.executable, "-m", "pytest", "-p", "tether.conformance_tests"]
        cmd += ["-p", "no:cacheprovider", "-p", "no:asyncio", "-q"]
        cmd += ["--tether-sigkill", args.sigkill]
        cmd += ["--tether-report-json", str(report_json)]
        for name in adapters:
            cmd += ["--tether-adapter", name]
        if args.plugins:
            cmd += ["--tether-plugins", args.plugins]
        if args.k:
            cmd += ["-k", args.k]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in [os.getcwd(), env.get("PYTHONPATH", "")] if p
        )
        out = None if args.verbose else subprocess.DEVNULL
        print(f"running: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, cwd=tmp, env=env, stdout=out, check=False)
        if not report_json.exists():
            print(f"the suite did not run (pytest exit {proc.returncode})", file=sys.stderr)
            return proc.returncode or 2
        rows = json.loads(report_json.read_text())
    if proc.returncode not in (0, 1, 5):
        print(f"pytest ended with exit status {proc.returncode}; rerun with -v", file=sys.stderr)
    text = render(rows)
    print(text)
    if args.report:
        Path(args.report).write_text(text + "\n")
        print(f"report written to {args.report}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 1 if failed(rows) or proc.returncode not in (0, 5) else 0


# -- entry point ----------------------------------------------------------------------------


def _add_connection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="Temporal host:port (default: env config, else embedded)")
    p.add_argument("--namespace", help="Temporal namespace (default: env config or 'default')")
    p.add_argument("--task-queue", help="task queue (default: $TETHER_TASK_QUEUE or 'tether')")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tether", description="Durable execution for AI agents, on Temporal."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("dev", help="run the embedded Temporal engine in the foreground")
    p.add_argument("--port", type=int, default=7233)
    p.add_argument("--ui-port", type=int, default=8233)
    p.add_argument("--state-dir", type=Path, default=None, help="default: $TETHER_HOME")
    p.add_argument("--memory", action="store_true", help="keep runs in memory only")
    p.set_defaults(func=cmd_dev, is_async=True)

    p = sub.add_parser("worker", help="host agents: tether worker MODULE:OBJECT ...")
    p.add_argument("agents", nargs="+", metavar="MODULE:OBJECT")
    p.add_argument("--max-cached-runs", type=int, default=1000)
    _add_connection(p)
    p.set_defaults(func=cmd_worker, is_async=True)

    p = sub.add_parser("run", help='start a run: tether run MODULE:OBJECT "prompt"')
    p.add_argument("agent", metavar="MODULE:OBJECT")
    p.add_argument("prompt")
    p.add_argument("--id", help="run id (idempotent: the same id never runs twice)")
    p.add_argument("--context", help="run context / deps as JSON")
    p.add_argument("--max-turns", type=int)
    p.add_argument("--no-wait", action="store_true", help="print the run id and return")
    p.add_argument("--local-worker", action="store_true", help="host the agent in this process")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--max-tokens", type=int, help="budget: stop the run past this many tokens")
    p.add_argument("--max-cost", type=float, help="budget: stop the run past this many US$")
    p.add_argument("--wait-timeout", type=float, help="seconds an approval/question may wait")
    p.add_argument(
        "--on-timeout",
        choices=["deny", "fail", "default"],
        default="deny",
        help="what a timed-out wait does (default: deny)",
    )
    p.add_argument(
        "--follow",
        action="store_true",
        help="print the run's events live (tool calls, approvals, usage) until it ends",
    )
    _add_connection(p)
    p.set_defaults(func=cmd_run, is_async=True)

    runs = sub.add_parser("runs", help="list runs, show one, see what it waits for")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True)
    p = runs_sub.add_parser("list", help="recent runs with their status")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--status", help="only runs in this status (running, completed, failed)")
    _add_connection(p)
    p.set_defaults(func=cmd_runs_list, is_async=True)
    p = runs_sub.add_parser("show", help="a run's steps, timings, tokens, cost and waits")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("--json", action="store_true")
    _add_connection(p)
    p.set_defaults(func=cmd_runs_show, is_async=True)
    p = runs_sub.add_parser("pending", help="what a run waits for (approvals, questions)")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("--json", action="store_true")
    _add_connection(p)
    p.set_defaults(func=cmd_runs_pending, is_async=True)

    p = sub.add_parser("approve", help="approve (or --deny, or --answer) what a run waits for")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("request_id", metavar="CALL", help="the request id (`tether runs pending`)")
    p.add_argument("--deny", action="store_true", help="deny: the tool never runs")
    p.add_argument("--reason", help="why (the model is told when denied)")
    p.add_argument("--answer", help="answer a question (tether.ask_human) with this text")
    _add_connection(p)
    p.set_defaults(func=cmd_approve, is_async=True)

    p = sub.add_parser("plugins", help="list installed adapters")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plugins, is_async=False)

    p = sub.add_parser("conformance", help="run the conformance suite against installed adapters")
    p.add_argument("adapters", nargs="*", metavar="ADAPTER", help="default: every installed kit")
    p.add_argument("--report", help="also write the report (Markdown) to this file")
    p.add_argument(
        "--sigkill",
        choices=("none", "sample", "all"),
        default="sample",
        help="real SIGKILLed worker subprocesses: none, a sample (default), every boundary",
    )
    p.add_argument("--json", help="also write every item's outcome as JSON to this file")
    p.add_argument("-k", help="pytest -k expression selecting items")
    p.add_argument("--plugins", default="", help="extra plugin objects MODULE:OBJ[,...]")
    p.add_argument("-v", "--verbose", action="store_true", help="show pytest's output")
    p.set_defaults(func=cmd_conformance, is_async=False)

    p = sub.add_parser("demo", help="kill a worker mid-run and watch the run resume")
    p.add_argument("--kill-after", type=int, default=3, help="kill after this many steps")
    p.add_argument("--state-dir", type=Path, default=None, help="default: a temporary dir")
    p.set_defaults(func=cmd_demo, is_async=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.is_async:
            return int(asyncio.run(args.func(args)))
        return int(args.func(args))
    except TetherError as exc:
        print(f"tether: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        # An error's traceback cycle can hold the engine client until interpreter shutdown,
        # where dropping it aborts the process; drop it now.
        gc.collect()


if __name__ == "__main__":
    sys.exit(main())
