"""`tether demo`: the weather-alerts agent, a worker killed mid-run, and the run resuming.

Without OPENAI_API_KEY the model is Tether's scripted OpenAI-compatible server, so the
demo needs no key and no network; with it, the real model answers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agents import Agent, function_tool

from tether.testing._workers import stop_process_group

PROMPT = "Are there any weather alerts in California, and what is the forecast for LA and SF?"

_ALERTS = {
    "CA": "Heat Advisory for the Central Valley until 8 PM; Red Flag Warning in the hills.",
    "NY": "No active alerts.",
}
_FORECASTS = {
    "Los Angeles": "Sunny, high 31 C, light winds.",
    "San Francisco": "Morning fog, then sun, high 19 C.",
}


@function_tool
def get_weather_alerts(state: str) -> str:
    """Active weather alerts for a US state (two-letter code)."""
    time.sleep(0.3)  # a sync tool, as slow as a real API call
    return _ALERTS.get(state.upper(), "No active alerts.")


@function_tool
async def get_forecast(city: str) -> str:
    """Today's forecast for a city."""
    await asyncio.sleep(0.3)
    return _FORECASTS.get(city, "No forecast available.")


agent = Agent(
    name="weather",
    instructions="You are a concise weather assistant. Use the tools; answer in two sentences.",
    tools=[get_weather_alerts, get_forecast],
    model=os.environ.get("TETHER_DEMO_MODEL", "gpt-4o-mini"),
)


def _script() -> Any:
    from tether.testing import ScriptedModelServer, ToolCall, Turn

    turns = [
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"}), delay=0.4),
        Turn.tool_calls(ToolCall("get_forecast", {"city": "Los Angeles"}), delay=0.4),
        Turn.tool_calls(ToolCall("get_forecast", {"city": "San Francisco"}), delay=0.4),
        Turn.text(
            "Yes: a Heat Advisory for the Central Valley and a Red Flag Warning in the hills. "
            "LA is sunny at 31 C; SF has morning fog, then sun at 19 C.",
            delay=0.4,
        ),
    ]
    return ScriptedModelServer(turns)


def _spawn_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115 - owned by the child
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "tether.cli", "worker", "tether._demo:agent"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        out.close()


async def run_demo(*, kill_after: int = 3, state_dir: Path | None = None) -> int:
    from tether.core.devserver import EmbeddedEngine
    from tether.core.handle import durable
    from tether.core.runtime import Runtime
    from tether.core.store import BlobStore
    from tether.testing._history import history_stats

    home = Path(state_dir or tempfile.mkdtemp(prefix="tether-demo-"))
    real = bool(os.environ.get("OPENAI_API_KEY"))
    say = print
    say("Tether demo: a durable OpenAI Agents SDK agent on an embedded Temporal engine")
    engine = EmbeddedEngine(state_dir=home, persist=True, ui=True)
    await engine.start()
    say(f"  engine   {engine.address}   (web UI {engine.ui_url})")
    server = None if real else _script()
    env = dict(os.environ)
    env.update(
        {
            "TEMPORAL_ADDRESS": engine.address,
            "TETHER_STORE": str(home / "store"),
            "TETHER_TASK_QUEUE": "tether-demo",
            "OPENAI_AGENTS_DISABLE_TRACING": "1",
        }
    )
    if server is not None:
        server.start()
        env["OPENAI_BASE_URL"] = server.base_url
        env["OPENAI_API_KEY"] = "scripted"
        say(f"  model    scripted OpenAI-compatible server at {server.base_url} (no API key set)")
    else:
        say(f"  model    {agent.model} through the OpenAI API")
    runtime = await Runtime.start(
        address=engine.address, store=BlobStore(home / "store"), task_queue="tether-demo"
    )
    workers: list[subprocess.Popen[bytes]] = []
    try:
        first = _spawn_worker(env, home / "worker-1.log")
        workers.append(first)
        say(f"  worker 1 started (pid {first.pid})")
        run = durable(agent, runtime=runtime, local_worker=False)
        handle = await run.start(PROMPT, id=f"demo-weather-{int(time.time())}")
        say(f"  run      {handle.id}: {PROMPT!r}")
        seen = 0
        while True:
            stats = await history_stats(runtime.client, handle.id)
            done = stats.completed()
            for step in done[seen:]:
                seen += 1
                say(f"    step {seen} done: {step.name}")
            if seen >= kill_after:
                break
            if first.poll() is not None:
                say("worker 1 exited early; see worker-1.log")
                return 1
            await asyncio.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        killed_at = time.monotonic()
        say(f"  KILLED worker 1 with SIGKILL after step {seen}: the run is now on nobody's CPU")
        second = _spawn_worker(env, home / "worker-2.log")
        workers.append(second)
        say(f"  worker 2 started (pid {second.pid}); the run resumes where it stopped")
        result_task = asyncio.ensure_future(handle.result())
        while not result_task.done():
            await asyncio.wait({result_task}, timeout=0.1)
            stats = await history_stats(runtime.client, handle.id)
            for step in stats.completed()[seen:]:
                seen += 1
                say(f"    step {seen} done: {step.name}")
        result = result_task.result()
        resumed = time.monotonic() - killed_at
        stats = await history_stats(runtime.client, handle.id)
        model_steps = sum(1 for s in stats.completed() if s.name.endswith(".model"))
        say("")
        say(f"Answer: {result.final_output}")
        say(f"  resumed and finished {resumed:.1f}s after the kill")
        say(f"  steps completed: {len(stats.completed())} ({model_steps} model calls needed)")
        if server is not None:
            made = server.count()
            say(f"  model calls made at the provider: {made} (needed {model_steps})")
        say(f"  history: {stats.events} events, {stats.total_bytes / 1024:.1f} KiB")
        if os.environ.get("TETHER_DEMO_TIMELINE"):
            hist = await runtime.client.get_workflow_handle(handle.id).fetch_history()
            t0 = hist.events[0].event_time.ToDatetime()
            for e in hist.events:
                dt = (e.event_time.ToDatetime() - t0).total_seconds()
                say(f"    {dt:6.2f}s {e.event_type}")
        return 0
    finally:
        for proc in workers:
            stop_process_group(proc)
        await runtime.close()
        if server is not None:
            server.stop()
        engine.stop()
