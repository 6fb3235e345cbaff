"""lockd's entry table: ownership, revisions, reads by prefix, limits, session ends."""

from __future__ import annotations

import pytest

from heartline.lockd._entries import MAX_PER_SESSION, EntryLimit, EntryTable


def test_a_put_is_read_back_with_its_revision_and_age() -> None:
    t = EntryTable()
    assert t.put("a/1", "x", "s1", now=10.0) == 1
    assert t.put("b/1", "y", "s1", now=11.0) == 2
    assert t.read("a/", now=12.5) == [["a/1", "x", 1, 2.5]]
    assert [row[0] for row in t.read("", now=12.0)] == ["a/1", "b/1"]


def test_the_last_writer_owns_an_entry_and_only_the_owner_deletes_it() -> None:
    t = EntryTable()
    t.put("k", "old", "s1", now=0.0)
    t.put("k", "new", "s2", now=1.0)
    assert t.delete("k", "s1") is None  # no longer s1's
    assert t.drop_session("s1") == []  # and s1's end does not take it
    assert t.read("k", now=1.0)[0][1] == "new"
    rev = t.delete("k", "s2")
    assert rev == t.revision and t.read("", now=1.0) == []
    assert t.owned == {}


def test_a_session_end_drops_exactly_its_entries_each_with_a_revision() -> None:
    t = EntryTable()
    for key in ("r/b", "r/a"):
        t.put(key, "v", "gone", now=0.0)
    t.put("r/c", "v", "stays", now=0.0)
    dropped = t.drop_session("gone")
    assert [k for k, _ in dropped] == ["r/a", "r/b"]
    assert [r for _, r in dropped] == [4, 5]
    assert [row[0] for row in t.read("r/", now=0.0)] == ["r/c"]


def test_a_session_cannot_own_more_than_the_limit_but_may_rewrite_its_own() -> None:
    t = EntryTable()
    for i in range(MAX_PER_SESSION):
        t.put(f"k{i}", "v", "s", now=0.0)
    with pytest.raises(EntryLimit, match="at most"):
        t.put("one-more", "v", "s", now=0.0)
    t.put("k0", "rewritten", "s", now=0.0)  # not a new entry
    t.put("one-more", "v", "other", now=0.0)  # another session still may


def test_a_kept_entry_outlives_its_writer_and_anyone_may_delete_it() -> None:
    t = EntryTable()
    t.put("roll/x", "progress", "s1", now=0.0, keep=True)
    assert t.drop_session("s1") == []
    assert t.read("roll/", now=1.0)[0][1] == "progress"
    t.put("roll/x", "more", "s2", now=1.0, keep=True)  # rewritten by another session
    assert t.delete("roll/x", "s3") is not None
    assert t.read("roll/", now=1.0) == [] and t.owned == {}
