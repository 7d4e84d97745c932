"""The run side's transcript references: same references as the content-hash definition,
only new items serialized, and stored segments immune to later mutation by the framework."""

from __future__ import annotations

import random
from typing import Any

from tether.core.conversation import Transcript
from tether.core.store import canonical_json, digest, segment_ref


class HashedTranscript:
    """The definition the references must keep (what runs recorded by earlier versions hold):
    the common prefix found by hashing every item, the base the longest head within it."""

    def __init__(self) -> None:
        self.hashes: list[str] = []
        self.heads: dict[int, str] = {}

    def head(self, items: list[Any]) -> tuple[str | None, str, int]:
        hashes = [digest(canonical_json(item)) for item in items]
        common = 0
        for mine, theirs in zip(self.hashes, hashes, strict=False):
            if mine != theirs:
                break
            common += 1
        base_len = max((n for n in self.heads if n <= common), default=0)
        base = self.heads.get(base_len)
        delta = items[base_len:]
        head = segment_ref(base, delta) if delta or base is None else base
        self.heads[len(items)] = head
        self.hashes = hashes
        return base, head, len(delta)


def _item(i: int) -> dict[str, Any]:
    return {"role": "tool", "call_id": f"c{i}", "content": f"result {i} " + "x" * (i % 7)}


def test_references_equal_the_content_hash_definition_through_growth_edits_and_trims() -> None:
    rng = random.Random(7)
    items: list[Any] = []
    mine, spec = Transcript(), HashedTranscript()
    for step in range(300):
        move = rng.random()
        if move < 0.75 or len(items) < 3:  # the conversation grows (the usual case)
            items = [*items, _item(step), _item(step + 1000)]
        elif move < 0.85:  # an item in the middle is rewritten (a framework trims output)
            items = list(items)
            items[rng.randrange(len(items))] = {"role": "user", "content": f"edited {step}"}
        elif move < 0.95:  # the conversation is cut back (history processor)
            items = items[: rng.randrange(1, len(items))]
        # else: the same conversation is handed over again
        ref = mine.reference([dict(i) for i in items])
        base, head, delta_len = spec.head(items)
        assert (ref.base, ref.head, len(ref.delta), ref.length) == (
            base,
            head,
            delta_len,
            len(items),
        ), f"step {step}"
        assert ref.delta == items[len(items) - delta_len :]


def test_a_segment_stored_is_not_changed_by_the_framework_mutating_its_items_later() -> None:
    t = Transcript()
    first = [{"role": "user", "content": "hi"}]
    ref1 = t.reference(first)
    first[0]["content"] = "changed in place"  # a framework reusing its objects
    assert t.segments_for(ref1.head)[ref1.head]["items"] == [{"role": "user", "content": "hi"}]
    # Handed over again, the mutated item is a different conversation: a new segment.
    ref2 = t.reference(first)
    assert ref2.head != ref1.head
    assert ref2.delta == [{"role": "user", "content": "changed in place"}]


def test_only_the_new_items_are_serialized_at_each_step(monkeypatch: Any) -> None:
    import tether.core.conversation as conversation

    encoded: list[int] = []
    real = conversation.canonical_json

    def counting(value: Any) -> bytes:
        encoded.append(len(value) if isinstance(value, list) else 1)
        return real(value)

    monkeypatch.setattr(conversation, "canonical_json", counting)
    t = Transcript()
    items: list[Any] = []
    for step in range(200):
        items = [*items, _item(step)]
        t.reference(list(items))
    # One item encoded per step, whatever the conversation's length (was: all of them).
    assert encoded == [1] * 200
