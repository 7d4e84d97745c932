"""`tether worker`, `tether run` and `tether demo`: hosting agents and starting runs."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from tether.cli._common import (
    add_connection,
    add_logging,
    ago,
    as_durable,
    follow_events,
    json_object,
    jsonable,
    positive_float,
    positive_int,
    read_prompt,
    runtime_from,
    utf8_text,
)


async def cmd_worker(args: argparse.Namespace) -> int:
    durables = [as_durable(spec, local_worker=False) for spec in args.agents]
    runtime = await runtime_from(args)
    worker = runtime.worker(
        max_cached_runs=args.max_cached_runs, max_concurrent_steps=args.max_concurrent_steps
    )
    names = ", ".join(f"{d.name} ({d.adapter.name}) on {d.queue(runtime)!r}" for d in durables)
    print(f"worker on {runtime.client.service_client.config.target_host}: {names}", flush=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(worker.shutdown()))
    try:
        await worker.run()
    finally:
        await runtime.close()
    return 0


STALL_CHECK = 1.0
"""How often `tether run` looks for work of its run that no live worker takes."""
STALLED_AFTER = 4.0
"""Work of the run scheduled this long and not taken: `tether run` hosts the agent itself."""


async def _host_when_unserved(handle: Any, runtime: Any, queue: str, spec: str) -> None:
    """Host the agent in this process once the run's work waits for a worker for longer
    than :data:`STALLED_AFTER` (no worker, or only dead ones the engine still lists)."""
    loop = asyncio.get_running_loop()
    seen: dict[str, float] = {}
    while not runtime.hosts(queue):
        await asyncio.sleep(STALL_CHECK)
        try:
            waiting = await handle.unserved_work()
        except Exception:
            continue
        now = loop.time()
        seen = {key: seen.get(key, now) for key in waiting}
        if any(now - since >= STALLED_AFTER for since in seen.values()):
            print(
                f"no live worker took run {handle.id}'s work on queue {queue!r} within "
                f"{STALLED_AFTER:.0f}s: hosting {spec} in this process",
                file=sys.stderr,
                flush=True,
            )
            await runtime.ensure_local_worker(queue)


async def cmd_run(args: argparse.Namespace) -> int:
    prompt = read_prompt(args.prompt, args.prompt_file)  # bad input fails before any I/O
    if args.id is not None:
        utf8_text(args.id, "--id")
    durable = as_durable(args.agent, local_worker=False)
    runtime = await runtime_from(args)
    durable._runtime = runtime
    queue = durable.queue(runtime)
    watchdog: asyncio.Task[None] | None = None
    try:
        if args.local_worker:
            await runtime.ensure_local_worker(queue)
        elif not args.no_local_worker and not args.no_wait and not await runtime.pollers(queue):
            print(
                f"no worker polls queue {queue!r}: hosting {args.agent} in this process "
                f"(start `tether worker {args.agent}` to run it elsewhere)",
                file=sys.stderr,
            )
            await runtime.ensure_local_worker(queue)
        options: dict[str, Any] = {}
        if args.max_turns is not None:
            options["max_turns"] = args.max_turns
        context = args.context
        from tether.core.contract import Budget, WaitPolicy

        if args.max_tokens is not None or args.max_cost is not None:
            options["budget"] = Budget(max_tokens=args.max_tokens, max_cost=args.max_cost)
        if args.wait_timeout is not None:
            options["waits"] = WaitPolicy(timeout=args.wait_timeout, on_timeout=args.on_timeout)
        if args.follow:
            options["stream_text"] = True  # model text as it is generated
        if_exists = "retry" if args.retry else "attach"
        handle = await durable.start(
            prompt, id=args.id, context=context, if_exists=if_exists, **options
        )
        await _say_started(handle)
        if args.no_wait:
            if not await runtime.pollers(queue):
                print(
                    f"no worker polls queue {queue!r} yet: the run starts when one does "
                    f"(`tether worker {args.agent}`)",
                    file=sys.stderr,
                )
            print(handle.id)
            return 0
        if not args.no_local_worker and not runtime.hosts(queue):
            # The engine lists a killed worker as a poller for minutes: judge by whether the
            # run's work is taken, and host the agent here when it is not.
            watchdog = asyncio.create_task(_host_when_unserved(handle, runtime, queue, args.agent))
        if args.follow:
            result = await _follow_events(handle)
        else:
            result = await _follow(handle, quiet=args.quiet)
        output = getattr(result, "final_output", getattr(result, "output", result))
        print(output if isinstance(output, str) else json.dumps(jsonable(output), indent=2))
        return 0
    finally:
        if watchdog is not None:
            watchdog.cancel()
        await runtime.close()


async def _say_started(handle: Any) -> None:
    """``run X started``, or which existing run the id attached to."""
    if handle.created:
        print(f"run {handle.id} started", file=sys.stderr, flush=True)
        return
    from tether.core.ops import status_name

    desc = await handle._handle.describe()
    status = status_name(desc.status)
    when = ago(desc.close_time or desc.start_time)
    verb = "started" if status == "running" else status
    hint = ""
    if status in ("failed", "cancelled", "terminated", "timed_out"):
        hint = f". Retry it with `tether runs retry {handle.id}`"
    elif status == "completed":
        hint = "; its result follows (use another --id for a new run)"
    print(
        f"run {handle.id} already exists ({verb} {when}); attached{hint}",
        file=sys.stderr,
        flush=True,
    )


async def _follow(handle: Any, *, quiet: bool = False) -> Any:
    """Await the result, printing each step as the run reports it."""
    task = asyncio.ensure_future(handle.result())
    last: tuple[int, str | None] = (-1, None)
    problem: str | None = None
    start = time.monotonic()
    while not task.done():
        await asyncio.wait({task}, timeout=0.5)
        if quiet or task.done():
            continue
        try:
            desc = await handle.describe()
        except Exception:
            continue
        if desc.problem != problem:
            problem = desc.problem
            if problem:
                print(f"  waiting: {problem}", file=sys.stderr, flush=True)
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
    await follow_events(handle)
    return await handle.result()


def cmd_demo(args: argparse.Namespace) -> int:
    from tether._demo import run_demo

    return asyncio.run(run_demo(kill_after=args.kill_after, state_dir=args.state_dir))


def register(sub: Any) -> None:
    """Add this group's commands to the `tether` parser."""
    p = sub.add_parser("worker", help="host agents: tether worker MODULE:OBJECT ...")
    p.add_argument("agents", nargs="+", metavar="MODULE:OBJECT")
    p.add_argument(
        "--max-cached-runs",
        type=positive_int,
        default=500,  # tether.core.runtime.DEFAULT_MAX_CACHED_RUNS (not imported: a fast CLI)
        help="runs kept in memory between their tasks; an evicted run is rebuilt from its "
        "history when it next has work (default 500: 10,000 waiting runs fit a small worker)",
    )
    p.add_argument(
        "--max-concurrent-steps",
        type=positive_int,
        default=100,
        help="steps this worker runs at once; past it, it takes no more (default 100)",
    )
    add_connection(p)
    add_logging(p, "info")
    p.set_defaults(func=cmd_worker, is_async=True)

    p = sub.add_parser("run", help='start a run: tether run MODULE:OBJECT "prompt"')
    p.add_argument("agent", metavar="MODULE:OBJECT")
    p.add_argument("prompt", nargs="?", help="the prompt; - reads it from standard input")
    p.add_argument(
        "--prompt-file", metavar="PATH", help="read the prompt from a file (- : standard input)"
    )
    p.add_argument(
        "--id",
        help="run id: the same id with the same input attaches to that run; with another "
        "input it is an error",
    )
    p.add_argument(
        "--retry",
        action="store_true",
        help="when the --id run failed or was cancelled, start it again (with this input)",
    )
    p.add_argument("--context", type=json_object, help="run context / deps as a JSON object")
    p.add_argument("--max-turns", type=positive_int)
    p.add_argument("--no-wait", action="store_true", help="print the run id and return")
    p.add_argument(
        "--local-worker", action="store_true", help="host the agent in this process from the start"
    )
    p.add_argument(
        "--no-local-worker",
        action="store_true",
        help="never host the agent here, even when no live worker takes the run",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument(
        "--max-tokens", type=positive_int, help="budget: stop the run past this many tokens"
    )
    p.add_argument(
        "--max-cost", type=positive_float, help="budget: stop the run past this many US$"
    )
    p.add_argument(
        "--wait-timeout", type=positive_float, help="seconds an approval/question may wait"
    )
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
    add_connection(p)
    # Its progress lines already say when a step is retried; its error, why a run failed.
    add_logging(p, "error")
    p.set_defaults(func=cmd_run, is_async=True)

    p = sub.add_parser("demo", help="kill a worker mid-run and watch the run resume")
    p.add_argument("--kill-after", type=int, default=3, help="kill after this many steps")
    p.add_argument("--state-dir", type=Path, default=None, help="default: a temporary dir")
    p.set_defaults(func=cmd_demo, is_async=False)
