"""History-linear transport of a conversation across steps.

The run side keeps the conversation the framework hands it, and for each step computes
a reference (the longest already-stored prefix) plus the items after it. References are
content hashes, computed without I/O, so the run stays deterministic; the step writes
the new segment. A model step's input therefore holds only what changed since the last
step, whatever the conversation's length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tether.core.contract import TranscriptRef
from tether.core.store import BlobStore, canonical_json, digest, segment_ref


class Transcript:
    """Run-side record of what the store holds (one per run; in workflow memory)."""

    def __init__(self) -> None:
        self._hashes: list[str] = []
        self._heads: dict[int, str] = {}
        self._segments: dict[str, tuple[str | None, list[Any]]] = {}

    def reference(self, items: Sequence[Any]) -> TranscriptRef:
        """The (base, delta) form of ``items`` against what earlier steps stored."""
        hashes = [digest(canonical_json(item)) for item in items]
        common = 0
        for mine, theirs in zip(self._hashes, hashes, strict=False):
            if mine != theirs:
                break
            common += 1
        base_len = max((n for n in self._heads if n <= common), default=0)
        base = self._heads.get(base_len)
        delta = list(items[base_len:])
        head = segment_ref(base, delta) if delta or base is None else base
        self._heads[len(items)] = head
        self._segments.setdefault(head, (base, delta))
        self._hashes = hashes
        return TranscriptRef(base=base, delta=delta, head=head, length=len(items))

    def segments_for(self, head: str | None) -> dict[str, Any]:
        """Every segment on the chain to ``head``, to re-send inline to a store that lacks it."""
        out: dict[str, Any] = {}
        ref = head
        while ref is not None and ref in self._segments:
            parent, items = self._segments[ref]
            out[ref] = {"parent": parent, "items": items}
            ref = parent
        return out


async def materialize(store: BlobStore, ref: TranscriptRef) -> list[Any]:
    """Step side: store the new segment and return the whole conversation."""
    prefix = await store.load_chain(ref.base)
    if ref.head != ref.base:
        await store.put_segment(ref.base, ref.delta)
    items = prefix + list(ref.delta)
    store.remember(ref.head, items)
    return items
