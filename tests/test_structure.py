"""The shape of the code and its docs: layers, the one mcp module, documented commands and tools."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "rlm_vault"

# Lower layers never import higher ones (data flows one way: front ends -> service -> vault and caches).
LAYERS = {
    0: {
        "errors",
        "config",
        "results",
        "formatting",
        "textproc",
        "secret_rules",
        "transcript",
        "gitobjects",
        "gitindex",
        "allocator",
    },
    1: {"models", "markdown", "git", "filelock", "secrets", "modelcache", "related", "fuzzy", "postings"},
    2: {"vault", "retention", "index", "notes", "modelserver"},
    3: {"catalog", "access", "embeddings", "query", "rerank", "texts"},
    4: {"search", "archive"},
    5: {"core"},
    6: {"insights", "lifecycle", "sync", "settle"},
    7: {"chunks", "retrieval", "autosync"},
    8: {"service"},
    9: {"bulk"},
    10: {"migrate", "install", "hooks"},
    11: {"mcp_server"},
    12: {"stdio"},
    13: {"cli"},
    14: {"__main__"},
}
RANK = {name: rank for rank, names in LAYERS.items() for name in names}


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.glob("*.py") if p.name != "__init__.py")


def imported(path: Path) -> set[str]:
    """Package modules a module imports (relative or absolute), at any depth in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("rlm_vault."):
                found.add(node.module.split(".")[1])
    return found


def external(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_module_has_a_layer() -> None:
    assert {p.stem for p in modules()} <= set(RANK)


@pytest.mark.parametrize("path", modules(), ids=lambda p: p.stem)
def test_imports_flow_downward(path: Path) -> None:
    upward = {m for m in imported(path) - {"__version__"} if m in RANK and RANK[m] >= RANK[path.stem]}
    assert not upward, f"{path.stem} (layer {RANK[path.stem]}) imports {upward}"


def test_only_the_mcp_front_end_imports_mcp() -> None:
    users = {p.stem for p in modules() if "mcp" in external(p)}
    assert users == {"mcp_server"}


@pytest.mark.parametrize("path", [*modules(), PACKAGE / "__init__.py"], ids=lambda p: p.stem)
def test_every_module_says_what_it_owns(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"{path.name} has no module docstring"


def test_light_imports_stay_light() -> None:
    """Hooks and the CLI start fast: importing the package and the CLI loads no heavy dependency."""
    code = (
        "import sys, rlm_vault.cli, rlm_vault.service, rlm_vault.transcript, rlm_vault.secrets; "
        "print(sorted(m for m in ('mcp', 'whoosh', 'model2vec', 'numpy', 'rapidfuzz') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def cli_commands() -> set[str]:
    from rlm_vault.cli import _parser

    parser = _parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return set(sub.choices)


def test_every_cli_command_has_help_and_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in cli_commands():
        out = subprocess.run(
            [sys.executable, "-m", "rlm_vault", name, "--help"], capture_output=True, text=True, check=False
        )
        assert out.returncode == 0 and "usage:" in out.stdout, name
        assert re.search(rf"rlm-vault {re.escape(name)}\b", readme), f"`rlm-vault {name}` is not in README.md"


def test_every_tool_is_in_the_readme_and_interface() -> None:
    import anyio
    from mcp import Client

    from rlm_vault.config import Config
    from rlm_vault.mcp_server import build_server
    from rlm_vault.service import open_service

    async def names() -> set[str]:
        service = open_service(Config(vault=ROOT / ".pytest-unused"))
        async with Client(build_server(lambda: service, sync_tool=True)) as client:
            return {t.name for t in (await client.list_tools()).tools}

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    try:
        tools = anyio.run(names)
    finally:
        import shutil

        shutil.rmtree(ROOT / ".pytest-unused", ignore_errors=True)
    assert len(tools) == 18
    assert [t for t in tools if t not in readme] == []


def test_the_public_api_is_what_all_says() -> None:
    """`import rlm_vault` is enough for a script: every name of `__all__` resolves, and nothing else is
    offered as public."""
    import rlm_vault

    assert sorted(rlm_vault.__all__) == sorted(set(rlm_vault.__all__))
    for name in rlm_vault.__all__:
        assert getattr(rlm_vault, name) is not None, name
    assert {"open_service", "MemoryService", "Insight", "Chunk", "VaultError", "Config"} <= set(
        rlm_vault.__all__
    )
    errors = [getattr(rlm_vault, n) for n in rlm_vault.__all__ if n.endswith("Error")]
    assert all(issubclass(e, rlm_vault.VaultError) for e in errors)
    from rlm_vault import errors as errors_module

    classes = {n for n in errors_module.__all__ if isinstance(getattr(errors_module, n), type)}
    assert classes <= set(rlm_vault.__all__)


def test_a_script_uses_memory_through_import_rlm_vault(tmp_path: Path) -> None:
    code = (
        "import rlm_vault, sys; from pathlib import Path\n"
        "m = rlm_vault.open_service(rlm_vault.Config(vault=Path(sys.argv[1]), embedding_model='none'))\n"
        "m.remember('Use ruff, never black', category='preference')\n"
        "print(m.search('ruff')['results'][0]['kind'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "v")], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "insight"


def test_no_mixins_and_no_untyped_results() -> None:
    for path in modules():
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        assert not [
            n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name.endswith("Mixin")
        ]
        assert "__dict__" not in source, path.name
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef) and fn.returns is not None and not fn.name.startswith("_"):
                returns = ast.unparse(fn.returns)
                if path.stem in {"service", "insights", "chunks", "retrieval", "lifecycle", "sync"}:
                    assert returns != "dict[str, Any]", f"{path.stem}.{fn.name} returns an untyped dict"


def test_only_git_module_starts_git() -> None:
    """Every git process starts in git.py (the one wrapper that cleans git's environment)."""
    starters = set()
    for path in modules():
        source = path.read_text(encoding="utf-8")
        if re.search(r"""\[\s*["']git["']""", source) and ("subprocess" in source):
            starters.add(path.stem)
    assert starters <= {"git"}, starters


FRONT_ENDS = {"cli", "mcp_server", "hooks", "install", "migrate", "bulk"}
RECORD_AND_CACHES = {
    "vault",
    "git",
    "gitobjects",
    "gitindex",
    "catalog",
    "index",
    "search",
    "embeddings",
    "fuzzy",
}


@pytest.mark.parametrize("name", sorted(FRONT_ENDS))
def test_front_ends_reach_the_vault_only_through_the_service(name: str) -> None:
    reached = imported(PACKAGE / f"{name}.py") & RECORD_AND_CACHES
    assert not reached, f"{name} imports {reached}: go through the service"


FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _readme_shape(name: str) -> dict[str, object]:
    text = (ROOT / name).read_text(encoding="utf-8")
    blocks = FENCE.findall(text)
    prose = FENCE.sub("", text)
    shell = [
        [re.sub(r"\s+#\s.*$", "", line).rstrip() for line in body.splitlines()]
        for lang, body in blocks
        if lang == "sh"
    ]
    return {
        "headings": [len(m.group(1)) for m in re.finditer(r"^(#+) ", prose, re.MULTILINE)],
        "commands": set(re.findall(r"rlm-vault ([a-z][a-z-]*)", text)) & cli_commands(),
        "tools": set(re.findall(r"\brlm_[a-z_]+", text)),
        "block languages": [lang for lang, _ in blocks],
        "shell blocks": shell,
    }


@pytest.mark.parametrize("name", ["README.fr.md", "README.ja.md"])
def test_translated_readmes_keep_in_step(name: str) -> None:
    """Same sections, same commands, tools and shell blocks as README.md (comments may be translated)."""
    english, translated = _readme_shape("README.md"), _readme_shape(name)
    for key, value in english.items():
        assert translated[key] == value, f"{name}: {key} differs from README.md"
