"""`rlm-vault install` / `uninstall`: wire rlm-vault into Claude Code, and take it out again.

Everything is planned first (every file read and checked, nothing written), then applied, so a
malformed settings file stops the run before any change. Each changed file is backed up beside
itself. Only what is recognisably ours is touched: the MCP server named `rlm-vault`, hook commands
that run `rlm-vault hook` / `rlm_vault hook`, our skills, and the marked block of CLAUDE.md.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import sys
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import InstallError

__all__ = [
    "HOOKS",
    "InstallError",
    "Launcher",
    "Report",
    "Step",
    "Targets",
    "hooks_block",
    "install",
    "merge_hooks",
    "remove_hooks",
    "uninstall",
]

SERVER_NAME = "rlm-vault"
SKILLS = ("rlm-analyze", "rlm-parallel")
HOOK_TIMEOUT = 30
BEGIN = "<!-- rlm-vault:begin -->"
END = "<!-- rlm-vault:end -->"
_OURS = re.compile(r"rlm[-_]vault['\"]?\s+hook(?:\s+(?P<sub>[\w-]+))?")

CLAUDE_MD_BLOCK = f"""{BEGIN}
## Memory (rlm-vault)

Long-term memory is the `rlm-vault` MCP server (a git repository of Markdown notes); it survives
`/compact` and new sessions.
- Before starting on a topic, look for earlier work: `mcp__rlm-vault__rlm_search` (chunks and
  insights) or `mcp__rlm-vault__rlm_recall` (insights only).
- Save decisions, facts, preferences, findings and todos with `mcp__rlm-vault__rlm_remember`
  (category, importance; `critical` ones are shown at every session start), not in MEMORY.md files.
- Save a long piece of work worth keeping with `mcp__rlm-vault__rlm_chunk` (summary, tags,
  chunk_type). Read chunks with `mcp__rlm-vault__rlm_peek`; for questions over saved chunks use
  the `/rlm-analyze` and `/rlm-parallel` skills, and cite chunk ids.
- Never save secrets (keys, tokens, passwords).
{END}"""


@dataclass(frozen=True, slots=True)
class HookSpec:
    """One hook entry we add to settings.json."""

    event: str
    matcher: str | None
    subcommand: str


HOOKS = (
    HookSpec("PreCompact", "manual", "pre-compact"),
    HookSpec("PreCompact", "auto", "pre-compact"),
    HookSpec("SessionStart", None, "session-start"),
    HookSpec("PostToolUse", "Write|Edit|MultiEdit", "post-tool-use"),
)


@dataclass(frozen=True, slots=True)
class Launcher:
    """How Claude Code starts rlm-vault: a program, and arguments that come before the subcommand."""

    program: str
    prefix: tuple[str, ...] = ()

    @classmethod
    def detect(cls) -> Launcher:
        """The `rlm-vault` script installed next to this Python, else `python -m rlm_vault`."""
        script = Path(sys.executable).parent / "rlm-vault"
        if script.is_file() and os.access(script, os.X_OK):
            return cls(str(script))
        return cls(sys.executable, ("-m", "rlm_vault"))

    def mcp_entry(self) -> dict[str, Any]:
        """The entry `claude mcp add rlm-vault -s user -- <program> serve` writes."""
        return {"type": "stdio", "command": self.program, "args": [*self.prefix, "serve"], "env": {}}

    def hook_command(self, subcommand: str) -> str:
        return shlex.join([self.program, *self.prefix, "hook", subcommand])


@dataclass(frozen=True, slots=True)
class Targets:
    """The files one scope of Claude Code reads: user (~/.claude) or project (the current folder)."""

    scope: str
    mcp_file: Path
    settings: Path
    skills: Path
    claude_md: Path

    @classmethod
    def for_scope(cls, scope: str = "user", home: Path | None = None, project: Path | None = None) -> Targets:
        """Paths for `scope`; CLAUDE_CONFIG_DIR moves the user files as Claude Code does."""
        if scope == "project":
            root = project or Path.cwd()
            claude = root / ".claude"
            return cls(
                scope, root / ".mcp.json", claude / "settings.json", claude / "skills", root / "CLAUDE.md"
            )
        if scope != "user":
            raise InstallError(f"unknown scope {scope!r}: use 'user' or 'project'")
        home = home or Path.home()
        config_dir = os.environ.get("CLAUDE_CONFIG_DIR", "").strip()
        base = Path(config_dir).expanduser() if config_dir else home / ".claude"
        mcp_file = base / ".claude.json" if config_dir else home / ".claude.json"
        return cls(scope, mcp_file, base / "settings.json", base / "skills", base / "CLAUDE.md")


@dataclass(frozen=True, slots=True)
class Step:
    """One thing install/uninstall did (or would do), for people and for `--json`."""

    action: str  # create | update | delete | unchanged | backup | vault
    path: str
    message: str


@dataclass(frozen=True, slots=True)
class Report:
    """What a run of install or uninstall did."""

    command: str
    scope: str
    dry_run: bool
    vault: str
    steps: tuple[Step, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "steps": [asdict(s) for s in self.steps]}

    def text(self) -> str:
        return "\n".join(s.message for s in self.steps)


@dataclass(frozen=True, slots=True)
class Edit:
    """A planned change of one file: its bytes before and after (None = absent)."""

    path: Path
    before: bytes | None
    after: bytes | None
    done: str
    would: str
    same: str
    mode: int = 0o644
    backup: bool = True
    prune_dir: bool = False

    @property
    def changed(self) -> bool:
        return self.before != self.after


OnStep = Callable[[Step], None]


# ---------------------------------------------------------------------- public entry points


def install(
    scope: str = "user",
    dry_run: bool = False,
    claude_md: bool = True,
    launcher: Launcher | None = None,
    targets: Targets | None = None,
    on_step: OnStep | None = None,
) -> Report:
    """Register the MCP server, merge the hooks, copy the skills, add the CLAUDE.md block, make the vault."""
    launcher = launcher or Launcher.detect()
    targets = targets or Targets.for_scope(scope)
    edits = [_plan_mcp(targets, launcher), _plan_settings(targets, launcher), *_plan_skills(targets, True)]
    if claude_md:
        edits.append(_plan_claude_md(targets, True))
    run = _Run("install", targets.scope, dry_run, on_step)
    run.apply(edits)
    run.open_vault()
    return run.report()


def uninstall(
    scope: str = "user",
    dry_run: bool = False,
    remove_data: bool = False,
    targets: Targets | None = None,
    on_step: OnStep | None = None,
) -> Report:
    """Remove exactly what install added; the vault stays unless `remove_data`."""
    targets = targets or Targets.for_scope(scope)
    edits = [
        _plan_mcp(targets, None),
        _plan_settings(targets, None),
        *_plan_skills(targets, False),
        _plan_claude_md(targets, False),
    ]
    run = _Run("uninstall", targets.scope, dry_run, on_step)
    run.apply(edits)
    run.delete_vault() if remove_data else run.keep_vault()
    return run.report()


def hooks_block(launcher: Launcher) -> dict[str, Any]:
    """The `hooks` object of settings.json that install merges (hooks/settings.snippet.json)."""
    return merge_hooks({}, launcher)["hooks"]  # type: ignore[no-any-return]


# ---------------------------------------------------------------------- the MCP entry


def _plan_mcp(targets: Targets, launcher: Launcher | None) -> Edit:
    before, data = _read_json(targets.mcp_file)
    servers = data.get("mcpServers", {})
    if not isinstance(servers, dict):
        raise InstallError(
            f'{targets.mcp_file}: "mcpServers" is not a JSON object; fix it by hand, then '
            "run the command again (nothing was changed)"
        )
    new = copy.deepcopy(data)
    if launcher is not None:
        new["mcpServers"] = {**servers, SERVER_NAME: _server_entry(launcher, servers.get(SERVER_NAME))}
    elif SERVER_NAME in servers:
        new["mcpServers"] = {k: v for k, v in servers.items() if k != SERVER_NAME}
        if not new["mcpServers"]:
            del new["mcpServers"]
    # ~/.claude.json is Claude Code's own state file: emptied, it stays; a project's .mcp.json goes.
    after = _dump_json(before, data, new, drop_empty=targets.scope == "project")
    texts = _mcp_texts(launcher is not None, _display(targets.mcp_file))
    return Edit(targets.mcp_file, before, after, *texts, mode=_mode(targets.mcp_file, 0o600))


def _mcp_texts(adding: bool, shown: str) -> tuple[str, str, str]:
    name = f"MCP server '{SERVER_NAME}'"
    if adding:
        return (
            f"Registered {name} in {shown}",
            f"Would register {name} in {shown}",
            f"{name} already registered in {shown}",
        )
    return (
        f"Removed {name} from {shown}",
        f"Would remove {name} from {shown}",
        f"{name} not registered in {shown}",
    )


def _server_entry(launcher: Launcher, old: Any) -> dict[str, Any]:
    entry = launcher.mcp_entry()
    if isinstance(old, dict) and isinstance(old.get("env"), dict):
        entry["env"] = old["env"]  # variables a person added (RLM_VAULT_DIR ...) survive a re-install
    return entry


# ---------------------------------------------------------------------- hooks in settings.json


def merge_hooks(settings: dict[str, Any], launcher: Launcher) -> dict[str, Any]:
    """Settings with exactly one entry of each of our hooks, up to date; everything else kept."""
    out = copy.deepcopy(settings)
    hooks = out.setdefault("hooks", {})
    wanted = list(HOOKS)

    def replace(event: str, matcher: Any, hook: dict[str, Any]) -> dict[str, Any] | None:
        spec = next(
            (
                s
                for s in wanted
                if s.event == event and s.matcher == (matcher or None) and s.subcommand == _subcommand(hook)
            ),
            None,
        )
        if spec is None:
            return None  # a duplicate or an old hook of ours
        wanted.remove(spec)
        return _hook_entry(spec, launcher)

    _rewrite(hooks, replace)
    for spec in wanted:
        groups = hooks.setdefault(spec.event, [])
        if not isinstance(groups, list):
            raise InstallError(f'"hooks"."{spec.event}" is not a list')
        groups.append(_hook_group(spec, launcher))
    return out


def remove_hooks(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings without any hook of ours; lists and objects that this empties are dropped."""
    out = copy.deepcopy(settings)
    hooks = out.get("hooks")
    if isinstance(hooks, dict) and _rewrite(hooks, lambda *_: None) and not hooks:
        del out["hooks"]
    return out


Replace = Callable[[str, Any, dict[str, Any]], dict[str, Any] | None]


def _rewrite(hooks: dict[str, Any], replace: Replace) -> bool:
    """Pass each hook of ours through `replace` (None drops it); True when any was found."""
    found = False
    for event in list(hooks):
        groups = hooks[event]
        if not isinstance(groups, list):
            continue
        kept, touched = [], False
        for group in groups:
            hooks_list = group.get("hooks") if isinstance(group, dict) else None
            if not isinstance(hooks_list, list) or not any(_is_ours(h) for h in hooks_list):
                kept.append(group)
                continue
            touched = True
            items = _replace_ours(hooks_list, event, group.get("matcher"), replace)
            if items:
                kept.append({**group, "hooks": items})
        found = found or touched
        if kept or not touched:
            hooks[event] = kept
        else:
            del hooks[event]
    return found


def _replace_ours(items: list[Any], event: str, matcher: Any, replace: Replace) -> list[Any]:
    out = []
    for item in items:
        new = replace(event, matcher, item) if _is_ours(item) else item
        if new is not None:
            out.append(new)
    return out


def _is_ours(hook: Any) -> bool:
    command = hook.get("command") if isinstance(hook, dict) else None
    return isinstance(command, str) and bool(_OURS.search(command))


def _subcommand(hook: dict[str, Any]) -> str:
    match = _OURS.search(str(hook.get("command", "")))
    return (match.group("sub") or "") if match else ""


def _hook_entry(spec: HookSpec, launcher: Launcher) -> dict[str, Any]:
    return {"type": "command", "command": launcher.hook_command(spec.subcommand), "timeout": HOOK_TIMEOUT}


def _hook_group(spec: HookSpec, launcher: Launcher) -> dict[str, Any]:
    group: dict[str, Any] = {"matcher": spec.matcher} if spec.matcher else {}
    group["hooks"] = [_hook_entry(spec, launcher)]
    return group


def _plan_settings(targets: Targets, launcher: Launcher | None) -> Edit:
    before, data = _read_json(targets.settings)
    if "hooks" in data and not isinstance(data["hooks"], dict):
        raise InstallError(
            f'{targets.settings}: "hooks" is not a JSON object; fix it by hand, then run '
            "the command again (nothing was changed)"
        )
    try:
        new = merge_hooks(data, launcher) if launcher else remove_hooks(data)
    except InstallError as exc:
        raise InstallError(
            f"{targets.settings}: {exc}; fix it by hand, then run the command again (nothing was changed)"
        ) from exc
    shown = _display(targets.settings)
    if launcher:
        texts = (
            f"Added hooks PreCompact, SessionStart, PostToolUse to {shown}",
            f"Would add hooks PreCompact, SessionStart, PostToolUse to {shown}",
            f"Hooks already up to date in {shown}",
        )
    else:
        texts = (
            f"Removed rlm-vault hooks from {shown}",
            f"Would remove rlm-vault hooks from {shown}",
            f"No rlm-vault hooks in {shown}",
        )
    after = _dump_json(before, data, new)
    return Edit(targets.settings, before, after, *texts, mode=_mode(targets.settings, 0o644))


# ---------------------------------------------------------------------- skills


def skills_source() -> Path:
    """The skills shipped with the package (`skills/`, linked into it as package data)."""
    return Path(__file__).resolve().parent / "skills"


def _plan_skills(targets: Targets, add: bool) -> list[Edit]:
    return [_plan_skill(targets, name, add) for name in SKILLS]


def _plan_skill(targets: Targets, name: str, add: bool) -> Edit:
    path = targets.skills / name / "SKILL.md"
    before = _read_bytes(path)
    after = (skills_source() / name / "SKILL.md").read_bytes() if add else None
    shown = _display(path)
    if add:
        return Edit(
            path,
            before,
            after,
            f"Installed skill /{name} in {shown}",
            f"Would install skill /{name} in {shown}",
            f"Skill /{name} already up to date in {shown}",
            backup=False,
        )
    return Edit(
        path,
        before,
        None,
        f"Removed skill /{name} ({shown})",
        f"Would remove skill /{name} ({shown})",
        f"Skill /{name} not installed",
        backup=False,
        prune_dir=True,
    )


# ---------------------------------------------------------------------- CLAUDE.md


def _plan_claude_md(targets: Targets, add: bool) -> Edit:
    path = targets.claude_md
    before = _read_bytes(path)
    text = _decode(path, before) if before is not None else ""
    new = _with_block(path, text) if add else _without_block(path, text)
    # Uninstall deletes a file that held nothing but our block (install created it).
    after = new.encode("utf-8") if add or (before is not None and new.strip()) else None
    shown = _display(path)
    if add:
        return Edit(
            path,
            before,
            after,
            f"Added the rlm-vault block to {shown}",
            f"Would add the rlm-vault block to {shown}",
            f"The rlm-vault block is already in {shown}",
        )
    return Edit(
        path,
        before,
        after,
        f"Removed the rlm-vault block from {shown}",
        f"Would remove the rlm-vault block from {shown}",
        f"No rlm-vault block in {shown}",
    )


def _block_span(path: Path, text: str) -> tuple[int, int] | None:
    start = text.find(BEGIN)
    if start == -1:
        return None
    end = text.find(END, start)
    if end == -1:
        raise InstallError(
            f"{path} has '{BEGIN}' but no '{END}' after it; remove or close the block by "
            "hand, then run the command again (nothing was changed)"
        )
    return start, end + len(END)


def _with_block(path: Path, text: str) -> str:
    span = _block_span(path, text)
    if span:
        return text[: span[0]] + CLAUDE_MD_BLOCK + text[span[1] :]
    return (text.rstrip("\n") + "\n\n" if text.strip() else "") + CLAUDE_MD_BLOCK + "\n"


def _without_block(path: Path, text: str) -> str:
    span = _block_span(path, text)
    if span is None:
        return text
    head, tail = text[: span[0]].rstrip("\n"), text[span[1] :].lstrip("\n")
    joined = head + ("\n\n" if head and tail else "") + tail
    return joined if not joined or joined.endswith("\n") else joined + "\n"


# ---------------------------------------------------------------------- applying a plan


@dataclass
class _Run:
    """Applies edits (or describes them, for a dry run) and collects the steps."""

    command: str
    scope: str
    dry_run: bool
    on_step: OnStep | None
    steps: list[Step] = field(default_factory=list)
    stamp: str = field(default_factory=lambda: datetime.now().strftime("%Y%m%d-%H%M%S"))

    def step(self, action: str, path: Path | str, message: str) -> None:
        step = Step(action, str(path), message)
        self.steps.append(step)
        if self.on_step:
            self.on_step(step)

    def apply(self, edits: list[Edit]) -> None:
        for edit in edits:
            if not edit.changed:
                self.step("unchanged", edit.path, edit.same)
            elif self.dry_run:
                self.step(_action(edit), edit.path, edit.would)
            else:
                self._write(edit)

    def _write(self, edit: Edit) -> None:
        if _read_bytes(edit.path) != edit.before:
            # Claude Code rewrites ~/.claude.json often; never overwrite a change made since we read it.
            raise InstallError(f"{edit.path} changed while rlm-vault was installing; run the command again")
        if edit.before is not None and edit.backup:
            backup = _backup(edit.path, edit.before, self.stamp)
            self.step("backup", backup, f"Backed up {_display(edit.path)} to {_display(backup)}")
        if edit.after is None:
            edit.path.unlink(missing_ok=True)
            if edit.prune_dir:
                _rmdir_if_empty(edit.path.parent)
                _rmdir_if_empty(edit.path.parent.parent)
        else:
            _atomic_write(edit.path, edit.after, edit.mode)
        self.step(_action(edit), edit.path, edit.done)

    def open_vault(self) -> None:
        from .config import Config
        from .service import init_vault

        config = Config.from_env()
        path = config.vault
        existed = (path / ".git").exists()
        if self.dry_run:
            self.step(
                "vault",
                path,
                f"Vault already at {_display(path)}"
                if existed
                else f"Would create the vault at {_display(path)}",
            )
            return
        # install creates the vault wherever it is set, like init (a folder of other files is refused).
        how = init_vault(config)
        self.step(
            "vault",
            path,
            f"Created the vault at {_display(path)}"
            if how == "created"
            else f"Vault ready at {_display(path)}",
        )

    def keep_vault(self) -> None:
        from .config import Config

        path = Config.from_env().vault
        self.step(
            "vault", path, f"Kept the vault at {_display(path)} (`rlm-vault uninstall --all` deletes it)"
        )

    def delete_vault(self) -> None:
        from .config import Config

        path = Config.from_env().vault
        if not path.exists():
            self.step("vault", path, f"No vault at {_display(path)}")
            return
        _check_is_vault(path)
        if self.dry_run:
            self.step("vault", path, f"Would delete the vault at {path}")
            return
        self.step("vault", path, f"Deleting the vault at {path}")
        shutil.rmtree(path)
        self.step("delete", path, f"Deleted the vault at {path}")

    def report(self) -> Report:
        from .config import Config

        return Report(self.command, self.scope, self.dry_run, str(Config.from_env().vault), tuple(self.steps))


def _action(edit: Edit) -> str:
    return "create" if edit.before is None else "delete" if edit.after is None else "update"


def _check_is_vault(path: Path) -> None:
    # A mistyped RLM_VAULT_DIR must never make `--all` delete a home or project folder.
    looks_right = (path / ".git").is_dir() and ((path / ".rlm").is_dir() or (path / "insights").is_dir())
    if not looks_right or path.resolve() in (Path.home().resolve(), Path("/")):
        raise InstallError(
            f"{path} does not look like an rlm-vault vault (.git/ with insights/ or .rlm/); "
            "it was not deleted: check RLM_VAULT_DIR, or delete it by hand"
        )


# ---------------------------------------------------------------------- files


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InstallError(f"cannot read {path}: {exc.strerror}; check its permissions") from exc


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InstallError(
            f"{path} is not UTF-8 text (byte {exc.start}); fix or move it, then run the "
            "command again (nothing was changed)"
        ) from exc


def _read_json(path: Path) -> tuple[bytes | None, dict[str, Any]]:
    """A JSON object file: its bytes and content ({} when missing or blank)."""
    raw = _read_bytes(path)
    if raw is None or not raw.strip():
        return raw, {}
    try:
        data = json.loads(_decode(path, raw))
    except json.JSONDecodeError as exc:
        raise InstallError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}; "
            "fix it (or move it away), then run the command again (nothing was changed)"
        ) from exc
    if not isinstance(data, dict):
        raise InstallError(
            f"{path} holds a JSON {type(data).__name__}, not an object; fix it, then run the "
            "command again (nothing was changed)"
        )
    return raw, data


def _dump_json(
    before: bytes | None, old: dict[str, Any], new: dict[str, Any], drop_empty: bool = True
) -> bytes | None:
    """New file bytes; the old bytes when the content is the same (no reformatting, no backup).

    With `drop_empty`, a file this change leaves as `{}` is deleted (uninstall of a file install created).
    """
    if new == old and (before is not None or not new):
        return before
    if drop_empty and not new:
        return None
    return (json.dumps(new, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _mode(path: Path, default: int) -> int:
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return default


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InstallError(f"cannot write {path}: {exc.strerror}; check the folder's permissions") from exc


def _backup(path: Path, data: bytes, stamp: str) -> Path:
    target = path.with_name(f"{path.name}.bak-rlm-vault-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.bak-rlm-vault-{stamp}-{n}")
    _atomic_write(target, data, _mode(path, 0o600))
    return target


def _rmdir_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty: the person keeps files of their own there


def _display(path: Path) -> str:
    """A path as people write it: ~/... under the home folder."""
    try:
        return "~/" + path.relative_to(Path.home()).as_posix()
    except ValueError:
        return str(path)
