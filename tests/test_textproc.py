"""Text analysis: folding, stop words, EN/FR stems, CJK bigrams."""

from __future__ import annotations

from rlm_vault import textproc


def test_fold_drops_accents_case_and_ligatures() -> None:
    assert textproc.fold("Œuvre ÉTÉ Straße Æther") == "oeuvre ete strasse aether"


def test_fold_keeps_japanese_voiced_marks() -> None:
    # Stripping every combining mark would turn デ into テ.
    assert textproc.fold("データ") == "データ"


def test_stop_words_of_both_languages_are_dropped() -> None:
    assert textproc.tokens("the and of le la les des") == []


def test_french_plurals_and_accents_meet_unaccented_forms() -> None:
    query = set(textproc.tokens("préférences déployées"))
    note = set(textproc.tokens("Ma preference: on déploie le vendredi, deployer vite"))
    assert {"prefer", "deploi"} <= query & note


def test_english_inflections_share_a_stem() -> None:
    # Undecided language (no stop words): the French stems come too, the English ones must match.
    assert set(textproc.tokens("run deploy migration")) <= set(textproc.tokens("running deployed migrations"))


def test_english_text_is_not_french_stemmed() -> None:
    assert textproc.language(["when", "did", "the", "group"]) == "en"
    assert textproc.tokens("the groups were running") == ["group", "run"]


def test_japanese_query_bigrams_are_found_in_the_note() -> None:
    query = textproc.tokens("データベース移行")
    note = set(textproc.tokens("データベースの移行が失敗した"))
    assert "移行" in query
    assert sum(term in note for term in query) >= len(query) - 1


def test_single_cjk_character_is_a_unigram() -> None:
    assert textproc.tokens("猫 dog") == ["猫", "dog"]


def test_thai_has_no_spaces_and_gets_bigrams() -> None:
    assert "ไท" in textproc.tokens("ภาษาไทย")
