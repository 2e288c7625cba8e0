"""Pure text <-> (front matter, body) conversion; never touches the disk.

Front matter is real YAML written in a stable, readable form: keys in the order given, unicode
kept raw, multi-line strings as `|` blocks, short lists inline, timestamps as quoted ISO-8601
strings. Timestamps a person writes unquoted stay strings on load too.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from .errors import InvalidNote

__all__ = ["MAX_DEPTH", "MAX_FRONT_MATTER", "body", "load_yaml", "parse", "render"]

# A hand-written note with megabytes of YAML is a mistake or an attack (alias bombs).
MAX_FRONT_MATTER = 64 * 1024
# Notes nest two levels (entities: {files: [...]}). libyaml builds nodes recursively: 30,000 nested "["
# crashed the process (segfault) and 1,000 raised RecursionError in the pure-Python loader.
MAX_DEPTH = 50
_FENCE = re.compile(r"^---[ \t]*\r?$", re.MULTILINE)
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_SafeLoader):  # type: ignore[misc,valid-type]
    """Safe YAML that keeps timestamps as the strings the person wrote."""


_Loader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _Dumper(yaml.SafeDumper):
    """Safe YAML writer: `|` blocks, inline scalar lists, timestamps quoted so any YAML reader
    (and JSON after it) sees the same string."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


# The same writer with libyaml's emitter where PyYAML has it: 4-5x faster, the same text (checked on
# 50,000 notes and random strings) except that it escapes characters past U+FFFF (emoji), which
# `render` then leaves to the Python emitter.
class _FastDumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    if any(ch in value for ch in "\x85\u2028\u2029"):
        # YAML reads these as line breaks unless the string is double-quoted (escaped).
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')
    # Block scalars cannot carry trailing spaces on a line or some control chars; those fall back.
    if "\n" in value and not re.search(r"[ \t]\n|[\x00-\x08\x0b-\x1f\x7f]", value):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


def _list(dumper: yaml.SafeDumper, value: list[Any] | tuple[Any, ...]) -> yaml.Node:
    flow = all(isinstance(v, (str, int, float, bool)) and "\n" not in str(v) for v in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


for _writer in (_Dumper, _FastDumper):
    _writer.add_representer(str, _str)
    _writer.add_representer(list, _list)
    _writer.add_representer(tuple, _list)


def parse(text: str, path: str = "<text>") -> tuple[dict[str, Any], str]:
    """Split a note into its front matter mapping and Markdown body."""
    text = text.removeprefix("\ufeff")
    if not text.startswith("---"):
        raise InvalidNote(path, "no front matter (the file must start with a '---' line)")
    first = text.find("\n")
    close = _FENCE.search(text, first + 1) if first != -1 else None
    if first == -1 or text[:first].strip() != "---" or close is None:
        raise InvalidNote(path, "front matter is not closed by a '---' line")
    raw = text[first + 1 : close.start()]
    if len(raw) > MAX_FRONT_MATTER:
        raise InvalidNote(path, f"front matter is larger than {MAX_FRONT_MATTER} bytes")
    meta = load_yaml(raw, path, "front matter") if raw.strip() else {}
    if not isinstance(meta, dict):
        raise InvalidNote(path, "front matter is not a mapping of keys to values")
    body = text[close.end() :]
    return meta, body.removeprefix("\r").removeprefix("\n")


def body(text: str, path: str = "<text>") -> str:
    """The Markdown body of a note, as `parse` returns it, without reading the front matter."""
    text = text.removeprefix("\ufeff")
    first = text.find("\n")
    close = _FENCE.search(text, first + 1) if first != -1 and text.startswith("---") else None
    if close is None or text[:first].strip() != "---":
        raise InvalidNote(path, "front matter is not closed by a '---' line")
    return text[close.end() :].removeprefix("\r").removeprefix("\n")


def render(meta: dict[str, Any], body: str) -> str:
    """Write front matter and body as one note text ending in a newline."""
    front = _front(meta, _FastDumper)
    if "\\U" in front:
        front = _front(meta, _Dumper)
    body = body.rstrip("\n")
    return f"---\n{front}---\n{body}\n"


def _front(meta: dict[str, Any], dumper: type[yaml.SafeDumper]) -> str:
    return yaml.dump(
        meta, Dumper=dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=10**9
    )


def load_yaml(raw: str, path: str, what: str = "the file") -> Any:
    """Safe YAML from a person or a remote: no aliases, at most MAX_DEPTH levels; InvalidNote otherwise."""
    try:
        if _may_be_deep(raw) and _too_deep(raw):
            raise InvalidNote(
                path, f"{what} nests more than {MAX_DEPTH} levels deep; notes need two or three"
            )
        if "&" in raw and "*" in raw and _has_alias(raw):
            raise InvalidNote(path, f"{what} uses YAML anchors and aliases, which rlm-vault does not allow")
        return yaml.load(raw, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise InvalidNote(path, f"{what} is not valid YAML: {_one_line(exc)}") from exc
    except RecursionError as exc:  # the depth check is the guard; this is the belt
        raise InvalidNote(path, f"{what} nests too deep to read") from exc


def _may_be_deep(raw: str) -> bool:
    # Each level needs one of these characters: a note with few of them cannot nest deep, and skips the
    # event walk below (which would double the parse time of every note).
    return sum(raw.count(ch) for ch in "[{-:?") > MAX_DEPTH


def _too_deep(raw: str) -> bool:
    """True when collections nest deeper than MAX_DEPTH (the event parser is iterative: no recursion)."""
    depth = 0
    for event in yaml.parse(raw, Loader=_Loader):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1
    return False


def _has_alias(raw: str) -> bool:
    # Aliases let a few lines expand into gigabytes once traversed ("billion laughs").
    return any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(raw, Loader=_Loader))


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]
