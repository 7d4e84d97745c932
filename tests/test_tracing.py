"""Tracing survives replay: a run SIGKILLed mid-step and resumed on another worker exports the
same span tree as an uninterrupted run, each span once (OpenTelemetry, and the OpenAI Agents
SDK's own trace processors)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

import tether
import tether.errors
from hitl_helpers import wait_pending
from tether.core.runtime import Runtime, agent_queue
from tether.testing import (
    Fault,
    ScriptedModelServer,
    ToolCall,
    Turn,
    WorkerProcess,
    worker_processes,
)
from tether.testing._history import history_stats

SLOW = 0.6  # each model reply and tool call takes this long: the kill lands inside a step

# Attributes that differ between two runs of the same agent, or between an attempt that was
# killed and its retry: ids, and attempt numbers.
VOLATILE = {
    "tether.run_id",
    "temporalWorkflowID",
    "temporalRunID",
    "tether.attempt",
    "tether.step.attempts",
}


GENAI_STABLE = {
    "gen_ai.operation.name",
    "gen_ai.tool.name",
    "gen_ai.request.model",
    "gen_ai.agent.name",
    "agent_name",
}
"""What is compared of a framework's own spans (their other attributes hold timestamps)."""


def weather_script() -> list[Turn]:
    return [
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"}), delay=SLOW),
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "NY"}), delay=SLOW),
        Turn.text("CA has a heat advisory.", delay=SLOW),
    ]


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def run_once(
    runtime: Runtime,
    env: dict[str, str],
    tmp_path: Path,
    agent: Any,
    prompt: str,
    *,
    kill_after: int | None,
    **options: Any,
) -> tuple[str, Any]:
    """Run ``agent`` on `tether worker` subprocesses; with ``kill_after``, SIGKILL the first
    worker once that many steps completed and the next one was scheduled (inside it), and
    let a second worker resume the run."""
    durable = tether.durable(agent, runtime=runtime, local_worker=False)
    durable.task_queue = agent_queue(env["TETHER_TASK_QUEUE"], durable.name)
    spec = f"apps.traced_apps:{agent.name.replace('pai-weather', 'pai_weather')}"
    tag = "killed" if kill_after is not None else "whole"
    run_id = f"traced-{tag}-{uuid.uuid4().hex[:6]}"
    with worker_processes() as procs:
        first = WorkerProcess([spec], env, tmp_path / f"{tag}-w1.log")
        procs.append(first)
        handle = await durable.start(prompt, id=run_id, **options)
        if kill_after is not None:
            deadline = asyncio.get_running_loop().time() + 120
            while True:
                stats = await history_stats(runtime.client, run_id)
                if len(stats.completed()) >= kill_after and len(stats.steps) > kill_after:
                    break
                assert first.alive(), first.tail()
                assert asyncio.get_running_loop().time() < deadline, first.tail()
                await asyncio.sleep(0.02)
            first.kill()
            in_flight = (
                not (await history_stats(runtime.client, run_id)).steps[kill_after].completed
            )
            assert in_flight, "the kill was meant to land inside a step"
            procs.append(WorkerProcess([spec], env, tmp_path / f"{tag}-w2.log"))
        result = await finished(handle, procs[-1])
    return run_id, result


async def finished(handle: Any, worker: WorkerProcess) -> Any:
    """The run's result; fails at once (with its log) if the worker hosting it died."""
    waiting = asyncio.ensure_future(handle.result())
    while not waiting.done():
        if not worker.alive():
            waiting.cancel()
            raise AssertionError(f"the worker died:\n{worker.tail()}")
        await asyncio.wait({waiting}, timeout=0.5)
    return waiting.result()


def otel_tree(spans: list[dict[str, Any]], run_id: str) -> tuple[Any, list[dict[str, Any]]]:
    """The run's span tree (names, status and stable attributes; no ids, no times), and its
    spans. Fails on a duplicate span, a second trace or a span outside the tree."""
    roots = [
        s
        for s in spans
        if s["name"] == "tether.run" and s["attributes"].get("tether.run_id") == run_id
    ]
    assert len(roots) == 1, [s["name"] for s in roots]
    mine = [s for s in spans if s["trace_id"] == roots[0]["trace_id"]]
    ids = Counter(s["span_id"] for s in mine)
    assert all(n == 1 for n in ids.values()), [s for s in mine if ids[s["span_id"]] > 1]
    children: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for s in mine:
        children[s["parent_id"]].append(s)

    def node(span: dict[str, Any]) -> Any:
        attrs = {
            k: v
            for k, v in span["attributes"].items()
            if k not in VOLATILE and (span["name"].startswith("tether.") or k in GENAI_STABLE)
        }
        key = json.dumps([span["name"], span["status"], sorted(attrs.items())], default=str)
        return (key, sorted(node(c) for c in children[span["span_id"]]))

    def size(tree: Any) -> int:
        return 1 + sum(size(c) for c in tree[1])

    tree = node(roots[0])
    assert size(tree) == len(mine), "spans of the run's trace outside its tree"
    return tree, mine


def sdk_tree(events: list[dict[str, Any]], run_id: str) -> tuple[Any, list[dict[str, Any]]]:
    """The run's SDK trace as a tree of span types and names; checks that its trace and every
    span started and ended exactly once."""
    starts = [
        e
        for e in events
        if e["event"] == "trace_start" and (e.get("metadata") or {}).get("tether.run_id") == run_id
    ]
    assert len(starts) == 1, starts
    trace_id = starts[0]["id"]
    ends = [e for e in events if e["event"] == "trace_end" and e["id"] == trace_id]
    assert len(ends) == 1, ends
    spans = [e for e in events if e["event"].startswith("span_") and e["trace_id"] == trace_id]
    per_span = Counter((e["id"], e["event"]) for e in spans)
    assert all(n == 1 for n in per_span.values()), per_span
    ended = [e for e in spans if e["event"] == "span_end"]
    assert {e["id"] for e in spans} == {e["id"] for e in ended}, "a span never ended"
    children: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for e in ended:
        children[e["parent_id"]].append(e)

    def node(span: dict[str, Any]) -> Any:
        data = span["span_data"]
        stable = {k: data.get(k) for k in ("type", "name", "from_agent", "to_agent", "model")}
        if data["type"] == "function":
            stable.update(input=data.get("input"), output=data.get("output"))
        key = json.dumps(sorted(stable.items()), default=str)
        return (key, sorted(node(c) for c in children[span["id"]]))

    tree = sorted(node(e) for e in children[None])
    return tree, ended


@pytest.fixture
def traced_env(worker_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    env = dict(worker_env)
    env["TETHER_TEST_OTEL_SPANS"] = str(tmp_path / "otel.jsonl")
    env["TETHER_TEST_SDK_SPANS"] = str(tmp_path / "sdk.jsonl")
    env["OPENAI_AGENTS_DISABLE_TRACING"] = "0"
    env["TETHER_TEST_TOOL_DELAY"] = str(SLOW)
    return env


@pytest.mark.timeout(500)  # three worker processes per run pair, on a loaded machine
@pytest.mark.parametrize("kill_after", [1, 2])
async def test_openai_run_killed_mid_step_traces_like_an_uninterrupted_run(
    runtime: Runtime, traced_env: dict[str, str], tmp_path: Path, kill_after: int
) -> None:
    from apps.openai_apps import weather

    outputs = []
    run_ids = []
    for kill in (None, kill_after):
        with ScriptedModelServer(weather_script()) as server:
            env = dict(traced_env, OPENAI_BASE_URL=server.base_url)
            run_id, result = await run_once(
                runtime, env, tmp_path, weather, "alerts?", kill_after=kill
            )
        outputs.append(result.final_output)
        run_ids.append(run_id)
    assert outputs[0] == outputs[1]
    whole_id, killed_id = run_ids

    spans = read_lines(tmp_path / "otel.jsonl")
    whole, whole_spans = otel_tree(spans, whole_id)
    killed, killed_spans = otel_tree(spans, killed_id)
    assert killed == whole
    names = Counter(s["name"] for s in whole_spans)
    # model, tool, model, tool, model: each a step span with (at least) one attempt under it
    assert names["tether.run"] == 1
    assert names["tether.step.model"] == 3 and names["tether.step.tool"] == 2, names
    assert names["tether.attempt"] == 5, names
    # Linked across workers: the run's spans came from both processes, in one trace.
    assert len({s["pid"] for s in killed_spans}) == 2
    # The step in flight at the kill was retried on the second worker: its step span (ended
    # there) counts two attempts, and only the retry's attempt span exists.
    retried = [s for s in killed_spans if s["attributes"].get("tether.step.attempts", 1) > 1]
    assert [s["attributes"]["tether.step"] for s in retried] == [kill_after + 1]
    attempts = [s for s in killed_spans if s["name"] == "tether.attempt"]
    assert sorted(s["attributes"]["tether.attempt"] for s in attempts) == [1] * 4 + [2]

    events = read_lines(tmp_path / "sdk.jsonl")
    sdk_whole, sdk_whole_spans = sdk_tree(events, whole_id)
    sdk_killed, sdk_killed_spans = sdk_tree(events, killed_id)
    assert sdk_killed == sdk_whole
    kinds = Counter(e["span_data"]["type"] for e in sdk_whole_spans)
    assert kinds == {"agent": 1, "generation": 3, "function": 2, "custom": 4}, kinds
    custom = Counter(
        e["span_data"]["name"] for e in sdk_whole_spans if e["span_data"]["type"] == "custom"
    )
    assert custom == {"task": 1, "turn": 3}, custom  # the SDK's own task and turn spans
    assert (
        len({e["pid"] for e in events if e.get("trace_id") == sdk_killed_spans[0]["trace_id"]}) == 2
    )


def handoff_script() -> dict[str, Any]:
    return {
        "gpt-triage": [Turn.tool_calls(ToolCall("transfer_to_specialist", {}), delay=SLOW)],
        "gpt-specialist": {
            1: Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"}), delay=SLOW),
            2: Turn.text("specialist: CA heat advisory", delay=SLOW),
        },
    }


def agent_tool_script() -> dict[str, Any]:
    return {
        "gpt-orchestrator": [
            Turn.tool_calls(ToolCall("translate", {"input": "heat advisory"}), delay=SLOW),
            Turn.text("en francais: alerte canicule", delay=SLOW),
        ],
        "gpt-translator": [Turn.text("alerte canicule", delay=SLOW)],
    }


@pytest.mark.timeout(500)
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("triage", {"agent": 2, "generation": 3, "function": 1, "handoff": 1}),
        ("orchestrator", {"agent": 2, "generation": 3, "function": 1}),
    ],
)
async def test_sdk_trace_of_handoffs_and_agents_as_tools_survives_a_kill(
    runtime: Runtime,
    traced_env: dict[str, str],
    tmp_path: Path,
    name: str,
    expected: dict[str, int],
) -> None:
    import apps.openai_apps

    agent = getattr(apps.openai_apps, name)
    script = handoff_script() if name == "triage" else agent_tool_script()
    run_ids = []
    for kill in (None, 1):
        with ScriptedModelServer(script) as server:
            env = dict(traced_env, OPENAI_BASE_URL=server.base_url)
            run_id, _ = await run_once(runtime, env, tmp_path, agent, "alerts?", kill_after=kill)
        run_ids.append(run_id)
    events = read_lines(tmp_path / "sdk.jsonl")
    whole, whole_spans = sdk_tree(events, run_ids[0])
    killed, killed_spans = sdk_tree(events, run_ids[1])
    assert killed == whole
    kinds = Counter(
        e["span_data"]["type"] for e in whole_spans if e["span_data"]["type"] != "custom"
    )
    assert kinds == expected, kinds
    assert len({e["pid"] for e in killed_spans}) == 2


@pytest.mark.timeout(500)
async def test_pydantic_ai_run_killed_mid_step_traces_like_an_uninterrupted_run(
    runtime: Runtime, traced_env: dict[str, str], tmp_path: Path
) -> None:
    from apps.pydantic_apps import Deps, weather

    run_ids = []
    for kill in (None, 1):
        with ScriptedModelServer(weather_script()) as server:
            env = dict(traced_env, OPENAI_BASE_URL=server.base_url)
            run_id, result = await run_once(
                runtime, env, tmp_path, weather, "alerts?", kill_after=kill, deps=Deps(user="ada")
            )
        assert result.output == "CA has a heat advisory."
        run_ids.append(run_id)
    whole_id, killed_id = run_ids

    spans = read_lines(tmp_path / "otel.jsonl")
    whole, whole_spans = otel_tree(spans, whole_id)
    killed, killed_spans = otel_tree(spans, killed_id)
    assert killed == whole
    assert len({s["pid"] for s in killed_spans}) == 2
    # The tool step in flight at the kill: ended on the second worker, by its second attempt.
    retried = [s for s in killed_spans if s["attributes"].get("tether.step.attempts", 1) > 1]
    assert [(s["name"], s["attributes"]["tether.step"]) for s in retried] == [
        ("tether.step.tool", 2)
    ]
    by_name = {s["span_id"]: s for s in whole_spans}
    names = Counter(s["name"] for s in whole_spans)
    # Pydantic AI's instrumentation inside the run: its agent run, model requests and tool
    # calls, with Tether's step spans under them.
    assert names["invoke_agent pai-weather"] == 1, names
    assert names["chat gpt-pai-weather"] == 3, names
    assert names["execute_tool get_weather_alerts"] == 2, names
    under = {"model": "chat gpt-pai-weather", "tool": "execute_tool get_weather_alerts"}
    steps = [s for s in whole_spans if s["name"].startswith("tether.step.")]
    assert len(steps) == 5
    for step in steps:
        kind = step["name"].removeprefix("tether.step.")
        assert by_name[step["parent_id"]]["name"] == under[kind], step


def test_off_imports_nothing_of_opentelemetry(tmp_path: Path) -> None:
    """No replay-safe provider: a worker's runtime adds no interceptor and imports nothing."""
    code = (
        "import sys, tether, tether.adapters.openai_agents\n"
        "from tether.core import tracing\n"
        "assert tracing.enabled() is False\n"
        "assert tracing.client_interceptors() == []\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TETHER_TRACING"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_required_tracing_refuses_a_provider_that_is_not_replay_safe() -> None:
    code = (
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "trace.set_tracer_provider(TracerProvider())\n"
        "from tether.core import tracing\n"
        "try:\n"
        "    tracing.enabled()\n"
        "except tether.errors.ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    env = dict(os.environ, TETHER_TRACING="1")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import tether.errors\n" + code,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "TETHER_TRACING=1" in done.stdout and "tracer_provider()" in done.stdout, done.stdout
    # Not required: the same provider turns Tether's spans off, with one warning.
    env.pop("TETHER_TRACING")
    done = subprocess.run(
        [sys.executable, "-c", "import tether.errors\n" + code + "print(tracing.enabled())\n"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.strip() == "False", done.stdout
    assert "not replay-safe" in done.stderr


async def started(worker: WorkerProcess) -> None:
    """Wait until ``worker`` polls (it says so in its log). The engine's list of pollers is
    no help here: it keeps a stopped or killed worker listed for a while."""
    deadline = asyncio.get_running_loop().time() + 120
    while "worker on " not in worker.tail():
        assert worker.alive(), worker.tail()
        assert asyncio.get_running_loop().time() < deadline, "the worker did not start"
        await asyncio.sleep(0.1)


async def approved_run(
    runtime: Runtime, env: dict[str, str], tmp_path: Path, *, kill: bool
) -> tuple[str, Any]:
    """A run that waits for an approval; with ``kill``, its worker is SIGKILLed while it
    waits and a second worker finishes it once approved."""
    from apps.hitl_apps import openai_refunds

    durable = tether.durable(openai_refunds, runtime=runtime, local_worker=False)
    durable.task_queue = agent_queue(env["TETHER_TASK_QUEUE"], durable.name)
    tag = "killed" if kill else "whole"
    with worker_processes() as procs:
        procs.append(WorkerProcess(["apps.traced_apps:refunds"], env, tmp_path / f"{tag}.log"))
        await started(procs[0])
        handle = await durable.start("refund 42", id=f"traced-{tag}-{uuid.uuid4().hex[:6]}")
        [request] = await wait_pending(handle, timeout=60)
        if kill:
            procs[0].kill()
            procs.append(
                WorkerProcess(["apps.traced_apps:refunds"], env, tmp_path / f"{tag}-2.log")
            )
            await started(procs[1])
        for _ in range(60):  # a new worker may take a moment to take the answer
            try:
                await handle.approve(request.id)
                break
            except tether.errors.NoWorkerError:
                await asyncio.sleep(0.5)  # (the answer may still be applied: see below)
            except tether.errors.AlreadyAnsweredError:
                break  # an answer given to the run while it moved to the new worker
        result = await finished(handle, procs[-1])
    return handle.id, result


@pytest.mark.timeout(500)
async def test_wait_spans_and_the_sdk_trace_survive_a_kill_while_waiting(
    runtime: Runtime, traced_env: dict[str, str], tmp_path: Path
) -> None:
    script = [
        Turn.tool_calls(ToolCall("refund", {"order": 42})),
        Turn.text("order 42 refunded"),
    ]
    run_ids = []
    for kill in (False, True):
        with ScriptedModelServer(script) as server:
            env = dict(traced_env, OPENAI_BASE_URL=server.base_url)
            run_id, result = await approved_run(runtime, env, tmp_path, kill=kill)
        assert result.final_output == "order 42 refunded"
        run_ids.append(run_id)

    spans = read_lines(tmp_path / "otel.jsonl")
    whole, _ = otel_tree(spans, run_ids[0])
    killed, killed_spans = otel_tree(spans, run_ids[1])
    assert killed == whole
    waits = [s for s in killed_spans if s["name"] == "tether.wait.approval"]
    assert len(waits) == 1
    assert waits[0]["attributes"]["tether.wait.approved"] is True
    assert waits[0]["attributes"]["tether.wait.tool"] == "refund"
    # Opened on the first worker, rebuilt and ended (once) on the second one.
    run_span = next(s for s in killed_spans if s["name"] == "tether.run")
    assert waits[0]["pid"] == run_span["pid"] != killed_spans[0]["pid"]

    # The SDK's tracing: one trace for the run, across the approval and the kill.
    events = read_lines(tmp_path / "sdk.jsonl")
    sdk_whole, _ = sdk_tree(events, run_ids[0])
    sdk_killed, sdk_spans = sdk_tree(events, run_ids[1])
    assert sdk_killed == sdk_whole
    assert {e["span_data"]["type"] for e in sdk_spans} >= {"agent", "generation", "function"}


@pytest.mark.timeout(300)
async def test_a_retried_step_has_one_attempt_span_per_attempt(
    runtime: Runtime, traced_env: dict[str, str], tmp_path: Path
) -> None:
    from apps.openai_apps import weather

    # The OpenAI client retries twice itself: three 503s fail the step's first attempt.
    script = [Turn.text("CA has a heat advisory.", faults=[Fault.server_error(503)] * 3)]
    with ScriptedModelServer(script) as server:
        env = dict(traced_env, OPENAI_BASE_URL=server.base_url)
        run_id, result = await run_once(runtime, env, tmp_path, weather, "alerts?", kill_after=None)
    assert result.final_output == "CA has a heat advisory."
    _, spans = otel_tree(read_lines(tmp_path / "otel.jsonl"), run_id)
    [step] = [s for s in spans if s["name"] == "tether.step.model"]
    assert step["attributes"]["tether.step.attempts"] == 2
    attempts = sorted(
        (s for s in spans if s["name"] == "tether.attempt"),
        key=lambda s: s["attributes"]["tether.attempt"],
    )
    assert [(s["attributes"]["tether.attempt"], s["status"]) for s in attempts] == [
        (1, "ERROR"),
        (2, "UNSET"),
    ]
    assert {s["parent_id"] for s in attempts} == {step["span_id"]}
