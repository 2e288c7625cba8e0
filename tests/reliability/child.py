"""A writer the crash tests SIGKILL: it reports each write on stdout the moment the call returns.

    python child.py write <n>      alternate rlm_chunk and rlm_remember, n of each at most
    python child.py archive        one retention run (the parent filled the vault with old chunks)
    python child.py sync <n>       a chunk then a sync with the remote, n times
    python child.py die-before-commit   one chunk whose process dies after the file, before the commit
    python child.py team <n> <every> [id]   n insights, a sync after every `every` of them (one machine of
                                       a team); with an id, that note is also edited once

Each returned call prints one line `<kind> <id> <path>` and flushes, so the parent knows exactly which
writes were acknowledged before the kill.
"""

from __future__ import annotations

import sys

from rlm_vault.config import Config
from rlm_vault.service import open_service


def say(*words: object) -> None:
    sys.stdout.write(" ".join(str(w) for w in words) + "\n")
    sys.stdout.flush()


def die_before_commit() -> None:
    """Exit abruptly (no cleanup, no rollback) at the moment a chunk would be committed."""
    import os

    from rlm_vault.git import Git

    real = Git.commit_paths

    def commit_paths(self: Git, paths: list[str], message: str, own: bool = False) -> str | None:
        if message.startswith("chunk:"):
            os._exit(137)
        return real(self, paths, message, own)

    Git.commit_paths = commit_paths  # type: ignore[method-assign]


def main(mode: str, count: int) -> None:
    if mode == "die-before-commit":
        die_before_commit()
    service = open_service(Config.from_env())
    say("ready", "-", "-")
    tag = f"{mode}-{service.vault.git.head()}"
    if mode == "write":
        for i in range(count):
            body = f"crash body {tag} {i}\n" + "filler line of text\n" * (i % 17 + 1)
            r = service.chunk(body, summary=f"crash chunk {i}", project="CrashProj")
            say("chunk", r["id"], r["path"])
            r = service.remember(f"crash insight {tag} number {i}", category="fact")
            say("insight", r["id"], r["path"])
    elif mode == "die-before-commit":
        service.chunk("written, never committed: the process died first", project="CrashProj")
    elif mode == "archive":
        from rlm_vault.vault import Transaction

        delete = Transaction.delete

        def reported(tx: Transaction, relpath: str) -> None:  # one line per chunk moved, to kill mid-run
            delete(tx, relpath)
            say("moved", relpath.rsplit("/", 1)[-1], "-")

        Transaction.delete = reported  # type: ignore[method-assign]
        r = service.retention_run(archive=True)
        say("archived", len(r["archived"]), r["commit"])
    elif mode == "sync":
        for i in range(count):
            r = service.chunk(f"sync body {tag} {i}", summary=f"sync chunk {i}", project="CrashProj")
            say("chunk", r["id"], r["path"])
            service.sync()
            say("synced", r["id"], "-")
    elif mode == "team":
        from rlm_vault.errors import VaultError

        every = int(sys.argv[3])
        shared = sys.argv[4] if len(sys.argv) > 4 else ""  # a note every machine edits once
        for i in range(count):
            r = service.remember(f"{service.vault.root.name} team note {i} {tag}", category="fact")
            say("insight", r["id"], r["path"])
            if shared and i == 1:
                service.update(shared, content=f"shared note as {service.vault.root.name} wrote it")
                say("edited", shared, "-")
            if (i + 1) % every == 0:
                try:
                    result = service.sync()
                    say("syncbusy" if result.get("unpushed") else "synced", r["id"], "-")
                except VaultError as exc:
                    say("syncfailed", r["id"], "-")
                    sys.stderr.write(f"{exc}\n")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
