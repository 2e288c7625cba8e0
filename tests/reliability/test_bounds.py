"""Hostile or unlucky inputs stay bounded: huge regexes, long fuzzy patterns, FIFOs and devices as transcripts,
records nested 200,000 deep or 60 MB large, YAML nested 5,000 deep, a full disk, a read-only vault and a
damaged git. Each is refused or skipped with a one-line error that says what would be accepted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from relkit import commit_count

from rlm_vault import markdown
from rlm_vault.config import Config
from rlm_vault.errors import GitError, InvalidInput, InvalidNote, StorageError, VaultError
from rlm_vault.query import MAX_PATTERN_CHARS, check_regex
from rlm_vault.service import MemoryService, open_service
from rlm_vault.transcript import parse_transcript, read_transcript
from rlm_vault.vault import Vault

pytestmark = pytest.mark.reliability


@pytest.fixture
def service(tmp_path: Path) -> MemoryService:
    config = Config(vault=tmp_path / "vault", project="Bounds", embedding_model="none")
    svc = open_service(config)
    svc.chunk("the deploy runs from the local machine to the VPS", project="Bounds")
    return svc


# -- regex and fuzzy grep (items 9, 10) ---------------------------------------------------------------------


def test_a_regex_that_would_unroll_to_gigabytes_is_refused_before_compiling() -> None:
    # Run in a child with a 300 MB address-space cap: compiling this pattern used to allocate gigabytes.
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (300 * 2**20, 300 * 2**20))\n"
        "from rlm_vault.query import regex_lines\n"
        "from rlm_vault.errors import InvalidInput\n"
        "try:\n"
        "    regex_lines([], '((a{1000}){1000}){1000}', 10, 2.0)\n"
        "except InvalidInput as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "1,000,000,000" in done.stdout and "counts up to 1000" in done.stdout


@pytest.mark.parametrize(
    "pattern",
    ["((a{1000}){1000}){1000}", "(a{200}){200}", "a{5000}", "(x{100}y{100}){120}", "a{1000}" * 25],
)
def test_patterns_that_unroll_too_far_are_refused(service: MemoryService, pattern: str) -> None:
    with pytest.raises(InvalidInput, match="counts up to 1000"):
        service.grep(pattern)


@pytest.mark.parametrize(
    "pattern", [r"deploy.*VPS", r"\d{4}-\d{2}-\d{2}", "(ab){3}c{2,5}", "[{]{10}", "a{1000}"]
)
def test_ordinary_patterns_pass_the_check(service: MemoryService, pattern: str) -> None:
    assert check_regex(pattern) == pattern
    service.grep(pattern)


def test_a_long_regex_is_refused_naming_the_limit(service: MemoryService) -> None:
    with pytest.raises(InvalidInput, match=f"the limit is {MAX_PATTERN_CHARS}"):
        service.grep("a" * (MAX_PATTERN_CHARS + 1))


def test_a_long_fuzzy_pattern_is_refused_and_a_short_one_works(service: MemoryService) -> None:
    with pytest.raises(InvalidInput, match="200 characters and 20 words"):
        service.grep("deploy VPS " * 1_200, fuzzy=True)  # 12 KB: this took 15 s
    with pytest.raises(InvalidInput, match="20 words"):
        service.grep(" ".join(["a"] * 25), fuzzy=True)
    assert service.grep("the deplloy runs", fuzzy=True)["matches"]


# -- hook inputs that are not regular files (item 11) --------------------------------------------------------


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "transcript.jsonl"
    os.mkfifo(path)
    yield path
    # Unblock anything still waiting on the FIFO so a failure cannot hang the suite.
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    os.close(fd)


def _hook(event: str, payload: dict[str, str], vault: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rlm_vault", "hook", event],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=30,  # the FIFO used to hang the hook until it was killed
        env={**os.environ, "RLM_VAULT_DIR": str(vault)},
        check=False,
    )


@pytest.mark.parametrize("event", ["session-start", "pre-compact"])
@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_hooks_never_open_a_transcript_that_is_not_a_regular_file(
    service: MemoryService, fifo: Path, tmp_path: Path, event: str, kind: str
) -> None:
    path = {"fifo": fifo, "device": Path("/dev/zero"), "folder": tmp_path}[kind]
    payload = {"session_id": "s1", "transcript_path": str(path), "source": "resume", "cwd": str(tmp_path)}
    before = commit_count(service.vault.root)
    done = _hook(event, payload, service.vault.root)
    assert done.returncode == 0
    assert commit_count(service.vault.root) == before


def test_read_transcript_refuses_a_fifo_without_waiting(fifo: Path) -> None:
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(read_transcript(fifo)), daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and result and getattr(result[0], "turns", None) == 0


# -- transcript records (item 12) ----------------------------------------------------------------------------


def _user(text: str) -> str:
    return json.dumps({"type": "user", "uuid": text[:8], "message": {"role": "user", "content": text}})


def test_one_record_nested_200000_deep_is_skipped_not_the_whole_snapshot() -> None:
    deep = '{"type":"user","message":{"content":' + "[" * 200_000 + "]" * 200_000 + "}}"
    convo = parse_transcript("\n".join([_user("first prompt"), deep, _user("last prompt")]))
    assert convo.turns == 1 and "first prompt" in convo.text and "last prompt" in convo.text
    assert convo.skipped == 1 and "1 transcript record(s) left out" in convo.text


def test_a_60_mb_record_is_skipped_with_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    big = json.dumps({"type": "user", "message": {"content": "é" * 30_000_000}}, ensure_ascii=False)  # 60 MB
    path.write_text("\n".join([_user("before"), big, _user("after")]), encoding="utf-8")
    code = (
        "import resource, sys\n"
        "from rlm_vault.transcript import read_transcript\n"
        f"c = read_transcript({str(path)!r})\n"
        "print(c.skipped, c.turns, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    skipped, turns, peak_mb = map(int, done.stdout.split())
    assert (skipped, turns) == (1, 1)
    assert peak_mb < 400, peak_mb  # it peaked at 992 MB when the record was parsed


# -- YAML from outside (item 12) ------------------------------------------------------------------------------


def test_domains_yaml_nested_5000_deep_gives_no_domains_and_a_reason(service: MemoryService) -> None:
    (service.vault.root / "domains.yaml").write_text("domains: " + "[" * 5_000 + "]" * 5_000 + "\n")
    assert isinstance(service.domains()["domains"], list)
    assert service.vault.read_domains() == []
    assert "nest" in (service.vault.domains_problem() or "")  # ours, or libyaml's own depth limit


def test_domains_yaml_as_a_fifo_is_not_waited_on(service: MemoryService) -> None:
    path = service.vault.root / "domains.yaml"
    path.unlink()
    os.mkfifo(path)
    try:
        assert service.vault.read_domains() == []
        assert "not a regular file" in (service.vault.domains_problem() or "")
    finally:
        path.unlink()


@pytest.mark.parametrize(
    "front",
    [
        "tags: " + "[" * 5_000 + "]" * 5_000,
        "tags: " + "[" * 30_000 + "]" * 30_000,
        "a: " + "{b: " * 5_000 + "1" + "}" * 5_000,
    ],
)
def test_a_hand_written_note_with_deep_yaml_is_a_problem_not_a_crash(
    service: MemoryService, front: str
) -> None:
    with pytest.raises(InvalidNote, match="nest"):
        markdown.parse(f"---\n{front}\n---\nbody\n", "insights/deep.md")
    (service.vault.root / "insights" / "deep.md").write_text(f"---\n{front}\n---\nbody\n")
    problems = service.status()["problems"]
    assert any(p["path"] == "insights/deep.md" for p in problems), problems


# -- disk full, read-only, damaged git (item 14) -------------------------------------------------------------


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    _mount_tmpfs(mount, "2m")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text, text
    return text


def test_a_full_disk_is_one_line_that_says_so(small_disk: Path) -> None:
    config = Config(vault=small_disk / "vault", project="Full", embedding_model="none")
    svc = open_service(config)
    svc.remember("a first memory that fits")
    before = commit_count(config.vault)
    filler = small_disk / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, check=False)
    with pytest.raises((StorageError, GitError)) as caught:
        for n in range(50):
            svc.remember(f"memory number {n} " + "text " * 2_000)
    assert "full" in _one_line(caught.value) and "free some space" in str(caught.value)
    filler.unlink()
    assert commit_count(config.vault) >= before
    svc.remember("it works again once there is space")


def test_a_read_only_vault_is_one_line_that_says_so(small_disk: Path) -> None:
    config = Config(vault=small_disk / "vault", project="RO", embedding_model="none")
    svc = open_service(config)
    svc.remember("written before the remount")
    done = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip("cannot remount read-only")
    with pytest.raises(VaultError) as caught:
        svc.remember("refused: the disk is read-only")
    assert isinstance(caught.value, (StorageError, GitError))
    assert "read-only" in _one_line(caught.value)


def test_the_cli_prints_one_line_for_a_read_only_vault(small_disk: Path) -> None:
    vault = small_disk / "vault"
    Vault.open(vault)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    done = subprocess.run(
        [sys.executable, "-m", "rlm_vault", "remember", "a fact"],
        capture_output=True,
        text=True,
        env={**os.environ, "RLM_VAULT_DIR": str(vault), "RLM_VAULT_RAISE_ERRORS": ""},
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "read-only" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda git: (git / "index").write_bytes(b"garbage that is not an index"), "index"),
        (lambda git: [p.write_bytes(b"") for p in (git / "objects").rglob("*") if p.is_file()], "object"),
    ],
    ids=["index-corrupt", "objects-empty"],
)
def test_a_damaged_git_is_a_git_error_that_points_to_doctor(
    tmp_path: Path, damage: object, said: str
) -> None:
    config = Config(vault=tmp_path / "vault", project="Git", embedding_model="none")
    svc = open_service(config)
    svc.remember("before the damage")
    for p in (config.vault / ".git" / "objects").rglob("*"):
        if p.is_file():
            p.chmod(0o644)
    damage(config.vault / ".git")  # type: ignore[operator]
    with pytest.raises(GitError) as caught:
        svc.vault.git.run("status")
    assert "damaged" in _one_line(caught.value) and "rlm-vault doctor" in str(caught.value)
