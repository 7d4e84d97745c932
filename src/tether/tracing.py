"""Tracing durable runs with OpenTelemetry (docs/tracing.md).

Set :func:`tracer_provider` as the global tracer provider before the worker starts and
Tether's runs, steps, waits and step attempts become spans, replay-safe."""

from tether.core.tracing import ENV, TRACER_NAME, enabled, tracer_provider

__all__ = ["ENV", "TRACER_NAME", "enabled", "tracer_provider"]
