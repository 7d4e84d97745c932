"""The blob store under every URL kind it accepts: file, memory and a real S3 server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.converter import StorageDriverClaim, StorageDriverRetrieveContext
from temporalio.converter import StorageDriverStoreContext as StoreCtx
from temporalio.exceptions import ApplicationError

from s3 import S3Server
from tether.core.contract import (
    TOOL_POLICY,
    StepDefinition,
    StepOutcome,
    StepRequest,
    TranscriptRef,
)
from tether.core.conversation import SegmentWrite, Transcript, items_from, materialize
from tether.core.converter import data_converter
from tether.core.steps import build_activity
from tether.core.store import (
    PAYLOAD_MISSING,
    BlobStore,
    StoreDriver,
    open_store,
    redact_url,
    segment_ref,
)
from tether.errors import BlobMissingError, StoreConfigurationError

HERE = Path(__file__).parent
KINDS = ["path", "file", "memory", "s3"]


@pytest.fixture(params=KINDS)
def store_url(
    request: pytest.FixtureRequest, tmp_path: Path, s3_server: S3Server, s3_env: dict[str, str]
) -> str:
    kind = request.param
    if kind == "path":
        return str(tmp_path / "store")
    if kind == "file":
        return (tmp_path / "store").as_uri()
    if kind == "memory":
        return f"memory://{uuid.uuid4().hex}"
    return f"s3://{s3_server.create_bucket()}/tether"


async def test_put_get_missing(store_url: str) -> None:
    store = await open_store(store_url)
    ref = await store.put(b"hello")
    assert await store.get(ref) == b"hello"
    assert await store.has(ref)
    assert await store.put(b"hello") == ref  # idempotent
    jref = await store.put_json({"b": 1, "a": [1, 2]})
    assert await store.get_json(jref) == {"a": [1, 2], "b": 1}
    with pytest.raises(BlobMissingError) as info:
        await store.get("0" * 64)
    assert store.name in str(info.value) and "TETHER_STORE" in str(info.value)
    assert not await store.has("0" * 64)


async def step_reads(store: BlobStore, ref: TranscriptRef) -> list[Any]:
    """What a step does with its transcript: read it, and store its new segment."""
    write = SegmentWrite(store, ref)
    items = await materialize(store, ref)
    await write.stored()
    return items


async def test_a_second_store_on_the_same_url_sees_the_chain(store_url: str) -> None:
    """What one worker wrote, another worker (its own store object, cold cache) reads."""
    writer = await open_store(store_url)
    transcript = Transcript()
    items: list[object] = []
    for turn in range(5):
        items = [*items, {"role": "user", "turn": turn}, {"role": "assistant", "turn": turn}]
        await step_reads(writer, transcript.reference(items))
    reader = await open_store(store_url)
    assert reader is not writer
    head = transcript.reference(items).head
    assert await reader.load_chain(head) == items
    assert await reader.load_chain(head) == items  # from the LRU of chain heads
    assert head == segment_ref(*_last_segment(transcript, head))


async def test_a_step_reads_the_end_of_a_long_chain_only(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step that needs the conversation from position k on (a request continuing a
    provider-held conversation) reads the segments that hold those items, not the chain."""
    writer = await open_store(store_url)
    transcript = Transcript()
    items: list[object] = []
    for turn in range(40):
        items = [*items, {"role": "user", "turn": turn}, {"role": "assistant", "turn": turn}]
        await step_reads(writer, transcript.reference(items))
    items = [*items, {"role": "user", "turn": 40}]
    ref = replace(transcript.reference(items), start=77)
    reader = await open_store(store_url)
    reads: list[str] = []
    real = reader.get_json

    async def counting(key: str) -> Any:
        reads.append(key)
        return await real(key)

    monkeypatch.setattr(reader, "get_json", counting)
    assert await materialize(reader, ref) == items[77:]
    assert len(reads) == 2  # the last two turns' segments, of 40
    assert await items_from(reader, ref, 0) == items  # the rest, when the step asks
    # A worker that has the conversation in memory reads nothing.
    reads.clear()
    reader.remember(ref.base or "", items[:-1])
    assert await items_from(reader, ref, 50) == items[50:]
    assert reads == []


def _last_segment(transcript: Transcript, head: str) -> tuple[str | None, list[object]]:
    segment = transcript.segments_for(head)[head]
    return segment["parent"], segment["items"]


async def test_shared_values_are_cached_and_fresh(store_url: str) -> None:
    store = await open_store(store_url)
    ref = await store.put_json({"tools": ["a"]})
    first = await store.get_value(ref)
    first["tools"].append("mutated")
    assert await store.get_value(ref) == {"tools": ["a"]}  # a fresh object each time
    assert store.get_value_blocking(ref) == {"tools": ["a"]}


async def test_large_payload_driver_round_trip_and_missing(store_url: str) -> None:
    store = await open_store(store_url)
    driver = StoreDriver(store)
    payload = Payload(metadata={"encoding": b"binary/plain"}, data=os.urandom(300 * 1024))
    [claim] = await driver.store(StoreCtx(), [payload])
    [back] = await driver.retrieve(StorageDriverRetrieveContext(), [claim])
    assert back == payload
    missing = StorageDriverClaim(claim_data={"ref": "f" * 64})
    with pytest.raises(ApplicationError) as info:
        await driver.retrieve(StorageDriverRetrieveContext(), [missing])
    assert info.value.type == PAYLOAD_MISSING and info.value.non_retryable
    assert store.name in info.value.message and "TETHER_STORE" in info.value.message


async def test_s3_store_is_an_object_store(s3_server: S3Server, s3_env: dict[str, str]) -> None:
    bucket = s3_server.create_bucket()
    store = await open_store(f"s3://{bucket}/pre/fix")
    ref = await store.put(b"x" * 10)
    # The object is where the URL says, as any S3 client sees it.
    import obstore
    from obstore.store import S3Store

    raw = S3Store(bucket)
    got = await obstore.get_async(raw, f"pre/fix/{ref[:2]}/{ref}")
    assert bytes(await got.bytes_async()) == b"x" * 10
    assert store.url == f"s3://{bucket}/pre/fix"
    with pytest.raises(StoreConfigurationError):
        _ = store.root


def test_redaction() -> None:
    assert redact_url("s3://bucket/p") == "s3://bucket/p"
    assert "hunter2" not in redact_url("az://user:hunter2@acct/c/p")
    redacted = redact_url("az://acct/c/p?sig=SECRET&sv=2024")
    assert "SECRET" not in redacted and "sv=2024" in redacted


@pytest.mark.parametrize(
    ("url", "cause"),
    [
        ("ftp://host/dir", "unknown scheme 'ftp://'"),
        ("s3:///prefix", "names no bucket"),
        ("gs://", "names no bucket"),
        ("file://otherhost/dir", "a path on this host"),
        ("   ", "empty"),
    ],
)
async def test_bad_urls_fail_when_built(url: str, cause: str) -> None:
    with pytest.raises(StoreConfigurationError) as info:
        await open_store(BlobStore(url))
    assert cause in str(info.value) and "Fix:" in str(info.value)


async def test_missing_bucket_fails_at_open(s3_server: S3Server, s3_env: dict[str, str]) -> None:
    store = BlobStore("s3://no-such-bucket-here/tether")  # no I/O yet
    with pytest.raises(StoreConfigurationError) as info:
        await store.open()
    text = str(info.value)
    assert "bucket does not exist" in text and "create the bucket" in text


async def test_missing_credentials_fail_at_open(
    s3_server: S3Server, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3_server.create_bucket()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StoreConfigurationError) as info:
        await open_store(f"s3://{bucket}/t")
    text = str(info.value)
    assert "no AWS credentials" in text and "AWS_ACCESS_KEY_ID" in text


async def test_plain_http_endpoint_needs_allow_http(
    s3_server: S3Server, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3_server.create_bucket()
    monkeypatch.delenv("AWS_ALLOW_HTTP")
    with pytest.raises(StoreConfigurationError) as info:
        await open_store(f"s3://{bucket}/t")
    assert "AWS_ALLOW_HTTP=true" in str(info.value)


async def test_worker_with_a_bad_store_exits_at_start(
    worker_env: dict[str, str], s3_server: S3Server, tmp_path: Path
) -> None:
    """`tether worker` refuses to start (one clear line), instead of failing at its first step."""
    env = dict(worker_env, **s3_server.env(), TETHER_STORE="s3://no-such-bucket-here/t")
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tether.cli", "worker", "apps.openai_apps:weather"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "bucket does not exist" in proc.stderr + proc.stdout, proc.stderr[-2000:]


class _ActivityWorker:
    """Named like temporalio's activity worker, whose task decodes an activity's input."""

    async def _handle_start_activity_task(self, converter: Any, payloads: Any) -> Any:
        return await converter.decode(payloads, [StepRequest])


async def test_missing_step_input_fails_the_step_at_once() -> None:
    """A step input stored by a worker whose store this one cannot see: the step fails with
    the fix, non-retryable (not minutes of "Failed decoding arguments" retries)."""
    from temporalio.testing import ActivityEnvironment
    from temporalio.worker._activity import _ActivityWorker as SdkActivityWorker

    # The detection relies on the SDK's activity task coroutine: fail loudly if it moves.
    assert hasattr(SdkActivityWorker, "_handle_start_activity_task")
    theirs = await open_store(f"memory://{uuid.uuid4().hex}")
    mine = await open_store(f"memory://{uuid.uuid4().hex}")
    big = StepRequest(run_id="r", agent="a", payload={"blob": "x" * (200 * 1024)})
    payloads = await data_converter(theirs).encode([big])
    assert payloads[0].ByteSize() < 10_000  # stored externally, in their store

    # Workflow side (or any other reader): the missing payload is a non-retryable error.
    with pytest.raises(ApplicationError) as info:
        await data_converter(mine).decode(payloads, [StepRequest])
    assert info.value.type == PAYLOAD_MISSING and info.value.non_retryable

    # Activity side: the input decodes to a stand-in, and the step fails at once.
    [request] = await asyncio.create_task(
        _ActivityWorker()._handle_start_activity_task(data_converter(mine), payloads)
    )

    async def handler(ctx: Any, payload: Any) -> StepOutcome:
        raise AssertionError("the handler must not run")

    step = build_activity(
        StepDefinition(name="t.step", kind="tool", handler=handler, policy=TOOL_POLICY), mine
    )
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(step, request)
    assert info.value.type == PAYLOAD_MISSING and info.value.non_retryable
    assert mine.name in info.value.message and "TETHER_STORE" in info.value.message
