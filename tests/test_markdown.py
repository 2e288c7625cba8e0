"""markdown.parse / markdown.render: golden round trips and YAML edge cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from rlm_vault import markdown
from rlm_vault.errors import InvalidNote

NOTES = Path(__file__).parent / "data" / "notes"
CASES = sorted(p.stem for p in NOTES.glob("*.json"))


def golden(case: str) -> tuple[str, dict[str, Any]]:
    # read_bytes + decode keeps CRLF and the BOM exactly as stored
    text = (NOTES / f"{case}.md").read_bytes().decode("utf-8")
    return text, json.loads((NOTES / f"{case}.json").read_text(encoding="utf-8"))


def test_golden_cases_are_all_there() -> None:
    assert {
        "insight_basic",
        "unicode",
        "multiline_summary",
        "summary_fence",
        "timestamps_unquoted",
        "unknown_keys",
        "crlf",
        "bom",
    } <= set(CASES)
    assert all((NOTES / f"{c}.md").exists() for c in CASES)


@pytest.mark.parametrize("case", CASES)
def test_parse_matches_golden(case: str) -> None:
    text, expected = golden(case)
    meta, body = markdown.parse(text, f"{case}.md")
    assert meta == expected["meta"]
    assert list(meta) == list(expected["meta"])  # key order as written
    assert body == expected["body"]


@pytest.mark.parametrize("case", [c for c in CASES if golden(c)[1]["canonical"]])
def test_canonical_notes_render_byte_identical(case: str) -> None:
    text, _ = golden(case)
    assert markdown.render(*markdown.parse(text)) == text


@pytest.mark.parametrize("case", CASES)
def test_render_then_parse_is_stable(case: str) -> None:
    text, expected = golden(case)
    once = markdown.render(*markdown.parse(text))
    assert markdown.parse(once) == (expected["meta"], expected["body"])
    assert markdown.render(*markdown.parse(once)) == once


def test_unicode_is_written_raw_not_escaped() -> None:
    text = markdown.render({"summary": "café 🎉 デプロイ", "tags": ["日本語", "émoji 👍"]}, "本文 ☕")
    assert "café 🎉 デプロイ" in text
    assert "[日本語, émoji 👍]" in text
    assert "\\u" not in text and "\\U" not in text
    assert markdown.parse(text) == (
        {"summary": "café 🎉 デプロイ", "tags": ["日本語", "émoji 👍"]},
        "本文 ☕\n",
    )


def test_multi_line_string_is_a_block_scalar() -> None:
    text = markdown.render({"summary": "first line\nsecond line"}, "body")
    assert "summary: |-\n  first line\n  second line\n" in text
    assert markdown.parse(text)[0]["summary"] == "first line\nsecond line"


def test_summary_with_fence_and_colon_round_trips_and_body_stays_body() -> None:
    meta = {"id": "x", "summary": "Fix: a\n---\nb: c", "tags": ["t"]}
    text = markdown.render(meta, "real body\n---\nnot: front matter")
    parsed, body = markdown.parse(text)
    assert parsed == meta
    assert "b" not in parsed
    assert body == "real body\n---\nnot: front matter\n"


def test_single_line_summary_with_colon_space_round_trips() -> None:
    meta = {"summary": "Fix: the bug: in parser # not a comment", "other": "- dash", "q": "'quoted'"}
    assert markdown.parse(markdown.render(meta, "b"))[0] == meta


def test_multi_line_with_trailing_spaces_round_trips() -> None:
    # block scalars cannot keep trailing spaces; the writer must fall back to a quoted form
    meta = {"summary": "line with trailing space \nnext\ttab", "ctl": "a\x07b\nc"}
    assert markdown.parse(markdown.render(meta, "b"))[0] == meta


def test_timestamps_are_quoted_on_write_and_load_as_strings() -> None:
    text = markdown.render({"created": "2026-11-24T15:30:00Z", "day": "2026-11-24"}, "b")
    assert "created: '2026-11-24T15:30:00Z'" in text
    assert "day: '2026-11-24'" in text
    # any YAML reader (not only ours) gets the same strings back
    assert yaml.safe_load(text.split("---\n")[1]) == {"created": "2026-11-24T15:30:00Z", "day": "2026-11-24"}


def test_unquoted_timestamps_a_person_writes_load_as_strings() -> None:
    meta, _ = markdown.parse(
        "---\ncreated: 2026-11-24T15:30:00Z\nday: 2026-11-24\nat: 2026-11-24 15:30:00+01:00\n---\nx\n"
    )
    assert meta == {"created": "2026-11-24T15:30:00Z", "day": "2026-11-24", "at": "2026-11-24 15:30:00+01:00"}
    assert all(type(v) is str for v in meta.values())


def test_key_order_is_kept_not_sorted() -> None:
    meta = {"zeta": 1, "id": "x", "alpha": 2, "middle": {"z": 1, "a": 2}}
    text = markdown.render(meta, "b")
    assert text.index("zeta:") < text.index("id:") < text.index("alpha:") < text.index("middle:")
    assert text.index("\n  z: 1") < text.index("\n  a: 2")
    assert list(markdown.parse(text)[0]) == ["zeta", "id", "alpha", "middle"]


def test_render_ends_with_exactly_one_newline() -> None:
    assert markdown.render({"id": "x"}, "body\n\n\n") == "---\nid: x\n---\nbody\n"


def test_shared_objects_are_not_written_as_anchors() -> None:
    shared = ["a", "b"]
    text = markdown.render({"one": shared, "two": shared}, "b")
    assert "&" not in text and "*" not in text
    assert markdown.parse(text)[0] == {"one": ["a", "b"], "two": ["a", "b"]}


def test_invalid_yaml_is_invalid_note_with_reason() -> None:
    with pytest.raises(InvalidNote) as info:
        markdown.parse("---\nid: [unclosed\ntags: x\n---\nbody\n", "insights/bad.md")
    assert info.value.path == "insights/bad.md"
    assert "not valid YAML" in info.value.reason
    assert "\n" not in info.value.reason
    assert str(info.value).startswith("insights/bad.md: ")


@pytest.mark.parametrize(
    "text", ["just a body\n", "", "\n---\nid: x\n---\nbody\n", "# title\n---\nid: x\n---\n"]
)
def test_no_front_matter_is_invalid_note(text: str) -> None:
    with pytest.raises(InvalidNote) as info:
        markdown.parse(text, "n.md")
    assert "front matter" in info.value.reason


def test_unclosed_front_matter_is_invalid_note() -> None:
    with pytest.raises(InvalidNote) as info:
        markdown.parse("---\nid: x\nbody without a closing fence\n", "n.md")
    assert "not closed" in info.value.reason


@pytest.mark.parametrize("front", ["- a\n- b\n", "just a string\n", "42\n"])
def test_front_matter_that_is_not_a_mapping_is_refused(front: str) -> None:
    with pytest.raises(InvalidNote) as info:
        markdown.parse(f"---\n{front}---\nbody\n", "n.md")
    assert "mapping" in info.value.reason


def test_empty_front_matter_is_an_empty_mapping() -> None:
    assert markdown.parse("---\n---\nbody\n") == ({}, "body\n")


@pytest.mark.parametrize(
    "front",
    [
        "base: &b {x: 1}\nother: *b\n",
        "a: &a [1, 2]\nb: [*a, *a]\n",
        "base: &b {x: 1}\nmerged:\n  <<: *b\n  y: 2\n",
    ],
)
def test_yaml_anchors_and_aliases_are_refused(front: str) -> None:
    with pytest.raises(InvalidNote) as info:
        markdown.parse(f"---\n{front}---\nbody\n", "n.md")
    assert "alias" in info.value.reason


def test_billion_laughs_is_refused_quickly() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for n in range(1, 9):
        prev, cur = chr(ord("a") + n - 1), chr(ord("a") + n)
        lines.append(f"{cur}: &{cur} [{', '.join(['*' + prev] * 9)}]")
    with pytest.raises(InvalidNote):
        markdown.parse("---\n" + "\n".join(lines) + "\n---\nbody\n", "n.md")


def test_front_matter_over_max_size_is_refused() -> None:
    big = "x" * (markdown.MAX_FRONT_MATTER + 10)
    with pytest.raises(InvalidNote) as info:
        markdown.parse(f"---\nsummary: {big}\n---\nbody\n", "n.md")
    assert "larger than" in info.value.reason


def test_front_matter_just_under_max_size_is_read() -> None:
    value = "x" * (markdown.MAX_FRONT_MATTER - 100)
    meta, _ = markdown.parse(f"---\nsummary: {value}\n---\nbody\n")
    assert meta["summary"] == value


def test_large_body_is_not_limited_by_front_matter_cap() -> None:
    body = "line\n" * (markdown.MAX_FRONT_MATTER // 2)
    assert markdown.parse(f"---\nid: x\n---\n{body}")[1] == body


def test_crlf_note_parses_and_renders_with_lf_fences() -> None:
    text = "---\r\nid: x\r\nsummary: two words\r\n---\r\nbody line\r\n"
    meta, body = markdown.parse(text)
    assert meta == {"id": "x", "summary": "two words"}
    assert body.replace("\r\n", "\n") == "body line\n"
    out = markdown.render(meta, body)
    assert out.startswith("---\nid: x\nsummary: two words\n---\n")


def test_bom_is_tolerated() -> None:
    meta, body = markdown.parse("\ufeff---\nid: x\n---\nbody\n")
    assert meta == {"id": "x"}
    assert body == "body\n"
    assert not markdown.render(meta, body).startswith("\ufeff")


def test_closing_fence_with_trailing_spaces_is_accepted() -> None:
    assert markdown.parse("---\nid: x\n---  \nbody\n") == ({"id": "x"}, "body\n")


def test_parse_never_resolves_python_tags() -> None:
    with pytest.raises(InvalidNote):
        markdown.parse("---\nx: !!python/object/apply:os.system ['echo hi']\n---\nb\n", "n.md")


@pytest.mark.parametrize("value", ["wait\x85what", "latin-1 ellipsis\x85", "two\nlines\x85here"])
def test_yaml_line_break_characters_in_values_round_trip(value: str) -> None:
    # U+0085 (NEL) is a line break to YAML; text mis-decoded from cp1252 ('…') carries it
    meta = {"summary": value, "tags": [value]}
    assert markdown.parse(markdown.render(meta, "body"))[0] == meta
