"""What every service capability shares: the vault, the catalog, the clock, and how to write.

Every change goes through `ServiceCore.writing()`: under the vault lock, edits a person made since
the last look are committed first as their own `external: ...` commit, then the service's files are
written and committed alone.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from .access import AccessLog
from .catalog import Catalog, note_from_file
from .config import Config
from .errors import InvalidInput, InvalidNote, SecretFound
from .models import safe_name
from .vault import Transaction, Vault

__all__ = ["Clock", "ServiceCore", "detect_project", "iso", "utc_now"]

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO-8601 UTC to the second, as the notes store it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def detect_project(cwd: str | os.PathLike[str] | None = None) -> str:
    """The git top-level folder name of `cwd`, else the folder name (RLM_PROJECT is read by Config)."""
    folder = Path(cwd or os.getcwd())
    try:
        top = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if top.returncode == 0 and top.stdout.strip():
            folder = Path(top.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return safe_name(folder.name, "project", strict=False) or "default"


class ServiceCore:
    """State and write discipline shared by the service capabilities."""

    def __init__(self, vault: Vault, config: Config, clock: Clock = utc_now) -> None:
        self.vault = vault
        self.config = config
        self.clock = clock
        self.catalog = Catalog(vault, config.scan_interval)
        self.access = AccessLog(vault)
        self._project = safe_name(config.project, "project", strict=False) if config.project else ""
        self._external: set[str] | None = None  # paths a person changed, not yet committed
        self.after_commit: list[Callable[[], None]] = []  # e.g. automatic sync pushes soon after a write

    @property
    def project(self) -> str:
        """The project new chunks belong to when none is given."""
        if not self._project:
            self._project = detect_project()
        return self._project

    def now(self) -> str:
        return iso(self.clock())

    def fresh(self) -> Catalog:
        """The catalog, brought up to date with the disk."""
        first = not self.catalog.loaded
        changed = self.catalog.refresh()
        if self._external is not None:
            # A first load reports nothing: ask git what changed since the process last looked.
            self._external |= set(self.vault.pending_paths("insights", "chunks")) if first else changed
        return self.catalog

    @contextmanager
    def writing(self) -> Iterator[Transaction]:
        """A vault transaction that first commits a person's pending edits on their own."""
        with self.vault.transaction() as tx:
            self.commit_external()
            yield tx
            self.catalog.absorb(tx.paths)
        for listener in self.after_commit:
            listener()

    def prime(self) -> None:
        """At server start, what the first write would otherwise do: the first tool call is then no slower
        than the next ones (secret patterns compiled, a person's pending edits listed)."""
        from . import secrets  # noqa: F401

        if self._external is None:
            self._external = set(self.vault.pending_paths("insights", "chunks"))

    def commit_external(self) -> str | None:
        """Commit notes a person added, edited or deleted (readable ones only); call under the lock."""
        if self._external is None:  # once per process: what git sees as changed
            self._external = set(self.vault.pending_paths("insights", "chunks"))
        if self.catalog.loaded:  # then whatever the catalog notices (never a full parse just for this)
            self.fresh()
        # A copy first: readers on other threads add to the set while this loop parses files.
        ready = [p for p in sorted(set(self._external)) if self._readable(p)]
        if not ready:
            return None
        commit = self.vault.git.commit_paths(ready, external_message(ready))
        self._external -= set(ready)
        return commit

    def _readable(self, relpath: str) -> bool:
        """True for a deleted file or one that parses as a note: half-written files wait."""
        try:
            note_from_file(relpath, self.vault.read_bytes(relpath))
        except FileNotFoundError:
            return True
        except (OSError, InvalidNote):
            return False
        return True

    def checked_content(self, content: str, what: str = "content") -> str:
        """Content that is not empty, not over the size limit, and has no NUL."""
        if not content or not content.strip():
            raise InvalidInput(f"{what} is empty: send the text to save")
        size = len(content.encode("utf-8", "surrogatepass"))  # counted before the check below names the spot
        if size > self.config.max_content_bytes:
            raise InvalidInput(
                f"{what} is {size} bytes; the limit is {self.config.max_content_bytes} bytes: "
                "split it into several parts"
            )
        if "\x00" in content:
            raise InvalidInput(f"{what} contains NUL characters; send plain text")
        return valid_text(content, what).strip("\n")

    def no_secrets(self, text: str, what: str) -> str:
        """`text` when it holds no secret; otherwise refuse, naming the kind and line, before git sees it."""
        from .secrets import describe, scan

        findings = scan(text, self.config.secret_allowlist)
        if findings:
            raise SecretFound(
                f"{what} holds {describe(findings)}; secrets must not enter the vault's git "
                "history: send it again without them (or allow-list a known-safe value with "
                "RLM_SECRET_ALLOWLIST); nothing was written"
            )
        return text

    def redacted(self, text: str) -> tuple[str, list[str]]:
        """`text` with secrets replaced by [REDACTED:<kind>], and the kinds replaced (automatic saves)."""
        from .secrets import redact

        clean, findings = redact(text, self.config.secret_allowlist)
        return clean, sorted({f.kind for f in findings})


def valid_text(text: str, what: str) -> str:
    """`text` when it encodes as UTF-8; a lone surrogate (text cut inside an emoji) is refused."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            f"{what} has an invalid character at position {exc.start} (a lone UTF-16 surrogate, "
            "often half of an emoji): remove it or send the whole character"
        ) from None
    return text


def external_message(paths: list[str]) -> str:
    """`external: <path>` for one file, `external: N files` with the list in the body for more."""
    if len(paths) == 1:
        return f"external: {paths[0]}"
    return f"external: {len(paths)} files\n\nEdited outside rlm-vault:\n" + "\n".join(f"- {p}" for p in paths)
