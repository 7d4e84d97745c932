"""The usage ledger: tokens, cost and failed attempts of a run's model steps.

It lives inside the run (deterministic state rebuilt by replay, so a replayed run counts each
step once). Each model step adds one entry; cost comes from ``genai_prices`` when it knows
the model, and is ``None`` otherwise (never a guess).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tether.core.contract import Budget

TOKEN_KEYS = (
    "requests",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
)
"""The usage keys an adapter reports per model step (``session.add_usage``):

``requests``          model requests the step made (1 for one call; retried attempts that
                      failed are not counted here, the ledger counts them apart)
``input_tokens``      prompt tokens billed (cached ones included)
``output_tokens``     completion tokens billed (reasoning ones included)
``total_tokens``      input + output; derived when the adapter gives only those two
``cached_tokens``     of the input tokens, those read from the provider's cache
``reasoning_tokens``  of the output tokens, those spent reasoning

Budgets (``Budget(max_tokens=...)``) count ``total_tokens``; cost needs ``model=``."""


def normalize_usage(usage: Mapping[str, int]) -> dict[str, int]:
    """``usage`` as ints, with ``total_tokens`` derived from input + output when missing."""
    out = {key: int(value) for key, value in usage.items()}
    if "total_tokens" not in out and ("input_tokens" in out or "output_tokens" in out):
        out["total_tokens"] = out.get("input_tokens", 0) + out.get("output_tokens", 0)
    return out


_warming: threading.Thread | None = None


def warm_up() -> threading.Thread:
    """Load the price table now, in a background thread (once per process); the thread.

    Pricing runs in the run task, and the table's first import takes 0.5 s on a quiet machine
    and over 2 s on a loaded one: Temporal's deadlock detector then fails the task
    ("workflow didn't yield within 2 seconds"). A worker calls this when it is built, so the
    table is loaded before its first run arrives (a run arriving sooner waits for the import).
    """
    global _warming
    if _warming is None:
        _warming = threading.Thread(
            target=price,
            args=("gpt-4o-mini", "openai", {"input_tokens": 1, "output_tokens": 1}),
            name="tether-price-table",
            daemon=True,
        )
        _warming.start()
    return _warming


def price(
    model: str | None,
    provider: str | None,
    usage: dict[str, int],
    at: datetime | None = None,
) -> float | None:
    """The US dollar cost of one model call, or None when the model's price is unknown."""
    if not model:
        return None
    try:
        from genai_prices import Usage, calc_price
    except ImportError:  # pragma: no cover - genai_prices comes with pydantic-ai
        return None
    if (model, provider) in _unpriced:
        return None
    try:
        calc = calc_price(
            Usage(
                input_tokens=usage.get("input_tokens", 0),
                output_tokens=usage.get("output_tokens", 0),
                cache_read_tokens=usage.get("cached_tokens", 0) or None,
            ),
            model_ref=model,
            provider_id=provider,
            genai_request_timestamp=at,
        )
    except LookupError:
        if len(_unpriced) >= 1024:
            _unpriced.clear()
        _unpriced.add((model, provider))
        return None
    return float(calc.total_price)


_unpriced: set[tuple[str, str | None]] = set()
"""Models the price table does not know (a local or self-hosted model's name). The table
remembers the models it found, not those it did not: each call of an unknown model
matched its name against every model of the provider again (0.1 ms per model step on
this project's machine, in the run task)."""


@dataclass
class StepUsage:
    """One model step in the ledger."""

    step: int
    summary: str
    model: str | None = None
    provider: str | None = None
    attempts: int = 1
    failed_attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost: float | None = None
    started: str | None = None
    finished: str | None = None
    failed: bool = False


@dataclass
class UsageReport:
    """A run's usage: totals plus one entry per model step (``handle.usage()``).

    ``failed_attempts`` counts model-step attempts that failed and were retried (their tokens,
    if a provider billed any, are not reported by it and so not in the totals). ``cost`` is
    the sum over priced steps; ``unpriced_steps`` says how many steps had no known price.
    """

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost: float | None = None
    unpriced_steps: int = 0
    failed_attempts: int = 0
    steps: list[StepUsage] = field(default_factory=list)


class Ledger:
    """The run-side ledger (deterministic; part of the run's replayed state)."""

    def __init__(self) -> None:
        self.entries: list[StepUsage] = []
        self.totals: dict[str, int] = {}
        self.cost: float | None = None
        self.failed_attempts = 0
        self._open: StepUsage | None = None

    def step_done(
        self, step: int, summary: str, attempt: int, started: str, finished: str, failed: bool
    ) -> None:
        failed_attempts = attempt if failed else attempt - 1
        entry = StepUsage(
            step=step,
            summary=summary,
            attempts=attempt,
            failed_attempts=failed_attempts,
            started=started,
            finished=finished,
            failed=failed,
        )
        self.failed_attempts += failed_attempts
        self.entries.append(entry)
        self._open = None if failed else entry

    def add(
        self,
        usage: dict[str, int],
        model: str | None,
        provider: str | None,
        at: datetime | None,
    ) -> StepUsage | None:
        usage = normalize_usage(usage)
        for key, value in usage.items():
            self.totals[key] = self.totals.get(key, 0) + int(value)
        entry = self._open
        self._open = None
        if entry is None:
            return None
        entry.model, entry.provider = model, provider
        for key in TOKEN_KEYS[1:]:
            setattr(entry, key, int(usage.get(key, 0)))
        entry.cost = price(model, provider, usage, at)
        if entry.cost is not None:
            self.cost = (self.cost or 0.0) + entry.cost
        return entry

    def state(self) -> dict[str, Any]:
        """The ledger as JSON, carried to a run's next segment (:meth:`from_state`)."""
        from dataclasses import astuple

        return {
            # Values only, in StepUsage's field order (fields are only ever appended): a
            # long run carries one entry per model step.
            "entries": [list(astuple(e)) for e in self.entries],
            "totals": dict(self.totals),
            "cost": self.cost,
            "failed_attempts": self.failed_attempts,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Ledger:
        ledger = cls()
        ledger.entries = [StepUsage(*e) for e in state.get("entries", [])]
        ledger.totals = {k: int(v) for k, v in dict(state.get("totals", {})).items()}
        ledger.cost = state.get("cost")
        ledger.failed_attempts = int(state.get("failed_attempts", 0))
        return ledger

    def over(self, budget: Budget | None) -> str | None:
        """Why the budget is exceeded, or None."""
        if budget is None:
            return None
        tokens = self.totals.get("total_tokens", 0)
        requests = self.totals.get("requests", 0)
        if budget.max_tokens is not None and tokens > budget.max_tokens:
            return f"{tokens} tokens used, budget max_tokens={budget.max_tokens}"
        if budget.max_requests is not None and requests > budget.max_requests:
            return f"{requests} model requests made, budget max_requests={budget.max_requests}"
        if budget.max_cost is not None and self.cost is not None and self.cost > budget.max_cost:
            return f"${self.cost:.6f} spent, budget max_cost=${budget.max_cost}"
        return None

    def report(self) -> dict[str, Any]:
        from dataclasses import asdict

        unpriced = sum(1 for e in self.entries if e.cost is None and not e.failed)
        return asdict(
            UsageReport(
                requests=self.totals.get("requests", 0),
                input_tokens=self.totals.get("input_tokens", 0),
                output_tokens=self.totals.get("output_tokens", 0),
                total_tokens=self.totals.get("total_tokens", 0),
                cached_tokens=self.totals.get("cached_tokens", 0),
                reasoning_tokens=self.totals.get("reasoning_tokens", 0),
                cost=self.cost,
                unpriced_steps=unpriced,
                failed_attempts=self.failed_attempts,
                steps=list(self.entries),
            )
        )


def report_from_json(value: dict[str, Any]) -> UsageReport:
    """Rebuild a :class:`UsageReport` from the run's JSON."""
    data = dict(value)
    steps = [StepUsage(**s) for s in data.pop("steps", [])]
    return UsageReport(**data, steps=steps)
