"""Fixtures to run the real Claude Code CLI offline: a cached npm install, a fake model, a throwaway HOME.

The CLI (@anthropic-ai/claude-code, pinned) is installed once into a cache outside the repository and
outside HOME ($RLM_TEST_CACHE, else <tempdir>/rlm-vault-test-cache), under a file lock so parallel runs
share it. No npm, or a failed install, FAILS the tests: skipping would hide that they never ran.
Environment recipe: shared/notes/claude-code-e2e.md section 1.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_model import FakeModel

CLAUDE_CODE_VERSION = "2.1.328"
CLAUDE_CODE_PACKAGE = f"@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}"
INSTALL_TIMEOUT = 900
RunClaude = Callable[..., dict[str, Any]]
ClaudeCli = Callable[..., "subprocess.CompletedProcess[str]"]


# -- the CLI, installed once -------------------------------------------------------------------------------


def _cache_root() -> Path:
    return Path(os.environ.get("RLM_TEST_CACHE") or Path(tempfile.gettempdir()) / "rlm-vault-test-cache")


def _installed_version(claude: Path) -> str:
    if not claude.exists():
        return ""
    try:
        done = subprocess.run(
            [str(claude), "--version"], check=False, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


def _npm_install(folder: Path, cache: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(
            f"npm is not on PATH: the e2e tests install {CLAUDE_CODE_PACKAGE} with it (install Node.js + npm)"
        )
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "package.json").write_text('{"name": "rlm-vault-test-claude-code", "private": true}\n')
    command = [npm, "install", "--no-audit", "--no-fund", "--cache", str(cache), CLAUDE_CODE_PACKAGE]
    # npm_config_* keep npm's cache and logs out of the real HOME.
    env = {**os.environ, "npm_config_update_notifier": "false", "npm_config_logs_dir": str(cache / "_logs")}
    try:
        done = subprocess.run(
            command, check=False, cwd=folder, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{' '.join(command)}` took over {INSTALL_TIMEOUT} s in {folder}")
    if done.returncode != 0:
        pytest.fail(
            f"`{' '.join(command)}` failed (exit {done.returncode}) in {folder}:\n{done.stderr[-2000:]}"
        )


def ensure_claude(root: Path) -> Path:
    """The `claude` binary of the pinned version under `root`, installed there first if needed."""
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"claude-code-{CLAUDE_CODE_VERSION}"
    claude = folder / "node_modules" / ".bin" / "claude"
    with open(root / f"claude-code-{CLAUDE_CODE_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another pytest run may be installing right now
        if not _installed_version(claude).startswith(CLAUDE_CODE_VERSION):
            _npm_install(folder, root / "npm-cache")
        version = _installed_version(claude)
    if not version.startswith(CLAUDE_CODE_VERSION):
        pytest.fail(f"{claude} --version says {version!r}, expected {CLAUDE_CODE_VERSION}")
    return claude


@pytest.fixture(scope="session")
def claude_bin() -> Path:
    """Path to the pinned Claude Code CLI (installed into the test cache on first use)."""
    return ensure_claude(_cache_root())


# -- the fake model and the environment --------------------------------------------------------------------


@pytest.fixture
def fake_model(tmp_path: Path) -> Iterator[FakeModel]:
    """A fake Messages API on 127.0.0.1; its request log is also written to tmp_path/model-requests.jsonl."""
    with FakeModel(tmp_path / "model-requests.jsonl") as fake:
        yield fake


def _make_home(home: Path, project: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / ".gitconfig").write_text(
        "[user]\n\tname = E2E Tester\n\temail = e2e@example.invalid\n[init]\n\tdefaultBranch = main\n"
    )
    # Pre-answers the first-run questions (onboarding, custom API key, folder trust) so no prompt can block.
    state = {
        "hasCompletedOnboarding": True,
        "customApiKeyResponses": {"approved": ["dummy"], "rejected": []},
        "projects": {str(project): {"hasTrustDialogAccepted": True}},
    }
    (home / ".claude.json").write_text(json.dumps(state, indent=2))


@pytest.fixture
def claude_env(tmp_path: Path, fake_model: FakeModel, claude_bin: Path) -> dict[str, str]:
    """Environment for the CLI: throwaway HOME, fake model, quiet, no retries, the project's venv first on PATH.

    env["PWD"] is the project folder the CLI runs in; env["RLM_VAULT_DIR"] a vault path under tmp_path.
    """
    home, project, scratch = tmp_path / "home", tmp_path / "proj", tmp_path / "cc-tmp"
    project.mkdir()
    scratch.mkdir()
    _make_home(home, project)
    env = {k: v for k, v in os.environ.items() if k in ("LANG", "LC_ALL", "TZ", "TERM", "USER", "LOGNAME")}
    env.update(
        {
            "HOME": str(home),
            "PWD": str(project),
            "PATH": os.pathsep.join(
                [
                    str(Path(sys.executable).parent),
                    str(claude_bin.parent),
                    "/usr/local/bin",
                    "/usr/bin",
                    "/bin",
                ]
            ),
            "ANTHROPIC_BASE_URL": fake_model.url,
            "ANTHROPIC_API_KEY": "dummy",
            "DISABLE_TELEMETRY": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_MAX_RETRIES": "0",  # a dead fake fails in ~2 s instead of retrying past any timeout
            "CLAUDE_CODE_TMPDIR": str(scratch),  # else it writes /tmp/claude-<uid>/ and /tmp/cc-socks/
            "MCP_TIMEOUT": "20000",
            "RLM_VAULT_DIR": str(tmp_path / "vault"),
            "RLM_EMBEDDING_MODEL": "none",  # BM25 only: never reach for the model hub from a test
            "HF_HUB_OFFLINE": "1",
        }
    )
    return env


# -- running it --------------------------------------------------------------------------------------------


def _claude_command(env: dict[str, str]) -> str:
    found = shutil.which("claude", path=env["PATH"])
    if found is None:
        raise AssertionError(f"no claude on PATH {env['PATH']}")
    return found


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `claude <args>` in env["PWD"] and return the finished process (stdout/stderr as text)."""
    command = [_claude_command(env), *args]
    try:
        return subprocess.run(
            command,
            check=False,
            env=env,
            cwd=env["PWD"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"`claude {' '.join(args)}` ran past {timeout} s; stderr: {exc.stderr!r}"
        ) from exc


def run_claude(args: list[str], env: dict[str, str], timeout: float = 120) -> dict[str, Any]:
    """Run `claude <args> --output-format json` (a -p run) and return its parsed JSON result."""
    if "--output-format" not in args:
        args = [*args, "--output-format", "json"]
    done = run_cli(args, env, timeout)
    try:
        result = json.loads(done.stdout)
    except ValueError as exc:
        detail = f"exit {done.returncode}\nstdout: {done.stdout[-1500:]}\nstderr: {done.stderr[-1500:]}"
        raise AssertionError(f"`claude {' '.join(args)}` printed no JSON result:\n{detail}") from exc
    assert isinstance(result, dict), f"unexpected JSON from claude: {result!r}"
    return result


@pytest.fixture(name="run_claude")
def run_claude_fixture() -> RunClaude:
    """The run_claude(args, env, timeout=120) helper, for tests (conftest modules are not importable)."""
    return run_claude


@pytest.fixture(name="claude_cli")
def claude_cli_fixture() -> ClaudeCli:
    """The run_cli(args, env, timeout=120) helper: text commands such as `claude mcp list`."""
    return run_cli
