"""The only module that runs git: a thin wrapper over the git command line.

Commits go through plumbing (update-index on the changed paths in a private index, write-tree, the
commit object, and a compare-and-swap update-ref) so a commit costs the same in a vault of ten notes
or ten thousand, and never sweeps in files a person is editing. Where it is exact (a plain SHA-1
repository in `<vault>/.git`), the objects of a commit are written in-process instead (`gitobjects`),
and so are the person's index entries for the files committed (`gitindex`).

Every git process runs on the vault alone: the GIT_* variables that would point it at another
repository, index or object store are removed from its environment (`clean_env`), and it never signs
(memory commits are machine-made, many a day; a signing key that needs a passphrase would hang a tool).

Housekeeping is git's own: after writes, when git's `gc --auto` rules would pack (loose objects over
`gc.auto`, packs over `gc.autoPackLimit`), `git gc --auto` is started in the background. It needs no
vault lock: git guards it (`gc.pid`, ref locks, prune keeps unreachable objects younger than two weeks,
and the in-process writer refreshes an object it finds already stored, as git does).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from . import gitindex, gitobjects
from .errors import GitError, StorageError, storage_message

__all__ = [
    "FALLBACK_EMAIL",
    "FALLBACK_NAME",
    "Commit",
    "Git",
    "Layout",
    "clean_env",
    "git_error",
    "machine_identity",
    "pid_alive",
    "toplevel",
]

FALLBACK_NAME = "rlm-vault"
FALLBACK_EMAIL = "rlm-vault@localhost"

# GIT_* variables kept for git processes: who commits, how to reach a remote, which user config files
# hold those, and tracing. Every other GIT_* variable goes (GIT_DIR, GIT_WORK_TREE, GIT_INDEX_FILE,
# GIT_OBJECT_DIRECTORY, GIT_ALTERNATE_OBJECT_DIRECTORIES, GIT_COMMON_DIR, GIT_NAMESPACE,
# GIT_CONFIG_PARAMETERS, GIT_CONFIG_COUNT/KEY_n/VALUE_n ...): a git hook or a shell exports them for one
# repository, and ad-hoc config can move a work tree (core.worktree) as surely as GIT_DIR can.
_KEEP_ENV = frozenset(
    {
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_AUTHOR_DATE",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "GIT_COMMITTER_DATE",
        "GIT_EXEC_PATH",
        "GIT_ASKPASS",
        "GIT_PROXY_COMMAND",
        "GIT_HTTP_PROXY_AUTHMETHOD",
        "GIT_HTTP_USER_AGENT",
        "GIT_ALLOW_PROTOCOL",
        "GIT_PROTOCOL_FROM_USER",
        "GIT_CURL_VERBOSE",
        "GIT_CONFIG_GLOBAL",
        "GIT_CONFIG_SYSTEM",
        "GIT_CONFIG_NOSYSTEM",
    }
)
_KEEP_ENV_PREFIXES = ("GIT_SSH", "GIT_SSL_", "GIT_TRACE")

# Passed to every git command: never sign (see the module docstring), and wait up to a second for a
# ref lock that a background `git gc` (pack-refs, reflog expire) holds for a moment.
_ALWAYS = ("-c", "commit.gpgSign=false", "-c", "core.filesRefLockTimeout=1000")

# The vault-local gc.auto set when the vault's config has none. Each write rewrites its folder's tree,
# so with git's 6,700 the loose trees between two packs come to ~50 MB at 3,000 notes and grow with the
# folders; at 1,000, 3,000 writes leave a 15-20 MB `.git` (docs/BENCHMARKS.md, row C).
GC_AUTO = 1000


def clean_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`env` (default os.environ) without the GIT_* variables that point git at another repository."""
    source = os.environ if env is None else env
    return {
        k: v
        for k, v in source.items()
        if not k.startswith("GIT_") or k in _KEEP_ENV or k.startswith(_KEEP_ENV_PREFIXES)
    }


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a vault's repository lives, resolved once per Git object."""

    git_dir: Path  # HEAD, the index, MERGE_HEAD, our private index (a linked worktree's own folder)
    common_dir: Path  # config, refs, packed-refs (shared with the main worktree)
    objects: Path
    object_format: str  # "sha1" or "sha256"
    plain: bool  # <root>/.git is a folder holding the repository, its config read and understood
    in_process: bool  # plain, SHA-1, no alternates, no extension: objects may be written in-process
    config: Mapping[str, str]  # the repository's own config file, "section.key" -> value (lower-case keys)

    @property
    def null(self) -> str:
        """The all-zero object id of this format (update-ref's "must not exist yet")."""
        return "0" * (64 if self.object_format == "sha256" else 40)


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
        self._layout: Layout | None = None
        self._identity: dict[str, str] | None = None
        self._index_base: str | None = None  # the commit our private index was last in step with
        self._trees: dict[str, str] = {}  # commit -> tree, for commits this process made
        self._tree_cache: dict[str, gitobjects.Tree] = {}
        self._plain_attributes: bool | None = None
        # Committed paths the person's index does not show yet (another git held index.lock), with what
        # the in-process index writer needs (None: git's update-index does it); any git command that
        # reads the index brings it in step first.
        self._index_lag: dict[str, gitindex.Staged | None] = {}
        self._index_lock = threading.Lock()
        self._person_index: gitindex.PersonIndex | None = None
        self._since_check = HOUSEKEEPING_EVERY - 1  # the first write after start checks at once
        self._gc_started = -HOUSEKEEPING_INTERVAL
        self._gc_child: subprocess.Popen[bytes] | None = None
        self._written = 0  # bytes of objects written in-process, added to the vault's tally at housekeeping

    # ------------------------------------------------------------------ processes

    def run(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> str:
        """Run `git <args>` in the repository and return its stdout."""
        self._index_first(args)
        proc = self._spawn(args, input, env, timeout)
        if check and proc.returncode != 0:
            raise git_error(list(args), proc.returncode, proc.stderr, self.root)
        return proc.stdout

    def run_status(self, *args: str, env: dict[str, str] | None = None) -> int:
        """Run `git <args>` and return only its exit code (for yes/no questions such as is-ancestor)."""
        self._index_first(args)
        return self._spawn(args, None, env, None).returncode

    def _index_first(self, args: Sequence[str]) -> None:
        if self._index_lag and (not args or args[0] not in _INDEX_FREE):
            self.flush_index()

    def _command(self, args: Sequence[str]) -> list[str]:
        return ["git", "-C", str(self.root), *_ALWAYS, *args]

    def _env(self, env: Mapping[str, str] | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        out = clean_env(env)
        # Never wait for a password prompt: a remote that needs one fails with a message instead.
        out["GIT_TERMINAL_PROMPT"] = "0"
        # Never look for a repository above the vault (a vault folder without .git is not a vault).
        out["GIT_CEILING_DIRECTORIES"] = str(self.root.parent)
        # `git status` would take the person's index.lock to save a refresh: a background server must not
        # (a person's `git commit` would find it taken, and a kill would leave it behind).
        out["GIT_OPTIONAL_LOCKS"] = "0"
        out.update(extra or {})
        return out

    def _spawn(
        self,
        args: Sequence[str],
        input: str | None,
        env: Mapping[str, str] | None,
        timeout: float | None,
        extra: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                self._command(args),
                check=False,
                input=input,
                capture_output=True,
                text=True,
                env=self._env(env, extra),
                encoding="utf-8",
                errors="replace",
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise GitError(list(args), -1, f"timed out after {timeout:g} s") from exc
        except OSError as exc:
            raise GitError(list(args), -1, f"cannot run git: {exc}") from exc

    def _spawn_bytes(
        self, args: Sequence[str], input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                self._command(args), input=input, check=False, capture_output=True, env=self._env(None)
            )
        except OSError as exc:
            raise GitError(list(args), -1, f"cannot run git: {exc}") from exc

    # ------------------------------------------------------------------ where the repository is

    def layout(self) -> Layout:
        """Where the repository lives: read from `<root>/.git` when it is a plain folder, else asked of git.

        Raises GitError when the root is not a git repository.
        """
        if self._layout is None:
            self._layout = _plain_layout(self.root) or self._asked_layout()
        return self._layout

    def _asked_layout(self) -> Layout:
        # A `.git` file (linked worktree, --separate-git-dir), or a config this module does not read:
        # git says where everything is, and every commit goes through git's own plumbing.
        out = self.run(
            "rev-parse",
            "--path-format=absolute",
            "--git-dir",
            "--git-common-dir",
            "--git-path",
            "objects",
            "--show-object-format",
        ).splitlines()
        if len(out) != 4:
            raise GitError(["rev-parse", "--git-dir"], 0, f"unexpected answer: {out!r}")
        common = Path(out[1])
        return Layout(
            git_dir=Path(out[0]),
            common_dir=common,
            objects=Path(out[2]),
            object_format=out[3].strip(),
            plain=False,
            in_process=False,
            config=_read_config(common / "config") or {},
        )

    def is_repo(self) -> bool:
        """True when the root is the top of a git work tree."""
        return (self.root / ".git").exists()

    def init(self) -> None:
        """Create the repository with `main` as its branch."""
        self.run("init", "-q")
        self.run("symbolic-ref", "HEAD", "refs/heads/main")
        self._layout = None

    # Settings a vault repository gets (also a cloned one): readable unicode paths, and a split, compact
    # index, so each commit rewrites a small file instead of an index of every note (at 10,000 notes
    # update-index went from 12 to 5 ms).
    TUNING: ClassVar[dict[str, str]] = {
        "core.quotepath": "false",
        "core.splitindex": "true",
        "index.version": "4",
    }

    def tune(self) -> None:
        """Apply TUNING where the repository's config lacks it (read from the file: no spawn when set).

        Also gives the vault its own `gc.auto` (GC_AUTO) unless its config names one: a person's value
        there, 0 included, is theirs.
        """
        try:
            layout = self.layout()
            text = (layout.common_dir / "config").read_text(encoding="utf-8", errors="replace").lower()
        except (OSError, GitError):
            return
        for key, value in self.TUNING.items():
            section, name = key.split(".")
            if f"[{section}]" not in text or f"{name} = {value}" not in text:
                self.run("config", key, value, check=False)
        if "gc.auto" not in layout.config:
            self.run("config", "gc.auto", str(GC_AUTO), check=False)
            self._layout = None  # re-read with the new value

    # ------------------------------------------------------------------ locks and merges

    def lock_files(self) -> list[Path]:
        """The git lock files a killed writer or gc can leave, that would refuse later writes or packing."""
        try:
            layout = self.layout()
        except GitError:
            return []
        git_dir, common, info = layout.git_dir, layout.common_dir, layout.objects / "info"
        locks = [git_dir / "HEAD.lock", common / "config.lock", git_dir / "rlm-vault-index.lock"]
        locks += [common / "packed-refs.lock", info / "commit-graph.lock"]  # gc's pack-refs, commit-graph
        locks += list((common / "refs").rglob("*.lock"))
        if (common / "logs").is_dir():
            locks += list((common / "logs").rglob("*.lock"))  # gc's reflog expire
        if (info / "commit-graphs").is_dir():
            locks += list((info / "commit-graphs").glob("*.lock"))
        return [p for p in locks if p.exists()]

    def clear_stale_locks(self, older_than: float = 0.5) -> list[str]:
        """Remove git lock files a killed writer left; call at start, while holding the vault lock.

        kill -9 of a server with its git (tests/reliability/test_crash.py) can leave HEAD.lock, a branch's
        lock, config.lock or our private index's lock, and every later write would fail on it; a killed
        gc leaves packed-refs.lock and every later gc would fail. A live git holds these for milliseconds:
        one unchanged for `older_than` seconds is stale (a younger one is waited for, up to a second).
        While a gc runs, the locks are likely its own (pack-refs, reflog expire): only locks older than
        10 s go then, unwaited. `.git/index.lock` is left alone: a person's `git commit` holds it while
        their editor is open (`remove_stale_index_lock` handles it after 10 s).
        """
        wait = 1.0
        if self.gc_running():
            older_than, wait = max(older_than, 10.0), 0.0
        removed = []
        for lock in self.lock_files():
            deadline = time.monotonic() + wait
            while not _remove_if_older(lock, older_than) and lock.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not lock.exists():
                layout = self.layout()
                base = layout.git_dir if lock.parent == layout.git_dir else layout.common_dir
                removed.append(lock.relative_to(base).as_posix())
        return removed

    def merging(self) -> bool:
        """True while a merge is in progress (MERGE_HEAD exists)."""
        try:
            return (self.layout().git_dir / "MERGE_HEAD").exists()
        except GitError:
            return False

    def commit_merge(self, message: str) -> str:
        """Conclude a merge whose conflicts are resolved in the index."""
        self.run("commit", "-q", "--no-verify", "-m", message, env=self.identity_env())
        return self.head() or ""

    def show_stage(self, stage: int, path: str) -> bytes:
        """The bytes of one side of a conflicted path (2 = ours, 3 = theirs)."""
        return self.show(f":{stage}", path)

    def head(self) -> str | None:
        """The commit HEAD points at, or None in an empty repository."""
        with contextlib.suppress(LookupError, GitError):  # GitError: not a repository git can read
            return self._read_head()  # from the files: no process at every server start
        out = self.run("rev-parse", "-q", "--verify", "HEAD^{commit}", check=False).strip()
        return out or None

    # ------------------------------------------------------------------ commits

    def commit_paths(self, paths: Sequence[str], message: str, own: bool = False) -> str | None:
        """Commit exactly these paths (added, changed or removed) as they are on disk.

        The tree is built apart from the person's index (in-process for `own` files, which rlm-vault
        has just written, in a plain SHA-1 repository; else in a private index), so whatever a person
        staged with `git add` stays theirs; the person's index is then brought in step for these paths
        only. Returns the new commit, or None when the paths already match HEAD.
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
                if own and self.layout().in_process and self._fast_path_safe():
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
        layout = self.layout()
        listing = "\0".join(paths) + "\0"
        parent, parent_tree = self._head_and_tree()
        index = layout.git_dir / "rlm-vault-index"
        private = {"GIT_INDEX_FILE": str(index)}
        if parent != self._index_base or not index.exists():
            # HEAD moved (another process, a merge, a person's commit): start from it again, from nothing
            # (an index of an older version may be split, its shared part gone).
            index.unlink(missing_ok=True)
            if parent:
                self._run_private(private, "read-tree", parent)
        try:
            self._run_private(private, "update-index", "--add", "--remove", "-z", "--stdin", input=listing)
            tree = self._run_private(private, "write-tree", "--missing-ok").strip()
            if parent and parent_tree == tree:
                self._index_base = parent
                # A commit made just before a kill may not have reached the person's index.
                self._sync_index(paths)
                return None
            commit = self._commit_object(tree, parent, message)
            # Compare-and-swap: if HEAD moved under us the update fails loudly instead of losing a commit.
            self.run(
                "update-ref",
                "-m",
                f"commit: {message.splitlines()[0]}",
                "HEAD",
                commit,
                parent or layout.null,
            )
        except GitError:
            self._index_base = None  # the private index may hold the failed change: rebuild it from HEAD
            raise
        self._index_base = commit
        self._trees[commit] = tree
        self._sync_index(paths)
        return commit

    def _run_private(self, index_env: Mapping[str, str], *args: str, input: str | None = None) -> str:
        """`git <args>` on our private index (GIT_INDEX_FILE is set after the environment is cleaned).

        Never a split index: its shared part could expire while the person's index is split again.
        """
        proc = self._spawn(["-c", "core.splitIndex=false", *args], input, None, None, extra=index_env)
        if proc.returncode != 0:
            raise GitError(list(args), proc.returncode, proc.stderr)
        return proc.stdout

    def _commit_in_process(self, paths: Sequence[str], message: str) -> str | None:
        """Hash the files, patch the trees on their paths, write the commit: only update-ref is a process."""
        parent, parent_tree = self._head_and_tree()
        if parent is None or parent_tree is None:
            raise _NotHere("no commit yet")
        staged: list[gitindex.Staged] = []
        changes = {path: self._blob_entry(path, staged) for path in paths}
        tree = self._patched(parent_tree, changes) or self._write_tree({})
        if tree == parent_tree:
            self._sync_index(paths, staged)
            return None
        commit = self._commit_object(tree, parent, message)
        if not self._swap_head(commit, parent, f"commit: {message.splitlines()[0]}"):
            self.run("update-ref", "-m", f"commit: {message.splitlines()[0]}", "HEAD", commit, parent)
        self._trees[commit] = tree
        self._sync_index(paths, staged)
        return commit

    def _blob_entry(self, path: str, staged: list[gitindex.Staged]) -> tuple[str, str] | None:
        full = self.root / path
        try:
            st = full.lstat()  # before reading, as git does: a change after it shows in `git status`
            if not stat.S_ISREG(st.st_mode):
                raise _NotHere(f"{path} is not a regular file")
            data = full.read_bytes()
        except FileNotFoundError:
            return None
        if b"\r" in data and not path.endswith(".gz"):
            raise _NotHere("line endings git would normalise")  # .gitattributes says text eol=lf
        mode = "100755" if st.st_mode & stat.S_IXUSR else "100644"
        self._written += len(data)
        sha = gitobjects.write_loose(self.layout().objects, "blob", data)
        if len(data) == st.st_size:  # else it changed while read: git's update-index looks at it again
            staged.append(gitindex.Staged(path, int(mode, 8), sha, st))
        return mode, sha

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
            old = base.get(name)
            child = self._patched(old[1] if old and old[0] == gitobjects.DIR_MODE else None, sub)
            direct[name] = None if child is None else (gitobjects.DIR_MODE, child)
        new = base.patched(direct)
        if tree:
            self._tree_cache.pop(tree, None)  # superseded: the next commit starts from the new one
        return self._store_tree(new) if len(new) else None

    def _write_tree(self, entries: gitobjects.Entries) -> str:
        return self._store_tree(gitobjects.Tree.build(entries))

    def _store_tree(self, tree: gitobjects.Tree) -> str:
        data = tree.data()
        self._written += len(data)
        sha = gitobjects.write_loose(self.layout().objects, "tree", data)
        self._remember_tree(sha, tree)
        return sha

    def _tree(self, sha: str) -> gitobjects.Tree:
        if sha in self._tree_cache:
            return self._tree_cache[sha]
        found = gitobjects.read_loose(self.layout().objects, sha)
        if found is None:  # packed: git reads it
            proc = self._spawn_bytes(["cat-file", "tree", sha])
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
                and not (self.layout().common_dir / "info" / "attributes").exists()
            )
        return self._plain_attributes

    def _commit_object(self, tree: str, parent: str | None, message: str) -> str:
        """Write the commit object in-process (a loose object, as git writes it): one process fewer per write.

        Falls back to `git commit-tree` where only git is exact: a repository other than a plain SHA-1 one,
        or an environment asking for what only git does (fixed dates, an identity git would clean up).
        """
        env = self.identity_env()
        idents = [
            (env["GIT_AUTHOR_NAME"], env["GIT_AUTHOR_EMAIL"]),
            (env["GIT_COMMITTER_NAME"], env["GIT_COMMITTER_EMAIL"]),
        ]
        if (
            not self.layout().in_process
            or "GIT_AUTHOR_DATE" in env
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
            self.layout().objects, "commit", ("\n".join(lines) + f"\n\n{message}\n").encode("utf-8")
        )

    def _sync_index(self, paths: Sequence[str], staged: Sequence[gitindex.Staged] = ()) -> None:
        """Show committed `paths` in the person's index (`staged`: those the in-process writer may add)."""
        known = {item.path: item for item in staged}
        with self._index_lock:
            self._index_lag.update((path, known.get(path)) for path in paths)
            self._flush_index()

    def flush_index(self) -> None:
        """Bring the person's index in step with the commits made. Best effort: a person's git holding
        index.lock must not turn a made commit into a failure; what it could not take is tried again."""
        with self._index_lock:
            self._flush_index()

    def _flush_index(self) -> None:
        if self._index_lag:
            with self.owning_index():
                self._write_index(dict(self._index_lag))

    def _write_index(self, pending: dict[str, gitindex.Staged | None]) -> None:
        outcome = gitindex.Outcome.GIT
        staged = [item for item in pending.values() if item is not None]
        layout = self.layout()
        if len(staged) == len(pending) and layout.in_process:
            if self._person_index is None or self._person_index.git_dir != layout.git_dir:
                self._person_index = gitindex.PersonIndex(layout.git_dir)
            try:
                outcome = self._person_index.stage(staged)
            except gitindex.Held:
                return
        if outcome is not gitindex.Outcome.DONE:
            # A small split part that grew past git's own share: git writes a new shared index.
            resplit = (
                [
                    "-c",
                    "splitIndex.maxPercentChange=0",
                    "-c",
                    f"splitIndex.sharedIndexExpire={SHARED_INDEX_EXPIRE}",
                ]
                if outcome is gitindex.Outcome.RESPLIT
                else []
            )
            listing = "\0".join(pending) + "\0"
            args = [*resplit, "update-index", "--add", "--remove", "-z", "--stdin"]
            if self._spawn(args, listing, None, None).returncode != 0:
                return
        for path, item in pending.items():
            if self._index_lag.get(path) is item:
                del self._index_lag[path]

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

        LookupError when git must be asked (not a plain SHA-1 repository, detached or packed ref, anything
        unusual).
        """
        layout = self.layout()
        if not layout.in_process:
            raise LookupError("git reads this repository's refs")
        git_dir = layout.git_dir
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

    def _swap_head(self, commit: str, parent: str, subject: str) -> bool:
        """Move HEAD's branch from `parent` to `commit` as `git update-ref` does (the branch's lock file,
        a compare under it, the reflog lines, the rename), in-process: one process fewer per write.

        False, with nothing changed, where git must do it: anything but a loose branch ref of a plain
        repository with its reflogs, a hook that watches ref updates, a lock held, or HEAD not at
        `parent` (git then fails the same compare-and-swap loudly).
        """
        layout = self.layout()
        git_dir = layout.git_dir
        if not layout.in_process or "core.hookspath" in layout.config:
            return False
        try:
            head = (git_dir / "HEAD").read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return False
        name = head.removeprefix("ref: ")
        logs = [git_dir / "logs" / name, git_dir / "logs" / "HEAD"]
        if (
            not name.startswith("refs/heads/")
            or (git_dir / "hooks" / "reference-transaction").exists()
            or not all(log.is_file() for log in logs)
        ):
            return False
        env = self.identity_env()
        who = f"{env['GIT_COMMITTER_NAME']} <{env['GIT_COMMITTER_EMAIL']}>"
        if any(ch in who + subject for ch in "\n\0") or "GIT_COMMITTER_DATE" in env:
            return False
        line = f"{parent} {commit} {who} {int(time.time())} {_utc_offset()}\t{subject}\n"
        ref = git_dir / name
        try:
            with gitindex.LockFile(ref, 0o644) as lock:
                if ref.read_text(encoding="ascii").strip() != parent:
                    return False
                lock.handle.write(f"{commit}\n".encode("ascii"))
                for log in logs:
                    with open(log, "a", encoding="utf-8") as handle:
                        handle.write(line)
                lock.commit()
                return True
        except (OSError, UnicodeDecodeError):
            return False

    # ------------------------------------------------------------------ housekeeping

    def housekeep(self) -> bool:
        """After a write: start `git gc --auto` in the background when git's rules would pack; never waits.

        Looked at every HOUSEKEEPING_EVERY calls, and started at most once per HOUSEKEEPING_INTERVAL
        seconds by this process and never while a gc runs on the vault. Git counts loose objects, not
        bytes: where each write adds a large tree (a folder of tens of thousands of notes), this process
        also packs what it wrote (`git repack -d`, incremental) once that passes HOUSEKEEPING_BYTES.
        Returns True when one was started.
        """
        self._since_check += 1
        if self._since_check < HOUSEKEEPING_EVERY:
            return False
        self._since_check = 0
        if self._gc_child is not None and self._gc_child.poll() is None:
            return False  # ours is still deciding or running in the foreground
        if time.monotonic() - self._gc_started < HOUSEKEEPING_INTERVAL:
            return False
        try:
            layout = self.layout()
        except GitError:
            return False
        wanted = gc_wanted(layout)
        tally = layout.common_dir / "rlm-loose-bytes"
        if self._written:  # every process adds what it wrote: hooks and CLI commands write a little each
            with contextlib.suppress(OSError), open(tally, "a", encoding="ascii") as handle:
                handle.write(f"{self._written}\n")
            self._written = 0
        try:
            written = sum(int(n) for n in tally.read_text(encoding="ascii").split() if n.isdigit())
        except OSError:
            written = 0
        big = written >= HOUSEKEEPING_BYTES and gc_enabled(layout)
        if not (wanted or big) or self.gc_running():
            return False
        for lock in self.lock_files():
            # No gc runs: a lock this old is a killed gc's (or writer's), and would make this gc fail.
            _remove_if_older(lock, HOUSEKEEPING_STALE_LOCK)
        self._gc_started = time.monotonic()
        tally.unlink(missing_ok=True)
        try:
            self._gc_child = subprocess.Popen(
                self._command(GC_AUTO_ARGS if wanted else ["repack", "-d", "-q"]),
                env=self._env(None),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # outlives the server and its process group
                close_fds=True,
            )
        except OSError:
            return False
        try:
            os.setpriority(os.PRIO_PROCESS, self._gc_child.pid, 10)  # yields to the tools on a busy machine
        except OSError:
            pass
        return True

    def gc_running(self) -> bool:
        """True while a git gc holds the vault's gc.pid (a live process on this machine)."""
        try:
            pid_file = self.layout().common_dir / "gc.pid"
            text = pid_file.read_text(encoding="utf-8", errors="replace")
            age = time.time() - pid_file.stat().st_mtime
        except (OSError, GitError):
            return False
        pid_text, _, host = text.strip().partition(" ")
        if host and host != socket.gethostname():
            return age < 12 * 3600  # another machine's gc (a shared folder): git trusts it for 12 hours
        return pid_text.isdigit() and pid_alive(int(pid_text))

    # ------------------------------------------------------------------ reading

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
        args = ["show", f"{commit}:{path}"]
        proc = self._spawn_bytes(args)
        if proc.returncode != 0:
            raise git_error(args, proc.returncode, proc.stderr.decode(errors="replace"), self.root)
        return proc.stdout

    def cat_blobs(self, shas: list[str]) -> dict[str, bytes]:
        """Blob contents by id, read in one `git cat-file --batch`; ids that are not blobs are left out."""
        if not shas:
            return {}
        proc = self._spawn_bytes(["cat-file", "--batch"], input=("\n".join(shas) + "\n").encode())
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

    @contextlib.contextmanager
    def owning_index(self) -> Iterator[None]:
        """Around anything that may take the person's `.git/index.lock` (our own writer or a git command):
        a kill inside leaves this process's mark, so the next start knows that lock for a dead
        rlm-vault's and not a person's `git commit` (`clear_orphaned_index_lock`)."""
        mark = self.layout().git_dir / f"{INDEX_OWNER}.{os.getpid()}"
        mark.touch()
        try:
            yield
        finally:
            mark.unlink(missing_ok=True)

    def index_locked(self) -> bool:
        """True while `.git/index.lock` exists (someone's git, or ours, is writing the person's index)."""
        try:
            return (self.layout().git_dir / "index.lock").exists()
        except GitError:
            return False

    def index_marks(self) -> list[Path]:
        """The marks of rlm-vault processes that may hold `.git/index.lock` (see `owning_index`)."""
        try:
            return list(self.layout().git_dir.glob(f"{INDEX_OWNER}.*"))
        except GitError:
            return []

    def clear_orphaned_index_lock(self) -> bool:
        """Remove the marks of dead processes, and `.git/index.lock` if one of them made it: the lock is
        no older than that mark's start (nor ORPHANED_WITHIN seconds younger) and no live process marked
        it. Call under the vault lock. True when a lock was removed."""
        marks = self.index_marks()
        dead = [m for m in marks if not pid_alive(_pid_suffix(m.name))]
        if not dead:
            return False
        locked_at = _mtime(self.layout().git_dir / "index.lock")
        theirs = False
        for mark in dead:
            marked_at = _mtime(mark)
            if locked_at is not None and marked_at is not None:
                theirs |= marked_at - 1 <= locked_at <= marked_at + ORPHANED_WITHIN
            mark.unlink(missing_ok=True)
        if not theirs or len(dead) < len(marks):
            return False
        return self.remove_stale_index_lock(older_than=0.5, wait=3.0)

    def remove_stale_index_lock(self, older_than: float, wait: float = 0.0) -> bool:
        """Delete `.git/index.lock` left by a crashed git; only call while holding the vault lock. A lock
        that changed within `older_than` seconds is waited for, up to `wait` seconds (a killed server's
        git may still be finishing, and takes its lock away itself)."""
        try:
            lock = self.layout().git_dir / "index.lock"
        except GitError:
            return False
        deadline = time.monotonic() + wait
        while not _remove_if_older(lock, older_than):
            if not lock.exists() or time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True


# Housekeeping pace: the loose-object estimate is a directory listing, so it is cheap, but a server
# writing a burst need not look at every write; and a gc that could not bring the count down (objects
# too young to prune) is not restarted at every look. At gc.auto=1000 a burst of writes starts a gc
# every 200-300 commits, each a few hundred ms of background work (an incremental pack; prune skips
# its walk while every loose object is young).
# A new shared index is written every few hundred writes (gitindex.RESPLIT_CAP), 11 MB at 100,000 notes:
# the ones no index links to any more go after an hour, not git's two weeks.
SHARED_INDEX_EXPIRE = "1.hour.ago"
INDEX_OWNER = "rlm-vault-index-owner"  # `.<pid>` in the git dir: that process may hold index.lock
# A killed writer's index.lock was last written within this many seconds of its mark (a merge of many
# notes holds it longest); a later one is a person's, made after the kill.
ORPHANED_WITHIN = 300.0
# git commands that neither read nor write the index: they need not wait for a pending index update.
_INDEX_FREE = frozenset(
    [
        "cat-file",
        "commit-tree",
        "config",
        "count-objects",
        "fetch",
        "for-each-ref",
        "hash-object",
        "log",
        "ls-remote",
        "ls-tree",
        "merge-base",
        "merge-tree",
        "push",
        "remote",
        "rev-list",
        "rev-parse",
        "show",
        "symbolic-ref",
        "update-ref",
    ]
)
# `gc --auto` that left young unreachable objects (a bulk import's objects before its commit lands)
# writes gc.log, and git then skips every automatic gc for gc.logExpiry (a day): an hour here.
GC_AUTO_ARGS = ["-c", "gc.logExpiry=1.hour", "gc", "--auto", "--quiet"]
HOUSEKEEPING_EVERY = 8
HOUSEKEEPING_INTERVAL = 5.0
HOUSEKEEPING_STALE_LOCK = 60.0
HOUSEKEEPING_BYTES = 128 * 1024 * 1024  # raw object bytes (about 60-90 MB loose on disk)


def gc_enabled(layout: Layout) -> bool:
    """False when the vault's config says `gc.auto = 0` (a person turned automatic housekeeping off)."""
    config = _read_config(layout.common_dir / "config") or layout.config
    return _config_int(config, "gc.auto", 6700) > 0


def gc_wanted(layout: Layout) -> bool:
    """Whether `git gc --auto` would do work, by git's own estimate (need_to_gc in git's builtin/gc.c).

    Loose objects are counted in one of the 256 fan-out folders (`objects/17`) and scaled, against
    `gc.auto` (default 6700, 0 = never); packs without a `.keep` against `gc.autoPackLimit` (default 50).
    """
    config = _read_config(layout.common_dir / "config") or layout.config  # a person may change it any time
    auto = _config_int(config, "gc.auto", 6700)
    if auto <= 0:
        return False
    try:
        loose = sum(1 for e in os.scandir(layout.objects / "17") if _LOOSE_NAME.fullmatch(e.name))
    except OSError:
        loose = 0
    if loose > (auto + 255) // 256:
        return True
    limit = _config_int(config, "gc.autopacklimit", 50)
    if limit <= 0:
        return False
    try:
        names = set(os.listdir(layout.objects / "pack"))
    except OSError:
        return False
    packs = [n for n in names if n.endswith(".pack") and n[:-5] + ".keep" not in names]
    return len(packs) > limit


_LOOSE_NAME = re.compile(r"[0-9a-f]{38}|[0-9a-f]{62}")


def _plain_layout(root: Path) -> Layout | None:
    """The layout of `<root>/.git` when it is a plain repository folder this module fully understands.

    None (ask git) for a `.git` file, a linked worktree's folder, or a config with includes, a
    separate work tree or format version above 1.
    """
    git_dir = root / ".git"
    if not git_dir.is_dir() or (git_dir / "commondir").exists():
        return None
    config = _read_config(git_dir / "config")
    if config is None:
        return None
    extensions = {k for k in config if k.startswith("extensions.")}
    if (
        any(k.startswith(("include.", "includeif.")) for k in config)
        or "core.worktree" in config
        or config.get("core.bare", "false").lower() in ("true", "yes", "on", "1")
        or config.get("core.repositoryformatversion", "0") not in ("0", "1")
        or extensions - {"extensions.objectformat"}
    ):
        return None
    fmt = config.get("extensions.objectformat", "sha1").lower()
    objects = git_dir / "objects"
    return Layout(
        git_dir=git_dir,
        common_dir=git_dir,
        objects=objects,
        object_format=fmt,
        plain=True,
        in_process=fmt == "sha1" and not (objects / "info" / "alternates").exists(),
        config=config,
    )


_SECTION = re.compile(r'\[\s*([A-Za-z0-9.-]+)(?:\s+"((?:[^"\\]|\\.)*)")?\s*\]')
_ENTRY = re.compile(r"([A-Za-z][A-Za-z0-9-]*)\s*(?:=\s*(.*))?")


def _read_config(path: Path) -> dict[str, str] | None:
    """A git config file as {"section.key": value} (section and key lower-case; subsections kept).

    Values with quotes, escapes or continued lines are kept raw: only plain values are read for meaning.
    None when the file cannot be read or has a line this reader does not understand.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    out: dict[str, str] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            match = _SECTION.match(line)
            if match is None:
                return None
            section = match[1].lower() + (f".{match[2]}" if match[2] is not None else "")
            line = line[match.end() :].strip()
            if not line or line[0] in "#;":
                continue
        entry = _ENTRY.fullmatch(line)
        if entry is None or not section:
            return None
        value = (entry[2] or "true").split(" #")[0].split(" ;")[0].strip()
        out[f"{section}.{entry[1].lower()}"] = value
    return out


def _config_int(config: Mapping[str, str], key: str, default: int) -> int:
    """An integer config value as git reads it (k/m/g suffixes); `default` when absent or unreadable."""
    value = config.get(key, "").strip().lower()
    scale = {"k": 1024, "m": 1024**2, "g": 1024**3}.get(value[-1:], 1) if value else 1
    digits = value[:-1] if scale != 1 else value
    try:
        return int(digits) * scale
    except ValueError:
        return default


def pid_alive(pid: int) -> bool:
    """True while a process with this id runs (a lock or temp file of a dead one can go)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def _pid_suffix(name: str) -> int:
    """The pid after the last dot of a mark's name, 0 when there is none."""
    tail = name.rsplit(".", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


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
            env=clean_env(),  # GIT_DIR and friends must not answer for another repository
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(top.stdout.strip()) if top.returncode == 0 and top.stdout.strip() else None
