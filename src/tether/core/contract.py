"""The framework-neutral contract: Step, Run and the Adapter that maps a loop onto them.

Nothing here knows a framework or Temporal. A *step* is one durable unit of work with a
side effect (a model call, a tool call); a *run* is the deterministic orchestration hosting
an adapter's loop, which calls steps through a :class:`RunSession`.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from random import Random
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from tether.core.conversation import Transcript

JSON = Any
"""A JSON-compatible value (dict, list, str, number, bool, None)."""

StepKind = Literal["model", "tool", "mcp", "other"]


class Capability(enum.StrEnum):
    """Optional behaviour an adapter may support (the conformance suite skips the rest)."""

    HANDOFFS = "handoffs"
    AGENT_AS_TOOL = "agent_as_tool"
    PARALLEL_TOOLS = "parallel_tools"
    STRUCTURED_OUTPUT = "structured_output"
    APPROVALS = "approvals"
    STREAMING = "streaming"
    MCP = "mcp"
    SYNC_TOOLS = "sync_tools"
    MAX_TURNS = "max_turns"
    CONTINUE_AS_NEW = "continue_as_new"
    """The adapter snapshots its loop at step boundaries (``session.checkpoint``) and resumes
    it from ``session.resumed()``: its runs continue as new and have no length limit."""


@dataclass(frozen=True, kw_only=True)
class StepPolicy:
    """How a step is timed and retried.

    ``heartbeat`` is what makes a crashed worker's step resume in seconds: the step beats
    (from a thread of its own, six times per ``heartbeat``) while it runs, and the engine
    reschedules it once beats stop for that long.

    A step lost with its worker (its beats stopped, or its ``start_to_close`` ran out) is
    retried after :data:`LOST_STEP_RETRY`; a step that failed with an error waits
    ``initial_interval`` times ``backoff`` per attempt (at most ``max_interval``), or what the
    error asked for (a provider's Retry-After, ``RetryableError(retry_after=...)``).

    ``max_attempts`` counts the attempts that end in an error. Attempts lost with a worker
    do not count against it: a step may lose :data:`LOST_ATTEMPTS` more. ``max_attempts=0``
    is refused: infinite silent retry is a defect.
    """

    start_to_close: timedelta = timedelta(minutes=10)
    heartbeat: timedelta = timedelta(seconds=2)
    max_attempts: int = 5
    initial_interval: timedelta = timedelta(seconds=1)
    backoff: float = 2.0
    max_interval: timedelta = timedelta(seconds=30)
    non_retryable_errors: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if self.max_attempts < 1:
            problems.append("max_attempts must be >= 1 (unlimited retries hide failures)")
        if self.heartbeat <= timedelta(0):
            problems.append("heartbeat must be positive")
        if self.start_to_close <= timedelta(0):
            problems.append("start_to_close must be positive")
        if self.backoff < 1:
            problems.append("backoff must be >= 1")
        if problems:
            raise ValueError("invalid StepPolicy: " + "; ".join(problems))


LOST_STEP_RETRY = timedelta(milliseconds=100)
"""How soon the engine retries a step whose attempt timed out (its worker died or hangs):
nothing needs to cool down, so the retry starts at once on a live worker. Errors wait their
policy's own interval: the step sets it on the failure it reports (core/steps.py)."""

LOST_ATTEMPTS = 10
"""Attempts a step may lose to timeouts (its worker died, or stalled past its heartbeat
timeout), on top of its policy's ``max_attempts``, which counts errors only. A worker that
blocks its event loop a few seconds stalls the steps it was handed meanwhile, before their
heartbeats start: each such attempt times out. Counted with errors, a 6 s block used up a
tool step's three attempts and failed a run that had nothing to do with it. The bound
stays finite: a step that kills every worker it runs on fails after this many losses."""

MODEL_POLICY = StepPolicy(max_attempts=8, max_interval=timedelta(seconds=60))
TOOL_POLICY = StepPolicy(max_attempts=3)


@dataclass(frozen=True, kw_only=True)
class StepRequest:
    """What crosses into a step: small and bounded.

    ``payload`` is the adapter's own JSON; ``transcript`` is a reference to the conversation
    so far plus the items the store has not seen (never the whole conversation).
    """

    run_id: str
    agent: str
    payload: JSON
    transcript: TranscriptRef | None = None
    context_ref: str | None = None
    attachments: dict[str, JSON] = field(default_factory=dict)
    step: int = 0
    """The step's number in its run (what the run's ``<kind>.started`` event names)."""
    shared_refs: list[str] = field(default_factory=list)
    """References of shared values that ``payload`` names: the step reads them from the store
    before its handler runs, so ``StepContext.shared(ref)`` needs no I/O."""
    retry_interval: float | None = None
    """Seconds before the first retry of a step that failed with an error (its policy's
    ``initial_interval``; the engine's retry policy holds :data:`LOST_STEP_RETRY` instead).
    None (a request from before this field): the engine's retry policy paces errors too."""
    error_attempts: int | None = None
    """How many attempts of the step may end in an error (its policy's ``max_attempts``); the
    engine's retry policy allows :data:`LOST_ATTEMPTS` more, for attempts lost to timeouts.
    None (a request from before this field): the engine's limit counts both."""


@dataclass(frozen=True, kw_only=True)
class TranscriptRef:
    """A conversation as ``base`` (a stored chain head, or None) plus ``delta`` items."""

    base: str | None
    delta: list[JSON]
    head: str
    length: int
    start: int = 0
    """The step reads the conversation from this position on (the earlier items only if
    it asks: :meth:`StepContext.transcript_items`), e.g. a request that continues a
    provider-held conversation. Workers of versions before it ignore it and read it all."""


@dataclass(frozen=True, kw_only=True)
class StepOutcome:
    """What a step returns. Control flow crosses as data: ``error`` is an outcome, not a crash.

    ``attempt`` is the attempt that produced it (set by the engine): earlier attempts failed,
    and the usage ledger counts them separately.
    """

    value: JSON = None
    error: StepError | None = None
    attempt: int = 1


@dataclass(frozen=True, kw_only=True)
class StepError:
    """A failure the run should see as a value (e.g. a tool error handed back to the model)."""

    type: str
    message: str
    attempts: int
    model_text: str | None = None
    fatal: bool = False


class StepContext(Protocol):
    """What a step handler sees on the worker."""

    @property
    def agent(self) -> object: ...

    @property
    def attempt(self) -> int: ...

    @property
    def final_attempt(self) -> bool: ...

    def run_context(self) -> object: ...

    def shared(self, ref: str) -> JSON: ...

    def transcript(self) -> list[JSON]:
        """The whole conversation the run handed this step (read before the handler ran).
        A step sent with ``transcript_from`` has only its end at hand: use
        :meth:`transcript_items` there."""
        ...

    async def transcript_items(self, start: int = 0) -> list[JSON]:
        """The conversation from position ``start`` on (positions in the whole of it),
        reading from the store only what was not read before the handler ran."""
        ...

    def heartbeat(self, *details: object) -> None: ...

    def publish(self, type: str, data: Mapping[str, JSON]) -> None:
        """Publish a live, provisional event from the step (e.g. ``model.delta``) to its run's
        event stream; it is tagged with the step and attempt, and flushed before the step
        returns. An attempt that fails may have published some: a later attempt publishes
        its own."""
        ...


StepHandler = Callable[[StepContext, JSON], Awaitable[StepOutcome]]


@dataclass(frozen=True, kw_only=True)
class StepDefinition:
    """A step type an adapter provides. ``name`` is persisted: renaming it strands runs."""

    name: str
    kind: StepKind
    handler: StepHandler
    policy: StepPolicy


WaitKind = Literal["approval", "question"]
TimeoutPolicy = Literal["deny", "fail", "default"]


@dataclass(frozen=True, kw_only=True)
class WaitRequest:
    """Something the run waits for from outside: a person's approval or answer.

    ``id`` must be deterministic (derived from the tool call id) so that a replayed run asks
    the same question under the same id. ``timeout`` is in seconds (None: wait forever, or
    the run's :class:`WaitPolicy`); ``on_timeout`` says what happens then: ``"deny"`` (an
    approval is refused), ``"fail"`` (the run fails with ``WaitTimedOut``) or ``"default"``
    (``default`` is the answer; for an approval, its truth value).
    """

    id: str
    kind: WaitKind
    tool: str | None = None
    args: JSON = None
    question: str | None = None
    timeout: float | None = None
    on_timeout: TimeoutPolicy | None = None
    default: JSON = None


@dataclass(frozen=True, kw_only=True)
class WaitAnswer:
    """The answer to a :class:`WaitRequest`: ``approved`` for approvals, ``value`` for questions."""

    id: str
    approved: bool | None = None
    value: JSON = None
    reason: str | None = None
    timed_out: bool = False


@dataclass(frozen=True, kw_only=True)
class WaitPolicy:
    """A run's default timeout and timeout policy for waits that set none themselves."""

    timeout: float | None = None
    on_timeout: TimeoutPolicy = "fail"
    default: JSON = None

    def __post_init__(self) -> None:
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError("WaitPolicy.timeout must be positive seconds (or None: no timeout)")
        if self.on_timeout not in ("deny", "fail", "default"):
            raise ValueError("WaitPolicy.on_timeout must be 'deny', 'fail' or 'default'")


@dataclass(frozen=True, kw_only=True)
class Budget:
    """Limits on one run's model usage; the run stops with ``BudgetExceeded`` past one.

    Checked after every model step (a step already made is never undone) and before the next.
    ``max_cost`` is in US dollars and needs a model ``genai_prices`` knows.
    """

    max_tokens: int | None = None
    max_requests: int | None = None
    max_cost: float | None = None

    def __post_init__(self) -> None:
        if all(v is None for v in (self.max_tokens, self.max_requests, self.max_cost)):
            raise ValueError("a Budget needs max_tokens, max_requests or max_cost")
        for name in ("max_tokens", "max_requests", "max_cost"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"Budget.{name} must be positive")


REPLAY_ITEMS = 100_000
"""Default :attr:`ContinueAsNew.replay_items`, calibrated with ``bench/long_run.py --replay``
so that a segment replays in one to four seconds on a loaded 2-core machine: about 100 model
steps early in a run, 50 at 1,000 conversation items, 10 at 9,000."""
STEP_ITEMS = 1_000
"""What one model step adds to :attr:`ContinueAsNew.replay_items` besides its conversation:
replaying a step costs about what walking 1,000 items does (measured: 30-45 ms per step,
6-40 microseconds per item and step, on a loaded machine)."""


@dataclass(frozen=True, kw_only=True)
class ContinueAsNew:
    """When a long run continues as new (a new segment of the same run, with a fresh history).

    The run continues at the first safe point (an adapter's step boundary, no step in flight)
    after any of these is reached: ``every_steps`` completed steps in the segment, the
    segment's history past ``history_bytes`` or ``history_events``, ``replay_items``
    conversation items handed to the segment's steps (summed over its steps), or, with
    ``suggested``, Temporal's own suggestion. The defaults keep every segment far below
    Temporal's limits (51,200 events, 50 MB) and keep the replay of a segment (what a
    recovering worker does before the run goes on) short; tests set ``every_steps`` to force
    it often.

    ``replay_items`` bounds what the history's size does not: a recovering worker re-runs the
    framework's loop for every step of the segment, and frameworks walk the whole
    conversation at each step, so replaying a segment costs about the sum, over its model
    steps, of the conversation's length then (each step counting :data:`STEP_ITEMS` more for
    itself). Late in a long run a segment therefore ends after fewer steps; its replay stays
    in the same seconds as early in the run.
    """

    every_steps: int | None = None
    history_bytes: int | None = 8_000_000
    history_events: int | None = 20_000
    replay_items: int | None = REPLAY_ITEMS
    suggested: bool = True

    def __post_init__(self) -> None:
        for name in ("every_steps", "history_bytes", "history_events", "replay_items"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"ContinueAsNew.{name} must be >= 1 (or None: no such limit)")


@dataclass(frozen=True, kw_only=True)
class Carried:
    """What a continued segment's input carries from the segment before it (persisted data).

    Small by design: counters, the usage ledger, waits, the transcript chain's head (the
    conversation stays in the store) and the adapter's loop state (``loop``). The event log
    and the timeline of earlier segments stay in their own runs (``segments`` names them).
    """

    segment: int
    loop: JSON = None
    steps: int = 0
    started_steps: int = 0
    usage: dict[str, int] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    waits: list[dict[str, Any]] = field(default_factory=list)
    ledger: dict[str, Any] = field(default_factory=dict)
    pending: list[dict[str, Any]] = field(default_factory=list)
    """Waits asked and not answered at the boundary: ``{"request": ..., "asked_at": ...}``."""
    answers: list[WaitAnswer] = field(default_factory=list)
    """Answers to carried waits given while the segment ended (the loop has not read them)."""
    transcript: dict[str, Any] | None = None
    """The last conversation handed to a step: its chain ``head``, ``length`` and ``digest``."""
    conversation: dict[str, Any] | None = None
    """The conversation the loop state holds, by reference: the chain ``base`` the store
    holds (``length`` items) and the ``delta`` after it (the items of the last turn);
    ``tail``: the loop resumes from the delta alone (see ``RunSession.checkpoint``)."""
    stream_offset: int = 0
    """The run's event log offset where this segment's events start."""
    publishers: dict[str, dict[str, Any]] = field(default_factory=dict)
    segments: list[dict[str, Any]] = field(default_factory=list)
    """Earlier segments: ``{"run_id", "first_offset", "first_step", "first_entry"}`` each,
    oldest first (``first_entry``: the run's timeline index of the segment's first entry;
    absent in segments of before it, where it is ``first_step - 1``)."""
    started: str | None = None
    """When the run's first segment started."""
    timeline_before: int | None = None
    """Timeline entries of the earlier segments (None in a segment continued before this
    field: then ``started_steps``, equal at a boundary, where no step is in flight)."""
    timeline_recent: list[dict[str, Any]] = field(default_factory=list)
    """The latest timeline entries of the earlier segments (at most ``STATUS_RECENT``), so
    the status query shows the run's latest steps across a boundary; the others stay in
    their segments' runs."""


class RunSession(Protocol):
    """The run-side API an adapter's loop uses (deterministic; realized on a Temporal workflow)."""

    @property
    def run_id(self) -> str: ...

    @property
    def agent_name(self) -> str: ...

    def transcript(self) -> Transcript: ...

    def now(self) -> datetime:
        """The run's current time (UTC), replay-safe: a replayed run reads the same value.

        Hand it to framework code that would read the wall clock (e.g. a system prompt
        with the date): ``datetime.now()`` in the loop differs on replay."""
        ...

    def uuid(self) -> str:
        """A random UUID (text) that a replayed run gets again: use it for ids the loop
        makes (``uuid.uuid4()`` in the loop gives other ids on replay)."""
        ...

    def replaying(self) -> bool:
        """Whether the run is re-executing its recorded history (on a worker that resumed it
        after a crash, or after evicting it from its cache): telemetry the loop emits now was
        emitted when this part first ran, so a framework's tracing skips it."""
        ...

    def random(self, name: str) -> Random:
        """A random generator of the run's own, named ``name``, that a replayed run gets
        again: for telemetry ids (a framework's trace and span ids). It is independent of
        :meth:`uuid`'s, so using it or not changes nothing else in the run."""
        ...

    async def step(
        self,
        name: str,
        payload: JSON,
        *,
        kind: StepKind,
        summary: str,
        policy: StepPolicy,
        transcript: Sequence[JSON] | None = None,
        info: Mapping[str, JSON] | None = None,
        prefixed: bool = False,
        transcript_from: int = 0,
        frozen: bool = False,
    ) -> StepOutcome:
        """Run one step. ``info`` (e.g. ``{"tool": name, "call_id": id, "args": ...}``) is
        published with the step's events. ``transcript`` is the conversation the step
        reads (its worker gets it whole from :meth:`StepContext.transcript`); ``prefixed``:
        it is the tail the loop resumed from (see :meth:`checkpoint`), grown since, and
        the :meth:`resumed_prefix` items before it are the store's. ``transcript_from``: the
        step needs only the items from that position of the whole conversation on (a
        request continuing a provider-held conversation): its worker reads no more unless
        it asks (:meth:`StepContext.transcript_items`), so a worker new to a long run does
        not read all of it, nor keep it in memory. ``frozen``: the transcript's items are
        JSON the adapter made and never changes afterwards, handed again as the same objects
        while they stay the same: the run keeps them rather than copies, and finds what
        earlier steps stored by identity instead of comparing every item's value."""
        ...

    async def wait(self, request: WaitRequest) -> WaitAnswer:
        """Suspend the run until a person answers ``request`` (or its timeout policy does)."""
        ...

    def publish(self, type: str, data: Mapping[str, JSON]) -> None:
        """Publish a run event (deterministic: the run's replay does not publish it again)."""
        ...

    def share(self, value: JSON) -> str:
        """A content reference to ``value``; the value reaches steps once per run, not per step."""
        ...

    def record_failure(self, step: str, error: StepError) -> None: ...

    def add_usage(
        self, usage: Mapping[str, int], *, model: str | None = None, provider: str | None = None
    ) -> None:
        """Record one model step's usage (``model``/``provider`` price it when known)."""
        ...

    def usage(self) -> dict[str, int]:
        """Tokens and requests of this run so far (each completed model step counted once)."""
        ...

    async def checkpoint(
        self,
        snapshot: Callable[[], JSON],
        *,
        transcript: Sequence[JSON] | None = None,
        asking: Sequence[WaitRequest] = (),
        prefixed: bool = False,
        tail_only: bool = False,
    ) -> None:
        """Mark a step boundary of the loop (adapters declaring
        ``Capability.CONTINUE_AS_NEW``). Usually returns at once. When the run is due to
        continue as new and this is a safe point, ``snapshot()`` is called for the loop's
        state (JSON) and this call does not return: the loop unwinds (a ``BaseException``
        that must not be swallowed) and the next segment's loop resumes from
        :meth:`resumed`.

        ``transcript`` is the conversation the loop holds, as handed to steps: it crosses by
        reference to the store (leave it out of the snapshot) and comes back from
        :meth:`resumed_transcript`. ``asking`` are waits the loop is about to make: they are
        asked now and carried, so a person can answer them in the next segment.

        ``tail_only``: the next segment's loop needs only the conversation's *tail*, the
        items after the longest prefix the store holds (a loop that continues a
        conversation the provider keeps, e.g. a Responses API ``previous_response_id``,
        sends no more). :meth:`resumed_transcript` is then that tail and
        :meth:`resumed_prefix` the number of items before it; the run never loads the
        prefix, so a segment's start and its loop's per-turn work do not grow with the
        conversation. Hand the loop's conversations over with ``prefixed=True`` from then
        on (steps and checkpoints): its workers still read it whole. ``prefixed`` here as
        in :meth:`step`."""
        ...

    def resumed(self) -> JSON:
        """The loop state the previous segment's :meth:`checkpoint` saved (None in a run's
        first segment): the adapter resumes its framework's loop from it."""
        ...

    def resumed_transcript(self) -> list[JSON] | None:
        """The conversation passed to the previous segment's :meth:`checkpoint` (None when
        none was, and in a run's first segment); its tail only if that checkpoint said
        ``tail_only``."""
        ...

    def resumed_prefix(self) -> int:
        """How many items of the conversation precede :meth:`resumed_transcript` (0 unless
        the loop resumed from a tail): add it to positions in the tail to get positions in
        the whole conversation, as a step's worker sees it."""
        ...

    async def stored_prefix(self) -> list[JSON]:
        """The :meth:`resumed_prefix` items themselves, read from the store (one read, the
        size of the conversation): for a result that must hold the whole conversation, once
        at the end, never per turn. Empty unless the loop resumed from a tail."""
        ...


@dataclass(frozen=True, kw_only=True)
class RunRequest:
    """The input of one durable run, as the run receives it."""

    agent: str
    adapter: str
    input: JSON
    options: dict[str, JSON] = field(default_factory=dict)
    context: dict[str, JSON] | None = None
    """The run context / deps, packed once for the whole run (steps get it by reference)."""
    budget: Budget | None = None
    waits: WaitPolicy | None = None
    stream_text: bool = False
    """Model steps stream and publish ``model.delta`` events (costs a signal per batch)."""
    source: str | None = None
    """Where the agent is defined, as ``MODULE:OBJECT`` (what `tether worker` takes), when
    known: named in the error of a worker that does not host the agent."""
    continue_as_new: ContinueAsNew | None = None
    """When the run continues as new (None: the defaults of :class:`ContinueAsNew`)."""
    carried: Carried | None = None
    """Set in a continued segment's input only: what the previous segment hands over."""


class Adapter(abc.ABC):
    """Maps one framework's agent loop onto Tether's steps and run.

    An adapter is stateless: agents are looked up by name in the worker's registry and
    reach :meth:`run` and the step handlers as objects, never serialized.
    """

    name: str
    """Stable identifier (persisted in run inputs), e.g. ``"openai_agents"``."""
    framework: str
    """The framework's distribution name, e.g. ``"openai-agents"``."""
    verified_versions: str
    """The framework versions this adapter is tested against, e.g. ``">=0.24,<0.25"``."""
    capabilities: frozenset[Capability] = frozenset()

    @abc.abstractmethod
    def claims(self, obj: object) -> bool:
        """Whether ``obj`` is an agent of this adapter's framework."""

    @abc.abstractmethod
    def agent_name(self, agent: object) -> str:
        """The name the agent is registered and started under."""

    def prepare(self, agent: object) -> None:  # noqa: B027 - optional hook
        """Validate an agent at wrap time; raise a clear error for what cannot work durably."""

    def warm_up(self) -> None:  # noqa: B027 - optional hook
        """Make now what this adapter's steps would otherwise do on their first call (lazy
        imports of the provider client's resources). A worker calls it once per process, in a
        background thread, when it is built: a standby worker then takes over a dead worker's
        step without paying for it (the OpenAI client's first ``responses`` call imported for
        1.4 s on a loaded machine). Must not fail: errors are logged and ignored."""

    @abc.abstractmethod
    def steps(self) -> Sequence[StepDefinition]:
        """The step types this adapter runs (registered on every worker)."""

    @abc.abstractmethod
    async def run(self, session: RunSession, agent: object, request: RunRequest) -> JSON:
        """Run the agent's loop inside a run; return the adapter-encoded final output."""

    def encode_input(self, value: object) -> JSON:
        """Turn the user's run input into JSON for the run's input."""
        return value

    def encode_options(self, agent: object, options: dict[str, Any]) -> dict[str, JSON]:
        """Turn ``durable.run(..., **options)`` into the run's JSON options."""
        from pydantic_core import to_jsonable_python

        return {k: to_jsonable_python(v) for k, v in options.items()}

    def prepare_context(self, agent: object, context: object) -> object:
        """Validate (and convert, e.g. JSON from the CLI) the run context / deps before the
        run starts; raise a clear error for one the agent cannot use."""
        return context

    def decode_output(self, agent: object, value: JSON) -> object:
        """Turn the run's JSON output back into what the framework's run would return."""
        return value

    def context_type(self, agent: object) -> Any:
        """The type the agent declares for its run context / deps (e.g. Pydantic AI's
        ``deps_type``), or None. Workers rebuild the context as this type, whatever module
        the caller's value came from."""
        return None

    def decode_context(self, agent: object, value: JSON) -> object:
        """Rebuild the run context / deps from JSON on the worker."""
        return value

    def stream(self, durable: Any, api: str, input: Any, options: dict[str, Any]) -> Any:
        """The framework's own streaming API ``api`` (e.g. ``"run_streamed"``,
        ``"run_stream"``, ``"iter"``) for ``durable`` (a :class:`tether.DurableAgent`),
        fed by a durable run. Adapters that declare ``Capability.STREAMING`` implement it."""
        from tether.errors import ConfigurationError

        raise ConfigurationError(
            f"{api}() is not available for {self.name} agents in a durable run. Fix: use "
            "durable.run(...) and handle.events() for progress"
        )

    def read_stream(self, durable: Any, handle: Any, from_offset: int) -> AsyncIterator[Any]:
        """The run ``handle``'s stream in the framework's own event types, from log offset
        ``from_offset``: pairs of (offset to resume from once handled, event)."""
        from tether.errors import ConfigurationError

        raise ConfigurationError(
            f"{self.name} runs have no framework-shaped stream. Fix: read handle.events()"
        )

    def passthrough_modules(self) -> Sequence[str]:
        """Modules the run's sandbox must share with the worker (the framework's own)."""
        return ()

    def framework_version(self) -> str | None:
        """The installed framework's version."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(self.framework)
        except PackageNotFoundError:
            return None
