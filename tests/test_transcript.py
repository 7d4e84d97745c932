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
        # Heads past the common prefix were of another conversation: not a base any more.
        self.heads = {n: h for n, h in self.heads.items() if n <= common}
        base_len = max(self.heads, default=0)
        base = self.heads.get(base_len)
        delta = items[base_len:]
        head = segment_ref(base, delta) if delta or base is None else base
        self.heads[len(items)] = head
        self.hashes = hashes
        return base, head, len(delta)


def _item(i: int) -> dict[str, Any]:
    return {"role": "tool", "call_id": f"c{i}", "content": f"result {i} " + "x" * (i % 7)}


def _resolve(segments: dict[str, Any], head: str | None) -> list[Any]:
    """The conversation a chain head stands for (what a step's worker materializes)."""
    out: list[Any] = []
    while head is not None:
        parent, items = segments[head]
        out[:0] = items
        head = parent
    return out


def test_references_equal_the_content_hash_definition_through_growth_edits_and_trims() -> None:
    rng = random.Random(7)
    items: list[Any] = []
    stored: dict[str, Any] = {}
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
        if ref.head != ref.base:
            stored[ref.head] = (ref.base, ref.delta)
        # The chain a step's worker reads is the conversation handed over, whatever came
        # before (a base of an earlier conversation, no longer its prefix, would not be).
        assert _resolve(stored, ref.head) == items, f"step {step}"


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


def test_a_tail_after_a_stored_prefix_references_the_whole_conversation() -> None:
    """A segment resumed from its conversation's tail (the items before it stay in the
    store) hands over only the tail; each reference still stands for the whole
    conversation, and a nested agent's own conversation in between takes nothing of it."""
    whole = [_item(i) for i in range(50)]
    first = Transcript()
    stored: dict[str, Any] = {}
    for n in (10, 30, 40):
        ref = first.reference(whole[:n])
        stored[ref.head] = (ref.base, ref.delta)
    carried = first.split(whole[:45])
    assert (carried["length"], len(carried["delta"])) == (40, 5)

    t = Transcript()
    t.adopt_prefix(carried["base"], carried["length"])
    tail = list(carried["delta"])
    assert t.prefix_length == 40
    for grown in (tail, [*tail, _item(100)], [*tail, _item(100), _item(101)]):
        ref = t.reference(grown, prefixed=True)
        stored.setdefault(ref.head, (ref.base, ref.delta))
        assert ref.length == 40 + len(grown)
        assert _resolve(stored, ref.head) == whole[:45] + grown[5:]
        if grown is not tail:
            assert len(ref.delta) == 1  # only the new item crosses
        # A nested agent's conversation in between: its own, from nothing.
        nested = t.reference([{"role": "user", "content": "sub-task"}])
        stored.setdefault(nested.head, (nested.base, nested.delta))
        assert nested.length == 1
        assert _resolve(stored, nested.head) == [{"role": "user", "content": "sub-task"}]
    # The next boundary: the longest stored prefix (the last step's) and the items after it.
    again = t.split([*tail, _item(100), _item(101), _item(102)], prefixed=True)
    assert again["length"] == 47 and again["delta"] == [_item(102)]
    assert _resolve(stored, again["base"]) == [*whole[:45], _item(100), _item(101)]
    # Without a stored prefix, prefixed means nothing.
    plain = Transcript().reference(whole[:3], prefixed=True)
    assert (plain.base, plain.length) == (None, 3)


def test_frozen_items_give_the_same_references_as_copies() -> None:
    # An adapter's own JSON: an unchanged item is handed again as the same object, an edit
    # is a new object (never a change in place).
    rng = random.Random(11)
    items: list[Any] = []
    copied, frozen = Transcript(), Transcript()
    for step in range(300):
        move = rng.random()
        if move < 0.75 or len(items) < 3:
            items = [*items, _item(step), _item(step + 1000)]
        elif move < 0.85:
            items = list(items)
            items[rng.randrange(len(items))] = {"role": "user", "content": f"edited {step}"}
        elif move < 0.95:
            items = items[: rng.randrange(1, len(items))]
        assert frozen.reference(items, frozen=True) == copied.reference(items), f"step {step}"


class _Compared(dict[str, Any]):
    """A JSON item that counts how often its value is compared."""

    compared = 0

    def __eq__(self, other: object) -> bool:
        _Compared.compared += 1
        return dict.__eq__(self, other)

    __hash__ = None  # type: ignore[assignment]


def test_frozen_items_already_recorded_are_not_compared_by_value() -> None:
    items: list[Any] = [_Compared(_item(i)) for i in range(100)]
    t, copies = Transcript(), Transcript()
    t.reference(items, frozen=True)
    copies.reference(items)
    _Compared.compared = 0
    t.reference([*items, _item(100)], frozen=True)
    assert _Compared.compared == 0  # the same objects: passed over by identity
    copies.reference([*items, _item(100)])
    assert _Compared.compared >= 100  # the record's copies: every item compared
