"""Second-stage ranking: time cues, the user's own messages, short messages and their neighbours."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlm_vault import rerank as rerank_module
from rlm_vault.index import DocFacts, SearchDoc, role_of
from rlm_vault.rerank import Neighbours, Rerank, intent, rerank
from rlm_vault.rerank import _natural as natural_key
from rlm_vault.search import SearchEngine
from rlm_vault.textproc import tokens

ROOT = Path(__file__).resolve().parent.parent


def doc(doc_id: str, body: str, created: str, project: str = "P") -> SearchDoc:
    return SearchDoc(
        doc_id, "chunk", project, "", "", "", "session", (), (), created, "", body, doc_id + body
    )


def engine(tmp_path: Path, docs: list[SearchDoc]) -> SearchEngine:
    eng = SearchEngine(tmp_path / "cache", None)
    eng.rebuild(lambda: docs)
    return eng


def test_a_question_about_now_picks_the_newer_note(tmp_path: Path) -> None:
    eng = engine(
        tmp_path,
        [
            doc(
                "a",
                "assistant: The request timeout is set to 30 seconds in settings.",
                "2025-01-01T10:00:00Z",
            ),
            doc("b", "user: Change the request timeout to 45 seconds.", "2025-01-03T10:00:00Z"),
        ],
    )
    assert eng.search("What is the request timeout now?", limit=2)[0].id == "b"
    assert eng.search("What was the first request timeout?", limit=2)[0].id == "a"


def test_time_words_are_cues_but_last_week_is_a_date() -> None:
    assert intent("what is the current pool size").time == "new"
    assert intent("which change came first").time == "old"
    assert intent("what did she do last week").time == ""
    assert intent("quel est le délai actuel").time == "new"
    assert intent("What did I ask about tests?").user


def test_a_question_about_the_user_favours_the_users_message(tmp_path: Path) -> None:
    eng = engine(
        tmp_path,
        [
            doc("a", "assistant: I wrote the fixtures for the tests with pytest.", "2025-01-01T10:00:00Z"),
            doc("b", "user: I prefer pytest fixtures for tests.", "2025-01-01T10:05:00Z"),
        ],
    )
    assert eng.search("Which tests style do I prefer with pytest fixtures?", limit=2)[0].id == "b"


def test_a_camel_case_query_finds_the_snake_case_name_and_back() -> None:
    assert set(tokens("fetch_order_items")) <= set(tokens("fetchOrderItems"))
    assert set(tokens("fetchOrderItems")) & set(tokens("where is fetch_order_items called"))


def test_a_short_reply_is_found_with_its_thread(tmp_path: Path) -> None:
    thread = [
        doc("m1", "user: The checkout integration test is flaky on CI.", "2025-01-01T10:00:00Z"),
        doc("m2", "assistant: ok, I will run it twenty times.", "2025-01-01T10:01:00Z"),
        doc("m3", "user: Lunch menu: soup and bread.", "2025-01-01T12:00:00Z"),
    ]
    hits = [h.id for h in engine(tmp_path, thread).search("flaky checkout integration test", limit=3)]
    assert hits[:2] == ["m1", "m2"]


def test_a_note_that_is_not_a_message_is_not_brought_in_by_its_neighbour() -> None:
    facts = {
        "a": DocFacts("chunk", "P", "2025-01-01T10:00:00Z", "", 50),
        "b": DocFacts("chunk", "P", "2025-01-01T10:01:00Z", "", 20),
    }
    out = rerank([("a", 3.0)], "billing", facts, Neighbours(facts), Rerank())
    assert [i for i, _ in out] == ["a"]


def test_neighbours_follow_creation_time_then_sequence() -> None:
    facts = {
        "2025-01-01_P_1000": DocFacts("chunk", "P", "2025-01-01T10:00:00Z", "user", 10),
        "2025-01-01_P_999": DocFacts("chunk", "P", "2025-01-01T10:00:00Z", "user", 10),
        "other": DocFacts("chunk", "Q", "2025-01-01T10:00:00Z", "user", 10),
    }
    around = Neighbours(facts)
    assert around.around("2025-01-01_P_999") == ("2025-01-01_P_1000",)
    assert "other" not in around.around("2025-01-01_P_1000")


def test_neighbours_follow_added_changed_and_removed_chunks() -> None:
    def fact(created: str, project: str = "P") -> DocFacts:
        return DocFacts("chunk", project, created, "user", 10)

    facts = {"a": fact("2025-01-01T10:00:00Z"), "c": fact("2025-01-01T12:00:00Z")}
    around = Neighbours(facts)
    added = {**facts, "b": fact("2025-01-01T11:00:00Z"), "i": DocFacts("insight", "", "", "", 5)}
    same = around.updated(added)
    assert same is around and same.around("b") == ("a", "c") and same.around("i") == ()
    moved = {**added, "a": fact("2025-01-01T13:00:00Z")}
    assert around.updated(moved).around("a") == ("c",)
    assert Neighbours(added).updated({"a": facts["a"], "c": facts["c"]}).around("a") == ("c",)


@pytest.mark.parametrize("scan", [4096, 0])  # ties found by scanning ids, or by their sort keys
def test_neighbours_in_clumps_of_one_time_match_a_full_sort_also_when_added_one_by_one(
    scan: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rerank_module, "TIE_SCAN", scan)
    rng = random.Random(3)
    times = ["2025-01-01T10:00:00Z", "2025-01-01T10:00:01Z", "2025-01-02T09:00:00Z"]
    facts = {
        f"2025-01-01_{p}_{n:0{rng.choice([1, 3])}d}{rng.choice(['', '_x', '_y'])}": DocFacts(
            "chunk", p, rng.choice(times), "user", 10
        )
        for p in ("P", "Q")
        for n in rng.sample(range(1, 1500), 120)
    }
    ranked = sorted(facts, key=lambda i: (facts[i].project, facts[i].created, natural_key(i), i))

    def expected(doc_id: str) -> tuple[str, ...]:
        at = ranked.index(doc_id)
        near = [ranked[i] for i in (at - 1, at + 1) if 0 <= i < len(ranked)]
        return tuple(i for i in near if facts[i].project == facts[doc_id].project)

    whole = Neighbours(facts)
    grown = Neighbours({})
    order = list(facts)
    rng.shuffle(order)
    for n in range(0, len(order), 37):
        grown = grown.updated({i: facts[i] for i in order[: n + 37]})
    for doc_id in facts:
        assert whole.around(doc_id) == grown.around(doc_id) == expected(doc_id)


def test_roles_are_read_from_the_first_words_or_the_tags() -> None:
    assert role_of(doc("a", "[user]\nplease do it", "")) == "user"
    assert role_of(doc("a", "**Assistant**: done", "")) == "assistant"
    assert role_of(doc("a", "Lunch menu: soup", "")) == ""


def test_eval_coding_runs_on_a_tiny_generated_set(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    import eval_coding

    conv = eval_coding.generate(eval_coding.HELDOUT, 3, messages=60)
    assert len(conv.messages) >= 60 and {q.kind for q in conv.questions} == set(eval_coding.KINDS)
    assert eval_coding.generate(eval_coding.HELDOUT, 3, messages=60).messages == conv.messages
    scores = eval_coding.run(eval_coding.TUNE, [5], 40, "none", ("plain", "bm25"))
    assert scores["bm25"]["all"].n == scores["plain"]["all"].n > 10
    assert "| all |" in eval_coding.report(scores)


@given(st.lists(st.text(alphabet="ab_-.0123456789xé", min_size=0, max_size=12), min_size=2, max_size=30))
def test_natural_order_of_ids_is_by_numbers_then_text(ids: list[str]) -> None:
    """One string per note orders ids as comparing their parts would: numbers by value, text as text."""
    import re

    from rlm_vault.rerank import _natural

    def parts(text: str) -> tuple[object, ...]:
        return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))

    assert [parts(i) for i in sorted(ids, key=_natural)] == sorted(parts(i) for i in ids)
