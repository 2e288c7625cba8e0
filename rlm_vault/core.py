"""What every part of the memory service shares: the record and how a change becomes one commit.

Owns the `Store` (the vault, its catalog, the access log, the clock, and the edits a person made that
are not committed yet) and `ContentRules` (what text may enter the vault). Every change goes through
`Store.writing()`: under the vault lock, a person's pending edits are committed first as their own
`external: ...` commit, then the part's files are written and committed alone, then the commit
listeners run (background indexing, automatic sync).
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from .access import AccessLog
from .catalog import Catalog, note_from_file
from .config import Config
from .errors import InvalidInput, InvalidNote, SecretFound
from .git import toplevel
from .models import safe_name
from .vault import Transaction, Vault

__all__ = [
    "Clock",
    "ContentRules",
    "PendingEdits",
    "Store",
    "detect_project",
    "iso",
    "outgoing_problem",
    "utc_now",
    "valid_text",
]

Clock = Callable[[], datetime]
MIB = 1024 * 1024


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO-8601 UTC to the second, as the notes store it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def detect_project(cwd: str | os.PathLike[str] | None = None) -> str:
    """The git top-level folder name of `cwd`, else the folder name (RLM_PROJECT is read by Config)."""
    folder = Path(cwd or os.getcwd())
    folder = toplevel(folder) or folder
    return safe_name(folder.name, "project", strict=False) or "default"


class PendingEdits:
    """Note paths a person added, changed or deleted that are not committed yet.

    Tool threads and the background indexer both add to it, so every access holds its lock. It is
    unknown (None) until the first look at git, which lists what changed since the last commit.
    """

    def __init__(self) -> None:
        self._paths: set[str] | None = None
        self._lock = threading.Lock()
        self.changed_at = 0.0  # time.monotonic() when an edit was last seen

    def quiet_for(self) -> float:
        """Seconds since an edit was last seen."""
        return time.monotonic() - self.changed_at

    @property
    def known(self) -> bool:
        with self._lock:
            return self._paths is not None

    def start(self, paths: Iterable[str]) -> None:
        """Begin with what git reports as changed (once per process)."""
        with self._lock:
            if self._paths is None:
                self._paths = set(paths)
                self.changed_at = time.monotonic()

    def add(self, paths: Iterable[str]) -> None:
        with self._lock:
            new = set(paths)
            if self._paths is not None and new:
                self._paths |= new
                self.changed_at = time.monotonic()  # a file saved again restarts the wait

    def snapshot(self) -> list[str]:
        with self._lock:
            return sorted(self._paths or ())

    def done(self, paths: Iterable[str]) -> None:
        with self._lock:
            if self._paths is not None:
                self._paths -= set(paths)


class Store:
    """The vault and its catalog (the note listing), and the one way to change them (`writing()`)."""

    def __init__(
        self, vault: Vault, config: Config, clock: Clock = utc_now, *, defer_scans: bool = False
    ) -> None:
        self.vault = vault
        self.config = config
        self.clock = clock
        # A server lists big folders again in its background thread (`Catalog.sweep`), not in a tool call.
        self.catalog = Catalog(vault, config.scan_interval, defer_scans=defer_scans)
        self.access = AccessLog(vault)
        self.pending = PendingEdits()
        self.refused: dict[str, str] = {}  # edits kept out of git (a secret in them): path -> why
        self._listeners: list[Callable[[], None]] = []
        self._project = safe_name(config.project, "project", strict=False) if config.project else ""

    @property
    def project(self) -> str:
        """The project new chunks belong to when none is given."""
        if not self._project:
            self._project = detect_project()
        return self._project

    def now(self) -> str:
        return iso(self.clock())

    def on_commit(self, listener: Callable[[], None]) -> None:
        """Call `listener` after every commit this process makes (it must return quickly)."""
        self._listeners.append(listener)

    def fresh(self) -> Catalog:
        """The catalog, brought up to date with the disk; what changed is remembered as pending edits."""
        first = not self.catalog.loaded
        changed = self.catalog.refresh()
        if first or self.catalog.lapsed:  # nothing reported, or not all of it: ask git what changed
            self.catalog.lapsed = False
            if self.pending.known:
                self.pending.add(self.vault.pending_paths("insights", "chunks"))
        else:
            self.pending.add(changed)
        return self.catalog

    @contextmanager
    def writing(self) -> Iterator[Transaction]:
        """A vault transaction that first commits a person's pending edits on their own."""
        with self.vault.transaction() as tx:
            self.commit_external()
            yield tx
            self.catalog.absorb(tx.paths)
        self.committed()

    def committed(self) -> None:
        """Tell the commit listeners that this process made a commit."""
        for listener in list(self._listeners):
            listener()

    def prime(self) -> None:
        """At server start, what the first write would otherwise do: the first tool call is then no slower
        than the next ones (secret patterns compiled, a person's pending edits listed)."""
        from . import secrets  # noqa: F401

        self.pending.start(self.vault.pending_paths("insights", "chunks"))

    def commit_external(self) -> str | None:
        """Commit notes a person added, edited or deleted (readable ones only); call under the lock."""
        if not self.pending.known:  # once per process: what git sees as changed
            self.pending.start(self.vault.pending_paths("insights", "chunks"))
        if self.catalog.loaded:  # then whatever the catalog notices (never a full parse just for this)
            self.fresh()
        ready = self.screened([p for p in self.pending.snapshot() if self._readable(p)])
        if not ready:
            return None
        commit = self.vault.git.commit_paths(ready, external_message(ready))
        self.pending.done(ready)
        return commit

    def screened(self, paths: Iterable[str]) -> list[str]:
        """The paths that hold no secret; the others stay uncommitted, listed in `refused` with why."""
        ready = []
        for path in paths:
            reason = outgoing_problem(self.vault, path, self.config.secret_allowlist)
            if reason is None:
                self.refused.pop(path, None)
                ready.append(path)
            else:
                self.refused[path] = reason
        return ready

    def _readable(self, relpath: str) -> bool:
        """True for a deleted file or one that parses as a note: half-written files wait."""
        try:
            note_from_file(relpath, self.vault.read_bytes(relpath))
        except FileNotFoundError:
            return True
        except (OSError, InvalidNote):
            return False
        return True


class ContentRules:
    """What text may enter the vault: not empty, not too big, valid UTF-8, and without secrets."""

    def __init__(self, config: Config) -> None:
        self.max_bytes = config.max_content_bytes
        self.allowlist = config.secret_allowlist

    def checked(self, content: str, what: str = "content") -> str:
        """Content that is not empty, not over the size limit, and has no NUL."""
        if not content or not content.strip():
            raise InvalidInput(f"{what} is empty: send the text to save")
        size = len(content.encode("utf-8", "surrogatepass"))  # counted before the check below names the spot
        if size > self.max_bytes:
            raise InvalidInput(
                f"{what} is {size} bytes; the limit is {self.max_bytes} bytes: split it into several parts"
            )
        if "\x00" in content:
            raise InvalidInput(f"{what} contains NUL characters; send plain text")
        return valid_text(content, what).strip("\n")

    def no_secrets(self, text: str, what: str) -> str:
        """`text` when it holds no secret; otherwise refuse, naming the kind and line, before git sees it."""
        from .secrets import describe, scan

        findings = scan(text, self.allowlist)
        if findings:
            raise SecretFound(
                f"{what} holds {describe(findings)}; secrets must not enter the vault's git "
                "history: send it again without them (or allow-list a known-safe value with "
                "RLM_SECRET_ALLOWLIST); nothing was written"
            )
        return text

    def no_secrets_in_fields(self, **fields: str | Iterable[str]) -> None:
        """Refuse short fields (project, ticket, domain, tags) that hold a secret: they become folder names
        and commit subjects, where a token would be as public as in a note."""
        from .secrets import describe_fields, scan_fields

        found = scan_fields({k: v for k, v in fields.items() if v}, self.allowlist)
        if found:
            raise SecretFound(
                f"{describe_fields(found)}; secrets must not enter the vault's git history: send it again "
                "without them (or allow-list a known-safe value with RLM_SECRET_ALLOWLIST); nothing was written"
            )

    def redacted(self, text: str) -> tuple[str, list[str]]:
        """`text` with secrets replaced by [REDACTED:<kind>], and the kinds replaced (automatic saves)."""
        from .secrets import redact

        clean, findings = redact(text, self.allowlist)
        return clean, sorted({f.kind for f in findings})


SCAN_LIMIT = 16 * 1024 * 1024  # bytes of one file scanned on the way out; bigger is refused


def outgoing_problem(vault: Vault, relpath: str, allowlist: tuple[str, ...] = ()) -> str | None:
    """Why an edit made outside rlm-vault must not be committed (a secret in it, or not a plain file).

    None for a clean file or a deleted one. Everything a commit holds can reach a shared remote, so a hand
    edit is scanned like a tool's text before git sees it.
    """
    from .archive import gunzip
    from .secrets import describe, scan

    full = vault.root / relpath
    try:
        info = os.lstat(full)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file (a symbolic link or a special file); not committed"
    if info.st_size > SCAN_LIMIT:
        return f"is over {SCAN_LIMIT // MIB} MiB and cannot be scanned for secrets; not committed"
    try:
        data = full.read_bytes()
        if relpath.endswith(".gz"):
            data = gunzip(data, SCAN_LIMIT, relpath)
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    except InvalidNote as exc:
        return f"cannot be scanned for secrets: {exc}"
    findings = scan(data.decode("utf-8", errors="replace"), allowlist)
    if findings:
        return (
            f"holds {describe(findings)}; not committed, so it never reaches git or a remote: remove the "
            "secret (or allow-list a known-safe value with RLM_SECRET_ALLOWLIST) and it is committed"
        )
    return None


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
