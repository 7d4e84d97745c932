"""Encryption at rest, one switch: with a keyring, the raw history and every file of the
blob store hold no plaintext prompt, tool result or secret, and the run still completes and
reads back decoded; keys rotate (an old key still decrypts)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.protobuf import json_format
from pydantic_ai import Agent, RunContext
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)
from temporalio.worker import Worker

import tether
from apps.user_workflows import SupportTicket, Ticket, TicketReply, lookup_customer
from tether.contrib.temporal import TetherPlugin
from tether.core import codec
from tether.core.codec import (
    BLOB_MAGIC,
    ENCODING,
    KEY_ID_METADATA,
    EncryptionCodec,
    Keyring,
    failure_message,
)
from tether.core.converter import data_converter
from tether.core.devserver import EmbeddedEngine, find_temporal_binary, free_port, port_open
from tether.core.runtime import Runtime, agent_queue
from tether.core.store import BlobStore
from tether.errors import ConfigurationError, DecryptionError
from tether.testing import ScriptedModelServer, ToolCall, Turn
from tether.testing._workers import stop_process_group
from workers import WorkerProcess, wait_until_polling, worker_processes


@dataclass
class Account:
    owner: str
    api_token: str  # a plain field: the payload codec alone must keep it out of history


@pytest.fixture(autouse=True)
def _restore_keyring() -> Iterator[None]:
    before = codec.active_keyring()
    yield
    codec.configure(before)


@pytest.fixture
async def encrypted(
    engine: EmbeddedEngine, tmp_path: Path
) -> AsyncIterator[tuple[Runtime, Path, Keyring]]:
    keyring = Keyring.generate("k1")
    root = tmp_path / "store"
    rt = await Runtime.start(address=engine.address, store=BlobStore(root), encryption=keyring)
    try:
        yield rt, root, keyring
    finally:
        await rt.close()


def store_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def planted(tag: str) -> dict[str, str]:
    return {
        "prompt": f"PROMPT-{tag}-what is on my account",
        "secret": f"SECRET-{tag}-sk-live-123",
        "tool": f"TOOLRESULT-{tag}-",
    }


def balance_agent(server: ScriptedModelServer, marks: dict[str, str], name: str) -> Agent:
    model = OpenAIChatModel(
        "gpt-enc", provider=OpenAIProvider(base_url=server.base_url, api_key="t")
    )
    agent = Agent(model, name=name, deps_type=Account)

    @agent.tool
    def statement(ctx: RunContext[Account]) -> str:
        """The account's statement (large: stored outside the history)."""
        assert ctx.deps.api_token == marks["secret"]
        return marks["tool"] + "x" * 300_000

    return agent


def script() -> list[Turn]:
    return [Turn.tool_calls(ToolCall("statement", {})), Turn.text("Your balance is fine.")]


async def test_history_and_store_hold_no_plaintext(
    encrypted: tuple[Runtime, Path, Keyring], task_queue: str
) -> None:
    runtime, root, _ = encrypted
    marks = planted(uuid.uuid4().hex[:8])
    with ScriptedModelServer(script()) as server:
        agent = balance_agent(server, marks, "enc-balance")
        durable = tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)
        async with runtime.worker(task_queue=task_queue):
            handle = await durable.start(marks["prompt"], deps=Account("ada", marks["secret"]))
            result = await handle.result()
            # the model saw the (decrypted) tool result: the run worked end to end
            assert marks["tool"] in server.requests[-1].body_text
            # events and the run's state read back decoded (queries need a worker)
            events = [e async for e in handle.events()]
            responses = [json.dumps(e.data) for e in events if e.type == "model.response"]
            assert any("Your balance is fine." in r for r in responses)
            assert (await handle.describe()).status == "completed"
        assert result.output == "Your balance is fine."
        request = await handle.request()  # the start event's input, decoded
        assert request is not None and request.input == marks["prompt"]

        # Raw history: every payload encrypted, no marker in any byte of it.
        history = await runtime.client.get_workflow_handle(handle.id).fetch_history()
        raw = history.to_json().encode() + b"".join(e.SerializeToString() for e in history.events)
        for what, mark in marks.items():
            assert mark.encode() not in raw, f"{what} found in the raw history"
        started = history.events[0].workflow_execution_started_event_attributes
        assert started.input.payloads[0].metadata["encoding"] == ENCODING

        # Raw store: every file is encrypted, and none holds a marker.
        files = store_files(root)
        blobs = [p for p in files if p.name != "tether-store.json"]
        assert blobs, "the run stored nothing"
        assert any(p.stat().st_size > 300_000 for p in blobs), "no large payload was stored"
        for path in blobs:
            data = path.read_bytes()
            assert data.startswith(BLOB_MAGIC), f"{path} is not encrypted"
            for what, mark in marks.items():
                assert mark.encode() not in data, f"{what} found in {path}"


async def test_rotation_old_key_still_decrypts(
    engine: EmbeddedEngine, tmp_path: Path, task_queue: str
) -> None:
    old, new = Keyring.generate("k1"), Keyring.generate("k2")
    root = tmp_path / "store"
    with ScriptedModelServer([Turn.text("done")]) as server:
        model = OpenAIChatModel(
            "gpt-rot", provider=OpenAIProvider(base_url=server.base_url, api_key="t")
        )
        agent = Agent(model, name="enc-rotate")
        first = await Runtime.start(address=engine.address, store=BlobStore(root), encryption=old)
        try:
            durable = tether.durable(
                agent, runtime=first, task_queue=task_queue, local_worker=False
            )
            async with first.worker(task_queue=task_queue):
                handle = await durable.start("before the rotation")
                assert (await handle.result()).output == "done"
            blob = await first.store.put(b"written under k1")
        finally:
            await first.close()

        rotated = await Runtime.start(
            address=engine.address, store=BlobStore(root), encryption=old.rotated(new)
        )
        try:
            assert rotated.keyring is not None and rotated.keyring.current == "k2"
            # what k1 wrote still reads: history and store
            request = await durable.handle(handle.id, rotated).request()
            assert request is not None and request.input == "before the rotation"
            assert await rotated.store.get(blob) == b"written under k1"
            # what is written now names k2
            fresh = await rotated.store.put(b"written under k2")
            raw = (root / fresh[:2] / fresh).read_bytes()
            assert raw.startswith(BLOB_MAGIC + bytes([2]) + b"k2")
            durable2 = tether.durable(
                agent, runtime=rotated, task_queue=task_queue, local_worker=False
            )
            async with rotated.worker(task_queue=task_queue):
                handle2 = await durable2.start("after the rotation")
                assert (await handle2.result()).output == "done"
            history = await rotated.client.get_workflow_handle(handle2.id).fetch_history()
            started = history.events[0].workflow_execution_started_event_attributes
            assert started.input.payloads[0].metadata[KEY_ID_METADATA] == b"k2"
        finally:
            await rotated.close()

        # without the old key, what it wrote does not decrypt, and the error says which key
        only_new = await Runtime.start(
            address=engine.address, store=BlobStore(root), encryption=new
        )
        try:
            with pytest.raises(DecryptionError, match="'k1'"):
                await durable.handle(handle.id, only_new).request()
            with pytest.raises(DecryptionError, match="'k1'"):
                await only_new.store.get(blob)
        finally:
            await only_new.close()


def test_keys_parse_from_env_and_file(tmp_path: Path) -> None:
    one, two = Keyring.generate("current"), Keyring.generate("old")
    ring = Keyring.from_env({codec.KEY_ENV: f"{one.export()}, {two.export()}"})
    assert ring is not None and ring.current == "current" and ring.ids == ["current", "old"]
    assert Keyring.from_env({}) is None
    path = tmp_path / "keys"
    path.write_text(f"# rotated 2026-12\n{two.export()}\n{one.export()}\n")
    path.chmod(0o600)
    from_file = Keyring.from_env({codec.KEY_FILE_ENV: str(path)})
    assert from_file is not None and from_file.current == "old"
    assert from_file.keys == {**two.keys, **one.keys}


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        ("nocolon", "ID:BASE64KEY"),
        ("k1:!!!notbase64", "not valid base64"),
        ("k1:" + "QUJD", "3 bytes, AES-256 needs 32"),
        ("bad id:QUJD", "key id"),
        ("", "holds no key"),
    ],
)
def test_a_bad_key_is_a_clear_error_without_the_key(text: str, cause: str) -> None:
    with pytest.raises(ConfigurationError, match="Fix:") as info:
        Keyring.from_env({codec.KEY_ENV: text} if text else {codec.KEY_ENV: " , "})
    assert cause in str(info.value)
    assert "QUJD" not in str(info.value) and "!!!notbase64" not in str(info.value)


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(Keyring.generate("k1").export())
    path.chmod(0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        Keyring.from_env({codec.KEY_FILE_ENV: str(path)})
    with pytest.raises(ConfigurationError, match="only one"):
        Keyring.from_env({codec.KEY_FILE_ENV: str(path), codec.KEY_ENV: "x:y"})


async def test_plaintext_blobs_are_refused_unless_accepted_while_migrating(tmp_path: Path) -> None:
    store = await BlobStore(tmp_path / "store").open()
    ref = await store.put(b"plain, from before")
    key = Keyring.generate("k1")
    store.encrypt_with(key)
    with pytest.raises(DecryptionError, match=codec.PLAINTEXT_ENV):
        await store.get(ref)  # fail closed: someone without the key may have written it
    store.encrypt_with(dataclasses.replace(key, accept_plaintext=True))
    assert await store.get(ref) == b"plain, from before"
    sealed = await store.put(b"sealed now")
    store.encrypt_with(None)
    with pytest.raises(DecryptionError, match="TETHER_ENCRYPTION_KEY"):
        await store.get(sealed)
    ring = Keyring.from_env({codec.KEY_ENV: key.export(), codec.PLAINTEXT_ENV: "1"})
    assert ring is not None and ring.accept_plaintext


async def test_a_run_started_without_the_key_never_executes(
    encrypted: tuple[Runtime, Path, Keyring], engine: EmbeddedEngine, task_queue: str
) -> None:
    """Anyone who reaches the engine can start a run; with encryption on, a worker refuses
    one whose input is not encrypted, so it never spends the worker's provider key."""
    runtime, root, _ = encrypted
    with ScriptedModelServer([Turn.text("should not happen")]) as server:
        model = OpenAIChatModel(
            "gpt-intruder", provider=OpenAIProvider(base_url=server.base_url, api_key="t")
        )
        agent = Agent(model, name="enc-intruder")
        outsider = await Runtime.start(
            address=engine.address, store=BlobStore(root), encryption=None
        )
        codec.configure(runtime.keyring)
        try:
            started = await tether.durable(
                agent, runtime=outsider, task_queue=task_queue, local_worker=False
            ).start("spend their tokens")
        finally:
            await outsider.close()
        history = runtime.client.get_workflow_handle(started.id)
        async with runtime.worker(task_queue=task_queue):
            deadline = time.monotonic() + 60
            why = ""
            while "not encrypted" not in why:
                assert time.monotonic() < deadline, why
                await asyncio.sleep(0.5)
                async for event in history.fetch_history_events():
                    if event.HasField("workflow_task_failed_event_attributes"):
                        failure = event.workflow_task_failed_event_attributes.failure
                        why = await failure_message(runtime.client.data_converter, failure)
        # `tether runs show` says the same in one line
        with pytest.raises(DecryptionError, match="not encrypted"):
            await (await tether.get_run(started.id, runtime)).describe()
        assert server.requests == []
        assert codec.PLAINTEXT_ENV in why


# -- the codec server: a real `tether codec-server` process, real HTTP --------------------


@pytest.fixture
def codec_server(tmp_path: Path) -> Iterator[tuple[str, Keyring, str]]:
    keyring = Keyring.generate("k1").rotated(Keyring.generate("k2"))
    token = uuid.uuid4().hex
    port = free_port()
    env = {**os.environ, codec.KEY_ENV: keyring.export(), "TETHER_CODEC_TOKEN": token}
    env.pop(codec.KEY_FILE_ENV, None)
    log = tmp_path / "codec.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tether.cli", "codec-server", "--port", str(port),
             "--origin", "http://localhost:8233"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.1", port):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the codec server did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", keyring, token
    finally:
        stop_process_group(proc)


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def payloads_json(*payloads: Payload) -> bytes:
    return json_format.MessageToJson(Payloads(payloads=list(payloads))).encode()


def test_codec_server_round_trips_over_http(codec_server: tuple[str, Keyring, str]) -> None:
    url, keyring, token = codec_server
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"prompt":"hello"}')
    assert keyring.current == "k2"  # k1 is the old key
    old = EncryptionCodec(Keyring(keys=keyring.keys, current="k1")).encode_one(plain)
    auth = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    # encode: what comes back is encrypted under the current key, and decodes locally
    status, _, body = post(f"{url}/encode", payloads_json(plain), auth)
    assert status == 200
    encoded = json_format.Parse(body, Payloads()).payloads[0]
    assert encoded.metadata["encoding"] == ENCODING and encoded.metadata[KEY_ID_METADATA] == b"k2"
    assert b"hello" not in encoded.data
    assert EncryptionCodec(keyring).decode_one(encoded) == plain
    # decode: a payload of the current key and one of the old key, as the UI sends them
    headers = {**auth, "Origin": "http://localhost:8233", "X-Namespace": "default"}
    status, got, body = post(f"{url}/decode", payloads_json(encoded, old), headers)
    assert status == 200
    assert got["Access-Control-Allow-Origin"] == "http://localhost:8233"
    assert list(json_format.Parse(body, Payloads()).payloads) == [plain, plain]


def test_codec_server_refuses_what_it_should(codec_server: tuple[str, Keyring, str]) -> None:
    url, keyring, token = codec_server
    encoded = EncryptionCodec(keyring).encode_one(Payload(data=b"x"))
    body = payloads_json(encoded)
    status, _, _ = post(f"{url}/decode", body, {"Content-Type": "application/json"})
    assert status == 401  # no token
    auth = {"Authorization": f"Bearer {token}"}
    status, _, _ = post(f"{url}/decode", body, {**auth, "Origin": "https://evil.example"})
    assert status == 403
    status, _, answer = post(f"{url}/decode", b"{not json", auth)
    assert status == 400 and b"Payloads JSON" in answer
    foreign = EncryptionCodec(Keyring.generate("k9")).encode_one(Payload(data=b"x"))
    status, _, answer = post(f"{url}/decode", payloads_json(foreign), auth)
    assert status == 400 and b"'k9'" in answer
    # a CORS preflight from the UI's origin is answered; from another it is not
    preflight = urllib.request.Request(
        f"{url}/decode",
        method="OPTIONS",
        headers={"Origin": "http://localhost:8233", "Access-Control-Request-Method": "POST"},
    )
    with urllib.request.urlopen(preflight, timeout=30) as response:
        assert response.status == 204
        assert "X-Namespace" in response.headers["Access-Control-Allow-Headers"]


async def test_temporal_cli_shows_decoded_history_through_the_codec_server(
    engine: EmbeddedEngine,
    tmp_path: Path,
    task_queue: str,
    codec_server: tuple[str, Keyring, str],
) -> None:
    url, keyring, token = codec_server
    prompt = f"PROMPT-{uuid.uuid4().hex[:8]}"
    rt = await Runtime.start(
        address=engine.address, store=BlobStore(tmp_path / "store"), encryption=keyring
    )
    try:
        with ScriptedModelServer([Turn.text("shown")]) as server:
            model = OpenAIChatModel(
                "gpt-cli", provider=OpenAIProvider(base_url=server.base_url, api_key="t")
            )
            durable = tether.durable(
                Agent(model, name="enc-cli"), runtime=rt, task_queue=task_queue, local_worker=False
            )
            async with rt.worker(task_queue=task_queue):
                handle = await durable.start(prompt)
                await handle.result()
    finally:
        await rt.close()
    show = [find_temporal_binary(), "workflow", "show", "-w", handle.id, "--address",
            engine.address, "-o", "json"]  # fmt: skip
    raw = (await asyncio.to_thread(subprocess.run, show, capture_output=True, check=True)).stdout
    assert prompt.encode() not in raw and base64.b64encode(prompt.encode()) not in raw
    with_codec = [*show, "--codec-endpoint", url, "--codec-auth", f"Bearer {token}"]
    decoded = (
        await asyncio.to_thread(subprocess.run, with_codec, capture_output=True, check=True)
    ).stdout
    started = json.loads(decoded)["events"][0]["workflowExecutionStartedEventAttributes"]
    data = base64.b64decode(started["input"]["payloads"][0]["data"])
    assert json.loads(data)["input"] == prompt


async def test_failure_messages_are_encrypted_and_shown_decoded() -> None:
    secret = f"SECRET-{uuid.uuid4().hex[:8]}"
    converter = data_converter(None, Keyring.generate("k1"))
    failure = Failure()
    await converter.encode_failure(RuntimeError(f"the tool said {secret}"), failure)
    assert secret.encode() not in failure.SerializeToString()
    assert failure.message == "Encoded failure"
    assert await failure_message(converter, failure) == f"the tool said {secret}"


def test_tether_dev_points_its_web_ui_at_a_codec_server(tmp_path: Path) -> None:
    keyring = Keyring.generate("k1")
    env = {**os.environ, codec.KEY_ENV: keyring.export(), "TETHER_HOME": str(tmp_path)}
    env.pop(codec.KEY_FILE_ENV, None)
    port, ui_port = free_port(), free_port()
    out = tmp_path / "dev.out"
    with out.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tether.cli", "dev", "--memory", "--port", str(port),
             "--ui-port", str(ui_port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "Stop with Ctrl-C" not in out.read_text():
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        [line] = [ln for ln in out.read_text().splitlines() if ln.startswith("Codec server:")]
        endpoint = line.split()[2]
        ui = f"http://127.0.0.1:{ui_port}"
        with urllib.request.urlopen(f"{ui}/api/v1/settings", timeout=30) as response:
            assert json.loads(response.read())["Codec"]["Endpoint"] == endpoint
        # the browser's request from the UI's origin decodes
        encoded = EncryptionCodec(keyring).encode_one(Payload(data=b"for the operator"))
        headers = {"Content-Type": "application/json", "Origin": ui}
        status, got, body = post(f"{endpoint}/decode", payloads_json(encoded), headers)
        assert status == 200 and got["Access-Control-Allow-Origin"] == ui
        assert json_format.Parse(body, Payloads()).payloads[0].data == b"for the operator"
    finally:
        stop_process_group(proc)


# -- a user's own Temporal worker (tether.contrib.temporal.TetherPlugin) --------------------


class CountingCodec(PayloadCodec):
    """A user's own codec (compression, say): kept, and run before Tether's encryption."""

    def __init__(self) -> None:
        self.encoded = 0

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        self.encoded += len(payloads)
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)


async def test_a_user_worker_with_the_plugin_encrypts_parent_and_agent_runs(
    engine: EmbeddedEngine, tmp_path: Path, task_queue: str
) -> None:
    keyring = Keyring.generate("k1")
    prompt = f"PROMPT-{uuid.uuid4().hex[:8]}"
    root = tmp_path / "store"
    own = CountingCodec()
    with ScriptedModelServer([Turn.text("CA: heat advisory.")]) as server:
        provider = OpenAIProvider(base_url=server.base_url, api_key="t")
        agent = Agent(OpenAIChatModel("gpt-user", provider=provider), name="enc-support")
        plugin = TetherPlugin(agents=[agent], store=BlobStore(root), encryption=keyring)
        client = await Client.connect(
            engine.address, data_converter=DataConverter(payload_codec=own), plugins=[plugin]
        )
        async with Worker(
            client, task_queue=task_queue, workflows=[SupportTicket], activities=[lookup_customer]
        ):
            parent = f"ticket-{uuid.uuid4().hex[:8]}"
            reply = await client.execute_workflow(
                SupportTicket.run,
                Ticket(text=prompt, agent="enc-support"),
                id=parent,
                task_queue=task_queue,
                result_type=TicketReply,
            )
        assert prompt in server.requests[0].body_text  # the agent got it, decrypted
    assert reply.answer == "CA: heat advisory."
    assert own.encoded > 0  # the user's codec still runs
    assert client.data_converter.failure_converter_class is (
        DefaultFailureConverterWithEncodedAttributes  # failure messages are encrypted too
    )
    for run_id in (parent, reply.run_id):
        history = await client.get_workflow_handle(run_id).fetch_history()
        raw = b"".join(e.SerializeToString() for e in history.events)
        assert prompt.encode() not in raw, f"the prompt is in the history of {run_id}"
        started = history.events[0].workflow_execution_started_event_attributes
        assert started.input.payloads[0].metadata["encoding"] == ENCODING
    for path in root.rglob("*"):
        if path.is_file():
            assert prompt.encode() not in path.read_bytes()


def test_keygen_prints_a_key_the_setting_takes() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tether.cli", "keygen", "--id", "2026-12"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    ring = Keyring.from_env({codec.KEY_ENV: out.strip()})
    assert ring is not None and ring.ids == ["2026-12"] and len(ring.keys["2026-12"]) == 32
    other = subprocess.run(
        [sys.executable, "-m", "tether.cli", "keygen", "--id", "2026-12"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    assert other != out  # random every time


async def test_cli_worker_and_run_take_it_from_one_setting(
    runtime: Runtime, worker_env: dict[str, str], tmp_path: Path
) -> None:
    keyring = Keyring.generate("k1")
    prompt = f"PROMPT-{uuid.uuid4().hex[:8]} any alerts in CA?"
    run_id = f"enc-cli-{uuid.uuid4().hex[:8]}"
    script = [
        Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"})),
        Turn.text("CA: heat advisory"),
    ]
    with ScriptedModelServer(script) as server, worker_processes() as procs:
        env = dict(
            worker_env,
            OPENAI_BASE_URL=server.base_url,
            TETHER_STORE=str(tmp_path / "store"),
            **{codec.KEY_ENV: keyring.export()},
        )
        env.pop(codec.KEY_FILE_ENV, None)
        procs.append(WorkerProcess(["apps.openai_apps:weather"], env, tmp_path / "w.log"))
        await wait_until_polling(runtime.client, agent_queue(env["TETHER_TASK_QUEUE"], "weather"))
        run = await cli("run", "apps.openai_apps:weather", prompt, "--id", run_id, env=env)
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == "CA: heat advisory"
        assert prompt in server.requests[0].body_text
        shown = await cli("runs", "show", run_id, env=env)
        assert shown.returncode == 0, shown.stderr
        assert "completed" in shown.stdout
        # without the key: one line that says what to do, no traceback
        no_key = {k: v for k, v in env.items() if k != codec.KEY_ENV}
        refused = await cli("runs", "show", run_id, env=no_key)
        assert refused.returncode == 2
        assert "TETHER_ENCRYPTION_KEY" in refused.stderr and "Traceback" not in refused.stderr
    history = await runtime.client.get_workflow_handle(run_id).fetch_history()
    assert prompt.encode() not in b"".join(e.SerializeToString() for e in history.events)


async def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tether.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
