"""Related terms: a query naming a topic in other words finds the note, in search and in recall."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rlm_vault.related import covers, expand
from rlm_vault.service import MemoryService
from rlm_vault.textproc import tokens

ROOT = Path(__file__).resolve().parent.parent


def test_a_topic_word_brings_the_tools_of_that_topic() -> None:
    targets = expand("formatter linter choice").targets()
    assert any(covers(t, frozenset(tokens("ruff"))) for t in targets)
    assert any(covers(t, frozenset(tokens("black"))) for t in targets)
    assert not expand("what did Caroline paint last summer").targets()


def test_phrases_need_every_word_and_japanese_entries_match_inside_a_sentence() -> None:
    assert any(covers(t, frozenset(tokens("utc"))) for t in expand("quel fuseau horaire").targets())
    assert not expand("un horaire de train").targets()
    assert any(covers(t, frozenset(tokens("UTC"))) for t in expand("時刻のタイムゾーンは？").targets())


def test_a_related_term_weighs_less_than_the_querys_own_word(service: MemoryService) -> None:
    service.remember("Use ruff for linting; never black.", "decision")
    service.remember("The formatter runs before every commit.", "fact")
    found = [h["summary"] for h in service.search("formatter", limit=2)["results"]]
    assert found == ["The formatter runs before every commit.", "Use ruff for linting; never black."]


def test_search_finds_an_insight_asked_for_in_other_words(service: MemoryService) -> None:
    service.remember("Use ruff for linting and formatting; never black.", "decision")
    service.remember("Store timestamps in UTC; convert in the UI only.", "decision")
    service.remember("Lunch is at noon on Fridays.", "fact")
    assert service.search("formatter linter choice", limit=1)["results"][0]["summary"].startswith("Use ruff")
    assert service.search("timezone storage", limit=1)["results"][0]["summary"].startswith("Store times")


def test_recall_uses_the_same_related_terms_and_folding(service: MemoryService) -> None:
    service.remember("Use ruff for linting and formatting; never black.", "decision")
    service.remember("Les dates sont enregistrées en UTC dans la base.", "decision")
    service.remember("Lunch is at noon on Fridays.", "fact")
    first = service.recall("formatter linter choice")["insights"]
    assert first and first[0]["content"].startswith("Use ruff")
    assert service.recall("FUSEAU horaire")["insights"][0]["content"].startswith("Les dates")
    assert [i["content"] for i in service.recall("fetchOrderItems")["insights"]] == []
    service.remember("fetch_order_items is paginated.", "fact")
    assert service.recall("fetchOrderItems")["insights"][0]["content"].startswith("fetch_order_items")


def test_eval_recall_runs_on_a_tiny_set(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    import eval_recall

    data = {
        "insights": [
            {
                "key": "r",
                "half": "tune",
                "lang": "en",
                "category": "decision",
                "content": "Use ruff, never black.",
            },
            {"key": "u", "half": "heldout", "lang": "fr", "category": "fact", "content": "Dates en UTC."},
            {"key": "x", "half": "", "lang": "en", "category": "fact", "content": "Lunch at noon."},
        ],
        "questions": [{"key": "r", "text": "formatter choice"}, {"key": "u", "text": "fuseau horaire"}],
    }
    path = tmp_path / "set.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    insights, cases = eval_recall.load(path, "tune")
    assert [c.key for c in cases] == ["r"] and len(insights) == 3
    found = eval_recall.evaluate(insights, eval_recall.load(path, "all")[1], "none")
    assert found["search"]["all"] == [True, True] and found["recall"]["all"] == [True, True]
    assert "| search | 1.000 (2)" in eval_recall.table(found)


def test_the_recall_set_has_two_halves_and_every_question_names_an_insight() -> None:
    data = json.loads((ROOT / "tests" / "data" / "recall_set.json").read_text(encoding="utf-8"))
    halves = {i["key"]: i["half"] for i in data["insights"]}
    asked = [halves[q["key"]] for q in data["questions"]]
    assert set(asked) == {"tune", "heldout"} and min(asked.count("tune"), asked.count("heldout")) >= 25
    assert {i["lang"] for i in data["insights"]} == {"en", "fr", "ja"}
