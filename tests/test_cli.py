"""The `rlm-vault` command: text and --json output, one-line errors, the installed console script."""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import commit_count, git_log, git_status

from rlm_vault.cli import cli_words, command_of, main
from rlm_vault.errors import InvalidInput, NotFound
from rlm_vault.vault import MARKER, Vault


def vault_path() -> Path:
    return Path(os.environ["RLM_VAULT_DIR"])


@pytest.fixture
def vault() -> Path:
    """The vault RLM_VAULT_DIR names, made as `rlm-vault init` makes it."""
    Vault.init(vault_path())
    return vault_path()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_init_creates_the_vault_at_rlm_vault_dir(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "init")
    assert code == 0 and err == ""
    assert out.startswith(f"Vault ready at {vault_path()}")
    assert git_log(vault_path()) == ["init: new rlm-vault"]
    again = run_json(capsys, "init")
    assert again["vault"] == str(vault_path())
    assert len(again["head"]) == 40
    assert commit_count(vault_path()) == 1


def test_init_at_an_explicit_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    result = run_json(capsys, "init", str(target))
    assert result["vault"] == str(target)
    assert (target / "domains.yaml").is_file()
    assert not vault_path().exists()


def test_remember_then_recall_text_and_json(vault: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "remember",
        "Always deploy LOCAL -> VPS",
        "--category",
        "decision",
        "--importance",
        "critical",
        "--tags",
        "deploy,ops",
    )
    assert code == 0
    assert out.startswith("Remembered ") and "(insights/" in out
    note_id = out.split()[1]
    assert git_log(vault_path())[0] == f"remember: {note_id} (decision/critical) Always deploy LOCAL -> VPS"

    code, out, _ = run(capsys, "recall", "deploy")
    assert code == 0
    assert out.splitlines() == [
        "1 insight(s):",
        f"- {note_id} (decision/critical) [deploy, ops]: Always deploy LOCAL -> VPS",
    ]

    result = run_json(capsys, "recall", "deploy", "--importance", "critical")
    assert [(i["id"], i["category"], i["tags"]) for i in result["insights"]] == [
        (note_id, "decision", ["deploy", "ops"])
    ]
    assert run_json(capsys, "recall", "nothing-matches")["insights"] == []
    assert run(capsys, "recall", "nothing-matches")[1].strip() == "No insight matches."


def test_remember_json_and_unicode_output(vault: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_json(capsys, "remember", "L'équipe préfère デプロイ le lundi", "--project", "Mon-App")
    assert (vault_path() / result["path"]).is_file()
    assert result["path"] == f"insights/{result['id']}.md"
    _code, out, _ = run(capsys, "recall", "prefere")
    assert "L'équipe préfère デプロイ le lundi" in out and "@Mon-App" in out


def test_remember_reads_stdin_with_dash(
    vault: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("piped insight\nsecond line\n"))
    result = run_json(capsys, "remember", "-")
    assert (vault_path() / result["path"]).read_text().endswith("---\npiped insight\nsecond line\n")


def test_status_text_and_json(vault: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "remember", "one")
    run(capsys, "remember", "two")
    (vault_path() / "insights" / "broken.md").write_text("---\nkey: [unclosed\n---\nbody\n")
    status = run_json(capsys, "status")
    assert (status["insights"], status["chunks"], status["archived"]) == (2, 0, 0)
    assert status["vault"] == str(vault_path())
    assert status["problems"] == [{"path": "insights/broken.md", "reason": status["problems"][0]["reason"]}]
    code, out, _ = run(capsys, "status")
    assert code == 0
    assert out.splitlines()[1] == "2 insights, 0 chunks, 0 archived"
    assert any(line.startswith("Problem: insights/broken.md: ") for line in out.splitlines())
    assert status["head"][:12] in out.splitlines()[0]


def test_search_and_peek(vault: Path, capsys: pytest.CaptureFixture[str]) -> None:
    note_id = run_json(capsys, "remember", "Kubernetes upgrade runbook\nstep one\nstep two")["id"]
    results = run_json(capsys, "search", "kubernetes")["results"]
    assert [(r["id"], r["kind"]) for r in results] == [(note_id, "insight")]
    _, out, _ = run(capsys, "search", "kubernetes")
    assert out.startswith(f"1. [insight] {note_id} (")

    peek = run_json(capsys, "peek", note_id, "--start", "1", "--end", "2")
    assert (peek["content"], peek["start"], peek["end"], peek["total_lines"]) == ("step one", 1, 2, 3)
    _code, out, _ = run(capsys, "peek", note_id, "--start", "-1")
    assert out.splitlines() == [f"{note_id} lines 2-3 of 3:", "step two"]
    assert run(capsys, "search", "zeppelin")[1].strip() == "Nothing found."


def test_reads_from_the_cli_make_no_commit(vault: Path, capsys: pytest.CaptureFixture[str]) -> None:
    note_id = run_json(capsys, "remember", "read only check")["id"]
    before = commit_count(vault_path())
    for argv in (["status"], ["recall", "check"], ["search", "check"], ["peek", note_id]):
        assert run(capsys, *argv)[0] == 0
    assert commit_count(vault_path()) == before
    assert git_status(vault_path()) == []


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["remember", "x", "--category", "bogus"], "decision, fact, preference"),
        (["remember", "x", "--importance", "urgent"], "critical, high, medium, low"),
        (["remember", "x", "--project", "../evil"], "letters, digits"),
        (["remember", "   "], "empty"),
        (["peek", "2026-01-01-no-such-note"], "no chunk or insight"),
        (["recall", "x", "--limit", "0"], "limit"),
        (["search", " "], "query is empty"),
    ],
)
def test_errors_exit_1_with_one_line_on_stderr(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str], needle: str
) -> None:
    monkeypatch.delenv("RLM_VAULT_RAISE_ERRORS", raising=False)
    run(capsys, "init")
    before = commit_count(vault_path())
    code, out, err = run(capsys, *argv)
    assert code == 1
    assert out == ""
    assert err.startswith("rlm-vault: ") and err.endswith("\n")
    assert err.count("\n") == 1
    assert needle in err
    assert "Traceback" not in err
    assert commit_count(vault_path()) == before


def test_errors_are_raised_when_asked(vault: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InvalidInput):
        main(["remember", "x", "--category", "bogus"])
    with pytest.raises(NotFound):
        main(["peek", "nope"])


def _console_script() -> str:
    found = shutil.which("rlm-vault") or str(Path(sys.executable).parent / "rlm-vault")
    assert Path(found).is_file(), "the rlm-vault console script is not installed"
    return found


def test_installed_console_script(tmp_path: Path) -> None:
    script = _console_script()
    vault = tmp_path / "script-vault"
    env = {**os.environ, "RLM_VAULT_DIR": str(vault)}
    env.pop("RLM_VAULT_RAISE_ERRORS", None)

    def call(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [script, *argv], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False
        )

    refused = call("remember", "before the vault exists")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert f"rlm-vault init {vault}" in refused.stderr and not vault.exists()
    assert call("init").returncode == 0
    made = call("remember", "saved from a real shell", "--category", "fact", "--json")
    assert made.returncode == 0, made.stderr
    note_id = json.loads(made.stdout)["id"]
    assert (vault / "insights" / f"{note_id}.md").is_file()
    assert git_log(vault)[0] == f"remember: {note_id} (fact/medium) saved from a real shell"

    status = call("status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["insights"] == 1

    failed = call("peek", "no-such-id")
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert failed.stderr.startswith("rlm-vault: ") and failed.stderr.count("\n") == 1


# ------------------------------------------------------------------ parity with the MCP tools


def _tools(sync_tool: bool = True) -> dict[str, dict[str, Any]]:
    """tools/list of a server on the vault the CLI uses: name -> input schema properties."""
    import anyio
    from mcp import Client

    from rlm_vault.config import Config
    from rlm_vault.mcp_server import build_server
    from rlm_vault.service import open_service

    async def listed() -> dict[str, dict[str, Any]]:
        service = open_service(Config.from_env())
        async with Client(build_server(lambda: service, sync_tool=sync_tool)) as client:
            return {t.name: t.input_schema["properties"] for t in (await client.list_tools()).tools}

    return anyio.run(listed)


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    from rlm_vault.cli import _parser

    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.usefixtures("vault")
def test_every_tool_has_a_command_with_the_same_parameters() -> None:
    commands = _subcommands()
    for tool, params in _tools().items():
        name = command_of(tool).split()[0]
        assert name in commands, f"{tool} has no `rlm-vault {name}`"
        options = {a.dest: a for a in commands[name]._actions}
        for param in params:
            assert param in options, f"`rlm-vault {name}` lacks {param} of {tool}"
            flags = options[param].option_strings
            assert not flags or f"--{param.replace('_', '-')}" in flags, (name, param, flags)


def test_every_command_argument_has_help() -> None:
    for name, sub in _subcommands().items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"`rlm-vault {name}` {action.dest} has no help"
    helped = subprocess.run(
        [sys.executable, "-m", "rlm_vault", "remember", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "decision, fact, preference, finding, todo or general" in " ".join(helped.split())


@pytest.mark.usefixtures("vault")
def test_json_output_is_the_tools_structured_result(capsys: pytest.CaptureFixture[str]) -> None:
    import anyio
    from mcp import Client

    from rlm_vault.config import Config
    from rlm_vault.mcp_server import build_server
    from rlm_vault.service import open_service

    note = run_json(capsys, "remember", "Use ruff for lint", "--category", "preference", "--tags", "py")
    chunk = run_json(capsys, "chunk", "we tuned the retry policy\nbackoff 2s", "--domain", "feature")
    cases = [
        ("rlm_recall", {"query": "ruff"}, ["recall", "ruff"]),
        ("rlm_list_chunks", {"limit": 5}, ["list-chunks", "--limit", "5"]),
        ("rlm_peek", {"chunk_id": chunk["id"], "start": 1}, ["peek", chunk["id"], "--start", "1"]),
        ("rlm_grep", {"pattern": "retry", "fuzzy": True}, ["grep", "retry", "--fuzzy"]),
        ("rlm_sessions", {"domain": "feature"}, ["sessions", "--domain", "feature"]),
        ("rlm_domains", {}, ["domains"]),
        ("rlm_history", {"id": note["id"]}, ["history", note["id"]]),
        (
            "rlm_search",
            {"query": "retry policy", "include_insights": False},
            ["search", "retry policy", "--no-include-insights"],
        ),
        ("rlm_retention_preview", {}, ["retention"]),
        ("rlm_status", {}, ["status"]),
    ]

    async def tool_results() -> list[Any]:
        service = open_service(Config.from_env())
        async with Client(build_server(lambda: service)) as client:
            return [(await client.call_tool(t, a)).structured_content for t, a, _ in cases]

    for (tool, _, argv), expected in zip(cases, anyio.run(tool_results), strict=True):
        assert run_json(capsys, *argv) == expected, tool


# ------------------------------------------------------------------ the new commands


@pytest.mark.usefixtures("vault")
def test_insight_and_chunk_commands(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    note = run_json(capsys, "remember", "Port is 8080", "--category", "fact")
    updated = run_json(capsys, "update", note["id"], "--content", "Port is 9090", "--tags", "ops,net")
    assert updated["changed"] is True
    assert run_json(capsys, "recall", "port")["insights"][0]["tags"] == ["ops", "net"]

    monkeypatch.setattr(sys, "stdin", io.StringIO("piped chunk about herons\nline two\n"))
    chunk = run_json(
        capsys, "chunk", "-", "--summary", "herons", "--ticket", "BIRD-1", "--chunk-type", "debug"
    )
    assert chunk["path"].startswith("chunks/") and "BIRD-1" in chunk["id"]
    rows = run_json(capsys, "list-chunks")["chunks"]
    assert [(r["id"], r["summary"], r["chunk_type"]) for r in rows] == [(chunk["id"], "herons", "debug")]
    assert run_json(capsys, "grep", "her[o0]ns")["matches"][0]["id"] == chunk["id"]
    code, out, _ = run(capsys, "sessions")
    assert code == 0 and "1 chunk(s)" in out
    assert "feature" in run_json(capsys, "domains")["domains"]

    forgotten = run_json(capsys, "forget", note["id"])
    assert forgotten["removed"] is True
    assert git_log(vault_path())[0].startswith(f"forget: {note['id']}")


@pytest.mark.usefixtures("vault")
def test_revert_takes_refs_and_peek_past_the_end_is_an_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RLM_VAULT_RAISE_ERRORS")
    note = run_json(capsys, "remember", "Port is 8080")
    run(capsys, "update", note["id"], "--content", "Port is 9090")
    reverted = run_json(capsys, "revert", note["id"], "HEAD~1")
    assert "8080" in (vault_path() / reverted["path"]).read_text(encoding="utf-8")
    code, out, err = run(capsys, "revert", note["id"], "--", "--all")
    assert code == 1 and "HEAD~1" in err and out == ""

    code, out, err = run(capsys, "peek", note["id"], "--start", "5")
    assert code == 1 and out == ""
    assert "has 1 line(s): use start from 0 to 0" in err


@pytest.mark.usefixtures("vault")
def test_cli_messages_name_commands_not_tools(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RLM_VAULT_RAISE_ERRORS")
    run(capsys, "init")
    code, _, err = run(capsys, "peek", "2026-01-01-nothing")
    assert code == 1 and "rlm-vault list-chunks" in err and "rlm_" not in err
    code, _, err = run(capsys, "restore", "2026-01-01_X_001")
    assert code == 1 and "rlm-vault retention" in err and "rlm_" not in err
    assert (
        cli_words("call rlm_remember(content, category) to save it") == "call rlm-vault remember to save it"
    )
    assert cli_words("see rlm_vault.cli") == "see rlm_vault.cli"


def test_no_command_on_a_terminal_prints_a_hint(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    code, out, err = run(capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "rlm-vault --help" in err and "MCP" in err
    assert not vault_path().exists()  # nothing was served or created


@pytest.mark.usefixtures("vault")
def test_doctor_warns_about_a_model_that_cannot_load(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    run(capsys, "init")
    monkeypatch.setenv("RLM_EMBEDDING_MODEL", str(tmp_path / "no-model-here"))
    code, out, _ = run(capsys, "doctor")
    assert code == 0
    assert any(line.startswith("Warning: semantic search is off: model ") for line in out.splitlines())
    assert "keyword search only; set RLM_EMBEDDING_MODEL=none or a local path" in out
    assert out.splitlines()[-1] == "Works, with warnings."
    status = run_json(capsys, "status")["semantic"]
    assert not status["enabled"] and "configured, loads on first search" in status["reason"]


def test_a_vault_path_that_is_not_a_vault_is_refused_by_every_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RLM_VAULT_RAISE_ERRORS")
    for argv in (["status"], ["search", "x"], ["remember", "x"], ["recall"], ["sync"], ["doctor"]):
        code, out, err = run(capsys, *argv)
        assert (code, out) == (1, ""), argv
        assert (
            err == f"rlm-vault: no vault at {vault_path()}: create one with `rlm-vault init {vault_path()}`\n"
        )
    assert not vault_path().exists()
    vault_path().mkdir()
    (vault_path() / "main.c").write_text("int main(void) { return 0; }\n")
    code, _, err = run(capsys, "remember", "x")
    assert code == 1 and "not an rlm-vault vault" in err and err.count("\n") == 1
    code, _, err = run(capsys, "init")
    assert code == 1 and "--force" in err and err.count("\n") == 1
    assert sorted(p.name for p in vault_path().iterdir()) == ["main.c"]
    assert run_json(capsys, "init", "--force")["how"] == "forced"
    assert (vault_path() / MARKER).is_file() and (vault_path() / "main.c").is_file()


def test_init_of_a_file_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RLM_VAULT_RAISE_ERRORS")
    afile = tmp_path / "passwd"
    afile.write_text("root:x:0:0\n")
    code, out, err = run(capsys, "init", str(afile))
    assert (code, out) == (1, "")
    assert err == f"rlm-vault: {afile} is a file, not a folder: give the vault's folder\n"


def test_the_default_vault_is_created_on_first_use(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, isolated_home: Path
) -> None:
    monkeypatch.delenv("RLM_VAULT_DIR")
    default = isolated_home / ".claude" / "rlm" / "vault"
    assert run_json(capsys, "status")["vault"] == str(default)
    assert (default / MARKER).is_file() and git_log(default) == ["init: new rlm-vault"]
