"""Agents whose worker exports its spans to files, as JSON lines (tests/test_tracing.py).

Imported by a `tether worker` subprocess: with ``TETHER_TEST_OTEL_SPANS`` set, the global
OpenTelemetry tracer provider is Tether's replay-safe one, with a processor that writes
each ended span at once (a SIGKILL loses nothing already ended); with
``TETHER_TEST_SDK_SPANS`` set, the OpenAI Agents SDK's trace processors are replaced by one
that writes every trace and span event.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import Any

from apps.hitl_apps import openai_refunds as refunds
from apps.openai_apps import orchestrator, triage, weather
from apps.pydantic_apps import weather as pai_weather

__all__ = ["orchestrator", "pai_weather", "refunds", "triage", "weather"]

_lock = threading.Lock()


def _append(path: str, record: dict[str, Any]) -> None:
    line = json.dumps(record, default=str)
    with _lock, open(path, "a", encoding="utf-8") as out:
        out.write(line + "\n")
        out.flush()


def _otel(path: str) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    import tether.tracing

    class JsonLines(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            for span in spans:
                context = span.get_span_context()
                assert context is not None
                _append(
                    path,
                    {
                        "pid": os.getpid(),
                        "name": span.name,
                        "trace_id": f"{context.trace_id:032x}",
                        "span_id": f"{context.span_id:016x}",
                        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
                        "attributes": dict(span.attributes or {}),
                        "status": span.status.status_code.name,
                    },
                )
            return SpanExportResult.SUCCESS

    provider = tether.tracing.tracer_provider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLines()))
    trace.set_tracer_provider(provider)


def _sdk(path: str) -> None:
    from agents.tracing import Span, Trace, TracingProcessor, set_trace_processors

    class JsonLinesProcessor(TracingProcessor):
        def on_trace_start(self, trace: Trace) -> None:
            _append(path, {"pid": os.getpid(), "event": "trace_start", **(trace.export() or {})})

        def on_trace_end(self, trace: Trace) -> None:
            _append(path, {"pid": os.getpid(), "event": "trace_end", **(trace.export() or {})})

        def on_span_start(self, span: Span[Any]) -> None:
            _append(path, {"pid": os.getpid(), "event": "span_start", **(span.export() or {})})

        def on_span_end(self, span: Span[Any]) -> None:
            _append(path, {"pid": os.getpid(), "event": "span_end", **(span.export() or {})})

        def shutdown(self) -> None:
            pass

        def force_flush(self) -> None:
            pass

    set_trace_processors([JsonLinesProcessor()])


if os.environ.get("TETHER_TEST_OTEL_SPANS"):
    _otel(os.environ["TETHER_TEST_OTEL_SPANS"])
    from pydantic_ai import Agent

    Agent.instrument_all()  # Pydantic AI's own switch: its spans go to the global provider
if os.environ.get("TETHER_TEST_SDK_SPANS"):
    _sdk(os.environ["TETHER_TEST_SDK_SPANS"])
