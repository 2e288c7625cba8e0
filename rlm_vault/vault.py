"""The record: note files on disk, one write lock, one commit per change.

Only this module opens note files. Every change happens inside `Vault.transaction()`: the
cross-process lock is taken, a journal names the paths about to change, files are replaced
atomically, the paths are committed, and the journal is dropped. A crash at any point leaves
either the old files or a journal that `recover()` commits at the next start.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import markdown
from .config import MARKER, vault_cache_dir
from .errors import InvalidInput, InvalidNote, NoVault, StorageError, storage_message
from .filelock import file_lock
from .git import Git, pid_alive

__all__ = ["MARKER", "NOTE_DIRS", "Stamp", "Transaction", "Vault", "is_note_path"]

NOTE_DIRS = ("insights", "chunks", "archive", "sessions")
MAX_DOMAINS_BYTES = 64 * 1024
_TMP_SUFFIX = ".rlm-tmp"
log = logging.getLogger("rlm_vault")


@dataclass(frozen=True, slots=True)
class Stamp:
    """What a directory listing tells about a file, enough to notice an edit."""

    mtime_ns: int
    size: int
    ctime_ns: int = 0  # tools that keep mtime (rsync -t, cp -p) still change ctime
    inode: int = 0

    def astuple(self) -> tuple[int, int, int, int]:
        return (self.mtime_ns, self.size, self.ctime_ns, self.inode)


class Vault:
    """A vault folder: Markdown notes in a git repository, plus `.rlm/` machine-local state."""

    def __init__(self, root: Path, lock_timeout: float = 30.0) -> None:
        self.root = root
        self._real_root: str | None = None  # the vault folder with its symlinks resolved, once
        self.git = Git(root)
        self.state = root / ".rlm"  # machine-local state (locks, journals, access counts), git-ignored
        self.cache = vault_cache_dir(root)  # rebuildable caches, outside the work tree
        self.lock_timeout = lock_timeout

    # ------------------------------------------------------------------ set-up

    @classmethod
    def open(cls, root: Path, lock_timeout: float = 30.0, *, create: bool = True) -> Vault:
        """Open the vault at `root`; a missing or empty folder is made a vault only with `create`.

        A folder that holds other files is never taken over here (`init(force=True)` does that).
        """
        vault = cls(Path(os.path.abspath(root)), lock_timeout)
        found = vault.examine()
        if found in ("missing", "empty"):
            if not create:
                raise NoVault(
                    f"no vault at {vault.root}: create one with `rlm-vault init {_quoted(vault.root)}`"
                )
            vault._create_locked()
        elif found == "other":
            raise NoVault(
                f"{vault.root} is not an rlm-vault vault (it holds other files): create a vault with "
                f"`rlm-vault init PATH` in an empty or new folder"
            )
        elif found == "legacy":
            vault._adopt()
        return vault._ready()

    @classmethod
    def init(cls, root: Path, lock_timeout: float = 30.0, *, force: bool = False) -> tuple[Vault, str]:
        """Create a vault in a missing or empty folder, or open an existing one; returns how.

        How: "created", "exists", "adopted" (a vault older than the marker), or "forced" (a folder
        with other files, only with `force`: its files are left as they are, uncommitted).
        """
        vault = cls(Path(os.path.abspath(root)), lock_timeout)
        found = vault.examine()
        if found == "other" and not force:
            what = "a git repository with other files" if vault.git.is_repo() else "a folder with other files"
            raise NoVault(
                f"{vault.root} is {what}, not an rlm-vault vault: choose an empty or new folder, "
                f"or add --force to make a vault there (its files stay as they are, not committed)"
            )
        if found in ("missing", "empty", "other"):
            vault._create_locked()
        elif found == "legacy":
            vault._adopt()
        how = {"vault": "exists", "legacy": "adopted", "other": "forced"}.get(found, "created")
        return vault._ready(), how

    def examine(self) -> str:
        """What the folder is: "vault", "legacy" (a vault made before the marker), "missing",
        "empty", or "other" (files that are not a vault). A file or an unreadable folder is refused."""
        if not os.path.lexists(self.root):
            return "missing"
        if not self.root.is_dir():
            raise NoVault(f"{self.root} is a file, not a folder: give the vault's folder")
        try:
            names = set(os.listdir(self.root))
        except OSError as exc:
            raise NoVault(f"cannot read the folder {self.root}: {exc.strerror or exc}") from exc
        if MARKER in names:
            return "vault"
        if names <= {".rlm", ".git"} and (".git" not in names or self.git.head() is None):
            return "empty"  # hook logs may have made .rlm/; a repository with no commit holds nothing
        if _older_vault(self.root, names) and self.git.head() is not None:
            return "legacy"
        return "other"

    def _ready(self) -> Vault:
        with _writing(self.state):
            self.own_state_dir()
        if not self.git.is_repo() or self.git.head() is None:
            self._create_locked()  # the marker without history: a copy of a vault's files
        self.git.tune()
        self.recover()
        return self

    def _create_locked(self) -> None:
        try:
            self.own_state_dir()
        except OSError as exc:
            raise NoVault(f"cannot create the vault at {self.root}: {exc.strerror or exc}") from exc
        with self.lock(), _writing(self.root):
            self._create()

    def _adopt(self) -> None:
        """A vault older than the marker: write the marker in a commit of its own."""
        with _writing(self.state):
            self.own_state_dir()
        with self.lock():
            if not (self.root / MARKER).exists():
                shutil.copyfile(template_dir() / MARKER, self.root / MARKER)
                self.git.commit_paths([MARKER], "init: mark this folder as an rlm-vault vault")

    def own_state_dir(self) -> None:
        """Make `.rlm/` a real folder of this machine's: a symlink or a file there (a hostile remote can
        track one) is removed, never followed, so locks and journals are never written elsewhere."""
        try:
            st = os.lstat(self.state)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISDIR(st.st_mode):
            os.unlink(self.state)
            log.warning("removed %s: it was not a folder (a symlink or file, e.g. from a remote)", self.state)
        self.state.mkdir(parents=True, exist_ok=True)

    def _create(self) -> None:
        if self.git.is_repo() and self.git.head() is not None and (self.root / MARKER).exists():
            return  # another process created it while we waited for the lock
        if not self.git.is_repo():
            self.git.init()
        added = _copy_template(self.root)  # a person's own README or .gitignore is never overwritten
        for folder in NOTE_DIRS:
            (self.root / folder).mkdir(exist_ok=True)
        self.git.commit_paths(sorted({*added, MARKER}), "init: new rlm-vault")

    def recover(self) -> list[str]:
        """Commit writes a crash left uncommitted and remove its temp files; returns the messages."""
        if self.git.lock_files():
            with self.lock():
                self.git.clear_stale_locks()  # a killed writer's git left them; they would refuse every write
        if self.git.index_marks():  # a killed server's index lock would refuse the next sync's merge
            with self.lock():
                self.git.clear_orphaned_index_lock()
        if (self.state / "merging").exists():
            with self.lock():
                self.abort_interrupted_merge()
        # State files (.rlm/*.json) are written without the vault lock: only a dead process's temp file goes.
        for temp in [*self.state.glob(f".*{_TMP_SUFFIX}"), *self.cache.glob(f".*{_TMP_SUFFIX}")]:
            if not pid_alive(_writer_pid(temp.name)):
                temp.unlink(missing_ok=True)
        pending = sorted((self.state / "pending").glob("*.json"))
        # Journals are written under the write lock too, so a temp one can only be a killed writer's.
        temps = list((self.state / "pending").glob(f".*{_TMP_SUFFIX}"))
        if not pending and not temps:
            return []  # no writer died mid-change: no note folder holds its temp files (100,000 names)
        # A transaction's journal exists before its first file is written and goes after its commit.
        temps += [p for d in self._note_dirs() for p in d.glob(f".*{_TMP_SUFFIX}")]
        done = []
        with self.lock():
            for temp in temps:
                temp.unlink(missing_ok=True)
            for journal in sorted((self.state / "pending").glob("*.json")):
                done += self._replay(journal)
        return done

    def abort_interrupted_merge(self) -> None:
        """Undo a sync's merge that a kill interrupted (call under the lock); the next sync redoes it.

        Only a merge rlm-vault started (`.rlm/merging`) is aborted; a person's own merge is theirs.
        """
        marker = self.state / "merging"
        if marker.exists():
            self.git.clear_orphaned_index_lock()  # the killed merge's git may have left it
            if self.git.merging():
                with self.git.owning_index():
                    self.git.run("merge", "--abort", check=False)
            marker.unlink(missing_ok=True)

    def _replay(self, journal: Path) -> list[str]:
        try:
            entry = json.loads(journal.read_text(encoding="utf-8"))
            paths = [p for p in entry["paths"] if self._inside(p)]
            message = str(entry["message"])
        except (OSError, ValueError, KeyError, TypeError):
            journal.unlink(missing_ok=True)
            return []
        commit = self.git.commit_paths(paths, message)
        journal.unlink(missing_ok=True)
        return [message] if commit else []

    def _note_dirs(self) -> list[Path]:
        dirs = [self.root / "insights", self.root / "sessions"]
        for top in ("chunks", "archive"):
            base = self.root / top
            if base.is_dir():
                dirs += [d for d in base.iterdir() if d.is_dir() and not d.is_symlink()]
        return dirs

    # ------------------------------------------------------------------ the lock

    @contextmanager
    def lock(self) -> Iterator[None]:
        """The one cross-process (and cross-thread) write lock, `.rlm/write.lock`."""
        with file_lock(self.state / "write.lock", self.lock_timeout):
            yield

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Lock, change files, commit them as one commit; undo the files if anything fails."""
        with self.lock():
            tx = Transaction(self)
            try:
                yield tx
                tx.commit()
            except BaseException:
                tx.rollback()
                raise
        if tx.commit_id:
            self.git.housekeep()  # git's gc --auto, started in the background when git would want it

    # ------------------------------------------------------------------ reading

    def path(self, relpath: str) -> Path:
        """The absolute path of a vault-relative path that stays inside the vault."""
        if not self._inside(relpath):
            raise InvalidInput(f"path {relpath!r} is outside the vault")
        return self.root / relpath

    def _inside(self, relpath: str) -> bool:
        if not relpath or relpath.startswith("/") or "\0" in relpath:
            return False
        parts = Path(relpath).parts
        if ".." in parts or parts[0] not in NOTE_DIRS:
            return False
        real_parent = os.path.realpath(self.root / Path(relpath).parent)
        if self._real_root is None:
            self._real_root = os.path.realpath(self.root)
        return real_parent == self._real_root or real_parent.startswith(self._real_root + os.sep)

    def note_folders(self) -> dict[str, Stamp]:
        """insights/ and every chunks/<project>/ folder, with the folder's own stamp."""
        found = {}
        for rel in [
            "insights",
            *(
                f"chunks/{e.name}"
                for e in _entries(self.root / "chunks")
                if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")
            ),
        ]:
            try:
                st = os.stat(self.root / rel, follow_symlinks=False)
            except OSError:
                continue
            found[rel] = Stamp(st.st_mtime_ns, st.st_size, st.st_ctime_ns, st.st_ino)
        return found

    def project_folder(self, name: str) -> str:
        """The existing project folder that `name` differs from only by case, else `name`.

        macOS and Windows disks see `Foo` and `foo` as one folder, and a vault syncs between them.
        """
        if not name:
            return name
        wanted = name.casefold()
        for top in ("chunks", "archive"):
            found = sorted(
                e.name for e in _entries(self.root / top) if e.is_dir() and e.name.casefold() == wanted
            )
            if name in found:
                return name
            if found:
                return found[0]
        return name

    def scan_folder(self, rel: str) -> dict[str, Stamp]:
        """Every `*.md` note directly in one folder, with its stamp."""
        found: dict[str, Stamp] = {}
        for entry in _entries(self.root / rel):
            if (
                entry.name.endswith(".md")
                and not entry.name.startswith(".")
                and entry.is_file(follow_symlinks=False)
            ):
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # deleted between listing and stat
                found[f"{rel}/{entry.name}"] = Stamp(st.st_mtime_ns, st.st_size, st.st_ctime_ns, st.st_ino)
        return found

    def read_bytes(self, relpath: str) -> bytes:
        """The raw bytes of a vault file (symlinks are not followed out of the vault)."""
        path = self.path(relpath)
        if path.is_symlink():
            raise InvalidNote(relpath, "is a symbolic link; notes must be regular files")
        return path.read_bytes()

    def exists(self, relpath: str) -> bool:
        return self._inside(relpath) and (self.root / relpath).exists()

    def pending_paths(self, *tops: str) -> list[str]:
        """Notes under `tops` that differ from HEAD (changed, added, deleted, untracked).

        Only `insights/<name>.md` and `chunks/<project>/<name>.md` are notes: an editor's folders
        (`.obsidian/`, `.trash/`, any dot-folder) and files elsewhere are never taken as notes.
        """
        return [path for _, path in self.git.status(*tops) if is_note_path(path)]

    def conflict_files(self) -> list[str]:
        """Conflict copies a sync left beside their notes (`*.conflict-<host>-<time>.*`)."""
        return sorted(
            p.relative_to(self.root).as_posix()
            for top in NOTE_DIRS
            for p in (self.root / top).rglob("*.conflict-*")
            if p.is_file()
        )

    def read_domains(self) -> list[str]:
        """The domains listed in `domains.yaml` (a person may edit it; a broken file gives none)."""
        return self._domains()[0]

    def domains_problem(self) -> str | None:
        """Why `domains.yaml` gives no domains (unreadable, not YAML, nested too deep ...), or None."""
        return self._domains()[1]

    def _domains(self) -> tuple[list[str], str | None]:
        try:
            raw = _read_regular(self.root / "domains.yaml", MAX_DOMAINS_BYTES).decode("utf-8")
            data = markdown.load_yaml(raw, "domains.yaml")
        except FileNotFoundError:
            return [], None
        except (OSError, UnicodeDecodeError) as exc:
            return [], f"domains.yaml cannot be read: {getattr(exc, 'strerror', None) or exc}"
        except InvalidNote as exc:
            return [], str(exc)
        items = data.get("domains") if isinstance(data, dict) else data
        if not isinstance(items, list):
            return [], "domains.yaml holds no list of domains (write `domains: [api, deploy]`)"
        return [str(d) for d in items if isinstance(d, (str, int))], None

    def read_state(self, name: str, default: Any) -> Any:
        """A JSON file of `.rlm/` (machine-local state), or `default` when missing or broken."""
        try:
            return json.loads((self.state / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return default

    def write_state(self, name: str, data: Any) -> None:
        """Replace a JSON file of `.rlm/` atomically (no fsync: machine-local state, rebuilt if lost)."""
        with _writing(self.state):
            _atomic_write(self.state / name, json.dumps(data, ensure_ascii=False).encode(), sync=False)


@dataclass
class Transaction:
    """Files changed under the lock; committed together with `message`."""

    vault: Vault
    message: str = ""
    paths: list[str] = field(default_factory=list)
    commit_id: str | None = None
    _before: dict[str, bytes | None] = field(default_factory=dict)
    _journal: Path | None = None

    def write(self, relpath: str, data: str | bytes, sync: bool = True) -> None:
        """Replace a file atomically (temp file, fsync, rename); bulk writers pass sync=False
        and call `sync()` once."""
        path = self._touch(relpath)
        with _writing(path.parent):
            path.parent.mkdir(parents=True, exist_ok=True)
            self.vault.path(relpath)  # re-check now that the folder exists (symlinked folders)
            _atomic_write(path, data.encode("utf-8") if isinstance(data, str) else data, sync)

    def expect(self, relpaths: list[str]) -> None:
        """Name every path a bulk change will touch, so the journal is written once, not per file."""
        for relpath in relpaths:
            self.vault.path(relpath)
        self.paths.extend(p for p in relpaths if p not in self._before and p not in self.paths)
        self._write_journal()

    @staticmethod
    def sync() -> None:
        """Flush every write of a bulk change to disk at once."""
        os.sync()

    def delete(self, relpath: str) -> None:
        """Remove a file (git history keeps it)."""
        path = self._touch(relpath)
        with _writing(path.parent):
            path.unlink(missing_ok=True)

    def _touch(self, relpath: str) -> Path:
        if not self.message:
            raise ValueError("set the commit message before changing files")
        path = self.vault.path(relpath)
        if relpath not in self._before:
            self._before[relpath] = path.read_bytes() if path.is_file() and not path.is_symlink() else None
            if relpath not in self.paths:
                self.paths.append(relpath)
                self._write_journal()
        return path

    def _write_journal(self) -> None:
        folder = self.vault.state / "pending"
        with _writing(folder):
            if self._journal is None:
                folder.mkdir(parents=True, exist_ok=True)
                self._journal = folder / f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.json"
            payload = {"message": self.message, "paths": self.paths}
            # No fsync: a kill keeps the page cache, and after a power loss without the journal the
            # (fsynced) note is still found uncommitted and committed as an external edit.
            _atomic_write(self._journal, json.dumps(payload, ensure_ascii=False).encode(), sync=False)

    def commit(self) -> None:
        if self.paths:
            git = self.vault.git
            if git.index_locked() and not git.clear_orphaned_index_lock():
                git.remove_stale_index_lock(older_than=10.0)  # a person's, forgotten for 10 s
            self.commit_id = self.vault.git.commit_paths(self.paths, self.message, own=True)
        self._drop_journal()

    def rollback(self) -> None:
        restored = True
        for relpath, before in self._before.items():
            path = self.vault.root / relpath
            try:
                if before is None:
                    path.unlink(missing_ok=True)
                else:
                    _atomic_write(path, before)
            except OSError:
                restored = False  # the journal stays; recover() commits whatever is on disk
        if restored:
            self._drop_journal()

    def _drop_journal(self) -> None:
        if self._journal is not None:
            self._journal.unlink(missing_ok=True)


def is_note_path(path: str) -> bool:
    """True for `insights/<name>.md` and `chunks/<project>/<name>.md`, with no part starting with '.'."""
    parts = path.split("/")
    if not path.endswith(".md") or any(p.startswith(".") or not p for p in parts):
        return False
    return (parts[0] == "insights" and len(parts) == 2) or (parts[0] == "chunks" and len(parts) == 3)


def _writer_pid(temp_name: str) -> int:
    """The pid in a temp file's name (`.<name>.<pid>.<hex>.rlm-tmp`), 0 when there is none."""
    parts = temp_name.removesuffix(_TMP_SUFFIX).split(".")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else 0


def _atomic_write(path: Path, data: bytes, sync: bool = True) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}{_TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def _writing(where: Path) -> Iterator[None]:
    """Turn an OSError from writing into a one-line StorageError (full disk, read-only, no permission)."""
    try:
        yield
    except OSError as exc:
        raise StorageError(storage_message(exc, where), exc.errno) from exc


def _read_regular(path: Path, limit: int) -> bytes:
    """The bytes of a regular file no larger than `limit`; a symlink, FIFO or device is refused unread."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if st.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
        return handle.read(limit + 1)[:limit]


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(folder))
    except OSError:
        return []


def template_dir() -> Path:
    """The folder a new vault is copied from (`vault_template/`, installed as package data)."""
    return Path(__file__).resolve().parent / "vault_template"


def _quoted(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))


def _older_vault(root: Path, names: set[str]) -> bool:
    """A vault made before the marker existed: insights/, chunks/ and the template's README."""
    if not {"insights", "chunks", ".git", "README.md"} <= names:
        return False
    try:
        head = (root / "README.md").read_text(encoding="utf-8", errors="replace")[:2000]
    except OSError:
        return False
    return "rlm-vault" in head


def _copy_template(root: Path) -> list[str]:
    """Copy template files the folder lacks; returns the vault-relative paths added."""
    src = template_dir()
    added = []
    for item in sorted(src.rglob("*")):
        rel = item.relative_to(src)
        if item.is_dir() or "__pycache__" in rel.parts or item.name == ".gitkeep":
            continue  # .gitkeep only keeps the empty folders in this project's own repository
        dest = root / rel
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item, dest)
            added.append(rel.as_posix())
    return added
