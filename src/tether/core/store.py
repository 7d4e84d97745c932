"""A content-addressed blob store shared by the workers of one namespace.

Conversations are stored here once, as a chain of segments (``parent`` + ``items``), so a
step carries a reference plus the new items instead of the whole conversation. The same
store backs Temporal's external payload storage for single large payloads (a 1 MB tool
result), so the run's history holds a reference and stays small.

A store is named by a URL (``TETHER_STORE``): a path or ``file://`` URL (the default is
``$TETHER_HOME/store``), ``s3://bucket/prefix`` (any S3-compatible service), ``gs://``,
``az://`` or ``memory://`` (one process). Every kind goes through one library, obstore,
whose calls are async and run off the event loop, so a slow store never stalls the
heartbeats of the steps running beside it. See docs/storage.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import obstore
from obstore.store import LocalStore, MemoryStore, from_url
from pydantic_core import to_json
from temporalio import activity
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    StorageDriver,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverStoreContext,
)
from temporalio.exceptions import ApplicationError

from tether.errors import BlobMissingError, StoreConfigurationError, StoreUnavailableError

if TYPE_CHECKING:
    from obstore.store import ObjectStore, RetryConfig

    from tether.core.codec import Keyring

logger = logging.getLogger(__name__)

PAYLOAD_MISSING = "TetherPayloadMissing"
"""Error type of a run that failed because a large payload is not in the worker's store."""

CLOUD_SCHEMES = frozenset({"s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "adl"})
"""URL schemes handed to obstore as they are (bucket or container first)."""

_PROBE_KEY = "tether-store.json"
_PROBE = b'{"tether_store":1}'

_RETRY: RetryConfig = {
    "max_retries": 3,
    "backoff": {
        "init_backoff": timedelta(milliseconds=100),
        "max_backoff": timedelta(seconds=2),
        "base": 2,
    },
    "retry_timeout": timedelta(seconds=20),
}
"""Transient errors (5xx, timeouts, connection resets) are retried briefly: a store call
runs inside a workflow task when Temporal fetches a large payload, and that task must not
outlast its 10 s timeout many times over."""

_memory_stores: dict[str, MemoryStore] = {}


def canonical_json(value: Any) -> bytes:
    """The one byte form of a JSON value that its hash is taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(data: bytes) -> str:
    """The content address of ``data``."""
    return hashlib.sha256(data).hexdigest()


def segment_ref(parent: str | None, items: Sequence[Any]) -> str:
    """The reference of a conversation segment: computable on the run side without I/O."""
    return digest(segment_bytes(parent, canonical_json(list(items))))


def segment_bytes(parent: str | None, items_json: bytes) -> bytes:
    """The canonical bytes of a segment, from its items' canonical JSON (``canonical_json``
    of ``{"parent": parent, "items": items}``, without encoding the items twice)."""
    return b'{"items":' + items_json + b',"parent":' + json.dumps(parent).encode() + b"}"


_chain_payloads: OrderedDict[str, str] = OrderedDict()
"""Digest of a payload's data -> the chain head whose whole conversation it encodes."""
_CHAIN_PAYLOADS_KEPT = 64
_JSON_PLAIN = b"json/plain"


def expect_chain_payload(data: bytes, head: str) -> None:
    """Say that a payload about to be sent with ``data`` (JSON) is the whole conversation at
    chain ``head``: if it is large enough for the store, :class:`StoreDriver` records it as
    that chain (which the store holds already), not as a new blob.

    A long run's segment starts by reading its conversation (``tether.transcript``); written
    again at every segment, a conversation would cost the store what it costs times the
    number of segments, and late in a long run segments are short.
    """
    _chain_payloads[digest(data)] = head
    _chain_payloads.move_to_end(digest(data))
    while len(_chain_payloads) > _CHAIN_PAYLOADS_KEPT:
        _chain_payloads.popitem(last=False)


def _chain_of(payload: Payload) -> str | None:
    """The chain head ``payload`` encodes whole, if it was announced (plain JSON only: an
    encrypted payload is stored as itself)."""
    if set(payload.metadata) != {"encoding"} or payload.metadata["encoding"] != _JSON_PLAIN:
        return None
    return _chain_payloads.get(digest(payload.data))


def default_home() -> Path:
    """Where Tether keeps its local state (engine database, store): ``$TETHER_HOME``."""
    env = os.environ.get("TETHER_HOME")
    return Path(env) if env else Path.home() / ".tether"


_SECRET_KEYS = re.compile(r"sig|token|key|secret|password|credential|signature", re.I)


def redact_url(url: str) -> str:
    """``url`` with a password and secret-looking query values replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        name = user.split(":", 1)[0]
        netloc = f"{name}:***@{host}" if ":" in user else f"{name}@{host}"
    query = parts.query
    if query:
        pairs = [
            (k, "***" if _SECRET_KEYS.search(k) else v)
            for k, v in parse_qsl(query, keep_blank_values=True)
        ]
        query = urlencode(pairs, safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _local_path(location: str | Path) -> Path | None:
    """The directory a path or ``file://`` URL names; None for any other URL."""
    if isinstance(location, Path):
        return location.expanduser().absolute()
    if location.startswith("file://"):
        parts = urlsplit(location)
        if parts.netloc not in ("", "localhost"):
            raise StoreConfigurationError(
                location,
                f"a file:// URL names a path on this host, not host {parts.netloc!r}",
                "write file:///absolute/path (three slashes), or a plain path",
            )
        return Path(unquote(parts.path)).absolute()
    if "://" not in location:
        return Path(location).expanduser().absolute()
    return None


def _build(url: str) -> tuple[ObjectStore, Path | None]:
    """The obstore store for ``url`` (no I/O), and its directory when it is local."""
    path = _local_path(url)
    if path is not None:
        try:
            return LocalStore(path, mkdir=True), path
        except Exception as exc:
            raise StoreConfigurationError(
                url,
                f"the directory cannot be created or opened ({exc})",
                "point TETHER_STORE at a writable directory",
            ) from None
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        return _memory_stores.setdefault(url, MemoryStore()), None
    if scheme not in CLOUD_SCHEMES:
        raise StoreConfigurationError(
            url,
            f"unknown scheme {parts.scheme + '://'!r}",
            "use a path, file:///path, s3://bucket/prefix, gs://bucket/prefix, "
            "az://account/container/prefix or memory://name",
        )
    if not parts.netloc:
        raise StoreConfigurationError(
            url,
            "the URL names no bucket or container",
            f"write {scheme}://BUCKET/optional/prefix",
        )
    try:
        return from_url(url, retry_config=_RETRY), None
    except Exception as exc:
        raise StoreConfigurationError(
            url, f"it cannot be configured: {_first_line(exc)}", _env_hint(scheme)
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _env_hint(scheme: str) -> str:
    if scheme in ("s3", "s3a"):
        return (
            "set AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL "
            "for a service other than AWS, with AWS_ALLOW_HTTP=true for an http:// endpoint)"
        )
    if scheme == "gs":
        return (
            "set GOOGLE_SERVICE_ACCOUNT (a service account key file) or run with workload identity"
        )
    return "set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or a SAS token)"


def _probe_problem(scheme: str, exc: BaseException) -> tuple[str, str]:
    """Cause and fix for a store that failed its first request."""
    text = _first_line(exc)
    if scheme in ("s3", "s3a"):
        endpoint = (
            os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or os.environ.get("AWS_ENDPOINT")
            or ""
        )
        if endpoint.startswith("http://") and not _truthy("AWS_ALLOW_HTTP"):
            return (
                f"the endpoint {endpoint} is plain http, which is refused by default",
                "set AWS_ALLOW_HTTP=true (a local MinIO / test server), or use https",
            )
        has_keys = bool(os.environ.get("AWS_ACCESS_KEY_ID"))
        other_source = any(
            os.environ.get(k)
            for k in (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            )
        )
        if not has_keys and not other_source and not _truthy("AWS_SKIP_SIGNATURE"):
            return (
                "no AWS credentials were found (AWS_ACCESS_KEY_ID is not set and the instance "
                f"metadata service did not answer: {text})",
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (a profile in ~/.aws is not "
                "read), or run where an instance role / web identity provides them",
            )
        if isinstance(exc, FileNotFoundError):
            return (
                "the bucket does not exist (the service answered 404 Not Found)",
                "create the bucket, or correct its name in TETHER_STORE",
            )
    elif isinstance(exc, FileNotFoundError):
        return (
            "the bucket or container does not exist (404 Not Found)",
            "create it, or correct its name in TETHER_STORE",
        )
    if isinstance(exc, obstore.exceptions.PermissionDeniedError | PermissionError):
        return (f"access was denied: {text}", "grant the credentials read and write access")
    if isinstance(exc, obstore.exceptions.UnauthenticatedError):
        return (f"the credentials were refused: {text}", _env_hint(scheme))
    return (f"the store did not answer: {text}", _env_hint(scheme))


class BlobStore:
    """Immutable blobs by sha256 under one URL; writes are atomic and idempotent.

    ``location`` is a URL or a path (None: ``TETHER_STORE``, else ``$TETHER_HOME/store``).
    Constructing a store checks the URL's form without I/O; :meth:`open` (or
    :func:`open_store`) makes one request, so a missing bucket or absent credentials are
    reported when a worker starts rather than at its first step. Every I/O method is a
    coroutine. Blobs live at ``<prefix>/<ref[:2]>/<ref>``.
    """

    def __init__(
        self,
        location: str | Path | None = None,
        *,
        cache_size: int = 256,
        value_cache_size: int = 128,
    ) -> None:
        if location is None:
            location = os.environ.get("TETHER_STORE") or default_home() / "store"
        if isinstance(location, str) and not location.strip():
            raise StoreConfigurationError(
                location, "the URL is empty", "set TETHER_STORE to a path or URL, or unset it"
            )
        self._store, self._root = _build(str(location))
        self.url = self._root.as_uri() if self._root is not None else str(location)
        """The store's URL (a path becomes ``file://``); may hold secrets: see :attr:`name`."""
        self.name = redact_url(self.url)
        """The URL without secrets, for messages and logs."""
        self._opened = False
        self._cache: OrderedDict[str, list[Any]] = OrderedDict()
        self._cache_size = cache_size
        self._values: OrderedDict[str, bytes] = OrderedDict()
        self._value_cache_size = value_cache_size
        self._known: OrderedDict[str, None] = OrderedDict()
        self.keyring: Keyring | None = None
        """When set, every blob is written encrypted (:meth:`encrypt_with`)."""

    def encrypt_with(self, keyring: Keyring | None) -> BlobStore:
        """Write every blob encrypted with ``keyring`` (AES-GCM, bound to the blob's name);
        read encrypted blobs with any of its keys, and plaintext ones as they are."""
        self.keyring = keyring
        return self

    def _seal(self, data: bytes, ref: str) -> bytes:
        return data if self.keyring is None else self.keyring.seal_blob(data, ref)

    def _unseal(self, data: bytes, ref: str) -> bytes:
        if self.keyring is not None:
            return self.keyring.open_blob(data, ref)
        from tether.core.codec import is_encrypted_blob

        if is_encrypted_blob(data):
            from tether.errors import DecryptionError

            raise DecryptionError(
                f"blob {ref} in the store {self.name} is encrypted, and this process has no "
                "encryption key. Fix: set TETHER_ENCRYPTION_KEY (or _FILE) as the workers "
                "that wrote it do (docs/security.md)"
            )
        return data

    @classmethod
    def from_url(cls, url: str | Path, **options: Any) -> BlobStore:
        """The store named by ``url`` (not yet opened: see :func:`open_store`)."""
        return cls(url, **options)

    @property
    def root(self) -> Path:
        """The directory of a local (path / ``file://``) store."""
        if self._root is None:
            raise StoreConfigurationError(
                self.name, "it is not a local directory", "use .url to pass the store on"
            )
        return self._root

    @property
    def is_local(self) -> bool:
        """True for a directory on this host (other hosts see it only through a shared disk)."""
        return self._root is not None

    def __repr__(self) -> str:
        return f"BlobStore({self.name!r})"

    # -- I/O --------------------------------------------------------------------------------

    async def open(self) -> BlobStore:
        """Check the store answers (one small write and read); idempotent."""
        if self._opened:
            return self
        scheme = "file" if self._root is not None else urlsplit(self.url).scheme.lower()
        try:
            await obstore.put_async(self._store, _PROBE_KEY, _PROBE)
            got = await obstore.get_async(self._store, _PROBE_KEY)
            await got.bytes_async()
        except Exception as exc:
            cause, fix = _probe_problem(scheme, exc)
            raise StoreConfigurationError(self.name, cause, fix) from None
        self._opened = True
        return self

    def _key(self, ref: str) -> str:
        return f"{ref[:2]}/{ref}"

    def _remember_known(self, ref: str) -> None:
        self._known[ref] = None
        self._known.move_to_end(ref)
        while len(self._known) > 4096:
            self._known.popitem(last=False)

    async def put(self, data: bytes, ref: str | None = None) -> str:
        """Store ``data`` under ``ref`` (default: its digest) and return the reference."""
        ref = ref or digest(data)
        if ref in self._known:
            return ref
        try:
            await obstore.put_async(self._store, self._key(ref), self._seal(data, ref))
        except Exception as exc:
            raise StoreUnavailableError(self.name, "write", ref, _first_line(exc)) from exc
        self._remember_known(ref)
        return ref

    async def get(self, ref: str) -> bytes:
        """The blob ``ref``; :class:`BlobMissingError` when the store does not have it."""
        try:
            result = await obstore.get_async(self._store, self._key(ref))
            data = bytes(await result.bytes_async())
        except FileNotFoundError:
            raise BlobMissingError(ref, self.name) from None
        except Exception as exc:
            raise StoreUnavailableError(self.name, "read", ref, _first_line(exc)) from exc
        data = self._unseal(data, ref)
        self._remember_known(ref)
        return data

    async def has(self, ref: str) -> bool:
        try:
            await obstore.head_async(self._store, self._key(ref))
        except FileNotFoundError:
            return False
        except Exception as exc:
            raise StoreUnavailableError(self.name, "check", ref, _first_line(exc)) from exc
        return True

    async def put_json(self, value: Any) -> str:
        return await self.put(canonical_json(value))

    async def get_json(self, ref: str) -> Any:
        return json.loads(await self.get(ref))

    # -- values shared across steps (tool schemas, run context) ------------------------------

    async def get_value(self, ref: str) -> Any:
        """A shared JSON value, from this worker's LRU when a recent step fetched it.

        Each call returns a fresh object (steps may change what they are given).
        """
        data = self._values.get(ref)
        if data is None:
            data = await self.get(ref)
            self.keep_value(ref, data)
        else:
            self._values.move_to_end(ref)
        return json.loads(data)

    def get_value_blocking(self, ref: str) -> Any:
        """:meth:`get_value` for synchronous callers (blocks the calling thread)."""
        data = self._values.get(ref)
        if data is None:
            try:
                data = bytes(obstore.get(self._store, self._key(ref)).bytes())
            except FileNotFoundError:
                raise BlobMissingError(ref, self.name) from None
            except Exception as exc:
                raise StoreUnavailableError(self.name, "read", ref, _first_line(exc)) from exc
            data = self._unseal(data, ref)
            self.keep_value(ref, data)
        return json.loads(data)

    def keep_value(self, ref: str, data: bytes) -> None:
        """Remember a shared value's bytes (it arrived inline, or was just read)."""
        self._values[ref] = data
        self._values.move_to_end(ref)
        while len(self._values) > self._value_cache_size:
            self._values.popitem(last=False)

    # -- conversation chains -------------------------------------------------------------

    async def put_segment(self, data: bytes) -> str:
        """Store one segment, given as :func:`segment_bytes`; its reference is
        :func:`segment_ref` of the same content."""
        return await self.put(data)

    async def load_chain(self, head: str | None) -> list[Any]:
        """All items of the conversation ending at ``head``, oldest first."""
        if head is None:
            return []
        cached = self._cache.get(head)
        if cached is not None:
            self._cache.move_to_end(head)
            return list(cached)
        segments: list[list[Any]] = []
        ref: str | None = head
        prefix: list[Any] = []
        while ref is not None:
            hit = self._cache.get(ref)
            if hit is not None:
                prefix = list(hit)
                break
            seg = await self.get_json(ref)
            segments.append(seg["items"])
            ref = seg["parent"]
        for items in reversed(segments):
            prefix.extend(items)
        self.remember(head, prefix)
        return list(prefix)

    async def load_chain_from(self, head: str | None, length: int, start: int) -> list[Any]:
        """The items from position ``start`` on of the conversation ending at ``head`` (of
        ``length`` items), reading only the segments that hold them (a chain is read from
        its end), and keeping nothing: what a step continuing a provider-held conversation
        needs of a long one."""
        if head is None or start >= length:
            return []
        segments: list[list[Any]] = []
        have = 0  # items read, from the end
        ref: str | None = head
        while ref is not None and length - have > start:
            hit = self._cache.get(ref)
            if hit is not None:
                segments.append(list(hit[start : length - have]))
                have = length - start
                break
            seg = await self.get_json(ref)
            segments.append(seg["items"])
            have += len(seg["items"])
            ref = seg["parent"]
        out: list[Any] = []
        for items in reversed(segments):
            out.extend(items)
        return out[max(0, len(out) - (length - start)) :]

    def remember(self, head: str, items: list[Any]) -> None:
        """Keep a chain head's items in this worker's LRU (no I/O)."""
        self._cache[head] = items
        self._cache.move_to_end(head)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


async def open_store(
    location: BlobStore | str | Path | None = None, *, default: str | Path | None = None
) -> BlobStore:
    """An opened store: ``location`` (a store, URL or path), else ``TETHER_STORE``, else
    ``default`` (else ``$TETHER_HOME/store``). Raises :class:`StoreConfigurationError`
    naming the cause and the fix when the store cannot be used."""
    if isinstance(location, BlobStore):
        return await location.open()
    chosen = location or os.environ.get("TETHER_STORE") or default
    return await BlobStore(chosen).open()


def _missing_payload_message(ref: str, store: BlobStore) -> str:
    return (
        f"a large payload the run needs (blob {ref}) is not in this worker's store "
        f"{store.name}: it was deleted from the store, or another worker stored it in a store "
        "this worker does not share; no retry can bring it back, so this run cannot continue. "
        "Fix: give every worker and client of the namespace the same TETHER_STORE (e.g. "
        "s3://bucket/tether; see docs/storage.md) and do not delete blobs of runs that may "
        "still resume; then start the run again (`tether runs retry RUN --from-start`), or reset "
        "it to before the step whose result is missing"
    )


class StoreDriver(StorageDriver):
    """Temporal external-storage driver over a :class:`BlobStore` (large single payloads).

    A payload that is not in the store fails what needed it with a non-retryable
    ``TetherPayloadMissing`` error naming the store and the fix: when a workflow task cannot
    read it, the SDK fails the run with it instead of retrying the task forever.
    """

    def __init__(self, store: BlobStore) -> None:
        self._store = store
        self._client: Any = None

    def attach_client(self, client: Any) -> None:
        """The client that may end a run whose history names a lost payload (see
        :meth:`retrieve`); ``Runtime.start`` attaches its own."""
        self._client = client

    def name(self) -> str:
        return "tether-store"  # persisted in every reference: never rename

    def type(self) -> str:
        return "tether.BlobStore"

    async def store(
        self, context: StorageDriverStoreContext, payloads: Sequence[Payload]
    ) -> list[StorageDriverClaim]:
        claims = []
        for p in payloads:
            head = _chain_of(p)
            if head is not None:
                claims.append(StorageDriverClaim(claim_data={"chain": head}))
                continue
            ref = await self._store.put(p.SerializeToString())
            claims.append(StorageDriverClaim(claim_data={"ref": ref}))
        return claims

    async def retrieve(
        self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]
    ) -> list[Payload]:
        out = []
        for claim in claims:
            head = claim.claim_data.get("chain")
            ref = head if head is not None else claim.claim_data["ref"]
            try:
                if head is not None:
                    items = await self._store.load_chain(head)
                    out.append(Payload(metadata={"encoding": _JSON_PLAIN}, data=to_json(items)))
                    continue
                data = await self._store.get(ref)
            except BlobMissingError:
                message = _missing_payload_message(ref, self._store)
                if _decoding_activity_input():
                    # The SDK would wrap any error here as a retryable "Failed decoding
                    # arguments" and retry the step for minutes; a step input that says what
                    # is missing fails the step at once instead (see steps.py).
                    out.append(_missing_step_input(message))
                    continue
                await self._end_replaying_run(ref, message)
                raise ApplicationError(
                    message, ref, self._store.name, type=PAYLOAD_MISSING, non_retryable=True
                ) from None
            if digest(data) != ref:
                raise ApplicationError(
                    f"the stored payload {ref} in {self._store.name} does not match its hash "
                    "(it was changed or truncated). Fix: check what else writes to that store",
                    type=PAYLOAD_MISSING,
                    non_retryable=True,
                )
            payload = Payload()
            payload.ParseFromString(data)
            out.append(payload)
        return out

    async def _end_replaying_run(self, ref: str, message: str) -> None:
        """Terminate the run whose *replay* needs a lost payload, with ``message`` as reason.

        A non-retryable error fails a run that reads a payload as it happens, but not one
        being replayed (a fresh worker rebuilding it from history): the SDK's "fail the run"
        command then contradicts the recorded history, and the run's task would fail on
        every worker forever. No retry can bring the payload back, so the run is ended.
        """
        found = _workflow_activation(ref)
        if found is None or self._client is None:
            return
        workflow_id, run_id, replaying = found
        if not replaying:
            return  # the SDK fails the run with the error itself
        try:
            handle = self._client.get_workflow_handle(workflow_id, run_id=run_id)
            await handle.terminate(reason=f"{PAYLOAD_MISSING}: {message}")
            logger.error("run %s ended: %s", workflow_id, message)
        except Exception:
            logger.warning("could not end run %s", workflow_id, exc_info=True)


def _workflow_activation(ref: str) -> tuple[str, str, bool] | None:
    """(workflow id, run id, replaying) of the workflow activation that needs blob ``ref``.

    Like :func:`_decoding_activity_input`, this recognises the SDK's activation coroutines by
    name (no hook exists) and finds the one whose activation names the blob; should that
    change, a lost payload during replay is reported by ``tether runs show`` (the run's task
    failing with the message) instead of ending the run.
    """
    needle = ref.encode()
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        if "_WorkflowWorker._handle_activation" not in getattr(coro, "__qualname__", ""):
            continue
        frame = getattr(coro, "cr_frame", None)
        scope = frame.f_locals if frame is not None else {}
        act, workflow_id = scope.get("act"), scope.get("workflow_id")
        if act is None or not isinstance(workflow_id, str):
            continue
        try:
            if needle not in act.SerializeToString():
                continue
        except Exception:
            continue
        return workflow_id, str(act.run_id), bool(getattr(act, "is_replaying", False))
    return None


MISSING_INPUT_KEY = "__tether_payload_missing__"
"""Marks a step payload that stands in for a step input this worker's store does not have."""


def _decoding_activity_input() -> bool:
    """True while Temporal's activity worker decodes an activity task's input.

    The SDK offers no hook for this: its activity task coroutine is recognised by name,
    before the activity's own context exists. Should that name change, a missing step input
    is reported after the step's retries instead of at once.
    """
    task = asyncio.current_task()
    if task is None or activity.in_activity():
        return False
    return "_ActivityWorker." in getattr(task.get_coro(), "__qualname__", "")


def _missing_step_input(message: str) -> Payload:
    body = {"run_id": "", "agent": "", "payload": {MISSING_INPUT_KEY: message}}
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(body).encode())
