"""Read-modify-write of a note under the write lock: concurrent updates compose, a forgotten note stays
forgotten, in threads of one server and in separate processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from rlm_vault.config import Config
from rlm_vault.errors import NotFound
from rlm_vault.service import open_service

pytestmark = pytest.mark.reliability

ROUNDS = 20


def config_for(vault: Path) -> Config:
    return Config(vault=vault, project="Race", embedding_model="none", scan_interval=0.0)


def run_together(*jobs: object) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(jobs))

    def wrap(job: object) -> None:
        barrier.wait()
        try:
            job()  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return errors


def test_disjoint_updates_in_threads_both_land(tmp_path: Path) -> None:
    service = open_service(config_for(tmp_path / "v"))
    note = service.remember("version 0", importance="low")["id"]
    order = ["low", "medium", "high"]

    def contents() -> None:
        for n in range(1, ROUNDS + 1):
            service.update(note, content=f"version {n}")

    def importances() -> None:
        for n in range(1, ROUNDS + 1):
            service.update(note, importance=order[n % 3])

    assert run_together(contents, importances) == []
    final = service.insight(note)
    assert (final.content, final.importance) == (f"version {ROUNDS}", order[ROUNDS % 3])


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from rlm_vault.config import Config
    from rlm_vault.service import open_service

    vault, note, field, rounds = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    service = open_service(Config(vault=vault, project="Race", embedding_model="none", scan_interval=0.0))
    order = ["low", "medium", "high"]
    for n in range(1, rounds + 1):
        if field == "content":
            service.update(note, content=f"version {n}")
        else:
            service.update(note, importance=order[n % 3])
        print(n, flush=True)
    """
)


def test_disjoint_updates_in_two_processes_both_land(tmp_path: Path) -> None:
    vault = tmp_path / "v"
    note = open_service(config_for(vault)).remember("version 0", importance="low")["id"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(vault), note, field, str(ROUNDS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for field in ("content", "importance")
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        assert out.split()[-1] == str(ROUNDS)  # every update acknowledged
    final = open_service(config_for(vault)).insight(note)
    assert (final.content, final.importance) == (f"version {ROUNDS}", ["low", "medium", "high"][ROUNDS % 3])
    log = subprocess.run(
        ["git", "-C", str(vault), "log", "-p", "--format=%s", "--", f"insights/{note}.md"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert all(f"+version {n}\n" in log for n in range(1, ROUNDS + 1))  # no acknowledged content lost


def test_forget_racing_update_never_brings_the_memory_back(tmp_path: Path) -> None:
    service = open_service(config_for(tmp_path / "v"))
    for n in range(ROUNDS):
        note = service.remember(f"Wrong fact number {n}.")["id"]
        results: dict[str, object] = {}

        def forget(note: str = note, results: dict[str, object] = results) -> None:
            results["forget"] = service.forget(note)

        def update(note: str = note, results: dict[str, object] = results) -> None:
            try:
                results["update"] = service.update(note, importance="high")
            except NotFound as exc:
                results["update"] = exc

        assert run_together(forget, update) == []
        assert results["forget"]["removed"] is True  # type: ignore[index]
        assert not (service.vault.root / "insights" / f"{note}.md").exists()
        with pytest.raises(NotFound):
            service.update(note, content="again")
