"""What tracing costs a run: the same OpenAI Agents SDK run of --calls model calls (each but
the last asking for one tool) with tracing off, with Tether's OpenTelemetry spans, and with
those plus the SDK's own tracing. Spans go to in-memory exporters / processors (no network).

    python bench/tracing_overhead.py --calls 50 --repeat 3

Each mode runs in a process of its own (the tracer provider is process-wide), against one
embedded engine and one scripted model server, after one warm-up run; printed: median wall
time per run and per loop turn, and the spans the measured runs made.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _common import script

from tether.testing import ScriptedModelServer

MODES = ("off", "otel", "otel+sdk")


def _setup(mode: str) -> tuple[Any, list[Any]]:
    """Tracing as ``mode`` says; returns the in-memory OTel exporter and SDK span list."""
    sdk_spans: list[Any] = []
    exporter = None
    if mode in ("otel", "otel+sdk"):
        from opentelemetry import trace
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        import tether.tracing

        exporter = InMemorySpanExporter()
        provider = tether.tracing.tracer_provider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
    if mode == "otel+sdk":
        os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "0"
        from agents.tracing import TracingProcessor, set_trace_processors

        class Keep(TracingProcessor):
            def on_trace_start(self, trace: Any) -> None:
                pass

            def on_trace_end(self, trace: Any) -> None:
                pass

            def on_span_start(self, span: Any) -> None:
                pass

            def on_span_end(self, span: Any) -> None:
                sdk_spans.append(span.export())

            def shutdown(self) -> None:
                pass

            def force_flush(self) -> None:
                pass

        set_trace_processors([Keep()])
    else:
        os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"
    return exporter, sdk_spans


async def side(mode: str, address: str, base_url: str, calls: int, repeat: int) -> dict[str, Any]:
    exporter, sdk_spans = _setup(mode)
    from agents import Agent, function_tool

    import tether
    from tether.core.runtime import Runtime
    from tether.core.store import BlobStore

    @function_tool
    def lookup(i: int) -> str:
        """Look up record i."""
        return f"record {i}"

    os.environ["OPENAI_BASE_URL"] = base_url
    os.environ.setdefault("OPENAI_API_KEY", "bench")
    agent = Agent(name=f"bench-{mode.replace('+', '-')}", tools=[lookup], model="gpt-bench")
    with tempfile.TemporaryDirectory() as tmp:
        runtime = await Runtime.start(address=address, store=BlobStore(Path(tmp) / "store"))
        durable = tether.durable(agent, runtime=runtime)
        walls = []
        await durable.run("go", max_turns=calls + 2)  # warm-up: worker start, first imports
        if exporter is not None:
            exporter.clear()
        sdk_spans.clear()
        for _ in range(repeat):
            started = time.perf_counter()
            await durable.run("go", id=f"bench-{mode}-{uuid.uuid4().hex[:6]}", max_turns=calls + 2)
            walls.append(time.perf_counter() - started)
        await runtime.close()
    spans = len(exporter.get_finished_spans()) if exporter is not None else 0
    return {"mode": mode, "walls": walls, "otel_spans": spans, "sdk_spans": len(sdk_spans)}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--side", choices=MODES)
    parser.add_argument("--address")
    parser.add_argument("--base-url")
    args = parser.parse_args()
    if args.side:
        row = await side(args.side, args.address, args.base_url, args.calls, args.repeat)
        print(json.dumps(row))
        return
    from tether.core.devserver import EmbeddedEngine

    with tempfile.TemporaryDirectory() as tmp:
        engine = EmbeddedEngine(state_dir=Path(tmp) / "engine", persist=False, ui=False)
        await engine.start()
        try:
            rows = []
            for mode in MODES:
                with ScriptedModelServer({"gpt-bench": script(args.calls)}) as server:
                    done = await asyncio.to_thread(
                        subprocess.run,
                        [
                            sys.executable,
                            __file__,
                            "--side",
                            mode,
                            "--address",
                            engine.address,
                            "--base-url",
                            server.base_url,
                            "--calls",
                            str(args.calls),
                            "--repeat",
                            str(args.repeat),
                        ],
                        capture_output=True,
                        text=True,
                        check=False,
                    )
                if done.returncode != 0:
                    raise SystemExit(f"{mode} failed:\n{done.stderr[-3000:]}")
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        finally:
            engine.stop()
    print(f"\n{args.calls} model calls per run, {args.repeat} runs per mode (median)\n")
    base = statistics.median(rows[0]["walls"])
    for row in rows:
        wall = statistics.median(row["walls"])
        turn = wall / args.calls * 1000
        print(
            f"  {row['mode']:<9} {wall:7.2f} s/run  {turn:7.1f} ms/turn  x{wall / base:.3f}  "
            f"otel spans {row['otel_spans']:5d}  sdk spans {row['sdk_spans']:5d}"
        )


if __name__ == "__main__":
    asyncio.run(main())
