"""The only module that runs git: a thin wrapper over the git command line.

Commits go through plumbing (update-index on the changed paths in a private index, write-tree, the
commit object, and a compare-and-swap update-ref) so a commit costs the same in a vault of ten notes
or ten thousand, and never sweeps in files a person is editing.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from . import gitobjects
from .errors import GitError, StorageError, storage_message

__all__ = [
    "FALLBACK_EMAIL",
    "FALLBACK_NAME",
    "Commit",
    "Git",
    "git_error",
    "machine_identity",
    "toplevel",
]

FALLBACK_NAME = "rlm-vault"
FALLBACK_EMAIL = "rlm-vault@localhost"


@dataclass(frozen=True, slots=True)
class Commit:
    """One entry of a note's history."""

    commit: str
    date: str
    message: str
    author: str = ""  # "Name <email>": which machine or person made it, in a shared vault


class Git:
    """git commands run in one repository."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._identity: dict[str, str] | None = None
        self._index_base: str | None = None  # the commit our private index was last in step with
        self._trees: dict[str, str] = {}  # commit -> tree, for commits this process made
        self._tree_cache: dict[str, gitobjects.Tree] = {}
        self._plain_attributes: bool | None = None
        self._index_lag: set[str] = set()  # paths the person's index could not take yet

    def run(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> str:
        """Run `git <args>` in the repository and return its stdout."""
        proc = self._spawn(args, input, env, timeout)
        if check and proc.returncode != 0:
            raise git_error(list(args), proc.returncode, proc.stderr, self.root)
        return proc.stdout

    def clear_stale_locks(self, older_than: float = 0.5) -> list[str]:
        """Remove git lock files a killed writer left; call at start, while holding the vault lock.

        kill -9 of a server with its git (tests/reliability/test_crash.py) can leave HEAD.lock, a branch's
        lock, config.lock or our private index's lock, and every later write would fail on it. A live git
        holds these for milliseconds: one unchanged for `older_than` seconds is stale (a younger one is
        waited for, up to a second). `.git/index.lock` is left alone: a person's `git commit` holds it
        while their editor is open (`remove_stale_index_lock` handles it after 10 s).
        """
        git_dir = self.root / ".git"
        locks = [
            git_dir / "HEAD.lock",
            git_dir / "config.lock",
            git_dir / "rlm-vault-index.lock",
            *(git_dir / "refs").rglob("*.lock"),
        ]
        removed = []
        for lock in (p for p in locks if p.exists()):
            deadline = time.monotonic() + 1.0
            while not _remove_if_older(lock, older_than) and lock.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not lock.exists():
                removed.append(lock.relative_to(git_dir).as_posix())
        return removed

    def run_status(self, *args: str, env: dict[str, str] | None = None) -> int:
        """Run `git <args>` and return only its exit code (for yes/no questions such as is-ancestor)."""
        return self._spawn(args, None, env, None).returncode

    def _spawn(
        self, args: Sequence[str], input: str | None, env: dict[str, str] | None, timeout: float | None
    ) -> subprocess.CompletedProcess[str]:
        cmd = ["git", "-C", str(self.root), *args]
        # Never wait for a password prompt: a remote that needs one fails with a message instead.
        env = {**(env or os.environ), "GIT_TERMINAL_PROMPT": "0"}
        try:
            return subprocess.run(
                cmd,
                check=False,
                input=input,
                capture_output=True,
                text=True,
                env=env,
                encoding="utf-8",
                errors="replace",
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise GitError(list(args), -1, f"timed out after {timeout:g} s") from exc
        except OSError as exc:
            raise GitError(list(args), -1, f"cannot run git: {exc}") from exc

    def merging(self) -> bool:
        """True while a merge is in progress (MERGE_HEAD exists)."""
        return (self.root / ".git" / "MERGE_HEAD").exists()

    def commit_merge(self, message: str) -> str:
        """Conclude a merge whose conflicts are resolved in the index."""
        self.run("commit", "-q", "--no-verify", "-m", message, env=self.identity_env())
        return self.head() or ""

    def show_stage(self, stage: int, path: str) -> bytes:
        """The bytes of one side of a conflicted path (2 = ours, 3 = theirs)."""
        return self.show(f":{stage}", path)

    def is_repo(self) -> bool:
        """True when the root is the top of a git work tree."""
        return (self.root / ".git").exists()

    def init(self) -> None:
        """Create the repository with `main` as its branch."""
        self.run("init", "-q")
        self.run("symbolic-ref", "HEAD", "refs/heads/main")

    # Settings a vault repository gets (also a cloned one): readable unicode paths, and a split, compact
    # index, so each commit rewrites a small file instead of an index of every note (at 10,000 notes
    # update-index went from 12 to 5 ms).
    TUNING: ClassVar[dict[str, str]] = {
        "core.quotepath": "false",
        "core.splitindex": "true",
        "index.version": "4",
    }

    def tune(self) -> None:
        """Apply TUNING where the repository's config lacks it (read from the file: no spawn when set)."""
        try:
            text = (self.root / ".git" / "config").read_text(encoding="utf-8", errors="replace").lower()
        except OSError:
            return
        for key, value in self.TUNING.items():
            section, name = key.split(".")
            if f"[{section}]" not in text or f"{name} = {value}" not in text:
                self.run("config", key, value, check=False)

    def head(self) -> str | None:
        """The commit HEAD points at, or None in an empty repository."""
        out = self.run("rev-parse", "-q", "--verify", "HEAD^{commit}", check=False).strip()
        return out or None

    def commit_paths(self, paths: Sequence[str], message: str, own: bool = False) -> str | None:
        """Commit exactly these paths (added, changed or removed) as they are on disk.

        The tree is built apart from the person's index (in-process for `own` files, which rlm-vault
        has just written; else in a private index), so whatever a person staged with `git add` stays
        theirs; the person's index is then brought in step for these paths only. Returns the new
        commit, or None when the paths already match HEAD.
        """
        if not paths:
            return None
        try:
            return self._commit_with_retries(paths, message, own)
        except OSError as exc:  # writing objects in-process: a full or read-only disk
            raise StorageError(storage_message(exc, self.root / ".git"), exc.errno) from exc

    def _commit_with_retries(self, paths: Sequence[str], message: str, own: bool) -> str | None:
        for attempt in range(3):
            try:
                if own and self._fast_path_safe():
                    try:
                        return self._commit_in_process(paths, message)
                    except _NotHere:
                        pass
                return self._commit_once(paths, message)
            except GitError as exc:
                # HEAD moved although we hold the vault lock: a git that a killed writer left running has just
                # finished its own update-ref (tests/reliability/test_crash.py). Commit on top of it instead.
                if "but expected" not in exc.stderr or attempt == 2:
                    raise
                self._index_base = None
        return None

    def _commit_once(self, paths: Sequence[str], message: str) -> str | None:
        listing = "\0".join(paths) + "\0"
        parent, parent_tree = self._head_and_tree()
        private = {**os.environ, "GIT_INDEX_FILE": str(self.root / ".git" / "rlm-vault-index")}
        if parent != self._index_base or not os.path.exists(private["GIT_INDEX_FILE"]):
            # HEAD moved (another process, a merge, a person's commit): start from it again.
            if parent:
                self.run("read-tree", parent, env=private)
            else:
                Path(private["GIT_INDEX_FILE"]).unlink(missing_ok=True)
        try:
            self.run("update-index", "--add", "--remove", "-z", "--stdin", input=listing, env=private)
            tree = self.run("write-tree", "--missing-ok", env=private).strip()
            if parent and parent_tree == tree:
                self._index_base = parent
                self._sync_index(
                    paths
                )  # a commit made just before a kill may not have reached the person's index
                return None
            commit = self._commit_object(tree, parent, message)
            # Compare-and-swap: if HEAD moved under us the update fails loudly instead of losing a commit.
            self.run(
                "update-ref", "-m", f"commit: {message.splitlines()[0]}", "HEAD", commit, parent or "0" * 40
            )
        except GitError:
            self._index_base = None  # the private index may hold the failed change: rebuild it from HEAD
            raise
        self._index_base = commit
        self._trees[commit] = tree
        self._sync_index(paths)
        return commit

    def _commit_in_process(self, paths: Sequence[str], message: str) -> str | None:
        """Hash the files, patch the trees on their paths, write the commit: only update-ref is a process."""
        parent, parent_tree = self._head_and_tree()
        if parent is None or parent_tree is None:
            raise _NotHere("no commit yet")
        changes = {path: self._blob_entry(path) for path in paths}
        tree = self._patched(parent_tree, changes) or self._write_tree({})
        if tree == parent_tree:
            self._sync_index(paths)
            return None
        commit = self._commit_object(tree, parent, message)
        self.run("update-ref", "-m", f"commit: {message.splitlines()[0]}", "HEAD", commit, parent)
        self._trees[commit] = tree
        self._sync_index(paths)
        return commit

    def _blob_entry(self, path: str) -> tuple[str, str] | None:
        full = self.root / path
        if full.is_symlink() or (full.exists() and not full.is_file()):
            raise _NotHere(f"{path} is not a regular file")
        try:
            data = full.read_bytes()
        except FileNotFoundError:
            return None
        if b"\r" in data and not path.endswith(".gz"):
            raise _NotHere("line endings git would normalise")  # .gitattributes says text eol=lf
        mode = "100755" if os.access(full, os.X_OK) else "100644"
        return mode, gitobjects.write_loose(self.root / ".git", "blob", data)

    def _patched(self, tree: str | None, changes: dict[str, tuple[str, str] | None]) -> str | None:
        """The tree `tree` with `changes` (relative paths -> entry or None) applied; None when empty."""
        base = self._tree(tree) if tree else gitobjects.Tree.build({})
        direct: dict[str, tuple[str, str] | None] = {}
        nested: dict[str, dict[str, tuple[str, str] | None]] = {}
        for path, entry in changes.items():
            head, _, rest = path.partition("/")
            if rest:
                nested.setdefault(head, {})[rest] = entry
            else:
                direct[head] = entry
        for name, sub in nested.items():
            old = base.entries.get(name)
            child = self._patched(old[1] if old and old[0] == gitobjects.DIR_MODE else None, sub)
            direct[name] = None if child is None else (gitobjects.DIR_MODE, child)
        new = base.patched(direct)
        return self._store_tree(new) if new.entries else None

    def _write_tree(self, entries: gitobjects.Entries) -> str:
        return self._store_tree(gitobjects.Tree.build(entries))

    def _store_tree(self, tree: gitobjects.Tree) -> str:
        sha = gitobjects.write_loose(self.root / ".git", "tree", tree.data())
        self._remember_tree(sha, tree)
        return sha

    def _tree(self, sha: str) -> gitobjects.Tree:
        if sha in self._tree_cache:
            return self._tree_cache[sha]
        found = gitobjects.read_loose(self.root / ".git", sha)
        if found is None:  # packed: git reads it
            proc = subprocess.run(
                ["git", "-C", str(self.root), "cat-file", "tree", sha], capture_output=True, check=False
            )
            if proc.returncode != 0:
                raise _NotHere(f"tree {sha} cannot be read")
            found = ("tree", proc.stdout)
        if found[0] != "tree":
            raise _NotHere(f"{sha} is not a tree")
        tree = gitobjects.Tree.parse(found[1])
        self._remember_tree(sha, tree)
        return tree

    def _remember_tree(self, sha: str, tree: gitobjects.Tree) -> None:
        if len(self._tree_cache) >= 64:  # the trees along the paths being written; a few suffice
            self._tree_cache.pop(next(iter(self._tree_cache)))
        self._tree_cache[sha] = tree

    def _fast_path_safe(self) -> bool:
        """True when git would store files exactly as they are: no filters beyond the vault's own rules."""
        if self._plain_attributes is None:
            try:
                text = (self.root / ".gitattributes").read_text(encoding="utf-8")
            except FileNotFoundError:
                text = ""
            except OSError:
                text = "unreadable"
            rules = {line.split("#")[0].strip() for line in text.splitlines()} - {""}
            self._plain_attributes = (
                rules <= {"*.md text eol=lf", "*.gz binary"}
                and not (self.root / ".git" / "info" / "attributes").exists()
            )
        return self._plain_attributes

    def _commit_object(self, tree: str, parent: str | None, message: str) -> str:
        """Write the commit object in-process (a loose object, as git writes it): one process fewer per write.

        Falls back to `git commit-tree` when the environment asks for what only git does (fixed dates,
        an identity git would have to clean up).
        """
        env = self.identity_env()
        idents = [
            (env["GIT_AUTHOR_NAME"], env["GIT_AUTHOR_EMAIL"]),
            (env["GIT_COMMITTER_NAME"], env["GIT_COMMITTER_EMAIL"]),
        ]
        if (
            "GIT_AUTHOR_DATE" in env
            or "GIT_COMMITTER_DATE" in env
            or any(ch in "".join(map("".join, idents)) for ch in "<>\n\0")
            or "\0" in message
        ):
            parents = ["-p", parent] if parent else []
            return self.run("commit-tree", tree, *parents, "-F", "-", input=message + "\n", env=env).strip()
        stamp = f"{int(time.time())} {_utc_offset()}"
        lines = [
            f"tree {tree}",
            *([f"parent {parent}"] if parent else []),
            f"author {idents[0][0]} <{idents[0][1]}> {stamp}",
            f"committer {idents[1][0]} <{idents[1][1]}> {stamp}",
        ]
        return gitobjects.write_loose(
            self.root / ".git", "commit", ("\n".join(lines) + f"\n\n{message}\n").encode("utf-8")
        )

    def _sync_index(self, paths: Sequence[str]) -> None:
        # Best effort: a person's git holding index.lock must not turn a made commit into a failure;
        # paths it could not take are retried with the next commit.
        pending = sorted(self._index_lag.union(paths))
        code = self._spawn(
            ["update-index", "--add", "--remove", "-z", "--stdin"], "\0".join(pending) + "\0", None, None
        ).returncode
        self._index_lag = set() if code == 0 else set(pending)

    def _head_and_tree(self) -> tuple[str | None, str | None]:
        # Every spawn counts when a write should cost a few milliseconds: HEAD is read from its file,
        # and the tree of a commit this process made is remembered; git answers everything else.
        try:
            head = self._read_head()
        except LookupError:
            head = ""
        if head is None:
            return None, None
        if head and head in self._trees:
            return head, self._trees[head]
        proc = self._spawn(["rev-parse", "HEAD", "HEAD^{tree}"], None, None, None)
        lines = proc.stdout.split()
        return (lines[0], lines[1]) if proc.returncode == 0 and len(lines) == 2 else (None, None)

    def _read_head(self) -> str | None:
        """HEAD's commit from `.git/HEAD` and its loose ref; None when the branch has no commit yet.

        LookupError when git must be asked (detached or packed ref, anything unusual).
        """
        git_dir = self.root / ".git"
        try:
            head = (git_dir / "HEAD").read_text(encoding="ascii").strip()
            if not head.startswith("ref: refs/heads/"):
                raise LookupError(head)
            ref = git_dir / head[5:]
            value = ref.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            if not (git_dir / "packed-refs").exists():
                return None  # an unborn branch
            raise LookupError("packed ref") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise LookupError(str(exc)) from exc
        if len(value) != 40 or any(ch not in "0123456789abcdef" for ch in value):
            raise LookupError(value)
        return value

    def status(self, *paths: str) -> list[tuple[str, str]]:
        """(XY code, path) for each changed or untracked file under the paths, or the whole tree."""
        out = self.run("status", "--porcelain=v1", "-z", "--untracked-files=all", "--", *paths)
        tokens = iter(out.split("\0"))
        found = []
        for entry in tokens:
            if len(entry) > 3:
                found.append((entry[:2], entry[3:]))
                if entry[0] in "RC":
                    source = next(tokens, "")  # a rename also changes its source path
                    found.append(("D ", source))
        return found

    def log(self, path: str, limit: int = 20) -> list[Commit]:
        """Commits that touched a path, newest first."""
        return self.log_paths([path], limit)

    def log_paths(self, pathspecs: Sequence[str], limit: int = 20) -> list[Commit]:
        """Commits that touched any of the pathspecs (globs allowed), newest first."""
        if self.head() is None:
            return []
        out = self.run("log", f"-n{limit}", "--format=%H%x1f%aI%x1f%s%x1f%an <%ae>%x1e", "--", *pathspecs)
        commits = []
        for record in out.split("\x1e"):
            parts = record.strip().split("\x1f")
            if len(parts) == 4:
                commits.append(Commit(*parts))
        return commits

    def added_dates(self, top: str) -> dict[str, str]:
        """path -> committer date of the latest commit that added it, for files under `top`."""
        out = self.run("log", "--diff-filter=A", "--format=%x1e%cI", "--name-only", "--", top)
        dates: dict[str, str] = {}
        for record in out.split("\x1e"):
            lines = [ln for ln in record.strip().split("\n") if ln]
            for path in lines[1:]:
                dates.setdefault(path, lines[0])
        return dates

    def show(self, commit: str, path: str) -> bytes:
        """The bytes of a path as it was at a commit (or at an index stage given as ':2')."""
        cmd = ["git", "-C", str(self.root), "show", f"{commit}:{path}"]
        proc = subprocess.run(cmd, capture_output=True, check=False)
        if proc.returncode != 0:
            raise git_error(cmd[3:], proc.returncode, proc.stderr.decode(errors="replace"), self.root)
        return proc.stdout

    def cat_blobs(self, shas: list[str]) -> dict[str, bytes]:
        """Blob contents by id, read in one `git cat-file --batch`; ids that are not blobs are left out."""
        if not shas:
            return {}
        proc = subprocess.run(
            ["git", "-C", str(self.root), "cat-file", "--batch"],
            input=("\n".join(shas) + "\n").encode(),
            capture_output=True,
            check=False,
        )
        out, pos, found = proc.stdout, 0, {}
        while pos < len(out):
            end = out.index(b"\n", pos)
            head = out[pos:end].split()
            pos = end + 1
            if len(head) == 3 and head[1] == b"blob":
                size = int(head[2])
                found[head[0].decode()] = out[pos : pos + size]
                pos += size + 1
        return found

    def identity_env(self) -> dict[str, str]:
        # Every commit names who made it, so the history of a vault many machines share says who
        # remembered what: the git identity when set, else RLM_AUTHOR, else <user>@<host>.
        if self._identity is None:
            name = self.run("config", "user.name", check=False).strip()
            email = self.run("config", "user.email", check=False).strip()
            own_name, own_email = machine_identity()
            self._identity = {
                "GIT_AUTHOR_NAME": name or own_name,
                "GIT_AUTHOR_EMAIL": email or own_email,
                "GIT_COMMITTER_NAME": name or own_name,
                "GIT_COMMITTER_EMAIL": email or own_email,
            }
        env = dict(os.environ)
        for key, value in self._identity.items():
            env.setdefault(key, value)
        return env

    def remove_stale_index_lock(self, older_than: float) -> bool:
        """Delete `.git/index.lock` left by a crashed git; only call while holding the vault lock."""
        return _remove_if_older(self.root / ".git" / "index.lock", older_than)


# What git's stderr means, checked in order; the message says what happened and what to do.
_DISK_FULL = ("no space left on device", "disk quota exceeded")
_READ_ONLY = ("read-only file system",)
_NO_PERMISSION = ("permission denied", "insufficient permission")
_DAMAGED = (
    "not a git repository",
    "index file corrupt",
    "index file smaller than expected",
    "object file",
    "loose object",
    "corrupt",
    "bad object",
    "bad tree",
    "unable to read tree",
    "packfile",
    "broken link",
    "invalid sha1 pointer",
    "bad index file",
    "unknown index entry format",
)


def git_error(cmd: list[str], returncode: int, stderr: str, root: Path) -> GitError:
    """A GitError whose message explains a full disk, a read-only vault or a damaged repository."""
    said = stderr.lower()
    problem = ""
    if any(s in said for s in _DISK_FULL):
        problem = (
            f"the disk holding the vault {root} is full; free some space and try again (nothing was lost)"
        )
    elif any(s in said for s in _READ_ONLY):
        problem = f"the vault {root} is on a read-only file system; remount it read-write to save memories"
    elif any(s in said for s in _NO_PERMISSION):
        problem = (
            f"git has no permission to write in {root}/.git; give your user ownership of the vault folder"
        )
    elif any(s in said for s in _DAMAGED):
        problem = (
            f"the vault's git repository ({root}/.git) is damaged; run `rlm-vault doctor` to check it "
            "(the notes themselves are plain files and stay readable)"
        )
    return GitError(cmd, returncode, stderr, problem)


class _NotHere(Exception):
    """The in-process commit does not apply (unusual file, packed or odd objects): git does it."""


def machine_identity(env: dict[str, str] | None = None) -> tuple[str, str]:
    """(name, email) when git has no identity: RLM_AUTHOR ("Name <email>"), else <user>@<host>."""
    env = dict(os.environ) if env is None else env
    configured = env.get("RLM_AUTHOR", "").strip()
    name, _, rest = configured.partition("<")
    email = rest.removesuffix(">").strip()
    if name.strip() and email and not any(ch in configured for ch in "\n\0") and ">" not in name + email:
        return name.strip(), email
    if configured and "<" not in configured and not any(ch in configured for ch in "<>\n\0"):
        return configured, FALLBACK_EMAIL  # a name alone
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, no USER variable
        user = ""
    host = socket.gethostname().split(".")[0]
    clean = "".join(ch for ch in f"{user}@{host}" if ch.isprintable() and ch not in "<>")
    if not user or not host:
        return FALLBACK_NAME, FALLBACK_EMAIL
    return clean, clean


def _remove_if_older(lock: Path, seconds: float) -> bool:
    """Delete a lock file that has not changed for `seconds`; True when it was removed."""
    try:
        if time.time() - lock.stat().st_mtime > seconds:
            lock.unlink()
            return True
    except FileNotFoundError:
        pass
    return False


def _utc_offset() -> str:
    """The local UTC offset as git writes it (+0100)."""
    minutes = (time.localtime().tm_gmtoff or 0) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


def toplevel(folder: Path) -> Path | None:
    """The top-level folder of the git work tree holding `folder`, or None outside one."""
    try:
        top = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(top.stdout.strip()) if top.returncode == 0 and top.stdout.strip() else None
