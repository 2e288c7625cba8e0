"""models: names, slugs, tags, entities, and Insight/Chunk <-> front matter."""

from __future__ import annotations

import pytest

from rlm_vault import markdown
from rlm_vault.errors import InvalidInput
from rlm_vault.models import (
    Chunk,
    Insight,
    content_hash,
    extract_entities,
    insight_id,
    needs_alias,
    parse_tags,
    safe_name,
    slugify,
)

# ---------------------------------------------------------------------------------------- safe_name


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("MyApp", "MyApp"),
        ("  my project  ", "my-project"),
        ("my   big project", "my-big-project"),
        ("Café Déjà", "Cafe-Deja"),
        ("v1.2_beta-3", "v1.2_beta-3"),
        ("-lead-and-trail-.", "lead-and-trail"),
        ("API-12", "API-12"),
    ],
)
def test_safe_name_cleans_plain_names(raw: str, expected: str) -> None:
    assert safe_name(raw, "project") == expected


@pytest.mark.parametrize(
    "raw",
    ["a/b", "../x", "..", "a\\b", "x\x00y", "tab\tname", "new\nline", "del\x7f", "/etc/passwd", "ok..not"],
)
def test_safe_name_strict_refuses_path_tricks_and_says_what_is_accepted(raw: str) -> None:
    with pytest.raises(InvalidInput) as info:
        safe_name(raw, "project")
    message = str(info.value)
    assert message.startswith("project ")
    assert "letters, digits" in message and "'.'" in message and "'_'" in message and "'-'" in message


def test_safe_name_strict_refuses_names_with_nothing_usable() -> None:
    with pytest.raises(InvalidInput, match="no usable characters"):
        safe_name("日本語", "domain")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a/b", "a-b"),
        ("../etc", "etc"),
        ("..", ""),
        ("a\\b", "a-b"),
        ("x\x00y", "x-y"),
        ("日本語", ""),
    ],
)
def test_safe_name_non_strict_cleans_instead(raw: str, expected: str) -> None:
    cleaned = safe_name(raw, "project", strict=False)
    assert cleaned == expected
    assert "/" not in cleaned and "\\" not in cleaned and ".." not in cleaned


def test_safe_name_caps_length() -> None:
    assert len(safe_name("x" * 200, "project")) == 64


# ---------------------------------------------------------------------------------------- slugify


def test_slugify_folds_accents_and_lowercases() -> None:
    assert slugify("Déployé à la Maison, JAMAIS le vendredi!") == "deploye-a-la-maison-jamais-le-vendredi"


def test_slugify_caps_length_on_a_word_boundary() -> None:
    slug = slugify(" ".join(["deployment"] * 20))
    assert len(slug) <= 48
    assert slug.split("-") == ["deployment"] * len(slug.split("-"))
    assert slugify("x" * 100) == "x" * 48
    assert len(slugify("word " * 50, max_len=10)) <= 10


def test_slugify_keeps_the_letters_of_every_script() -> None:
    assert slugify("デプロイは金曜日にしない。") == "デプロイは金曜日にしない"
    assert slugify("日本語 v2") == "日本語-v2"
    assert slugify("Привет, Мир") == "привет-мир"
    assert slugify("नमस्ते दुनिया") == "नमस्ते-दुनिया"  # the vowel signs stay inside their word
    assert slugify("한국어 메모") == "한국어-메모"
    assert slugify("ＡＢＣ？ｄｅｆ") == "abc-def"  # full-width forms fold, their signs go
    assert slugify("🚀🚀") == ""


def test_insight_ids_of_any_script_are_readable_and_need_no_hash() -> None:
    assert (
        insight_id("2026-12-01", "デプロイは金曜日にしない", lambda i: False)
        == "2026-12-01-デプロイは金曜日にしない"
    )
    assert insight_id("2026-12-01", "🚀🚀", lambda i: False) == f"2026-12-01-{content_hash('🚀🚀')[:8]}"
    assert insight_id("2026-12-01", "Ship it", {"2026-12-01-ship-it"}.__contains__) == "2026-12-01-ship-it-2"


def test_an_alias_is_needed_only_where_the_file_name_loses_words() -> None:
    assert not needs_alias("Always deploy LOCAL -> VPS", "2026-11-24-always-deploy-local-vps")
    assert not needs_alias("デプロイは、金曜日にしない", "2026-12-01-デプロイは-金曜日にしない")
    assert needs_alias("L'équipe préfère le thé", "2026-12-01-l-equipe-prefere-le-the")
    assert needs_alias("🚀 launch", "2026-12-01-launch") is False
    assert needs_alias("🚀🚀", "2026-12-01-0a1b2c3d") is False  # no words: nothing a title could add
    long = "word " * 30
    assert needs_alias(long, "2026-12-01-" + slugify(long))


@pytest.mark.parametrize(
    ("given", "folder"),
    [("CON", "CON_"), ("con", "con_"), ("Nul.txt", "Nul_.txt"), ("lpt9", "lpt9_"), ("COM10", "COM10"),
     ("My:App?", "My-App"), ("trailing. ", "trailing"), ("aux-tools", "aux-tools")],
)  # fmt: skip
def test_project_names_are_valid_folder_names_on_windows(given: str, folder: str) -> None:
    assert safe_name(given, "project") == folder


# ---------------------------------------------------------------------------------------- tags


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a, b ,c", ("a", "b", "c")),
        ("#deploy, #workflow", ("deploy", "workflow")),
        ("x, x, y, x", ("x", "y")),
        (["api", "#api", " web "], ("api", "web")),
        ("", ()),
        (None, ()),
        (" , ,# ", ()),
        (["日本語", "café"], ("日本語", "café")),
        ([1, 2.5], ("1", "2.5")),
    ],
)
def test_parse_tags(value: object, expected: tuple[str, ...]) -> None:
    assert parse_tags(value) == expected


def test_content_hash_ignores_whitespace_differences_only() -> None:
    assert content_hash("a  b\n\nc\t") == content_hash(" a b c")
    assert content_hash("a b c") != content_hash("a b d")


# ---------------------------------------------------------------------------------------- Insight


def test_insight_round_trip_through_front_matter_keeps_extra_keys() -> None:
    meta = {
        "id": "2026-11-24-x",
        "type": "insight",
        "category": "decision",
        "importance": "critical",
        "tags": ["deploy", "workflow"],
        "project": None,
        "created": "2026-11-24T15:30:00Z",
        "updated": "2026-11-24T16:00:00Z",
        "aliases": ["X"],
        "zeta": {"b": 1, "a": 2},
    }
    insight = Insight.from_meta("2026-11-24-x", meta, "\nAlways deploy LOCAL -> VPS.\n")
    assert insight.content == "Always deploy LOCAL -> VPS."
    assert insight.tags == ("deploy", "workflow")
    assert insight.project == ""
    assert insight.extra == {"aliases": ["X"], "zeta": {"b": 1, "a": 2}}
    assert insight.to_meta() == meta
    assert list(insight.to_meta()) == list(meta)
    assert insight.path == "insights/2026-11-24-x.md"


def test_insight_from_hand_written_meta_uses_defaults() -> None:
    insight = Insight.from_meta("n", {"created": "2026-01-02T00:00:00Z", "tags": "a, #b"}, "text")
    assert (insight.category, insight.importance, insight.tags) == ("general", "medium", ("a", "b"))
    assert insight.updated == "2026-01-02T00:00:00Z"
    assert insight.to_meta()["type"] == "insight"


def test_insight_extra_keys_follow_known_keys_through_render() -> None:
    meta = {"note": "mine", "id": "n", "category": "fact"}
    text = markdown.render(Insight.from_meta("n", meta, "b").to_meta(), "b")
    keys = list(markdown.parse(text)[0])
    assert keys[:8] == ["id", "type", "category", "importance", "tags", "project", "created", "updated"]
    assert keys[8:] == ["note"]


# ---------------------------------------------------------------------------------------- Chunk


def test_chunk_round_trip_through_front_matter_keeps_extra_keys() -> None:
    meta = {
        "id": "2026-11-24_MyApp_001",
        "type": "chunk",
        "chunk_type": "debug",
        "summary": "Fix: a\n---\nb: c",
        "tags": ["api"],
        "project": "MyApp",
        "domain": "feature",
        "ticket": "API-12",
        "session": "2026-11-24_MyApp_feature",
        "created": "2026-11-24T15:31:02Z",
        "sha256": "ab" * 32,
        "tokens": 812,
        "entities": {"files": ["api/routes.py"], "tickets": ["API-12"]},
        "reviewed": True,
    }
    chunk = Chunk.from_meta("2026-11-24_MyApp_001", "MyApp", meta, "body\n")
    assert chunk.tokens == 812
    assert chunk.extra == {"reviewed": True}
    assert chunk.to_meta() == meta
    assert chunk.path == "chunks/MyApp/2026-11-24_MyApp_001.md"
    again = markdown.parse(markdown.render(chunk.to_meta(), chunk.content))
    assert Chunk.from_meta(chunk.id, "MyApp", *again) == chunk


def test_chunk_from_sparse_meta_takes_project_from_folder_and_tolerates_junk() -> None:
    chunk = Chunk.from_meta(
        "c1", "Folder", {"tokens": "many", "entities": ["not", "a", "map"], "domain": None}, "x"
    )
    assert chunk.project == "Folder"
    assert chunk.tokens == 0
    assert chunk.entities == {}
    assert chunk.chunk_type == "session"
    meta = chunk.to_meta()
    assert meta["domain"] is None and meta["ticket"] is None


def test_chunk_to_meta_drops_empty_entity_kinds() -> None:
    chunk = Chunk("c", "x", "P", entities={"files": ["a.py"], "versions": []})
    assert chunk.to_meta()["entities"] == {"files": ["a.py"]}


# ---------------------------------------------------------------------------------------- entities


def test_extract_entities_finds_each_kind() -> None:
    text = (
        "Edited api/routes.py and main.py for v2.0.0 (was 1.9.3); import requests; "
        "fixes API-12 and PROJ-7 via handle_request() and main.py again."
    )
    found = extract_entities(text)
    assert found["files"] == ["api/routes.py", "main.py"]
    assert found["versions"] == ["v2.0.0", "1.9.3"]
    assert found["modules"] == ["requests"]
    assert found["tickets"] == ["API-12", "PROJ-7"]
    assert found["functions"] == ["handle_request"]


def test_extract_entities_skips_kinds_with_nothing_and_caps_each_kind() -> None:
    assert extract_entities("nothing interesting here") == {}
    many = " ".join(f"TK-{n}" for n in range(100))
    assert len(extract_entities(many, limit=7)["tickets"]) == 7


def test_extract_entities_ignores_lookalikes() -> None:
    found = extract_entities("a file.pyc, an email x@y.com and a date 2026.11")
    assert "files" not in found
    assert "versions" not in found
