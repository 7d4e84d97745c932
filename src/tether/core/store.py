"""A content-addressed blob store shared by the workers of one namespace.

Conversations are stored here once, as a chain of segments (``parent`` + ``items``), so a
step carries a reference plus the new items instead of the whole conversation. The same
store backs Temporal's external payload storage for single large payloads (a 1 MB tool
result), so the run's history holds a reference and stays small.

The default store is a directory (``$TETHER_HOME/store``); workers on several hosts share
it through a shared path, and when a worker misses a blob the run re-sends it inline.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    StorageDriver,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverStoreContext,
)

from tether.errors import BlobMissingError


def canonical_json(value: Any) -> bytes:
    """The one byte form of a JSON value that its hash is taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(data: bytes) -> str:
    """The content address of ``data``."""
    return hashlib.sha256(data).hexdigest()


def segment_ref(parent: str | None, items: Sequence[Any]) -> str:
    """The reference of a conversation segment: computable on the run side without I/O."""
    return digest(canonical_json({"parent": parent, "items": list(items)}))


def default_home() -> Path:
    """Where Tether keeps its local state (engine database, store): ``$TETHER_HOME``."""
    env = os.environ.get("TETHER_HOME")
    return Path(env) if env else Path.home() / ".tether"


class BlobStore:
    """Immutable blobs by sha256 in a directory; writes are atomic and idempotent."""

    def __init__(self, root: Path | str | None = None, *, cache_size: int = 256) -> None:
        env = os.environ.get("TETHER_STORE")
        self.root = (
            Path(root) if root is not None else Path(env) if env else default_home() / "store"
        )
        self._cache: OrderedDict[str, list[Any]] = OrderedDict()
        self._cache_size = cache_size

    def _path(self, ref: str) -> Path:
        return self.root / ref[:2] / ref

    def put(self, data: bytes, ref: str | None = None) -> str:
        ref = ref or digest(data)
        path = self._path(ref)
        if path.exists():
            return ref
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return ref

    def get(self, ref: str) -> bytes:
        try:
            return self._path(ref).read_bytes()
        except FileNotFoundError:
            raise BlobMissingError(ref, str(self.root)) from None

    def has(self, ref: str) -> bool:
        return self._path(ref).exists()

    def put_json(self, value: Any) -> str:
        return self.put(canonical_json(value))

    def get_json(self, ref: str) -> Any:
        return json.loads(self.get(ref))

    # -- conversation chains -------------------------------------------------------------

    def put_segment(self, parent: str | None, items: Sequence[Any]) -> str:
        """Store one segment; its reference is :func:`segment_ref` of the same content."""
        data = canonical_json({"parent": parent, "items": list(items)})
        return self.put(data)

    def load_chain(self, head: str | None) -> list[Any]:
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
            seg = self.get_json(ref)
            segments.append(seg["items"])
            ref = seg["parent"]
        for items in reversed(segments):
            prefix.extend(items)
        self.remember(head, prefix)
        return list(prefix)

    def remember(self, head: str, items: list[Any]) -> None:
        self._cache[head] = items
        self._cache.move_to_end(head)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


class StoreDriver(StorageDriver):
    """Temporal external-storage driver over a :class:`BlobStore` (large single payloads)."""

    def __init__(self, store: BlobStore) -> None:
        self._store = store

    def name(self) -> str:
        return "tether-store"

    def type(self) -> str:
        return "tether.BlobStore"

    async def store(
        self, context: StorageDriverStoreContext, payloads: Sequence[Payload]
    ) -> list[StorageDriverClaim]:
        return [
            StorageDriverClaim(claim_data={"ref": self._store.put(p.SerializeToString())})
            for p in payloads
        ]

    async def retrieve(
        self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]
    ) -> list[Payload]:
        out = []
        for claim in claims:
            payload = Payload()
            payload.ParseFromString(self._store.get(claim.claim_data["ref"]))
            out.append(payload)
        return out
