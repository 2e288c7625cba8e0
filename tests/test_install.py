"""`rlm-vault install` / `uninstall` against a tmp HOME: what Claude Code will read, and nothing else touched."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rlm_vault import markdown
from rlm_vault.cli import main
from rlm_vault.install import (
    BEGIN,
    END,
    SKILLS,
    InstallError,
    Launcher,
    Targets,
    hooks_block,
    install,
    merge_hooks,
    remove_hooks,
    uninstall,
)  # fmt: skip

REPO = Path(__file__).resolve().parent.parent
PROGRAM = "/opt/rlm/bin/rlm-vault"
LAUNCHER = Launcher(PROGRAM)
USER_SETTINGS = {
    "theme": "dark",
    "permissions": {"allow": ["Bash(ls:*)"]},
    "hooks": {
        "Stop": [{"hooks": [{"type": "command", "command": "echo stop"}]}],
        "PreCompact": [{"matcher": "manual", "hooks": [{"type": "command", "command": "backup.sh"}]}],
    },
}
CLAUDE_JSON = {
    "firstStartTime": "2026-11-27T18:01:59.042Z",
    "mcpServers": {"other": {"type": "stdio", "command": "/bin/other", "args": [], "env": {}}},
    "projects": {"/x": {"allowedTools": []}},
}


@pytest.fixture
def home(isolated_home: Path) -> Path:
    """A home where the person already has Claude Code settings of their own."""
    (isolated_home / ".claude").mkdir()
    _write_json(isolated_home / ".claude" / "settings.json", USER_SETTINGS)
    _write_json(isolated_home / ".claude.json", CLAUDE_JSON)
    (isolated_home / ".claude" / "CLAUDE.md").write_text("# My rules\n\nBe brief.\n")
    return isolated_home


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _ours(settings: dict) -> list[str]:
    return [
        h["command"]
        for groups in settings.get("hooks", {}).values()
        for g in groups
        for h in g["hooks"]
        if "rlm-vault hook" in h["command"]
    ]


# ---------------------------------------------------------------------- install


def test_install_registers_the_server_like_claude_mcp_add(home: Path) -> None:
    install(launcher=LAUNCHER)
    data = _json(home / ".claude.json")
    # The exact shape `claude mcp add rlm-vault -s user -- <cmd> serve` writes (Claude Code 2.1.328).
    assert data["mcpServers"]["rlm-vault"] == {
        "type": "stdio",
        "command": PROGRAM,
        "args": ["serve"],
        "env": {},
    }
    assert data["mcpServers"]["other"] == CLAUDE_JSON["mcpServers"]["other"]
    assert (
        data["projects"] == CLAUDE_JSON["projects"]
        and data["firstStartTime"] == CLAUDE_JSON["firstStartTime"]
    )


def test_install_merges_hooks_and_keeps_the_users_settings(home: Path) -> None:
    install(launcher=LAUNCHER)
    settings = _json(home / ".claude" / "settings.json")
    assert settings["theme"] == "dark" and settings["permissions"] == USER_SETTINGS["permissions"]
    assert settings["hooks"]["Stop"] == USER_SETTINGS["hooks"]["Stop"]
    assert settings["hooks"]["PreCompact"][0] == USER_SETTINGS["hooks"]["PreCompact"][0]
    assert sorted(_ours(settings)) == sorted(
        f"{PROGRAM} hook {s}" for s in ("pre-compact", "pre-compact", "session-start", "post-tool-use")
    )
    backups = list((home / ".claude").glob("settings.json.bak-rlm-vault-*"))
    assert len(backups) == 1 and json.loads(backups[0].read_text()) == USER_SETTINGS


def test_install_writes_what_the_settings_snippet_says(isolated_home: Path) -> None:
    snippet = json.loads((REPO / "hooks" / "settings.snippet.json").read_text())
    assert snippet == {"hooks": hooks_block(Launcher("rlm-vault"))}
    install(launcher=LAUNCHER)
    written = json.dumps(_json(isolated_home / ".claude" / "settings.json"))
    assert json.loads(written.replace(PROGRAM, "rlm-vault")) == snippet
    for groups in snippet["hooks"].values():
        for group in groups:
            assert all(h["type"] == "command" and h["timeout"] == 30 for h in group["hooks"])


def test_install_copies_skills_with_front_matter(home: Path) -> None:
    install(launcher=LAUNCHER)
    for name in SKILLS:
        installed = home / ".claude" / "skills" / name / "SKILL.md"
        assert installed.read_bytes() == (REPO / "skills" / name / "SKILL.md").read_bytes()
        meta, body = markdown.parse(installed.read_text())
        assert meta["name"] == name and len(meta["description"]) > 40
        assert "mcp__rlm-vault__rlm_peek" in body and "mcp__rlm-vault__rlm_search" in body


def test_install_adds_one_claude_md_block_and_creates_the_vault(home: Path) -> None:
    install(launcher=LAUNCHER)
    install(launcher=LAUNCHER)
    text = (home / ".claude" / "CLAUDE.md").read_text()
    assert text.startswith("# My rules\n\nBe brief.\n\n") and text.count(BEGIN) == 1 and text.count(END) == 1
    assert "mcp__rlm-vault__rlm_remember" in text
    assert (home / "vault" / ".git").is_dir() and (home / "vault" / "insights").is_dir()


def test_install_replaces_a_stale_claude_md_block(home: Path) -> None:
    (home / ".claude" / "CLAUDE.md").write_text(f"top\n\n{BEGIN}\nold text\n{END}\n\nbottom\n")
    install(launcher=LAUNCHER)
    text = (home / ".claude" / "CLAUDE.md").read_text()
    assert (
        "old text" not in text
        and text.startswith(f"top\n\n{BEGIN}\n")
        and text.endswith(f"{END}\n\nbottom\n")
    )


def test_no_claude_md_leaves_it_alone(home: Path) -> None:
    before = (home / ".claude" / "CLAUDE.md").read_bytes()
    install(claude_md=False, launcher=LAUNCHER)
    assert (home / ".claude" / "CLAUDE.md").read_bytes() == before


def test_install_twice_changes_nothing(home: Path) -> None:
    install(launcher=LAUNCHER)
    first = _snapshot(home / ".claude") | {"claude.json": (home / ".claude.json").read_bytes()}
    report = install(launcher=LAUNCHER)
    again = _snapshot(home / ".claude") | {"claude.json": (home / ".claude.json").read_bytes()}
    assert {k: v for k, v in again.items() if "/vault/" not in k} == {
        k: v for k, v in first.items() if "/vault/" not in k
    }
    assert {s.action for s in report.steps} == {"unchanged", "vault"}


def test_install_updates_a_stale_path_and_drops_duplicates(home: Path) -> None:
    old = "/old/venv/bin/rlm-vault hook pre-compact"
    settings = json.loads(json.dumps(USER_SETTINGS))
    settings["hooks"]["PreCompact"][0]["hooks"].append({"type": "command", "command": old, "timeout": 5})
    settings["hooks"]["PreCompact"].append(
        {"matcher": "manual", "hooks": [{"type": "command", "command": old}]}
    )
    settings["hooks"]["Notification"] = [
        {"hooks": [{"type": "command", "command": "python -m rlm_vault hook x"}]}
    ]
    _write_json(home / ".claude" / "settings.json", settings)
    install(launcher=LAUNCHER)
    result = _json(home / ".claude" / "settings.json")
    assert "Notification" not in result  # an obsolete hook of ours, in a list only we used
    manual = [g for g in result["hooks"]["PreCompact"] if g.get("matcher") == "manual"]
    assert manual == [
        {
            "matcher": "manual",
            "hooks": [
                {"type": "command", "command": "backup.sh"},
                {"type": "command", "command": f"{PROGRAM} hook pre-compact", "timeout": 30},
            ],
        }
    ]
    assert len(_ours(result)) == 4 and "/old/" not in json.dumps(result)


def test_malformed_settings_is_an_error_and_nothing_changes(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RLM_VAULT_RAISE_ERRORS")
    (home / ".claude" / "settings.json").write_text('{"theme": "dark",,}\n')
    before = _snapshot(home)
    assert main(["install"]) == 1
    err = capsys.readouterr().err
    assert str(home / ".claude" / "settings.json") in err and "not valid JSON" in err and "line 1" in err
    assert _snapshot(home) == before


def test_settings_with_a_non_object_hooks_key_is_refused(home: Path) -> None:
    _write_json(home / ".claude" / "settings.json", {"hooks": []})
    with pytest.raises(InstallError, match="hooks"):
        install(launcher=LAUNCHER)


def test_dry_run_changes_nothing(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(home)
    assert main(["install", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert (
        "Would register MCP server 'rlm-vault' in ~/.claude.json" in out and "Would create the vault" in out
    )
    assert _snapshot(home) == before


def test_install_without_any_claude_files(isolated_home: Path) -> None:
    install(launcher=LAUNCHER)
    assert _json(isolated_home / ".claude.json") == {"mcpServers": {"rlm-vault": LAUNCHER.mcp_entry()}}
    assert (isolated_home / ".claude.json").stat().st_mode & 0o777 == 0o600
    assert (isolated_home / ".claude" / "CLAUDE.md").read_text().startswith(BEGIN)


def test_reinstall_keeps_env_a_person_added(home: Path) -> None:
    install(launcher=LAUNCHER)
    data = _json(home / ".claude.json")
    data["mcpServers"]["rlm-vault"]["env"] = {"RLM_LANG": "fr"}
    _write_json(home / ".claude.json", data)
    install(launcher=Launcher("/new/bin/rlm-vault"))
    entry = _json(home / ".claude.json")["mcpServers"]["rlm-vault"]
    assert entry == {
        "type": "stdio",
        "command": "/new/bin/rlm-vault",
        "args": ["serve"],
        "env": {"RLM_LANG": "fr"},
    }


def test_project_scope_writes_mcp_json_and_project_settings(
    isolated_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    install(scope="project", launcher=LAUNCHER)
    assert _json(tmp_path / ".mcp.json") == {"mcpServers": {"rlm-vault": LAUNCHER.mcp_entry()}}
    assert len(_ours(_json(tmp_path / ".claude" / "settings.json"))) == 4
    assert (tmp_path / ".claude" / "skills" / "rlm-analyze" / "SKILL.md").is_file()
    assert not (isolated_home / ".claude.json").exists()
    uninstall(scope="project")
    assert not (tmp_path / ".mcp.json").exists() and not (tmp_path / "CLAUDE.md").exists()


def test_launcher_is_the_script_next_to_python() -> None:
    launcher = Launcher.detect()
    script = Path(sys.executable).parent / "rlm-vault"
    expected = (str(script), ()) if script.exists() else (sys.executable, ("-m", "rlm_vault"))
    assert (launcher.program, launcher.prefix) == expected
    assert (
        Launcher(sys.executable, ("-m", "rlm_vault"))
        .hook_command("pre-compact")
        .endswith("-m rlm_vault hook pre-compact")
    )
    assert Launcher("/my dir/rlm-vault").hook_command("x") == "'/my dir/rlm-vault' hook x"


def test_claude_config_dir_moves_user_files(
    isolated_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "cfg"))
    targets = Targets.for_scope("user")
    assert targets.mcp_file == tmp_path / "cfg" / ".claude.json"
    assert targets.settings == tmp_path / "cfg" / "settings.json"


# ---------------------------------------------------------------------- uninstall


def test_uninstall_removes_exactly_what_install_added(home: Path) -> None:
    claude_md = (home / ".claude" / "CLAUDE.md").read_bytes()
    install(launcher=LAUNCHER)
    install(launcher=Launcher("/other/bin/rlm-vault"))
    uninstall()
    assert _json(home / ".claude.json") == CLAUDE_JSON
    assert _json(home / ".claude" / "settings.json") == USER_SETTINGS
    assert (home / ".claude" / "CLAUDE.md").read_bytes() == claude_md
    assert not (home / ".claude" / "skills").exists()
    assert (home / "vault" / ".git").is_dir()


def test_uninstall_dry_run_and_json(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    install(launcher=LAUNCHER)
    before = _snapshot(home)
    assert main(["uninstall", "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dry_run"] is True and report["command"] == "uninstall"
    assert any(
        s["message"] == "Would remove MCP server 'rlm-vault' from ~/.claude.json" for s in report["steps"]
    )
    assert _snapshot(home) == before


def test_uninstall_all_deletes_the_vault(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    install(launcher=LAUNCHER)
    assert main(["uninstall", "--all"]) == 0
    out = capsys.readouterr().out
    assert f"Deleting the vault at {home / 'vault'}" in out and not (home / "vault").exists()
    assert "rlm-vault" not in _json(home / ".claude.json").get("mcpServers", {})


def test_uninstall_all_refuses_a_folder_that_is_not_a_vault(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_VAULT_DIR", str(home))
    with pytest.raises(InstallError, match="does not look like an rlm-vault vault"):
        uninstall(remove_data=True)
    assert (home / ".claude" / "settings.json").exists()


def test_uninstall_when_nothing_is_installed(home: Path) -> None:
    before = _snapshot(home)
    report = uninstall()
    assert {s.action for s in report.steps} == {"unchanged", "vault"}
    assert _snapshot(home) == before


def test_merge_and_remove_are_inverse_on_foreign_settings() -> None:
    merged = merge_hooks(USER_SETTINGS, LAUNCHER)
    assert merge_hooks(merged, LAUNCHER) == merged
    assert remove_hooks(merged) == USER_SETTINGS
    assert remove_hooks({"hooks": {"Stop": []}}) == {"hooks": {"Stop": []}}


def test_an_unclosed_claude_md_block_is_refused(home: Path) -> None:
    (home / ".claude" / "CLAUDE.md").write_text(f"mine\n{BEGIN}\nhalf a block\n")
    before = _snapshot(home)
    with pytest.raises(InstallError, match="no '<!-- rlm-vault:end -->'"):
        install(launcher=LAUNCHER)
    assert _snapshot(home) == before
