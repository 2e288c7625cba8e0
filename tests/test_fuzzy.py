"""Typo-tolerant line search over an in-memory vocabulary."""

from __future__ import annotations

from rlm_vault.fuzzy import FuzzyIndex, max_edits

NOTES = {
    "net": "Setup notes\nThe connection timeout was raised to 30 s\nthen it worked",
    "tmp": "Use a temporary directory for the build\nclean it after",
    "cat": "The cat ate the kibble\nno timeout here",
    "fr": "La base de données est lente\nmigration terminée",
}


def make_index() -> FuzzyIndex:
    index = FuzzyIndex()
    index.update(NOTES.items())
    return index


def test_edit_budget_grows_with_word_length() -> None:
    assert [max_edits(w) for w in ("cat", "kibble", "connection")] == [0, 1, 2]


def test_typos_find_the_line() -> None:
    hits = make_index().search("conection timout", threshold=80)
    assert hits[0][:3] == ("net", 1, "The connection timeout was raised to 30 s")
    assert hits[0].score >= 80


def test_all_query_words_are_needed() -> None:
    assert [h.id for h in make_index().search("temporary directroy")] == ["tmp"]
    assert make_index().search("temporary kibble") == []


def test_accents_are_folded() -> None:
    hits = make_index().search("base de donnees")
    assert hits and hits[0].id == "fr" and hits[0].line_no == 0


def test_allowed_ids_restrict_candidates() -> None:
    assert make_index().search("timeout", allowed={"cat"})[0].id == "cat"
    assert make_index().search("timeout", allowed=set()) == []


def test_update_and_delete_by_id() -> None:
    index = make_index()
    index.update([("net", "nothing left")])
    assert not index.search("connection timeout")
    index.delete(["cat"])
    assert "cat" not in index and len(index) == 3
    assert index.search("timeout") == []


def test_threshold_filters_weak_lines() -> None:
    assert all(hit.score >= 95 for hit in make_index().search("timeout", threshold=95))
