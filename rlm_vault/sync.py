"""Sharing a vault through a git remote: commit local edits, fetch, integrate, push; never lose a memory.

Many machines may sync through one remote at once. Network I/O (fetch, push, finding the remote branch)
runs without the vault's write lock, so writes never wait on the network; only committing local edits and
moving the work tree hold it, briefly. A clean merge is built in git's object store (`merge-tree`),
pushed, and only then taken into the vault folder, so the window in which another machine's push makes
ours lose is a few git processes long. A push that loses that race is fetched, merged and pushed again
until RACE_DEADLINE, the machines that lost most often retrying first; a remote still busy then is not
an error: what was fetched is merged here, and the commits go with the next sync (the result says so).
Only a real failure (unreachable, access refused, a hook refusing) is an error.

Only notes travel: insights/, chunks/, archive/ and the files the vault template owns. Other files
(editor settings, `.env`, stray files) are left untracked and reported; a note holding a secret is left
uncommitted and reported. What arrives is data: `.rlm/` (machine-local caches) is dropped from a fetched
tree before it is merged, so no cache file or symlink ever comes from a remote.

When the same note changed on both sides, the merge runs in the work tree instead: the local version
stays at its path and the incoming one is kept next to it as `<name>.conflict-<host>-<time>.<ext>`,
committed, and reported by status.
"""

from __future__ import annotations

import contextlib
import random
import socket
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

from .config import MARKER
from .core import Store, external_message
from .errors import GitError, InvalidInput, SyncError, VaultError
from .filelock import file_lock
from .git import Git
from .results import Problem, RemoteSet, Synced

__all__ = ["Sync", "clone_or_create", "remote_configured", "synced_path"]

REMOTE = "origin"
MERGING = "merging"  # .rlm/merging exists while a sync's merge is in progress
DEFAULT_BRANCH = "main"
CACHE = ".rlm"  # machine-local state: never committed, never taken from a remote
NOTE_TOPS = ("insights", "chunks", "archive", "sessions")
TEMPLATE_FILES = frozenset({"README.md", ".gitignore", ".gitattributes", "domains.yaml", MARKER})
RACE_DEADLINE = 60.0  # seconds a sync keeps retrying push races before its commits wait for the next sync
BACKOFF_BASE, BACKOFF_CAP = 0.1, 2.0  # seconds: the longest waits after many lost races and after one
SYNC_WAIT = 600.0  # seconds a sync waits for another sync of the same vault to finish
NETWORK_TIMEOUT = 120.0

# What git says when a push lost a race (another machine pushed first, or holds the remote ref's lock):
# fetching, merging and pushing again resolves it.
RACE_SIGNS = (
    "non-fast-forward",
    "fetch first",
    "failed to update ref",
    "cannot lock ref",
    "unable to update local ref",
    "incorrect old value",
    "stale info",
    "failed to lock",
)


def synced_path(path: str) -> bool:
    """True for what sync commits: notes (insights/, chunks/, archive/, sessions/, outside any dot-folder
    an editor keeps there) and the vault template's files."""
    if path in TEMPLATE_FILES:
        return True
    parts = path.split("/")
    return parts[0] in NOTE_TOPS and not any(part.startswith(".") for part in parts)


class _Race(Exception):
    """The remote moved between our fetch and our push (or a ref was locked): fetch and try again."""


class Sync:
    """Remote settings and `sync` of one vault."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def remote(self) -> str | None:
        """The URL of the vault's remote, if one is set."""
        url = self.store.vault.git.run("config", "--get", f"remote.{REMOTE}.url", check=False).strip()
        return url or None

    def set_remote(self, url: str) -> RemoteSet:
        """Track `url` (any git remote: path, ssh, https) as the vault's remote."""
        url = url.strip()
        if not url or url.startswith("-"):
            raise InvalidInput(f"remote {url!r} is not accepted: give a git URL or a path to a repository")
        verb = "set-url" if self.remote() else "add"
        self.store.vault.git.run("remote", verb, REMOTE, url)
        return {"remote": url}

    def untracked(self) -> list[str]:
        """Files in the vault folder that sync leaves out (not notes, not template files), for status."""
        excluded = [f":(exclude){top}" for top in (*NOTE_TOPS, CACHE)]
        paths = {p for _, p in self.store.vault.git.status(".", *excluded)}
        return sorted(p for p in paths if not synced_path(p) and p.split("/", 1)[0] != CACHE)

    def refused(self) -> list[Problem]:
        """Edits kept out of git because of what they hold (a secret), with the reason."""
        root = self.store.vault.root
        return [
            {"path": p, "reason": r}
            for p, r in sorted(self.store.refused.items())
            if (root / p).exists() or (root / p).is_symlink()
        ]

    def sync(self) -> Synced:
        """Commit local edits, fetch, merge (keeping both sides of a conflict), push; retry a lost race."""
        url = self.remote()
        if url is None:
            raise InvalidInput("this vault has no remote: run `rlm-vault remote set URL` first")
        git = self.store.vault.git
        # One sync of a vault at a time (a server's background sync and a command line one): their fetches
        # would fight over the same ref. Writes do not take this lock.
        with file_lock(self.store.vault.state / "sync.lock", SYNC_WAIT):
            branch = _remote_branch(git, url)
            report = _Report()
            with self.store.vault.lock():
                self._commit_locked(git, report)
            deadline = time.monotonic() + RACE_DEADLINE
            while not self._round(git, url, branch, report):
                pause = _backoff(report.races)
                if time.monotonic() + pause >= deadline:
                    self._give_way(git, url, report)
                    break
                time.sleep(pause)
            # Kept out of the fetches above (`--no-auto-maintenance`): housekeeping once, after the race.
            git.run("maintenance", "run", "--auto", "--quiet", check=False)
        self.store.fresh()
        return report.result(url, git.head())

    def _commit_locked(self, git: Git, report: _Report) -> None:
        """Under the write lock: undo an interrupted sync merge, commit local edits (once per sync)."""
        self.store.vault.abort_interrupted_merge()
        if git.merging():
            raise SyncError(
                "a git merge is in progress in the vault (not one of rlm-vault's): finish it or "
                "run `git merge --abort` there, then sync again"
            )
        report.external, report.untracked = self._commit_local_edits()
        report.refused = self.refused()

    def _round(self, git: Git, url: str, branch: str, report: _Report) -> bool:
        """One fetch, merge and push; False when another machine pushed first (fetch and try again).

        The merge of a clean round is built in git's object store (`merge-tree`), pushed, and only then
        taken into the work tree under the write lock: between the fetch and the push run four short git
        processes, so the window in which another push makes this one lose is small, and the vault's
        folder only ever holds what the remote accepted. A conflict is merged in the work tree instead,
        where both sides are kept.
        """
        try:
            fetched = _fetch(git, url, branch)
        except _Race as race:
            report.lost(race)
            return False
        head, remote, cached = _look(git)
        if not fetched:  # the remote has no branch (yet): whatever TRACKING held is gone
            remote = None
        theirs = remote
        if cached and remote is not None:
            theirs = _without_cache(git, remote, report.warnings)
        # A commit dropping the remote's `.rlm` is new to the remote too: it goes with the push.
        dropped = int(theirs != remote)
        ahead, behind = _distance(git, head, theirs)
        report.fetched = theirs
        if not behind:  # nothing new over there: publish ours
            return self._publish(git, url, branch, report, head, ahead + dropped)
        if not ahead:  # ours is in theirs: take it
            assert theirs is not None
            self._take(git, url, theirs, head, report)
            report.pulled += behind - dropped
            report.fetched = None
            return self._publish(git, url, branch, report, theirs, dropped)
        assert head is not None and theirs is not None
        merged = _merge_in_memory(git, url, head, theirs)
        if merged is None:  # a conflict (or a git without merge-tree): merge in the work tree
            with self.store.vault.lock():
                before = git.head()
                report.conflicts += self._integrate(git, url, theirs)
                report.pulled += (_count(git, f"{before}..{theirs}") if before else behind) - dropped
                report.fetched = None  # merged: a lost race needs no second merge of it
                local = git.head()
            return self._publish(git, url, branch, report, local, _count(git, f"{remote}..{local}"))
        if not self._publish(git, url, branch, report, merged, ahead + 1 + dropped):
            return False
        report.fetched = None
        self._take(git, url, merged, head, report)
        report.pulled += behind - dropped
        return True

    def _publish(
        self, git: Git, url: str, branch: str, report: _Report, commit: str | None, ahead: int
    ) -> bool:
        """Push `commit` when it holds something new; False when another push won the race."""
        if commit is None or not ahead:
            return True
        try:
            _push(git, url, branch, commit)
        except _Race as race:
            report.lost(race)
            return False
        except SyncError:
            # Refused for good (a read-only key, a hook): what was fetched still comes in, if it can;
            # the refusal is what the person must hear about.
            with contextlib.suppress(VaultError):
                self._pull_fetched(git, url, report)
            raise
        report.pushed += ahead
        return True

    def _take(self, git: Git, url: str, commit: str, expected: str | None, report: _Report) -> None:
        """Under the write lock: move HEAD and the work tree to `commit`, which contains `expected`.

        A write since `expected` was read made a commit the remote has not seen: it is merged with
        `commit` (kept locally; the next sync pushes it).
        """
        with self.store.vault.lock():
            if git.head() != expected:
                report.conflicts += self._integrate(git, url, commit)
                return
            with self._merging(commit):
                code = git.run_status("merge", "-q", "--ff-only", commit)
            if code != 0:
                raise SyncError(
                    f"the notes from {url} could not be written into the vault folder (a file you are "
                    "editing may be in the way: commit or move it and sync again); nothing is lost, "
                    "your commits are on the remote and here"
                )

    def _pull_fetched(self, git: Git, url: str, report: _Report) -> None:
        """Merge the last fetched commit into the vault (work tree, under the write lock), if not yet in."""
        if report.fetched is None:
            return
        with self.store.vault.lock():
            before = git.head()
            report.conflicts += self._integrate(git, url, report.fetched)
            if git.head() != before:
                report.pulled += _count(git, f"{before}..{report.fetched}" if before else report.fetched)

    def _give_way(self, git: Git, url: str, report: _Report) -> None:
        """The remote stayed busy until the deadline: merge the last fetch here; the next sync pushes."""
        self._pull_fetched(git, url, report)
        theirs = report.fetched or git.run("rev-parse", "-q", "--verify", TRACKING, check=False).strip()
        head = git.head()
        report.unpushed = _count(git, f"{theirs}..{head}" if theirs else head) if head else 0
        if report.unpushed:
            report.warnings.append(
                f"{url} was busy (other machines pushed {report.races} times while this one tried, for "
                f"{RACE_DEADLINE:g} s): {report.unpushed} commit(s) are kept here and go with the next sync"
            )

    def _commit_local_edits(self) -> tuple[str | None, list[str]]:
        """Commit changed notes and template files that are readable and hold no secret; list the rest."""
        catalog = self.store.fresh()
        changed = sorted({p for _, p in self.store.vault.git.status() if p.split("/", 1)[0] != CACHE})
        untracked = [p for p in changed if not synced_path(p)]
        for gone in set(self.store.refused) - set(changed):  # deleted, or reverted by the person
            self.store.refused.pop(gone, None)
        readable = [
            p
            for p in changed
            if synced_path(p) and catalog.problem(p) is None and not Path(p).name.endswith(".rlm-tmp")
        ]
        ready = self.store.screened(readable)
        commit = self.store.vault.git.commit_paths(ready, external_message(ready)) if ready else None
        self.store.pending.done(ready)
        return commit, untracked

    def _integrate(self, git: Git, url: str, theirs: str) -> list[str]:
        if git.run_status("merge-base", "--is-ancestor", theirs, "HEAD") == 0:
            return []  # nothing new over there
        if git.head() is None or git.run_status("merge-base", "--is-ancestor", "HEAD", theirs) == 0:
            with self._merging(theirs):
                git.run("merge", "-q", "--ff-only", theirs)
            return []
        with self._merging(theirs):
            proc_ok = _merge(git, theirs)
            conflicts = [] if proc_ok else keep_both_sides(git, self.store.vault.root)
            if git.merging():
                note = (
                    f" ({len(conflicts)} conflicting note(s) kept as *.conflict-* files)" if conflicts else ""
                )
                git.commit_merge(f"sync: merge {url}{note}")
        return conflicts

    @contextlib.contextmanager
    def _merging(self, theirs: str) -> Iterator[None]:
        """Marks a git merge in the work tree: one a kill interrupts (it may leave MERGE_HEAD, and the
        index locked) is undone at the next start or sync (`Vault.abort_interrupted_merge`)."""
        marker = self.store.vault.state / MERGING
        marker.write_text(theirs)
        with self.store.vault.git.owning_index():
            yield
        marker.unlink(missing_ok=True)


class _Report:
    """What one sync did, gathered across its attempts."""

    def __init__(self) -> None:
        self.pulled = 0
        self.pushed = 0
        self.conflicts: list[str] = []
        self.external: str | None = None
        self.untracked: list[str] = []
        self.refused: list[Problem] = []
        self.warnings: list[str] = []
        self.last_race = ""
        self.races = 0
        self.fetched: str | None = None  # the last fetched commit not yet in HEAD
        self.unpushed = 0

    def lost(self, race: _Race) -> None:
        """Note a push (or fetch) that lost the race to another machine."""
        said = [ln.strip() for ln in str(race).splitlines() if ln.strip()]
        self.last_race = next((ln for ln in said if "rejected" in ln), said[0] if said else "")
        self.races += 1

    def result(self, url: str, head: str | None) -> Synced:
        out: Synced = {
            "remote": url,
            "head": head,
            "pulled": self.pulled,
            "pushed": self.pushed,
            "conflicts": self.conflicts,
            "external": self.external,
            "untracked": self.untracked,
            "refused": self.refused,
        }
        if self.warnings:
            out["warnings"] = self.warnings
        if self.unpushed:
            out["unpushed"] = self.unpushed
        return out


TRACKING = f"refs/remotes/{REMOTE}/vault"


def _remote_branch(git: Git, url: str) -> str:
    """The remote branch the vault follows: the one chosen before, else the remote's default branch.

    Following the remote's HEAD keeps a fresh bare repository (HEAD -> master or main) consistent.
    """
    chosen = git.run("config", "--get", "rlm-vault.branch", check=False).strip()
    if chosen:
        return chosen
    try:
        out = git.run("ls-remote", "--symref", REMOTE, "HEAD", timeout=60)
    except GitError as exc:
        raise SyncError(f"cannot reach {url}: {_advice(exc)}; the local vault is unchanged") from exc
    line = next((ln for ln in out.splitlines() if ln.startswith("ref: refs/heads/")), "")
    branch = (
        line.removeprefix("ref: refs/heads/").split("\t")[0] or _unborn_branch(git, url) or DEFAULT_BRANCH
    )
    git.run("config", "rlm-vault.branch", branch)
    return branch


def _unborn_branch(git: Git, url: str) -> str:
    """The branch an empty remote's HEAD names: ls-remote does not say, but a clone of it learns it."""
    with tempfile.TemporaryDirectory(dir=git.root / CACHE) as scratch:
        try:
            git.run("clone", "-q", "--no-checkout", url, scratch, timeout=60)
            return Git(Path(scratch)).run("symbolic-ref", "--short", "HEAD").strip()
        except GitError:
            return ""


def _fetch(git: Git, url: str, branch: str) -> bool:
    """Fetch the remote branch into TRACKING (no lock held); False while the remote has no branch."""
    try:
        git.run(
            "fetch",
            "-q",
            "--no-tags",
            "--no-write-fetch-head",
            "--no-auto-maintenance",
            REMOTE,
            f"+refs/heads/{branch}:{TRACKING}",
            timeout=NETWORK_TIMEOUT,
        )
    except GitError as exc:
        if "couldn't find remote ref" in exc.stderr:
            return False  # an empty remote has no branch yet
        if any(sign in exc.stderr for sign in RACE_SIGNS):
            raise _Race(exc.stderr.strip()) from exc
        raise SyncError(f"cannot fetch from {url}: {_advice(exc)}; the local vault is unchanged") from exc
    return True


def _look(git: Git) -> tuple[str | None, str | None, bool]:
    """HEAD's commit, the fetched commit, and whether the latter's tree has `.rlm`: one git process.

    Commits, not refs, from here on: a write may move HEAD while the round runs.
    """
    asked = f"HEAD^{{commit}}\n{TRACKING}^{{commit}}\n{TRACKING}:{CACHE}\n"
    found = [ln.split() for ln in git.run("cat-file", "--batch-check", input=asked).splitlines()]
    head, theirs, cached = (words[0] if len(words) == 3 else None for words in found)
    return head, theirs, cached is not None


def _distance(git: Git, head: str | None, theirs: str | None) -> tuple[int, int]:
    """(commits only in `head`, commits only in `theirs`): one git process."""
    if head is None or theirs is None:
        return (_count(git, head) if head else 0), (_count(git, theirs) if theirs else 0)
    if head == theirs:
        return 0, 0
    left, right = git.run("rev-list", "--count", "--left-right", f"{head}...{theirs}").split()
    return int(left), int(right)


def _merge_in_memory(git: Git, url: str, head: str, theirs: str) -> str | None:
    """The merge commit of `head` and `theirs`, built without touching the work tree or the index.

    None when the notes conflict (or this git has no `merge-tree --write-tree`, before 2.38): the
    caller merges in the work tree, where both sides are kept.
    """
    try:
        out = git.run("merge-tree", "--write-tree", "--allow-unrelated-histories", head, theirs)
    except GitError:
        return None  # exit 1: conflicts; anything else: merge-tree cannot do it here
    tree = out.split("\n", 1)[0].strip()
    message = f"sync: merge {url}\n"
    env = git.identity_env()
    return git.run("commit-tree", tree, "-p", head, "-p", theirs, "-F", "-", input=message, env=env).strip()


def _without_cache(git: Git, commit: str, warnings: list[str]) -> str:
    """`commit`, or a child of it without the top-level `.rlm` entry when the remote tracks one.

    Git overwrites ignored files when it checks out tracked ones, so a tracked `.rlm/...` (or a `.rlm`
    symlink) would replace this machine's caches and state. The child drops it; merging the child keeps
    the remote's history and never writes `.rlm`.
    """
    entries = [e for e in git.run("ls-tree", "-z", commit).split("\0") if e]
    kept = [e for e in entries if e.split("\t", 1)[-1] != CACHE]
    if len(kept) == len(entries):
        return commit
    tree = git.run("mktree", "-z", input="\0".join(kept) + "\0").strip()
    message = "sync: drop .rlm from the remote's tree (machine-local caches are never synced)"
    # Dated like `commit`, so this machine makes the same child from it again (no merge of twins).
    date = git.run("log", "-1", "--format=%cI", commit).strip()
    env = {**git.identity_env(), "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    child = git.run("commit-tree", tree, "-p", commit, "-m", message, env=env).strip()
    warnings.append(
        f"the remote's commit {commit[:10]} tracks {CACHE} (machine-local caches); it was not merged and "
        "is removed from the remote with this sync's push"
    )
    return child


def _merge(git: Git, theirs: str) -> bool:
    code = git.run_status(
        "merge", "--no-ff", "--no-commit", "--allow-unrelated-histories", "-q", theirs, env=git.identity_env()
    )
    if code != 0 and not git.merging():
        raise SyncError(
            "git could not merge the remote changes (a file you are editing may be in the way: "
            "commit or move it and sync again); the local vault is unchanged"
        )
    return code == 0


def keep_both_sides(git: Git, root: Path) -> list[str]:
    """Resolve every conflicted path so nothing is lost; returns the conflict files written."""
    stages: dict[str, set[int]] = {}
    for line in git.run("ls-files", "-u", "-z").split("\0"):
        if "\t" in line:
            meta, path = line.split("\t", 1)
            stages.setdefault(path, set()).add(int(meta.split()[2]))
    written: list[str] = []
    stamp = _stamp()
    for path, present in sorted(stages.items()):
        if 2 in present:
            git.run("checkout", "--ours", "--", path)
            if 3 in present:
                sibling = _free_name(root, path, stamp, {*stages, *written})
                (root / sibling).parent.mkdir(parents=True, exist_ok=True)
                (root / sibling).write_bytes(git.show_stage(3, path))
                git.run("add", "--", sibling)
                written.append(sibling)
        else:
            git.run("checkout", "--theirs", "--", path)
        git.run("add", "--", path)
    return written


def _free_name(root: Path, path: str, stamp: str, taken: set[str]) -> str:
    """A conflict file name for `path` that no file in the vault and no path of this merge has.

    Two merges in one second (a retried sync, or machines with one host name) would otherwise write
    the second incoming version over the conflict file the first one kept.
    """
    sibling, n = conflict_name(path, stamp), 1
    while sibling in taken or (root / sibling).exists() or (root / sibling).is_symlink():
        n += 1
        sibling = conflict_name(path, f"{stamp}-{n}")
    return sibling


def conflict_name(path: str, stamp: str) -> str:
    """`insights/x.md` -> `insights/x.conflict-<host>-<time>.md` (same for .md.gz)."""
    folder, _, name = path.rpartition("/")
    stem, dot, ext = name.partition(".")
    host = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in socket.gethostname())[:30] or "host"
    new = f"{stem}.conflict-{host}-{stamp}{dot}{ext}"
    return f"{folder}/{new}" if folder else new


def _stamp() -> str:
    from datetime import datetime

    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _count(git: Git, spec: str) -> int:
    return int(git.run("rev-list", "--count", spec, check=False).strip() or 0)


def _push(git: Git, url: str, branch: str, commit: str) -> None:
    """Push `commit` to the remote branch (no lock held); `_Race` when another push won."""
    try:
        git.run("push", "-q", REMOTE, f"{commit}:refs/heads/{branch}", timeout=NETWORK_TIMEOUT)
    except GitError as exc:
        if any(sign in exc.stderr for sign in RACE_SIGNS):
            raise _Race(exc.stderr.strip()) from exc
        raise SyncError(
            f"cannot push to {url}: {_advice(exc)}; your commits are kept locally, run sync again"
        ) from exc
    git.run("update-ref", TRACKING, commit, check=False)


def _backoff(losses: int) -> float:
    """Seconds to wait after the `losses`-th lost race of one sync: random, shorter the more it lost.

    Seniority instead of exponential backoff: a machine that just lost for the first time steps back
    for up to BACKOFF_CAP seconds, one that lost many times retries almost at once, so the syncs that
    waited longest go first and no machine starves while fresh syncs keep arriving. The randomness
    keeps machines with equal luck from retrying in step.
    """
    return random.uniform(0.0, max(BACKOFF_BASE, BACKOFF_CAP / max(1, losses)))


def _advice(exc: GitError) -> str:
    """git's own words, and what to do about them."""
    said = " ".join(exc.stderr.split())[:300] or str(exc)
    low = said.lower()
    if any(w in low for w in ("permission denied", "authentication", "could not read username", "403")):
        return f"{said} (check this machine's access: its ssh key or token must be allowed to read and write)"
    if any(
        w in low for w in ("could not resolve", "connection refused", "timed out", "network is unreachable")
    ):
        return f"{said} (the remote is unreachable: check the network, then sync again)"
    if "does not appear to be a git repository" in low or "not found" in low:
        return f"{said} (check the URL: `rlm-vault remote set URL`)"
    return said


def remote_configured(vault_dir: Path) -> bool:
    """Whether the vault at `vault_dir` has a remote, read from its git config (no git process at start-up
    for a plain `.git` folder; a linked worktree or separate git dir asks git where the config is)."""
    config = vault_dir / ".git" / "config"
    if not config.is_file():
        try:
            config = Git(vault_dir).layout().common_dir / "config"
        except GitError:
            return False
    try:
        text = config.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return f'[remote "{REMOTE}"]' in text


def clone_or_create(root: Path, url: str) -> str:
    """For `init --remote`: clone a remote that has a vault, else leave the caller to create one.

    Returns "cloned", "empty" (remote reachable, no branch yet) or "exists" (the folder is a vault).
    """
    if (root / ".git").exists():
        return "exists"
    probe = Git(root.parent if root.parent.exists() else Path.cwd())
    try:
        heads = probe.run("ls-remote", "--heads", url, timeout=60)
    except GitError as exc:
        raise SyncError(f"cannot reach {url}: {exc.stderr or exc}; nothing was created") from exc
    if "refs/heads/" not in heads:
        return "empty"
    if root.exists() and any(root.iterdir()):
        return "empty"  # a folder with files: create the vault there and merge at the first sync
    root.parent.mkdir(parents=True, exist_ok=True)
    probe.run("clone", "-q", "--no-checkout", url, str(root), timeout=300)
    clone = Git(root)
    head = clone.head()
    if head:  # the files come out only once a tracked .rlm is dropped (the first sync pushes that)
        clean = _without_cache(clone, head, [])
        if clean != head:
            clone.run("update-ref", "HEAD", clean)
        clone.run("reset", "-q", "--hard", "HEAD")
    return "cloned"
