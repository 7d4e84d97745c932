"""A scripted OpenAI-compatible HTTP model server for tests, the demo and benchmarks.

It speaks the Chat Completions and Responses APIs (plain and streamed), so frameworks'
real OpenAI clients and model classes are exercised. Replies come from a script and are
chosen from the request itself, never from a global counter: the *turn index* is the
number of model turns already in the request's conversation, and the *lane* is the
request's ``model`` field. A repeated request (a retry, a re-execution after a crash) gets
the same reply and is counted as another request for the same step, which is how tests
prove that no completed model call was made twice.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

Json = dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """One function call the model asks for; ``arguments`` is a dict or a JSON string."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(dict(self.arguments), separators=(",", ":"))


@dataclass(frozen=True)
class Fault:
    """A failure served instead of the reply, on one attempt of a step."""

    kind: str
    status: int = 500
    retry_after: float | None = None
    seconds: float = 0.0

    @classmethod
    def rate_limit(cls, retry_after: float = 1.0) -> Fault:
        """HTTP 429 with a Retry-After header."""
        return cls("rate_limit", status=429, retry_after=retry_after)

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        return cls("server_error", status=status)

    @classmethod
    def hang(cls, seconds: float) -> Fault:
        """Wait ``seconds`` (woken early by stop), then reply normally."""
        return cls("hang", seconds=seconds)

    @classmethod
    def malformed(cls) -> Fault:
        """HTTP 200 with a body that is not JSON."""
        return cls("malformed", status=200)


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Turn:
    """One scripted model reply: text, or tool calls (several = parallel calls)."""

    message: str | None = None
    calls: tuple[ToolCall, ...] = ()
    usage: Usage | None = None
    delay: float = 0.0
    faults: tuple[Fault, ...] = ()

    @classmethod
    def text(
        cls,
        text: str,
        *,
        usage: Usage | None = None,
        delay: float = 0.0,
        faults: Sequence[Fault] = (),
    ) -> Turn:
        return cls(message=text, usage=usage, delay=delay, faults=tuple(faults))

    @classmethod
    def tool_calls(
        cls,
        *calls: ToolCall,
        usage: Usage | None = None,
        delay: float = 0.0,
        faults: Sequence[Fault] = (),
    ) -> Turn:
        if not calls:
            raise ValueError("Turn.tool_calls needs at least one ToolCall")
        return cls(calls=tuple(calls), usage=usage, delay=delay, faults=tuple(faults))

    @classmethod
    def json(
        cls,
        value: Any,
        *,
        usage: Usage | None = None,
        delay: float = 0.0,
        faults: Sequence[Fault] = (),
    ) -> Turn:
        """Structured output: the assistant's text is ``value`` as JSON."""
        return cls.text(json.dumps(value), usage=usage, delay=delay, faults=faults)


class Script:
    """Turns by lane (the request's ``model``); lane ``"*"`` serves any other model.

    Requests are recorded under their model name, whichever lane served them.
    """

    def __init__(
        self, lanes: Mapping[str, Sequence[Turn] | Mapping[int, Turn]] | Sequence[Turn]
    ) -> None:
        self.lanes: dict[str, dict[int, Turn]] = {}
        items = lanes.items() if isinstance(lanes, Mapping) else [("*", lanes)]
        for lane, turns in items:
            self.lanes[lane] = dict(turns) if isinstance(turns, Mapping) else dict(enumerate(turns))

    def lane_for(self, model: str) -> str:
        return model if model in self.lanes else "*"

    def turn(self, lane: str, index: int) -> Turn | None:
        """The reply at ``index``: lanes are lists, or {turn index: Turn} for lanes that join
        a conversation later (a handoff target sees the turns of the agent before it)."""
        return self.lanes.get(lane, {}).get(index)

    def to_json(self) -> str:
        return json.dumps(
            {
                lane: {str(i): asdict(t) for i, t in turns.items()}
                for lane, turns in self.lanes.items()
            }
        )

    @classmethod
    def from_json(cls, data: str) -> Script:
        raw = json.loads(data)
        lanes: dict[str, dict[int, Turn]] = {}
        for lane, turns in raw.items():
            lanes[lane] = {
                int(i): Turn(
                    message=t.get("message"),
                    calls=tuple(ToolCall(c["name"], c.get("arguments", {})) for c in t["calls"]),
                    usage=Usage(**t["usage"]) if t.get("usage") else None,
                    delay=t.get("delay", 0.0),
                    faults=tuple(Fault(**f) for f in t.get("faults", [])),
                )
                for i, t in turns.items()
            }
        return cls(lanes)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it."""

    endpoint: str
    lane: str
    turn: int
    attempt: int
    stream: bool
    size: int
    body: Json
    status: int
    malformed: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    """The request's HTTP headers (names lower-cased)."""

    @property
    def previous_response_id(self) -> str | None:
        """The stored response a Responses request continues (None: a full request). A
        request whose previous response is unknown or expired is recorded with turn -1."""
        value = self.body.get("previous_response_id")
        return value if isinstance(value, str) else None

    @property
    def body_text(self) -> str:
        return json.dumps(self.body)


def _is_model_output(item: Any) -> bool:
    if not isinstance(item, dict):
        return False
    kind = item.get("type")
    if kind in (None, "message"):
        return item.get("role") == "assistant"
    if kind == "reasoning":
        return True
    return isinstance(kind, str) and kind.endswith("_call") and not kind.endswith("_output")


def turn_index(endpoint: str, body: Json) -> int:
    """How many model turns the request's conversation already holds."""
    if endpoint == "chat":
        return sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")
    items = body.get("input")
    if not isinstance(items, list):
        return 0
    turns, inside = 0, False
    for item in items:
        out = _is_model_output(item)
        if out and not inside:
            turns += 1
        inside = out
    return turns


def default_usage(body_size: int, turn: Turn) -> Usage:
    """input = request bytes // 4; output = 10 + reply characters // 4 (deterministic)."""
    produced = len(turn.message or "") + sum(len(c.arguments_json()) for c in turn.calls)
    return Usage(input_tokens=body_size // 4, output_tokens=10 + produced // 4)


class ScriptedModelServer:
    """The server; ``with ScriptedModelServer(turns) as server: server.base_url``."""

    def __init__(
        self,
        script: Script
        | Mapping[str, Sequence[Turn] | Mapping[int, Turn]]
        | Sequence[Turn]
        | None = None,
        *,
        responder: Callable[[RecordedRequest], Turn] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        streaming: bool = True,
        piece_delay: float = 0.0,
        on_piece: Callable[[str], None] | None = None,
    ) -> None:
        """``streaming=False`` serves a provider that does not stream: a request asking for a
        stream gets the plain JSON reply (as some OpenAI-compatible servers do).
        ``piece_delay`` paces a streamed reply's text pieces (seconds between pieces), and
        ``on_piece`` is called with each text piece as it is sent (latency benchmarks)."""
        if script is None and responder is None:
            raise ValueError("give a script or a responder")
        self.script = script if isinstance(script, Script) or script is None else Script(script)
        self.responder = responder
        self.streaming = streaming
        self.piece_delay = piece_delay
        self.on_piece = on_piece
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._attempts: dict[tuple[str, int], int] = {}
        self._usage = Usage(0, 0)
        self._states: dict[str, list[Any]] = {}
        """Responses API conversation state by response id (``previous_response_id``)."""
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> ScriptedModelServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._stop.clear()
        self._httpd = ThreadingHTTPServer((self._host, self._port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="scripted-model-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> ScriptedModelServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    # -- what was seen ----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def count(self, lane: str | None = None, turn: int | None = None) -> int:
        """Requests received (for one lane and/or turn)."""
        return sum(
            1
            for r in self.requests
            if (lane is None or r.lane == lane) and (turn is None or r.turn == turn)
        )

    def arrived(self, lane: str | None = None, turn: int | None = None) -> int:
        """Requests that arrived (for one lane and/or turn), also those still being answered
        (a hang); :meth:`count` sees a request once it is answered."""
        with self._lock:
            return sum(
                n
                for (la, t), n in self._attempts.items()
                if (lane is None or la == lane) and (turn is None or t == turn)
            )

    def served(self, lane: str, turn: int) -> int:
        """Successful (2xx, well-formed) replies for one step."""
        return sum(
            1
            for r in self.requests
            if r.lane == lane and r.turn == turn and 200 <= r.status < 300 and not r.malformed
        )

    def steps_seen(self) -> dict[tuple[str, int], int]:
        out: dict[tuple[str, int], int] = {}
        for r in self.requests:
            out[(r.lane, r.turn)] = out.get((r.lane, r.turn), 0) + 1
        return out

    def total_usage(self) -> Usage:
        with self._lock:
            return self._usage

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._attempts.clear()
            self._usage = Usage(0, 0)

    def expire_responses(self, *ids: str) -> int:
        """Forget stored Responses state (``ids``, or all of it), as when the provider's
        stored responses expire: a request naming one as ``previous_response_id`` is
        answered 400 ``previous_response_not_found``. Returns how many were forgotten."""
        with self._lock:
            gone = [i for i in (ids or list(self._states)) if i in self._states]
            for i in gone:
                del self._states[i]
            return len(gone)

    @property
    def stored_responses(self) -> list[str]:
        """Ids of the responses whose conversation state the server keeps."""
        with self._lock:
            return list(self._states)

    def _state(self, response_id: str) -> list[Any] | None:
        with self._lock:
            return self._states.get(response_id)

    def _store_state(self, response_id: str, conversation: list[Any]) -> None:
        with self._lock:
            self._states[response_id] = conversation

    def stats(self) -> Json:
        usage = self.total_usage()
        return {
            "requests": len(self.requests),
            "steps": [
                {"lane": lane, "turn": turn, "count": n}
                for (lane, turn), n in sorted(self.steps_seen().items())
            ],
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
        }

    # -- serving ----------------------------------------------------------------------------

    def _record(self, req: RecordedRequest, usage: Usage | None) -> None:
        with self._lock:
            self._requests.append(req)
            if usage is not None:
                self._usage = Usage(
                    self._usage.input_tokens + usage.input_tokens,
                    self._usage.output_tokens + usage.output_tokens,
                )

    def _next_attempt(self, lane: str, turn: int) -> int:
        with self._lock:
            n = self._attempts.get((lane, turn), 0) + 1
            self._attempts[(lane, turn)] = n
            return n

    def sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)


class _Handler(BaseHTTPRequestHandler):
    owner: ScriptedModelServer
    protocol_version = "HTTP/1.1"
    # A reply is written as headers, then body: with Nagle's algorithm on, the body waited for
    # the client's delayed ACK of the headers, about 40 ms per request on a keep-alive
    # connection (a provider answers in one go; the scripted one should not add a stall).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (a worker killed mid-request, as crash tests do)

    def _json(self, status: int, value: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(value).encode(), headers)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._json(200, {"ok": True})
        elif self.path == "/v1/models":
            lanes = self.owner.script.lanes if self.owner.script else {}
            data = [{"id": lane, "object": "model", "owned_by": "tether"} for lane in lanes]
            self._json(200, {"object": "list", "data": data})
        elif self.path == "/v1/_tether/stats":
            self._json(200, self.owner.stats())
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") == "/v1/chat/completions":
            endpoint = "chat"
        elif self.path.rstrip("/") == "/v1/responses":
            endpoint = "responses"
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._json(400, {"error": {"message": "request body is not JSON"}})
            return
        owner = self.owner
        model = str(body.get("model", ""))
        stream = bool(body.get("stream"))
        # Responses API state: the request continues a stored response's conversation.
        previous = body.get("previous_response_id") if endpoint == "responses" else None
        conversation: list[Any] | None = None
        if endpoint == "responses":
            sent = body.get("input")
            if isinstance(sent, str):
                sent = [{"role": "user", "content": sent}]
            conversation = list(sent) if isinstance(sent, list) else []
            if previous is not None:
                stored = owner._state(str(previous))
                if stored is None:
                    self._not_found(endpoint, model, stream, raw, body, str(previous))
                    return
                conversation = stored + conversation
        index = turn_index(endpoint, {"input": conversation} if previous is not None else body)
        lane = model  # recorded under the request's model; the script may serve it from "*"
        script_lane = owner.script.lane_for(model) if owner.script else model
        attempt = owner._next_attempt(lane, index)

        def record(status: int, usage: Usage | None = None, malformed: bool = False) -> None:
            req = RecordedRequest(
                endpoint,
                lane,
                index,
                attempt,
                stream,
                len(raw),
                body,
                status,
                malformed,
                {k.lower(): v for k, v in self.headers.items()},
            )
            owner._record(req, usage)

        if owner.responder is not None:
            probe = RecordedRequest(endpoint, lane, index, attempt, stream, len(raw), body, 0)
            turn: Turn | None = owner.responder(probe)
        else:
            assert owner.script is not None
            turn = owner.script.turn(script_lane, index)
        if turn is None:
            have = len(owner.script.lanes.get(script_lane, {})) if owner.script else 0
            record(400)
            self._json(
                400,
                {
                    "error": {
                        "message": (
                            f"scripted model server: lane {lane!r} has {have} turns but the "
                            f"request is at turn {index} (model {model!r}); extend the script"
                        ),
                        "type": "invalid_request_error",
                    }
                },
            )
            return
        if attempt <= len(turn.faults):
            fault = turn.faults[attempt - 1]
            if fault.kind == "hang":
                owner.sleep(fault.seconds)
            elif fault.kind == "malformed":
                record(200, malformed=True)
                self._send(200, b"{not json")
                return
            else:
                record(fault.status)
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = f"{fault.retry_after:g}"
                    headers["retry-after-ms"] = str(int(fault.retry_after * 1000))
                self._json(
                    fault.status,
                    {"error": {"message": f"scripted {fault.kind}", "type": fault.kind}},
                    headers,
                )
                return
        if turn.delay:
            owner.sleep(turn.delay)
        usage = turn.usage or default_usage(len(raw), turn)
        record(200, usage)
        ids = _Ids(lane, index)
        if conversation is not None and body.get("store") is not False:
            owner._store_state(f"resp_{ids.tag()}", conversation + _output_items(turn, ids))
        stream = stream and owner.streaming
        if endpoint == "chat":
            if stream:
                self._stream(_chat_chunks(model, turn, usage, ids, body))
            else:
                self._json(200, _chat_completion(model, turn, usage, ids))
        elif stream:
            self._stream(_response_events(model, turn, usage, ids))
        else:
            self._json(200, _response(model, turn, usage, ids, "completed"))

    def _not_found(
        self, endpoint: str, model: str, stream: bool, raw: bytes, body: Json, previous: str
    ) -> None:
        """The Responses API's answer to an unknown or expired ``previous_response_id``."""
        lane = model
        self.owner._record(
            RecordedRequest(
                endpoint,
                lane,
                -1,
                1,
                stream,
                len(raw),
                body,
                400,
                headers={k.lower(): v for k, v in self.headers.items()},
            ),
            None,
        )
        self._json(
            400,
            {
                "error": {
                    "message": f"Previous response with id '{previous}' not found.",
                    "type": "invalid_request_error",
                    "param": "previous_response_id",
                    "code": "previous_response_not_found",
                }
            },
        )

    def _stream(self, events: Iterator[str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        owner = self.owner
        paced = owner.piece_delay > 0 or owner.on_piece is not None
        for event in events:
            piece = _text_piece(event) if paced else None
            if piece is not None and owner.piece_delay > 0:
                owner.sleep(owner.piece_delay)
            if piece is not None and owner.on_piece is not None:
                owner.on_piece(piece)  # just before it leaves
            data = event.encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            if piece is not None:
                self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


@dataclass(frozen=True)
class _Ids:
    lane: str
    turn: int

    def tag(self) -> str:
        safe = "".join(c if c.isalnum() else "_" for c in self.lane)
        return f"{safe}_{self.turn}"

    def call(self, i: int) -> str:
        return f"call_{self.tag()}_{i}"


def _chat_completion(model: str, turn: Turn, usage: Usage, ids: _Ids) -> Json:
    message: Json = {"role": "assistant", "content": turn.message}
    if turn.calls:
        message["tool_calls"] = [
            {
                "id": ids.call(i),
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments_json()},
            }
            for i, c in enumerate(turn.calls)
        ]
    return {
        "id": f"chatcmpl-{ids.tag()}",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if turn.calls else "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
        },
    }


def _sse(data: Any, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n"


def _chat_chunks(model: str, turn: Turn, usage: Usage, ids: _Ids, body: Json) -> Iterator[str]:
    def chunk(delta: Json, finish: str | None = None) -> Json:
        return {
            "id": f"chatcmpl-{ids.tag()}",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    yield _sse(chunk({"role": "assistant", "content": ""}))
    if turn.message:
        for piece in _pieces(turn.message):
            yield _sse(chunk({"content": piece}))
    for i, c in enumerate(turn.calls):
        yield _sse(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": i,
                            "id": ids.call(i),
                            "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments_json()},
                        }
                    ]
                }
            )
        )
    yield _sse(chunk({}, "tool_calls" if turn.calls else "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        final = chunk({})
        final["choices"] = []
        final["usage"] = {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
        }
        yield _sse(final)
    yield "data: [DONE]\n\n"


def _text_piece(event: str) -> str | None:
    """The text piece a streamed event carries (Responses or Chat Completions), if any."""
    line = next((x for x in event.splitlines() if x.startswith("data: {")), None)
    if line is None:
        return None
    data = json.loads(line[6:])
    if data.get("type") == "response.output_text.delta":
        return str(data["delta"])
    choices = data.get("choices") or []
    content = choices[0].get("delta", {}).get("content") if choices else None
    return content if isinstance(content, str) and content else None


def _pieces(text: str, size: int = 16) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _output_items(turn: Turn, ids: _Ids) -> list[Json]:
    items: list[Json] = []
    if turn.message is not None:
        items.append(
            {
                "type": "message",
                "id": f"msg_{ids.tag()}",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": turn.message, "annotations": []}],
            }
        )
    for i, c in enumerate(turn.calls):
        items.append(
            {
                "type": "function_call",
                "id": f"fc_{ids.tag()}_{i}",
                "call_id": ids.call(i),
                "name": c.name,
                "arguments": c.arguments_json(),
                "status": "completed",
            }
        )
    return items


def _response(model: str, turn: Turn, usage: Usage, ids: _Ids, status: str) -> Json:
    return {
        "id": f"resp_{ids.tag()}",
        "object": "response",
        "created_at": 0,
        "model": model,
        "status": status,
        "output": _output_items(turn, ids) if status == "completed" else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
        "temperature": 1.0,
        "top_p": 1.0,
        "text": {"format": {"type": "text"}},
        "usage": {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }


def _response_events(model: str, turn: Turn, usage: Usage, ids: _Ids) -> Iterator[str]:
    seq = iter(range(1_000_000))

    def ev(kind: str, **data: Any) -> str:
        return _sse({"type": kind, "sequence_number": next(seq), **data}, kind)

    yield ev("response.created", response=_response(model, turn, usage, ids, "in_progress"))
    yield ev("response.in_progress", response=_response(model, turn, usage, ids, "in_progress"))
    for index, item in enumerate(_output_items(turn, ids)):
        if item["type"] == "message":
            text = item["content"][0]["text"]
            empty = dict(item, status="in_progress", content=[])
            yield ev("response.output_item.added", output_index=index, item=empty)
            part = {"type": "output_text", "text": "", "annotations": []}
            common = {"item_id": item["id"], "output_index": index, "content_index": 0}
            yield ev("response.content_part.added", part=part, **common)
            for piece in _pieces(text):
                yield ev("response.output_text.delta", delta=piece, logprobs=[], **common)
            yield ev("response.output_text.done", text=text, logprobs=[], **common)
            done_part = {"type": "output_text", "text": text, "annotations": []}
            yield ev("response.content_part.done", part=done_part, **common)
        else:
            started = dict(item, arguments="", status="in_progress")
            yield ev("response.output_item.added", output_index=index, item=started)
            yield ev(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=index,
                delta=item["arguments"],
            )
            yield ev(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=item["arguments"],
                name=item["name"],
            )
        yield ev("response.output_item.done", output_index=index, item=item)
    yield ev("response.completed", response=_response(model, turn, usage, ids, "completed"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a scripted OpenAI-compatible server.")
    parser.add_argument("--script", required=True, help="JSON file (Script.to_json)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--no-streaming", action="store_true", help="answer stream requests with plain JSON"
    )
    args = parser.parse_args(argv)
    with open(args.script) as f:
        script = Script.from_json(f.read())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with ScriptedModelServer(script, port=args.port, streaming=not args.no_streaming) as server:
        print(server.base_url, flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
