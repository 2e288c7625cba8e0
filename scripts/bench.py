#!/usr/bin/env python
"""Benchmarks for rlm-vault: the numbers of DESIGN.md §5, measured through the real code paths.

    python scripts/bench.py                 # full run: 2,000 chunks + 1,000 insights, then 10,000 chunks
    python scripts/bench.py --quick         # small smoke run (a test runs it)
    python scripts/bench.py --rows search   # only the rlm_search rows at 2k + 1k and at 10k (minutes)
    python scripts/bench.py --scale 10000 --json out.json --model /path/to/model2vec-folder
    python scripts/bench.py --anchor /tmp/rlmc/bin/mcp-rlm-server   # same workload against rlm-claude
    python scripts/bench.py --only team     # 8 vaults syncing one remote at once; sync at 10k/100k commits

Everything runs in a temporary folder: HOME and RLM_VAULT_DIR point there, never at the user's vault.
The workload is deterministic (fixed seed): 1-3 KB chunks built from the plain-text pydoc of stdlib
modules, with some French sentences and "DECISION:" markers, plus short insights.

Calls go to `MemoryService` methods (what every MCP tool calls); cold start and the PreCompact hook
are real subprocesses (`python -m rlm_vault serve` over stdio, `rlm-vault hook pre-compact`).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import queue
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = (
    ROOT.parent / "shared" / "models" / "minilm-l6-m2v-256"
)  # the evaluation model beside the checkout
SEED = 20261124
MS = 1000.0

PYDOC_MODULES = [
    "os",
    "re",
    "json",
    "collections",
    "itertools",
    "functools",
    "pathlib",
    "subprocess",
    "threading",
    "asyncio",
    "logging",
    "argparse",
    "datetime",
    "decimal",
    "fractions",
    "statistics",
    "random",
    "string",
    "textwrap",
    "difflib",
    "csv",
    "sqlite3",
    "email",
    "http.client",
    "urllib.parse",
    "socket",
    "ssl",
    "hashlib",
    "base64",
    "struct",
    "array",
    "heapq",
    "bisect",
    "queue",
    "contextlib",
    "dataclasses",
    "enum",
    "typing",
    "abc",
    "inspect",
    "ast",
    "dis",
    "tokenize",
    "unittest",
    "doctest",
    "pdb",
    "timeit",
    "shutil",
    "tempfile",
    "glob",
    "fnmatch",
    "zipfile",
    "tarfile",
    "gzip",
    "bz2",
    "lzma",
    "configparser",
    "pickle",
    "copy",
    "pprint",
    "traceback",
    "warnings",
    "weakref",
    "gc",
    "io",
    "codecs",
    "unicodedata",
    "locale",
    "gettext",
    "calendar",
    "zoneinfo",
    "operator",
    "math",
    "cmath",
    "numbers",
    "uuid",
    "ipaddress",
    "mimetypes",
    "html",
    "xml.etree.ElementTree",
    "sched",
    "selectors",
    "signal",
    "mmap",
    "platform",
    "sysconfig",
]

FRENCH = [
    "Nous avons décidé de garder la base de données locale pour le moment.",
    "Le déploiement se fait toujours en local puis sur le VPS, jamais directement.",
    "La migration du schéma a échoué à cause d'une contrainte d'unicité.",
    "Il faut préférer les requêtes paramétrées pour éviter les injections SQL.",
    "Le cache des résultats expire après dix minutes; à revoir après la mise en production.",
    "L'équipe préfère des commits courts avec un message clair en anglais.",
    "Le serveur de recherche répond en moins de trente millisecondes sur mon portable.",
    "Penser à vérifier les journaux d'erreurs avant chaque livraison.",
    "La réunion de vendredi a validé l'architecture de l'API version deux.",
    "Les tests d'intégration tournent dans un conteneur éphémère créé pour chaque branche.",
]
TAGS = [
    "api",
    "auth",
    "db",
    "deploy",
    "perf",
    "bug",
    "refactor",
    "docs",
    "test",
    "ci",
    "cache",
    "search",
    "git",
    "infra",
    "ui",
    "security",
    "python",
    "memory",
    "migration",
    "release",
]
DOMAINS = ["feature", "bugfix", "refactor", "infra", "research"]
PROJECTS = ["BenchApp", "BenchApp", "BenchApp", "Payments", "DocsSite"]  # mostly the default project
CATEGORIES = ["decision", "fact", "preference", "finding", "todo", "general"]
IMPORTANCES = ["critical", "high", "medium", "medium", "low"]
# Text markers that make a chunk immune to retention (rlm_vault.retention.MARKERS; pydoc text has some too).
IMMUNE_MARKERS = ("DECISION:", "IMPORTANT:", "A RETENIR:", "À RETENIR:", "CRITICAL:")


# ---------------------------------------------------------------------------------------------- utils


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


class Sample(float):
    """Wall seconds of one call, with the CPU seconds it used (this process + the children it waited for).

    CPU time barely moves when other work shares the machine, so it shows what the code costs even
    when wall time is inflated by a busy box.
    """

    cpu: float = 0.0


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime  # microseconds, unlike os.times()


def timed(fn: Callable[[], Any]) -> tuple[Sample, Any]:
    c0, t0 = _cpu(), time.perf_counter()
    out = fn()
    sample = Sample(time.perf_counter() - t0)
    sample.cpu = _cpu() - c0
    return sample, out


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Clock:
    """The injected clock: real time plus an offset the bench moves forward."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


# ---------------------------------------------------------------------------------------------- corpus


def _pydoc_paragraphs(out: Path) -> None:
    """Render stdlib pydoc to plain text and save its paragraphs (run in a child: imports stay out of our RSS)."""
    import importlib
    import pydoc

    paras: list[str] = []
    for name in PYDOC_MODULES:
        try:
            text = pydoc.render_doc(importlib.import_module(name), renderer=pydoc.plaintext)
        except Exception:  # noqa: BLE001, S112 - a module pydoc cannot render is left out
            continue
        for block in re.split(r"\n\s*\n", text):
            block = "\n".join(line.rstrip() for line in block.strip("\n").splitlines())
            if 80 <= len(block) <= 1600 and "\x08" not in block:
                paras.append(block)
    out.write_text(json.dumps(paras), encoding="utf-8")


def load_paragraphs(cache: Path) -> list[str]:
    if not cache.exists():
        subprocess.run([sys.executable, __file__, "--_paragraphs", str(cache)], check=True)
    paras = json.loads(cache.read_text(encoding="utf-8"))
    from rlm_vault.secrets import scan  # keep the workload free of look-alike secrets (tools refuse them)

    return [p for p in paras if not scan(p)]


def _markers() -> tuple[str, ...]:
    try:
        from rlm_vault.retention import MARKERS
    except ImportError:
        return IMMUNE_MARKERS
    return tuple(MARKERS)


@dataclass
class ChunkSpec:
    content: str
    summary: str = ""
    tags: str = ""
    project: str = ""
    domain: str = ""
    ticket: str = ""
    immune: bool = False


@dataclass
class InsightSpec:
    content: str
    category: str
    importance: str
    tags: str


@dataclass
class Corpus:
    paragraphs: list[str]
    rng: random.Random = field(default_factory=lambda: random.Random(SEED))
    made: int = 0

    def chunk(self, size: tuple[int, int] = (1000, 3000)) -> ChunkSpec:
        rng = self.rng
        self.made += 1
        target = rng.randint(*size)
        parts = [f"## Session note {self.made}: {rng.choice(TAGS)} work"]
        while sum(len(p) + 2 for p in parts) < target:
            parts.append(rng.choice(self.paragraphs))
        if rng.random() < 0.05:
            parts.insert(rng.randint(1, len(parts)), " ".join(rng.sample(FRENCH, 3)))
        content = "\n\n".join(parts)[: size[1] + 200]
        if rng.random() < 0.03:
            content += f"\n\nDECISION: keep {rng.choice(TAGS)} as it is (note {self.made})."
        spec = ChunkSpec(content)
        if rng.random() < 2 / 3:
            spec.summary = f"{rng.choice(TAGS).title()} notes {self.made}: " + content.split("\n")[2][:60]
            spec.tags = ",".join(rng.sample(TAGS, rng.randint(1, 3)))
        if rng.random() < 0.5:
            spec.domain = rng.choice(DOMAINS)
        spec.project = rng.choice(PROJECTS)
        if rng.random() < 0.1:
            spec.ticket = f"API-{rng.randint(1, 400)}"
        spec.immune = any(marker in content.upper() for marker in _markers())
        return spec

    def insight(self, n: int) -> InsightSpec:
        rng = self.rng
        para = rng.choice(self.paragraphs)
        sentences = [
            s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(para.split())) if len(s.strip()) > 20
        ]
        text = " ".join(sentences[:2]) if sentences else para[:200]
        if rng.random() < 0.1:
            text = rng.choice(FRENCH) + " " + text
        text = f"{text[:280]} (insight {n})"
        return InsightSpec(
            text,
            rng.choice(CATEGORIES),
            rng.choice(IMPORTANCES),
            ",".join(rng.sample(TAGS, rng.randint(1, 3))),
        )


def queries(paragraphs: list[str], n: int, seed: int) -> list[str]:
    """Search queries: 2-4 content words from the corpus, some in French."""
    rng = random.Random(seed)
    words = [w for p in paragraphs[:400] for w in re.findall(r"[A-Za-z]{5,}", p)]
    out = []
    for i in range(n):
        if i % 10 == 9:
            out.append(" ".join(rng.choice(FRENCH).split()[2:6]))
        else:
            out.append(" ".join(rng.sample(words, rng.randint(2, 4))))
    return out


def regex_patterns(paragraphs: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = sorted({w for p in paragraphs[:600] for w in re.findall(r"[a-z_]{6,}", p)})
    fixed = [
        r"\bdef \w+\(",
        r"Return\w* the",
        r"socket\.\w+",
        r"d[ée]cid[ée]",
        r"DECISION:",
        r"\d+\.\d+",
        r"raise \w+Error",
        r"^\s+\|",
        r"self, \w+",
        r"(?i)deprecated",
        r"API-\d+",
        r"[A-Z]{3,}_[A-Z]+",
    ]
    out = fixed[:]
    while len(out) < n:
        out.append(rng.choice(words) if len(out) % 4 else "zzq" + rng.choice(words))  # some never match
    return out[:n]


def typo_words(paragraphs: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = sorted({w.lower() for p in paragraphs[:600] for w in re.findall(r"[A-Za-z]{7,}", p)})
    out = []
    for w in rng.sample(words, n):
        i = rng.randrange(1, len(w) - 1)
        op = rng.randrange(3)
        out.append(
            w[:i] + w[i + 1 :]
            if op == 0
            else w[:i] + w[i + 1] + w[i] + w[i + 2 :]
            if op == 1
            else w[:i] + rng.choice("aeiourst") + w[i + 1 :]
        )
    return out


# ---------------------------------------------------------------------------------------------- results


@dataclass
class Row:
    key: str
    label: str
    target: str = ""
    anchor: str = ""  # rlm-claude's figure from DESIGN.md §5 / notes §9
    n: int = 0
    p50: float | None = None  # milliseconds (or the unit in `unit`)
    p95: float | None = None
    value: str = ""  # what the table shows when p50/p95 do not fit
    unit: str = "ms"
    cpu50: float | None = None  # median CPU ms per call (process + waited-for children)
    ok: bool | None = None  # None = informational, no target
    note: str = ""
    side: float | None = None  # same row measured on the anchor (rlm-claude), same unit

    def shown(self) -> str:
        if self.value:
            return self.value
        if self.p50 is None:
            return "n/a"
        if self.p95 is None:
            return f"{self.p50:,.1f} {self.unit}"
        return f"{self.p50:,.1f} / {self.p95:,.1f} {self.unit}"


class Report:
    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}
        self.meta: dict[str, Any] = {}

    def add(self, row: Row) -> Row:
        self.rows[row.key] = row
        status = "PASS" if row.ok else "info" if row.ok is None else "MISS"
        log(f"{row.label}: {row.shown()} [{status}] {row.note}")
        return row

    def lat(
        self,
        key: str,
        label: str,
        samples: list[float],
        target_ms: float | None = None,
        target: str = "",
        anchor: str = "",
        note: str = "",
    ) -> Row:
        """A latency row from samples in seconds; pass when p50 <= target_ms."""
        p50 = pct(samples, 50) * MS if samples else None
        p95 = pct(samples, 95) * MS if samples else None
        cpus = [s.cpu for s in samples if isinstance(s, Sample)]
        cpu50 = pct(cpus, 50) * MS if cpus else None
        ok = None if target_ms is None or p50 is None else p50 <= target_ms
        if target_ms is not None and not target:
            target = f"p50 <= {target_ms:g} ms"
        return self.add(
            Row(key, label, target, anchor, len(samples), p50, p95, cpu50=cpu50, ok=ok, note=note)
        )

    def table(self) -> str:
        head = ("Measure", "N", "p50 / p95 (or value)", "CPU p50", "Target", "rlm-claude", "Result")
        lines = [
            [
                r.label,
                str(r.n or ""),
                r.shown(),
                f"{r.cpu50:,.1f} ms" if r.cpu50 is not None else "-",
                r.target or "-",
                r.anchor or "-",
                "PASS" if r.ok else "-" if r.ok is None else "MISS",
            ]
            for r in self.rows.values()
        ]
        if any(r.side is not None for r in self.rows.values()):
            head = (*head, "anchor p50 here", "anchor/ours")
            for line, r in zip(lines, self.rows.values(), strict=True):
                ours = r.p50
                line += (
                    [f"{r.side:,.1f} {r.unit}", f"{r.side / ours:.2g}x" if ours else "-"]
                    if r.side is not None
                    else ["-", "-"]
                )
        widths = [max([len(head[i]), *(len(line[i]) for line in lines)]) for i in range(len(head))]
        out = [
            "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
            "|" + "|".join("-" * (w + 2) for w in widths) + "|",
        ]
        out += [
            "| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |" for line in lines
        ]
        notes = [f"- {r.label}: {r.note}" for r in self.rows.values() if r.note]
        return "\n".join(out + (["", "Notes:"] + notes if notes else []))

    def json(self) -> dict[str, Any]:
        return {"meta": self.meta, "rows": [vars(r) for r in self.rows.values()]}


# ---------------------------------------------------------------------------------------------- setup


@dataclass
class Plan:
    chunks: int
    insights: int
    archive: int
    scale: int
    queries: int
    writers: tuple[tuple[int, int], ...]
    cold_runs: int
    transcript_mb: float
    quick: bool


def make_env(base: Path, vault: Path, model: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLM_")}
    env.update(
        HOME=str(base / "home"),
        XDG_CONFIG_HOME=str(base / "home" / ".config"),
        XDG_CACHE_HOME=str(base / "home" / ".cache"),  # the shared model copy
        RLM_VAULT_DIR=str(vault),
        RLM_EMBEDDING_MODEL=model,
        RLM_PROJECT="BenchApp",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="Bench",
        GIT_AUTHOR_EMAIL="bench@example.com",
        GIT_COMMITTER_NAME="Bench",
        GIT_COMMITTER_EMAIL="bench@example.com",
        PYTHONPATH=str(ROOT),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def open_service(vault: Path, model: str, clock: Clock | None = None) -> Any:
    from rlm_vault.config import Config
    from rlm_vault.service import open_service as open_

    config = Config(vault=vault, project="BenchApp", embedding_model=model)
    return open_(config, **({"clock": clock} if clock else {}))


class CommitTimer:
    """Wraps a service's Git.commit_paths to time every commit the service makes."""

    def __init__(self, git: Any) -> None:
        self.samples: list[float] = []
        self._real = git.commit_paths

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            c0, t0 = _cpu(), time.perf_counter()
            try:
                return self._real(*args, **kwargs)
            finally:
                sample = Sample(time.perf_counter() - t0)
                sample.cpu = _cpu() - c0
                self.samples.append(sample)

        git.commit_paths = wrapped


def commit_count(vault: Path) -> int:
    out = subprocess.run(
        ["git", "-C", str(vault), "rev-list", "--count", "HEAD"], capture_output=True, check=False, text=True
    )
    return int(out.stdout.strip() or 0)


def write_chunks(
    svc: Any,
    specs: Iterable[ChunkSpec],
    clock: Clock | None = None,
    old_until: int = -1,
    shift: timedelta = timedelta(0),
) -> tuple[list[float], list[str]]:
    times, ids = [], []
    for i, spec in enumerate(specs):
        if clock is not None and i == old_until:
            clock.offset += shift  # later chunks are written "40 days later"
        dt, out = timed(lambda s=spec: svc.chunk(s.content, s.summary, s.tags, s.project, s.ticket, s.domain))
        if out.get("duplicate"):
            raise RuntimeError(f"workload produced a duplicate chunk: {out['id']}")
        times.append(dt)
        ids.append(out["id"])
    return times, ids


# ---------------------------------------------------------------------------------------------- stdio MCP


class StdioMCP:
    """A minimal newline-delimited JSON-RPC client for an MCP server on stdio (no mcp import here)."""

    def __init__(self, cmd: list[str], env: dict[str, str], cwd: Path) -> None:
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._next = 0
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, method: str, params: dict[str, Any] | None = None, notify: bool = False) -> int:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        if not notify:
            self._next += 1
            msg["id"] = self._next
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        return self._next

    def wait(self, msg_id: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer to request {msg_id} in {timeout:g} s")
            line = self.lines.get(timeout=left)
            if line is None:
                raise RuntimeError(f"server exited with {self.proc.wait()} before answering")
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("id") == msg_id and ("result" in msg or "error" in msg):
                return msg

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 120) -> dict[str, Any]:
        return self.wait(self.send(method, params), timeout)

    def handshake(self, timeout: float = 60) -> dict[str, Any]:
        self.call(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "rlm-vault-bench", "version": "1"},
            },
            timeout,
        )
        self.send("notifications/initialized", notify=True)
        return self.call("tools/list", {}, timeout)

    def tool(self, name: str, args: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
        return self.call("tools/call", {"name": name, "arguments": args}, timeout)

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (subprocess.TimeoutExpired, OSError):
            self.proc.kill()
            self.proc.wait()


@dataclass
class Cold:
    """Cold starts of one vault: seconds from spawn to the tools/list answer and to a first tool answer
    (rlm_recall), the first run first (it starts with no kept opening answers), the tool count and the
    tools/list size in characters."""

    listed: list[float]
    served: list[float]
    tools: int
    size: int


def cold_start(env: dict[str, str], cwd: Path, runs: int) -> Cold:
    """`runs` cold starts; the opening answers a previous start kept are removed before the first."""
    for kept in Path(env["XDG_CACHE_HOME"], "rlm-vault", "vaults").glob("*/opening.json"):
        kept.unlink()
    cold = Cold([], [], 0, 0)
    for _ in range(runs):
        client = StdioMCP([sys.executable, "-m", "rlm_vault", "serve"], env, cwd)
        try:
            listing = client.handshake()
            cold.listed.append(time.perf_counter() - client.t0)
            client.tool("rlm_recall", {"query": "timeout"})
            cold.served.append(time.perf_counter() - client.t0)
            cold.tools = len(listing["result"]["tools"])
            cold.size = len(json.dumps(listing["result"], separators=(",", ":")))
        finally:
            client.close()
    return cold


def cold_rows(
    report: Report, key: str, what: str, cold: Cold, target_ms: float, anchor: str = "", prefix: str = ""
) -> None:
    """Two rows: spawn to the tools/list answer (what a client waits for before it goes on), and spawn to a
    first tool answer (the SDK imported and the vault open)."""
    first = f"first start (no kept answers) {cold.listed[0] * MS:,.0f} ms"
    report.add(
        Row(
            key,
            f"{prefix}cold start to tools/list, {what}",
            f"<= {target_ms / MS:g} s",
            anchor,
            len(cold.listed),
            statistics.median(cold.listed) * MS,
            max(cold.listed) * MS,
            ok=statistics.median(cold.listed) * MS <= target_ms,
            note=f"median; p95 column = max; {first}; {cold.tools} tools",
        )
    )
    report.add(
        Row(
            f"{key}_call",
            f"{prefix}cold start to a first tool answer (rlm_recall), {what}",
            "",
            "",
            len(cold.served),
            statistics.median(cold.served) * MS,
            max(cold.served) * MS,
            note="median; p95 column = max; tool calls wait for the SDK's import and the vault",
        )
    )


def _vm(pid: int) -> dict[str, float]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {
        k: int(v.split()[0]) / 1024
        for k, v in (line.split(":", 1) for line in text.splitlines())
        if k in ("VmRSS", "VmHWM")
    }


def server_memory(env: dict[str, str], cwd: Path) -> tuple[float, str]:
    """Peak memory (MB) of the stdio server after a search and a fuzzy grep, with the RSS after each step."""
    client = StdioMCP([sys.executable, "-m", "rlm_vault", "serve"], env, cwd)
    steps = []
    try:
        client.handshake()
        steps.append(f"after tools/list {_vm(client.proc.pid).get('VmRSS', 0):,.0f} MB")
        time.sleep(3)  # let the background warm-up (model, caches) run
        client.tool("rlm_search", {"query": "socket timeout value"})
        steps.append(f"after rlm_search {_vm(client.proc.pid).get('VmRSS', 0):,.0f} MB")
        client.tool("rlm_grep", {"pattern": "tmeout", "fuzzy": True})
        client.tool("rlm_grep", {"pattern": "sokcet", "fuzzy": True})
        steps.append(f"after rlm_grep fuzzy {_vm(client.proc.pid).get('VmRSS', 0):,.0f} MB")
        hwm = _vm(client.proc.pid).get("VmHWM", 0.0)
    finally:
        client.close()
    return hwm, "; ".join(steps)


# ---------------------------------------------------------------------------------------------- memory of many servers


def padded_model(src: Path, out: Path, rows: int = 500_000) -> Path:
    """`src` padded to `rows` x dim float32 (the size of the default model): random extra rows, and
    extra vocabulary entries no text produces, so the tokenizer is as big as the real one's."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    emb = load_file(str(src / "model.safetensors"))["embeddings"].astype(np.float32)
    tok = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tok["model"]["vocab"]  # a WordPiece vocabulary: token -> id
    if sorted(vocab.values()) != list(range(len(emb))):
        raise RuntimeError(f"{src}: expected a WordPiece vocabulary with one id per row")
    vocab.update({f"[pad{i}]": i for i in range(len(emb), rows)})  # "[" splits off: never matched
    (out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    pad = np.random.default_rng(SEED).standard_normal((rows - len(emb), emb.shape[1]), dtype=np.float32)
    save_file({"embeddings": np.vstack([emb, pad * emb.std()])}, str(out / "model.safetensors"))
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    (out / "config.json").write_text(json.dumps({**config, "embedding_dtype": "float32"}), encoding="utf-8")
    return out


def _children(pids: Iterable[int]) -> set[int]:
    """`pids` and every process descended from them."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    found, todo = set(), list(pids)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += [child for child, ppid in parent.items() if ppid == pid]
    return found


def model_processes(cache: Path) -> set[int]:
    """Model processes serving models from `cache` (started by a server, but in their own session)."""
    found = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"rlm_vault.modelserver" in args and str(cache).encode() in args:
            found.add(int(cmdline.parent.name))
    return found


def pss_mb(pids: Iterable[int]) -> float:
    """Summed PSS (MB) of `pids` and their descendants, from /proc/<pid>/smaps_rollup."""
    total = 0
    for pid in _children(pids):
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:"))
    return total / 1024


def _semantic_enabled(client: StdioMCP) -> bool:
    status = client.tool("rlm_status", {})["result"].get("structuredContent") or {}
    return bool(status.get("semantic", {}).get("enabled"))


def many_servers(
    env: dict[str, str], cwd: Path, servers: int, searches: list[str], timeout: float = 900
) -> dict[str, Any]:
    """Start `servers` stdio servers together, wait until each ranks by meaning, search in each;
    returns summed PSS and one server's RSS (MB) with what it took."""
    clients = [StdioMCP([sys.executable, "-m", "rlm_vault", "serve"], env, cwd) for _ in range(servers)]
    try:
        for client in clients:
            client.handshake()
            client.tool("rlm_search", {"query": searches[0]})  # the first search starts the model load
        t0, deadline = time.perf_counter(), time.monotonic() + timeout
        waiting = list(clients)
        while waiting:
            if time.monotonic() > deadline:
                raise TimeoutError(f"semantic search still off in {len(waiting)} server(s)")
            time.sleep(0.5)
            waiting = [c for c in waiting if not _semantic_enabled(c)]
        ready_s = time.perf_counter() - t0
        for query in searches:
            for client in clients:
                client.tool("rlm_search", {"query": query})
        time.sleep(2)  # let background vector saves settle
        pids = [c.proc.pid for c in clients]
        vm = [_vm(pid) for pid in pids]
        every = [*pids, *model_processes(Path(env["XDG_CACHE_HOME"]) / "rlm-vault" / "models")]
        helpers = _children(every) - _children(pids)  # a model process another run left running
        return {
            "pss": pss_mb(every),
            "rss": vm[0].get("VmRSS", 0.0),
            "hwm_max": max(v.get("VmHWM", 0.0) for v in vm),
            "model_rss": sum(_vm(pid).get("VmRSS", 0.0) for pid in _children(every) - set(pids)),
            "ready_s": ready_s,
            "procs": len(_children(every)),
            "outside": len(helpers),
        }
    finally:
        for client in clients:
            client.close()


def run_model_sharing(base: Path, src: Path, report: Report, notes: int = 1000, servers: int = 4) -> None:
    """Row B: `servers` servers on one vault of `notes` chunks with a default-sized model, searching."""
    if not (src / "model.safetensors").exists():
        log(f"row B skipped: no test model at {src}")
        return
    log(f"row B: padding {src.name} to 500,000 x 256 float32")
    model = padded_model(src, base / "padded-model")
    paragraphs = load_paragraphs(
        base.parent / f"rlm-bench-pydoc-{sys.version_info[0]}{sys.version_info[1]}.json"
    )
    corpus, vault = Corpus(paragraphs), base / "vault-b"
    svc = open_service(vault, "none")
    log(f"row B: writing {notes} chunks")
    write_chunks(svc, [corpus.chunk() for _ in range(notes)])
    env = make_env(base, vault, str(model))
    log(f"row B: {servers} servers, waiting for semantic search in each")
    res = many_servers(env, base, servers, queries(paragraphs, 10, SEED + 7))
    size = (model / "model.safetensors").stat().st_size / 2**20
    common = (
        f"model {size:,.0f} MB on disk (500,000 x 256 float32); {notes} notes; {res['procs']} processes "
        f"(servers, and the model process: RSS {res['model_rss']:,.0f} MB)"
    )
    report.add(
        Row(
            "model_pss",
            f"{servers} servers with a default-sized model, semantic search on: summed PSS",
            "<= 800 MB (aim 400)",
            n=servers,
            p50=res["pss"],
            unit="MB",
            value=f"{res['pss']:,.0f} MB",
            ok=res["pss"] <= 800,
            note=f"{common}; all ranking by meaning {res['ready_s']:.1f} s after the first search",
        )
    )
    report.add(
        Row(
            "model_rss",
            "one of those servers: RSS",
            n=1,
            p50=res["rss"],
            unit="MB",
            value=f"{res['rss']:,.0f} MB",
            note=f"highest peak (VmHWM) among them {res['hwm_max']:,.0f} MB",
        )
    )


# ---------------------------------------------------------------------------------------------- transcript


def make_transcript(path: Path, corpus: Corpus, megabytes: float, tag: str) -> None:
    """A Claude Code transcript (JSONL, format of shared/claude-code/*.jsonl) of about `megabytes` MB."""
    rng = random.Random(SEED + 7)
    sid = "5b0c2f8e-bench-4e1a-9c77-0d9f3a1b2c3d"
    base = {
        "isSidechain": False,
        "userType": "external",
        "entrypoint": "cli",
        "cwd": "/home/dev/proj",
        "sessionId": sid,
        "version": "2.1.328",
        "gitBranch": "main",
    }
    lines: list[str] = []
    parent: str | None = None
    size = 0
    n = 0
    start = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)

    def emit(record: dict[str, Any]) -> None:
        nonlocal size, parent, n
        n += 1
        uid = f"{n:08x}-0000-4000-8000-{n:012x}"
        stamp = (start + timedelta(seconds=7 * n)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        full = {"parentUuid": parent, **record, "uuid": uid, "timestamp": stamp, **base}
        line = json.dumps(full, ensure_ascii=False, separators=(",", ":"))
        lines.append(line)
        size += len(line.encode()) + 1
        parent = uid

    limit = megabytes * 1024 * 1024
    boundary_at = limit * 0.1
    boundary_done = False
    turn = 0
    while size < limit:
        turn += 1
        prompt = f"({tag}) turn {turn}: " + " ".join(corpus.rng.choice(corpus.paragraphs).split()[:40])
        emit({"type": "user", "message": {"role": "user", "content": prompt}, "promptId": f"p{turn}"})
        emit(
            {
                "type": "attachment",
                "attachment": {"type": "date", "text": "2026-11-24"},
                "rendered": [{"content": "<system-reminder>\nToday is 2026-11-24.\n</system-reminder>"}],
            }
        )
        tool_id = f"toolu_{turn:020d}"
        emit(
            {
                "type": "assistant",
                "requestId": f"req_{turn}",
                "message": {
                    "id": f"msg_{turn}",
                    "model": "claude-opus-5-5",
                    "role": "assistant",
                    "stop_reason": "tool_use",
                    "content": [
                        {"type": "text", "text": corpus.rng.choice(corpus.paragraphs)},
                        {
                            "type": "tool_use",
                            "id": tool_id,
                            "name": "Read",
                            "input": {"file_path": f"/src/m{turn}.py"},
                        },
                    ],
                    "usage": {"input_tokens": 1200 + turn, "output_tokens": 300},
                },
            }
        )
        result = "\n\n".join(corpus.rng.sample(corpus.paragraphs, 3))
        emit(
            {
                "type": "user",
                "message": {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": result}],
                },
                "toolUseResult": {
                    "type": "text",
                    "file": {"filePath": f"/src/m{turn}.py", "content": result},
                },
            }
        )
        emit(
            {
                "type": "assistant",
                "requestId": f"req_{turn}b",
                "message": {
                    "id": f"msg_{turn}b",
                    "model": "claude-opus-5-5",
                    "role": "assistant",
                    "stop_reason": "end_turn",
                    "content": [{"type": "text", "text": corpus.rng.choice(corpus.paragraphs)}],
                    "usage": {"input_tokens": 1500 + turn, "output_tokens": 400},
                },
            }
        )
        emit({"type": "system", "subtype": "stop_hook_summary", "hookInfos": [], "durationMs": 12})
        if rng.random() < 0.5:  # the full API request, as Claude Code logs it: big, never conversation
            emit({"type": "api-request", "request": {"messages": [{"role": "user", "content": result * 2}]}})
        if not boundary_done and size > boundary_at:
            boundary_done = True
            emit(
                {
                    "type": "system",
                    "subtype": "compact_boundary",
                    "content": "Conversation compacted",
                    "logicalParentUuid": parent,
                    "compactMetadata": {
                        "trigger": "auto",
                        "preTokens": 150000,
                        "postTokens": 9000,
                        "durationMs": 30000,
                    },
                }
            )
            emit(
                {
                    "type": "user",
                    "isCompactSummary": True,
                    "isVisibleInTranscriptOnly": True,
                    "message": {
                        "role": "user",
                        "content": "This session is being continued from a previous "
                        "conversation that ran out of context. Summary:\nThe user works on BenchApp.",
                    },
                }
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def hook_exists(env: dict[str, str], cwd: Path) -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "rlm_vault", "hook", "--help"],
        env=env,
        cwd=cwd,
        capture_output=True,
        check=False,
        text=True,
    )
    return out.returncode == 0 and "pre-compact" in out.stdout


PROXY_HOOK = """
import sys, time
from rlm_vault.transcript import read_transcript
from rlm_vault.service import open_service
conv = read_transcript(sys.argv[1])
out = open_service().chunk(conv.text, summary=conv.summary_line(), chunk_type="snapshot", redact=True)
print(out["id"], out.get("commit"))
"""


# ---------------------------------------------------------------------------------------------- writers

WRITER = """
import json, sys, time
from rlm_vault.service import open_service
from rlm_vault.errors import VaultError
n, me = int(sys.argv[1]), int(sys.argv[2])
svc = open_service()
while time.time() < float(sys.argv[3]):
    time.sleep(0.005)
ids, errors = [], []
for i in range(n):
    text = f"writer {me} chunk {i}: " + ("concurrent write test line. " * 40)
    try:
        ids.append(svc.chunk(text, summary=f"writer {me} #{i}", tags="bench")["id"])
    except VaultError as exc:
        errors.append(str(exc)[:200])
print(json.dumps({"ids": ids, "errors": errors}))
"""


def concurrent_writers(base: Path, model: str, procs: int, per: int) -> dict[str, Any]:
    vault = base / f"writers-{procs}x{per}"
    env = make_env(base, vault, "none")
    open_service(vault, "none")  # created once, as a first `rlm-vault init` would
    before = commit_count(vault)
    start_at = time.time() + 1.5 + 0.15 * procs  # every process has imported before any writes
    children = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(per), str(k), str(start_at)],
            env=env,
            cwd=base,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(procs)
    ]
    results = []
    for child in children:
        out, err = child.communicate(timeout=900)
        results.append(
            json.loads(out.strip().splitlines()[-1])
            if child.returncode == 0 and out.strip()
            else {"ids": [], "errors": [f"exit {child.returncode}: {err.strip()[-300:]}"]}
        )
    wall = time.time() - start_at  # from the moment every process starts writing to the last one done
    ids = [i for r in results for i in r["ids"]]
    errors = [e for r in results for e in r["errors"]]
    files = len(list((vault / "chunks").glob("*/*.md")))
    subjects = subprocess.run(
        ["git", "-C", str(vault), "log", "--format=%s"], capture_output=True, check=False, text=True
    ).stdout.splitlines()
    chunk_commits = sum(1 for s in subjects if s.startswith("chunk:"))
    status = subprocess.run(
        ["git", "-C", str(vault), "status", "--porcelain", "--", "chunks"],
        capture_output=True,
        check=False,
        text=True,
    ).stdout.strip()
    wanted = procs * per
    lost = wanted - min(len(set(ids)), files, chunk_commits)
    return {
        "wanted": wanted,
        "ok": len(ids),
        "unique_ids": len(set(ids)),
        "files": files,
        "chunk_commits": chunk_commits,
        "commits": commit_count(vault) - before,
        "errors": errors[:5],
        "error_count": len(errors),
        "uncommitted": len(status.splitlines()) if status else 0,
        "lost": lost,
        "wall_s": round(wall, 2),
    }


# ---------------------------------------------------------------------------------------------- team

TEAM_WRITER = """
import json, sys, time
from rlm_vault.service import open_service
from rlm_vault.errors import VaultError
n, every, me = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
svc = open_service()
while time.time() < float(sys.argv[4]):
    time.sleep(0.005)
paths, syncs, errors, deferred = [], [], [], 0
for i in range(n):
    paths.append(svc.remember(f"machine {me} team note {i}: the shared fact number {i} of {me}")["path"])
    if (i + 1) % every == 0:
        t0 = time.perf_counter()
        try:
            deferred += bool(svc.sync().get("unpushed"))  # raced until the deadline: pushed next time
            syncs.append(time.perf_counter() - t0)
        except VaultError as exc:
            errors.append(str(exc)[:300])
print(json.dumps({"paths": paths, "syncs": syncs, "errors": errors, "deferred": deferred}))
"""


def _join_team(base: Path, remote: Path, name: str) -> Path:
    """A vault cloned from the team's remote, as `rlm-vault init --remote` makes it."""
    from rlm_vault.sync import clone_or_create

    vault = base / name
    clone_or_create(vault, str(remote))
    svc = open_service(vault, "none")
    svc.set_remote(str(remote))
    svc.sync()
    return vault


def _tracked_notes(repo: Path, rev: str = "HEAD") -> set[str]:
    out = subprocess.run(
        ["git", "-C", str(repo), "ls-tree", "-r", "--name-only", rev, "--", "insights"],
        capture_output=True,
        check=False,
        text=True,
    ).stdout
    return set(out.split())


def team_sync(base: Path, machines: int, writes: int, every: int) -> dict[str, Any]:
    """`machines` vaults on one bare remote, each writing and syncing every `every` writes, all at once."""
    remote = base / "team.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    vaults = [_join_team(base, remote, f"team-{k}") for k in range(machines)]
    load_before = os.getloadavg()[0]  # the machine is shared: the figures mean little without it
    start_at = time.time() + 1.5 + 0.2 * machines
    children = [
        subprocess.Popen(
            [sys.executable, "-c", TEAM_WRITER, str(writes), str(every), str(k), str(start_at)],
            env=make_env(base, vault, "none"),
            cwd=base,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k, vault in enumerate(vaults)
    ]
    results = []
    for child in children:
        out, err = child.communicate(timeout=1800)
        results.append(
            json.loads(out.strip().splitlines()[-1])
            if child.returncode == 0 and out.strip()
            else {"paths": [], "syncs": [], "errors": [f"exit {child.returncode}: {err.strip()[-300:]}"]}
        )
    writes_s = time.time() - start_at
    written = {p for r in results for p in r["paths"]}
    # Once the writes stop: sync rounds (every vault once, in turn) until every vault holds every note.
    t0, rounds = time.perf_counter(), 0
    services = [open_service(v, "none") for v in vaults]
    while rounds < 4 and any(not written <= _tracked_notes(v) for v in vaults):
        rounds += 1
        for svc in services:
            svc.sync()
    converge_s = time.perf_counter() - t0
    syncs = [t for r in results for t in r["syncs"]]
    missing = max(len(written - _tracked_notes(v)) for v in [*vaults, remote])
    conflicts = sum(1 for v in vaults for p in _tracked_notes(v) if ".conflict-" in p)
    return {
        "machines": machines,
        "wanted": machines * writes,
        "written": len(written),
        "syncs": syncs,
        "failed": sum(len(r["errors"]) for r in results),
        "deferred": sum(r.get("deferred", 0) for r in results),
        "errors": [e for r in results for e in r["errors"]][:3],
        "lost": machines * writes - len(written) + missing,
        "conflicts": conflicts,
        "rounds": rounds,
        "converge_s": round(converge_s, 2),
        "writes_s": round(writes_s, 1),
        "load": f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after",
    }


def _fast_history(repo: Path, commits: int, notes: int = 200) -> None:
    """A vault history of `commits` commits (each changes one of `notes` insights), built by fast-import."""
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    proc = subprocess.Popen(
        ["git", "-C", str(repo), "fast-import", "--quiet", "--done"], stdin=subprocess.PIPE
    )
    assert proc.stdin is not None
    write = proc.stdin.write
    stamp = 1_700_000_000
    template = ROOT / "rlm_vault" / "vault_template"
    for i in range(commits):
        lines = [
            "commit refs/heads/main",
            f"committer Bench <bench@example.com> {stamp + i} +0000",
        ]
        message = f"remember: note {i % notes} version {i}".encode()
        body = [*lines, f"data {len(message)}"]
        write(("\n".join(body) + "\n").encode() + message + b"\n")
        if i == 0:
            write(b"deleteall\n")
            for f in (".gitignore", ".gitattributes", "README.md", "domains.yaml"):
                data = (template / f).read_bytes() if (template / f).exists() else b"\n"
                write(f"M 100644 inline {f}\ndata {len(data)}\n".encode() + data + b"\n")
        k = i % notes
        note = (
            f"---\nid: 2026-01-01-note-{k}\ntype: insight\ncategory: fact\nimportance: low\n"
            f"tags: []\nproject: null\ncreated: 2026-01-01T00:00:00Z\nupdated: 2026-01-01T00:00:00Z\n"
            f"---\nShared fact {k}, version {i}.\n"
        ).encode()
        write(f"M 100644 inline insights/2026-01-01-note-{k}.md\ndata {len(note)}\n".encode() + note + b"\n")
    write(b"done\n")
    proc.stdin.close()
    assert proc.wait() == 0
    subprocess.run(["git", "-C", str(repo), "reset", "-q", "--hard"], check=True)


def sync_at_history(base: Path, commits: int, rounds: int = 5) -> tuple[list[float], float]:
    """Time of one sync (a note written on each side: fetch, merge, push) on a history of `commits`."""
    seed = base / f"history-{commits}"
    t0 = time.perf_counter()
    _fast_history(seed, commits)
    built = time.perf_counter() - t0
    remote = base / f"history-{commits}.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(remote)], check=True)
    mine = open_service(Path(_join_team(base, remote, f"history-{commits}-a")), "none")
    theirs = open_service(Path(_join_team(base, remote, f"history-{commits}-b")), "none")
    samples = []
    for r in range(rounds):
        theirs.remember(f"written elsewhere, round {r} at {commits} commits")
        theirs.sync()
        mine.remember(f"written here, round {r} at {commits} commits")
        t0 = time.perf_counter()
        mine.sync()
        samples.append(time.perf_counter() - t0)
    return samples, built


def run_team(base: Path, report: Report, quick: bool) -> None:
    """The team row: many machines on one remote, and sync cost against a long history."""
    home = base / "home"
    home.mkdir(parents=True, exist_ok=True)
    os.environ.update(make_env(base, base / "vault", "none"))
    machines, writes, every = (4, 10, 5) if quick else (8, 50, 5)
    r = team_sync(base, machines, writes, every)
    report.lat(
        "team_sync",
        f"team: {machines} vaults x {writes} writes, sync every {every}, concurrent: one sync",
        r["syncs"],
        target="0 failed, 0 lost",
        note=(
            f"{len(r['syncs'])} syncs, {r['failed']} failed, {r['deferred']} left commits for the next sync "
            f"(remote busy past the deadline), {r['lost']} lost of {r['wanted']}, "
            f"{r['conflicts']} conflict files; writes+syncs took {r['writes_s']} s; load average {r['load']}"
            + (f"; errors: {r['errors']}" if r["errors"] else "")
        ),
    ).ok = r["failed"] == 0 and r["deferred"] == 0 and r["lost"] == 0
    report.add(
        Row(
            "team_converge",
            "team: after the writes, until every vault holds every note",
            "<= 2 sync rounds",
            "",
            r["rounds"],
            value=f"{r['converge_s']:.1f} s, {r['rounds']} round(s)",
            ok=r["rounds"] <= 2 and r["lost"] == 0,
        )
    )
    for commits in (1000,) if quick else (10_000, 100_000):
        samples, built = sync_at_history(base, commits)
        report.lat(
            f"sync_history_{commits}",
            f"one sync (a note each side) at {commits:,} commits of history",
            samples,
            note=f"history built by git fast-import in {built:.1f} s",
        )


# ---------------------------------------------------------------------------------------------- row C


def git_footprint(vault: Path) -> dict[str, int]:
    """Loose objects, packs and the disk use of `.git` (allocated blocks, as `du` counts them)."""
    out = subprocess.run(
        ["git", "-C", str(vault), "count-objects", "-v"], capture_output=True, check=False, text=True
    ).stdout
    counts = {k: int(v) for k, v in (line.split(": ") for line in out.splitlines() if ": " in line)}
    used = 0
    for folder, dirs, files in os.walk(vault / ".git"):  # a running gc may remove files as we go
        for name in dirs + files:
            try:
                used += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except OSError:
                pass
    return {"loose": counts.get("count", 0), "packs": counts.get("packs", 0), "git_bytes": used}


def housekeeping_settled(vault: Path, timeout: float = 300) -> float:
    """Wait until no git gc has run on the vault for 2 s (gc.pid gone or its process ended); seconds waited.

    2 s: `git gc --auto` lets go of gc.pid for a moment when it moves to the background.
    """
    t0 = time.perf_counter()
    idle_since = t0
    pid_file = vault / ".git" / "gc.pid"
    while time.perf_counter() - idle_since < 2 and time.perf_counter() - t0 < timeout:
        try:
            os.kill(int(pid_file.read_text().split()[0]), 0)
            idle_since = time.perf_counter()
        except (OSError, ValueError, IndexError):
            pass
        time.sleep(0.05)
    return idle_since - t0


def row_c(base: Path, model: str, report: Report, calls: int) -> None:
    """C: `calls` rlm_chunk writes through the service; what `.git` holds after them."""
    paragraphs = load_paragraphs(
        base.parent / f"rlm-bench-pydoc-{sys.version_info[0]}{sys.version_info[1]}.json"
    )
    corpus = Corpus(paragraphs)
    vault = base / "vault-c"
    os.environ.update(make_env(base, vault, model))
    (base / "home").mkdir(parents=True, exist_ok=True)
    svc = open_service(vault, model)
    times, _ = write_chunks(svc, [corpus.chunk() for _ in range(calls)])
    at_last = git_footprint(vault)
    waited = housekeeping_settled(vault)
    settled = git_footprint(vault)
    mb = settled["git_bytes"] / 1e6
    report.lat(
        "c_write",
        f"C. rlm_chunk write over {calls:,} calls",
        times,
        25,
        note=f"{len(times)} calls; last 100 p50 {pct(times[-100:], 50) * MS:.1f} ms",
    )
    report.add(
        Row(
            "c_git",
            f"C. after {calls:,} rlm_chunk calls: loose objects / .git size",
            "<= 7,000 / <= 40 MB",
            "",
            calls,
            value=f"{settled['loose']:,} / {mb:,.1f} MB",
            ok=settled["loose"] <= 7000 and mb <= 40,
            note=f"{settled['packs']} packs; at the last call (a background gc may still run) "
            f"{at_last['loose']:,} loose / {at_last['git_bytes'] / 1e6:,.1f} MB; "
            f"waited {waited:.1f} s for the background gc to end",
        )
    )


# ---------------------------------------------------------------------------------------------- anchor


def run_anchor(
    exe: str,
    base: Path,
    corpus_paras: list[str],
    report: Report,
    n_chunks: int,
    n_insights: int,
    n_queries: int,
) -> None:
    """The same workload against rlm-claude (PyPI mcp-rlm-server) over stdio, on a smaller N."""
    context = base / "anchor-context"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLM_")}
    env.update(HOME=str(base / "anchor-home"), RLM_CONTEXT_DIR=str(context))
    proj = base / "anchor-proj"
    proj.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(proj)], check=False)
    corpus = Corpus(corpus_paras)
    specs = [corpus.chunk() for _ in range(n_chunks)]
    insights = [corpus.insight(i) for i in range(n_insights)]
    samples: dict[str, list[float]] = {}

    def run(key: str, tool: str, args: dict[str, Any], client: StdioMCP) -> str:
        t0 = time.perf_counter()
        msg = client.tool(tool, args)
        samples.setdefault(key, []).append(time.perf_counter() - t0)
        content = msg.get("result", {}).get("content", [])
        return "\n".join(c.get("text", "") for c in content if isinstance(c, dict))

    cold: list[float] = []
    for _ in range(3):
        client = StdioMCP([exe], env, proj)
        try:
            client.handshake()
            cold.append(time.perf_counter() - client.t0)
        finally:
            client.close()
    client = StdioMCP([exe], env, proj)
    try:
        client.handshake()
        ids: list[str] = []
        for s in specs:
            text = run(
                "chunk",
                "rlm_chunk",
                {
                    "content": s.content,
                    "summary": s.summary,
                    "tags": s.tags,
                    **({"domain": s.domain} if s.domain else {}),
                },
                client,
            )
            found = re.search(r"\b(\d{4}-\d{2}-\d{2}_[\w.-]+?_\d{3}[\w-]*)", text)
            if found:
                ids.append(found.group(1))
        for s in insights:
            run(
                "remember",
                "rlm_remember",
                {"content": s.content, "category": s.category, "importance": s.importance, "tags": s.tags},
                client,
            )
        for qtext in queries(corpus_paras, n_queries, SEED + 1):
            run("search", "rlm_search", {"query": qtext}, client)
        for pat in regex_patterns(corpus_paras, n_queries, SEED + 2):
            run("grep", "rlm_grep", {"pattern": pat}, client)
        for word in typo_words(corpus_paras, n_queries, SEED + 3):
            run("fuzzy", "rlm_grep", {"pattern": word, "fuzzy": True}, client)
        for qtext in queries(corpus_paras, n_queries, SEED + 4):
            run("recall", "rlm_recall", {"query": qtext.split()[0]}, client)
        for chunk_id in random.Random(SEED).sample(ids, min(n_queries, len(ids))):
            run("peek", "rlm_peek", {"chunk_id": chunk_id}, client)
    finally:
        client.close()
    pairs = {
        "chunk": "chunk_first",
        "remember": "remember_first",
        "search": "search_2k",
        "grep": "grep_regex",
        "fuzzy": "grep_fuzzy",
        "recall": "recall",
        "peek": "peek",
    }
    for key, row in pairs.items():
        if samples.get(key) and row in report.rows:
            report.rows[row].side = pct(samples[key], 50) * MS
    if cold and "cold_start" in report.rows:
        report.rows["cold_start"].side = statistics.median(cold) * MS
    report.meta["anchor"] = {
        "exe": exe,
        "chunks": n_chunks,
        "insights": n_insights,
        "queries": n_queries,
        "p50_ms": {k: round(pct(v, 50) * MS, 1) for k, v in samples.items()},
        "note": "smaller N than our run: the anchor writes cost 70-145 ms and searches ~1.2 s",
    }


# ---------------------------------------------------------------------------------------------- the run


def run(plan: Plan, model: str, base: Path, report: Report, anchor: str | None) -> None:
    import rlm_vault

    report.meta.update(
        python=sys.version.split()[0],
        platform=platform.platform(),
        cpus=os.cpu_count(),
        model=model,
        seed=SEED,
        plan=vars(plan),
        rlm_vault=getattr(rlm_vault, "__version__", "?"),
        git=subprocess.run(["git", "--version"], capture_output=True, check=False, text=True).stdout.strip(),
        commit=subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            check=False,
            text=True,
        ).stdout.strip(),
        started=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        load_start=os.getloadavg(),
    )
    home = base / "home"
    home.mkdir(parents=True, exist_ok=True)
    os.environ.update(make_env(base, base / "vault", model))
    paragraphs = load_paragraphs(
        base.parent / f"rlm-bench-pydoc-{sys.version_info[0]}{sys.version_info[1]}.json"
    )
    corpus = Corpus(paragraphs)
    log(f"corpus: {len(paragraphs)} pydoc paragraphs; plan {vars(plan)}")

    # -- writes: chunks (the first `old` ones written "40 days ago"), then insights ------------------
    specs = [corpus.chunk() for _ in range(plan.chunks)]
    old_until, due = len(specs), 0
    for i, spec in enumerate(specs):
        due += not spec.immune
        if due == plan.archive:
            old_until = i + 1
            break
    clock = Clock()
    vault = base / "vault"
    svc = open_service(vault, model, clock)
    commits = CommitTimer(svc.vault.git)
    t_chunks, ids = write_chunks(svc, specs, clock, old_until, timedelta(days=40))
    n100 = min(100, len(t_chunks) // 2)
    report.lat(
        "chunk_first", f"rlm_chunk write, first {n100}", t_chunks[:n100], 25, anchor="70 ms (first 100: 13.6)"
    )
    report.lat(
        "chunk_last",
        f"rlm_chunk write, last {n100} (at {plan.chunks:,})",
        t_chunks[-n100:],
        25,
        anchor="145 ms (last 100 mean)",
    )
    report.lat(
        "commit_0", "git commit inside a write, at 0 notes", commits.samples[:n100], None, target="flat"
    )
    report.lat(
        "commit_2k",
        f"git commit inside a write, at {plan.chunks:,} notes",
        commits.samples[-n100:],
        None,
        target="flat",
    )
    t_ins = []
    for n in range(plan.insights):
        s = corpus.insight(n)
        dt, _ = timed(lambda s=s: svc.remember(s.content, s.category, s.importance, s.tags))
        t_ins.append(dt)
    m100 = min(100, len(t_ins) // 2)
    report.lat(
        "remember_first", f"rlm_remember write, first {m100}", t_ins[:m100], 25, anchor="8.3 ms (1.5 first)"
    )
    report.lat(
        "remember_last",
        f"rlm_remember write, last {m100} (at {plan.insights:,} insights)",
        t_ins[-m100:],
        25,
        anchor="15.8 ms (last 100 mean)",
    )

    # -- retention on a copy of the vault, clock moved 45 days on ------------------------------------
    copy = base / "vault-retention"
    housekeeping_settled(vault)  # a background gc removes files while it runs: copy a still vault
    shutil.copytree(vault, copy, symlinks=True)
    rclock = Clock()
    rclock.offset = clock.offset + timedelta(days=5)
    rsvc = open_service(copy, "none", rclock)
    previews = [timed(rsvc.retention_preview) for _ in range(3)]
    due_ids = previews[-1][1]["archive"]
    report.lat(
        "retention_preview",
        f"rlm_retention_preview ({len(due_ids):,} due)",
        [p[0] for p in previews],
        None,
        anchor="338 ms",
    )
    before = commit_count(copy)
    dt, out = timed(rsvc.retention_run)
    made = commit_count(copy) - before
    archived = len(out["archived"])
    gz = len(list((copy / "archive").glob("*/*.md.gz")))
    ok = dt <= 10 and made == 1 and abs(archived - plan.archive) <= plan.archive // 100 and gz == archived
    report.add(
        Row(
            "archive",
            f"rlm_retention_run archive of {archived:,} chunks",
            "<= 10 s, one commit",
            "186 s",
            1,
            dt,
            unit="s",
            value=f"{dt:,.2f} s, {made} commit",
            ok=ok,
            note=""
            if ok
            else f"wanted {plan.archive} archived in one commit; got {archived}, {gz} .gz, {made} commits",
        )
    )
    del rsvc
    shutil.rmtree(copy, ignore_errors=True)

    # -- reads at 2k ------------------------------------------------------------------------------------
    ready = svc.wait_for_model(timeout=300)
    report.meta["semantic_2k"] = svc.semantic_status()
    dt, _ = timed(lambda: svc.search("cache warm up query"))
    report.add(
        Row(
            "search_catchup",
            f"first rlm_search after {plan.chunks + plan.insights:,} writes",
            "",
            "",
            1,
            dt * MS,
            note="caches catch up with the vault (text index built, first vectors embedded)",
        )
    )
    dt, out = timed(lambda: svc.reindex(wait_model=True))
    report.add(
        Row(
            "reindex_2k",
            f"full reindex, {plan.chunks + plan.insights:,} notes (model {'on' if ready else 'off'})",
            "",
            "",
            1,
            dt,
            unit="s",
            value=f"{dt:,.1f} s",
        )
    )
    qs = queries(paragraphs, plan.queries, SEED + 1)
    t_search = [timed(lambda q=q: svc.search(q))[0] for q in qs]
    report.lat(
        "search_2k",
        f"rlm_search ({plan.chunks:,} chunks + {plan.insights:,} insights)",
        t_search,
        30,
        anchor="1,175 ms",
        note="" if ready else "model not loaded: BM25 only",
    )
    t_filt = [timed(lambda q=q: svc.search(q, project="BenchApp", domain="feature"))[0] for q in qs[:20]]
    report.lat("search_filtered", "rlm_search with project + domain filters", t_filt, 30, anchor="1,787 ms")
    t_re = [timed(lambda p=p: svc.grep(p))[0] for p in regex_patterns(paragraphs, plan.queries, SEED + 2)]
    report.lat("grep_regex", "rlm_grep regex", t_re, 50, anchor="164 ms")
    words = typo_words(paragraphs, plan.queries + 1, SEED + 3)
    dt, _ = timed(lambda: svc.grep(words[0], fuzzy=True))
    report.add(Row("fuzzy_first", "first rlm_grep fuzzy (builds the fuzzy index)", "", "", 1, dt * MS))
    t_fz = [timed(lambda w=w: svc.grep(w, fuzzy=True))[0] for w in words[1:]]
    report.lat("grep_fuzzy", "rlm_grep fuzzy (typo'd words)", t_fz, 30, anchor="347 ms")
    t_rc = [
        timed(lambda q=q: svc.recall(q.split()[0]))[0] for q in queries(paragraphs, plan.queries, SEED + 4)
    ]
    report.lat("recall", "rlm_recall", t_rc, None, anchor="9.6 ms")
    peek_ids = random.Random(SEED).sample(ids, min(plan.queries, len(ids)))
    t_pk = [timed(lambda i=i: svc.peek(i, 0, 40))[0] for i in peek_ids]
    report.lat("peek", "rlm_peek", t_pk, None, anchor="132 ms")
    t_st = [timed(svc.status)[0] for _ in range(5)]
    report.lat("status", "rlm_status", t_st, None, anchor="31 ms")
    # a realistic session mixes the two: each search first takes in the note written just before it
    t_mixed = []
    for k in range(min(20, plan.queries)):
        spec = corpus.chunk()
        svc.chunk(spec.content, spec.summary, spec.tags, spec.project, spec.ticket, spec.domain)
        t_mixed.append(timed(lambda k=k: svc.search(qs[k]))[0])
    report.lat(
        "search_after_write",
        "rlm_search right after an rlm_chunk",
        t_mixed,
        30,
        note="includes indexing the new note (Whoosh commit, its vector, fuzzy postings); the MCP server does this in the background after each write",
    )

    # -- cold start (empty vault, then this one) ----------------------------------------------------------
    empty = base / "vault-empty"
    open_service(empty, "none")
    cold_e = cold_start(make_env(base, empty, model), base, plan.cold_runs)
    cold_f = cold_start(make_env(base, vault, model), base, plan.cold_runs)
    size = cold_e.size
    cold_rows(report, "cold_start", "empty vault", cold_e, 800, anchor="0.70-0.83 s")
    cold_rows(report, "cold_start_full", f"{plan.chunks + plan.insights:,}-note vault", cold_f, 800)
    report.add(
        Row(
            "tools_list_tokens",
            "tools/list size",
            "< 4,000 tokens",
            "",
            1,
            value=f"~{size // 4:,} tokens",
            ok=size // 4 < 4000,
            note=f"{size:,} characters of JSON / 4",
        )
    )

    # -- PreCompact hook on a 5 MB transcript ----------------------------------------------------------
    env = make_env(base, vault, model)
    tdir = home / ".claude" / "projects" / "-home-dev-proj"
    has_hook = hook_exists(env, base)
    hook_times, saved = [], 0
    for k in range(3 if not plan.quick else 1):
        tpath = tdir / f"session-{k}.jsonl"
        make_transcript(
            tpath, Corpus(paragraphs, random.Random(SEED + 100 + k)), plan.transcript_mb, f"run {k}"
        )
        head = subprocess.run(
            ["git", "-C", str(vault), "rev-parse", "HEAD"], capture_output=True, check=False, text=True
        ).stdout
        if has_hook:
            stdin = json.dumps(
                {
                    "session_id": f"bench-{k}",
                    "transcript_path": str(tpath),
                    "cwd": str(base),
                    "hook_event_name": "PreCompact",
                    "trigger": "auto",
                    "custom_instructions": None,
                }
            )
            cmd = [shutil.which("rlm-vault", path=str(Path(sys.executable).parent)) or sys.executable]
            cmd = (
                cmd + ["hook", "pre-compact"]
                if cmd[0] != sys.executable
                else [sys.executable, "-m", "rlm_vault", "hook", "pre-compact"]
            )
            dt, proc = timed(
                lambda cmd=cmd, stdin=stdin: subprocess.run(
                    cmd,
                    input=stdin,
                    env=env,
                    cwd=base,
                    capture_output=True,
                    check=False,
                    text=True,
                    timeout=120,
                )
            )
        else:
            dt, proc = timed(
                lambda tpath=tpath: subprocess.run(
                    [sys.executable, "-c", PROXY_HOOK, str(tpath)],
                    env=env,
                    cwd=base,
                    capture_output=True,
                    check=False,
                    text=True,
                    timeout=120,
                )
            )
        after = subprocess.run(
            ["git", "-C", str(vault), "log", "-1", "--format=%H %s"],
            capture_output=True,
            check=False,
            text=True,
        ).stdout
        touched = subprocess.run(
            ["git", "-C", str(vault), "diff-tree", "--no-commit-id", "--name-only", "-r", "HEAD"],
            capture_output=True,
            check=False,
            text=True,
        ).stdout
        if proc.returncode == 0 and not after.startswith(head.strip()) and "chunks/" in touched:
            saved += 1
        hook_times.append(dt)
    size_mb = tpath.stat().st_size / 1e6
    med = statistics.median(hook_times)
    if has_hook:
        report.add(
            Row(
                "hook",
                f"PreCompact hook, {size_mb:.1f} MB transcript",
                "<= 1.5 s, snapshot committed",
                "saves nothing",
                len(hook_times),
                med * MS,
                max(hook_times) * MS,
                ok=med <= 1.5 and saved == len(hook_times),
                note=f"whole subprocess; median, p95 column = max; {saved}/{len(hook_times)} snapshots committed",
            )
        )
    else:
        report.add(
            Row(
                "hook",
                f"PreCompact hook, {size_mb:.1f} MB transcript",
                "<= 1.5 s, snapshot committed",
                "saves nothing",
                len(hook_times),
                value="n/a (no hook yet)",
                ok=False,
                note=f"proxy (subprocess: read_transcript + service.chunk snapshot): median "
                f"{med * MS:,.0f} ms, max {max(hook_times) * MS:,.0f} ms, {saved}/{len(hook_times)} committed",
            )
        )

    # -- scale: keep writing up to `scale` chunks -----------------------------------------------------------
    if plan.scale > plan.chunks:
        # Filled through the importers' bulk path (one commit per 1,000 notes: 8,000 tool writes would take
        # ~10 min here), then the last `measured` chunks go through rlm_chunk like every other write.
        from rlm_vault.bulk import NewChunk, write_many

        measured = min(200, plan.scale - plan.chunks)
        fill = [corpus.chunk() for _ in range(plan.scale - plan.chunks - measured)]
        t0 = time.perf_counter()
        for start in range(0, len(fill), 1000):
            batch = [
                NewChunk(
                    s.content,
                    s.project,
                    svc.now(),
                    summary=s.summary or s.content.split("\n")[0][:100],
                    tags=tuple(t for t in s.tags.split(",") if t),
                    domain=s.domain,
                    ticket=s.ticket,
                )
                for s in fill[start : start + 1000]
            ]
            write_many(svc, [], batch, f"import: {len(batch)} bench chunks")
        fill_s = time.perf_counter() - t0
        commits.samples.clear()
        t_scale, _ = write_chunks(svc, [corpus.chunk() for _ in range(measured)])
        total = len(svc.fresh().chunks())
        k = min(100, len(t_scale) // 2)
        report.lat(
            "chunk_scale",
            f"rlm_chunk write, last {k} (at {total:,} chunks)",
            t_scale[-k:],
            25,
            anchor="145 ms at 2k",
            note=f"vault filled to {total - measured:,} chunks with the bulk import "
            f"path ({fill_s:,.0f} s), then {measured} rlm_chunk writes",
        )
        report.lat(
            "commit_scale",
            f"git commit inside a write, at {total:,} notes",
            commits.samples[-k:],
            None,
            target="flat",
        )
        gc.collect()
        dt, out = timed(lambda: svc.reindex(wait_model=True))
        report.add(
            Row(
                "reindex",
                f"full reindex, {out['indexed']:,} notes (with the model)",
                "<= 60 s",
                "n/a",
                1,
                dt,
                unit="s",
                value=f"{dt:,.1f} s",
                ok=dt <= 60,
                note="" if out["semantic"]["enabled"] else "model not loaded: text index only",
            )
        )
        qs = queries(paragraphs, plan.queries, SEED + 5)
        t_big = [timed(lambda q=q: svc.search(q))[0] for q in qs]
        report.lat("search_10k", f"rlm_search at {total:,} chunks", t_big, 60, anchor="n/a")
        t_re = [timed(lambda p=p: svc.grep(p))[0] for p in regex_patterns(paragraphs, plan.queries, SEED + 6)]
        report.lat("grep_regex_10k", f"rlm_grep regex at {total:,} chunks", t_re, None)
        words = typo_words(paragraphs, plan.queries + 1, SEED + 7)
        svc.grep(words[0], fuzzy=True)
        t_fz = [timed(lambda w=w: svc.grep(w, fuzzy=True))[0] for w in words[1:]]
        report.lat("grep_fuzzy_10k", f"rlm_grep fuzzy at {total:,} chunks", t_fz, None)
        t_mixed = []
        for k in range(min(10, plan.queries)):
            spec = corpus.chunk()
            svc.chunk(spec.content, spec.summary, spec.tags, spec.project, spec.ticket, spec.domain)
            t_mixed.append(timed(lambda k=k: svc.search(qs[k]))[0])
        report.lat(
            "search_after_write_10k", f"rlm_search right after an rlm_chunk, at {total:,}", t_mixed, 60
        )

    # -- what the MCP server holds in memory on this vault, after a search and a fuzzy grep ---------------
    hwm, phases = server_memory(make_env(base, vault, model), base)
    total = len(list((vault / "chunks").glob("*/*.md")))
    report.add(
        Row(
            "server_rss",
            f"MCP server peak memory, {total:,}-chunk vault",
            "",
            "102-147 MB",
            1,
            hwm,
            unit="MB",
            value=f"{hwm:,.0f} MB",
            note="VmHWM of `rlm-vault serve` after tools/list, rlm_search and rlm_grep fuzzy; " + phases,
        )
    )

    # -- concurrent writers -------------------------------------------------------------------------------
    for procs, per in plan.writers:
        res = concurrent_writers(base, model, procs, per)
        report.add(
            Row(
                f"writers_{procs}",
                f"{procs} concurrent writers x {per} chunks",
                "0 lost",
                "37 % lost (2 x 150)" if procs == 2 else "",
                procs * per,
                value=f"{res['lost']} lost, {res['error_count']} errors, {res['wall_s']} s",
                ok=res["lost"] == 0 and res["error_count"] == 0 and res["uncommitted"] == 0,
                note=f"{res['files']} files, {res['chunk_commits']} chunk commits, {res['unique_ids']} "
                f"unique ids" + (f"; errors: {res['errors']}" if res["errors"] else ""),
            )
        )

    # -- anchor (optional) ------------------------------------------------------------------------------
    if anchor:
        n = 50 if plan.quick else 300
        log(f"anchor: {anchor} with {n} chunks, {n // 2} insights, 20 queries")
        try:
            run_anchor(anchor, base, paragraphs, report, n, n // 2, 20)
        except Exception as exc:  # noqa: BLE001 - optional: never lose our own results to it
            report.meta["anchor_error"] = f"{type(exc).__name__}: {exc}"
            log(f"anchor failed: {exc}")

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report.add(
        Row(
            "rss",
            "peak memory (maxrss) of the bench process",
            "",
            "147 MB",
            1,
            rss,
            unit="MB",
            value=f"{rss:,.0f} MB",
            note="the whole workload in one process, full reindex at the largest "
            "size included; see the server row for what a user's server holds",
        )
    )


# ---------------------------------------------------------------------------------------------- main


def _bulk_fill(svc: Any, corpus: Corpus, chunks: int, insights: int) -> float:
    """Write `chunks` chunks and `insights` insights through the importers' bulk path; seconds taken."""
    from rlm_vault.bulk import NewChunk, NewInsight, write_many

    t0 = time.perf_counter()
    for start in range(0, max(chunks, insights), 1000):
        batch = [corpus.chunk() for _ in range(max(0, min(1000, chunks - start)))]
        new_chunks = [
            NewChunk(
                s.content,
                s.project,
                svc.now(),
                summary=s.summary or s.content.split("\n")[0][:100],
                tags=tuple(t for t in s.tags.split(",") if t),
                domain=s.domain,
                ticket=s.ticket,
            )
            for s in batch
        ]
        specs = [corpus.insight(n) for n in range(start, min(start + 1000, insights))]
        new_insights = [
            NewInsight(i.content, i.category, i.importance, tuple(t for t in i.tags.split(",") if t))
            for i in specs
        ]
        write_many(svc, new_insights, new_chunks, f"import: {len(batch)} bench chunks")
    return time.perf_counter() - t0


def run_search_rows(plan: Plan, model: str, base: Path, report: Report) -> None:
    """Only the search rows: the vault filled through the bulk path, then rlm_search timed at both sizes."""
    (base / "home").mkdir(parents=True, exist_ok=True)
    os.environ.update(make_env(base, base / "vault", model))
    paragraphs = load_paragraphs(
        base.parent / f"rlm-bench-pydoc-{sys.version_info[0]}{sys.version_info[1]}.json"
    )
    corpus = Corpus(paragraphs)
    svc = open_service(base / "vault", model)
    report.meta["semantic"] = svc.wait_for_model(timeout=300)
    for size, insights, seed, key, target in (
        (plan.chunks, plan.insights, SEED + 1, "search_2k", 30),
        (plan.scale, 0, SEED + 5, "search_10k", 60),
    ):
        size -= min(10, plan.queries)  # the chunks written one by one below
        filled = _bulk_fill(svc, corpus, size - len(svc.fresh().chunks()), insights)
        svc.reindex(wait_model=True)
        qs = queries(paragraphs, plan.queries, seed)
        svc.search(qs[0])
        samples = [timed(lambda q=q: svc.search(q))[0] for q in qs]
        total = len(svc.fresh().chunks())
        report.lat(
            key,
            f"rlm_search ({total:,} chunks + {len(svc.fresh().insights()):,} insights)",
            samples,
            target,
            note=f"filled through the bulk path in {filled:,.0f} s; model {'on' if report.meta['semantic'] else 'off'}",
        )
        after_write = []
        for q in qs[: min(10, plan.queries)]:
            spec = corpus.chunk()
            svc.chunk(spec.content, spec.summary, spec.tags, spec.project, spec.ticket, spec.domain)
            after_write.append(timed(lambda q=q: svc.search(q))[0])
        report.lat(
            key.replace("search", "search_after_write"),
            f"rlm_search right after an rlm_chunk, at {total + len(after_write):,} chunks",
            after_write,
            target,
        )
    svc.close()


# ---------------------------------------------------------------------------------------------- memory rows


def _pss(pid: int) -> float:
    """Proportional set size (MB) of a process and its children: shared pages count once across them."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    total = 0
    for p in [pid, *(int(c) for c in children.stdout.split())]:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _bulk_vault(vault: Path, model: str, chunks: int, insights: int, corpus: Corpus) -> float:
    """A vault of `chunks` + `insights` notes written by the importers' bulk path; returns seconds."""
    from rlm_vault.bulk import NewChunk, NewInsight, write_many

    svc = open_service(vault, "none")
    t0 = time.perf_counter()
    made = [NewInsight(corpus.insight(n).content, created=svc.now()) for n in range(insights)]
    write_many(svc, made, [], f"import: {insights} bench insights") if made else None
    for start in range(0, chunks, 1000):
        batch = []
        for _ in range(min(1000, chunks - start)):
            spec = corpus.chunk()
            summary = spec.summary or spec.content.split("\n")[0][:100]
            batch.append(NewChunk(spec.content, spec.project, svc.now(), summary=summary, domain=spec.domain))
        write_many(svc, [], batch, f"import: {len(batch)} bench chunks")
    return time.perf_counter() - t0


def _reindex(env: dict[str, str], cwd: Path) -> float:
    """Build the caches once with `rlm-vault reindex` (what the first server would do); seconds."""
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "rlm_vault", "reindex"], env=env, cwd=cwd, check=True, capture_output=True
    )
    return time.perf_counter() - t0


def _semantic_on(server: StdioMCP, timeout: float = 300) -> None:
    """Wait until the server's model is loaded (the first search starts loading it)."""
    server.tool("rlm_search", {"query": "warm up"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = server.tool("rlm_status", {})["result"]["structuredContent"]
        semantic = status["semantic"]
        if semantic["enabled"] or semantic["model"] in ("none", ""):
            return
        if "could not be" in semantic["reason"]:
            raise RuntimeError(f"semantic search cannot start in the server: {semantic['reason']}")
        time.sleep(1)


def _exercise(server: StdioMCP, qs: list[str], patterns: list[str], typos: list[str]) -> None:
    for query in qs:
        server.tool("rlm_search", {"query": query})
    for pattern in patterns:
        server.tool("rlm_grep", {"pattern": pattern})
    for word in typos:
        server.tool("rlm_grep", {"pattern": word, "fuzzy": True})


def row_memory(base: Path, model: str, report: Report, corpus: Corpus, chunks: int, servers: int) -> None:
    """Row A: `servers` stdio servers on one vault of `chunks` chunks + 1,000 insights, after searches and
    regex / fuzzy greps: summed PSS over every process, and the largest one server's RSS."""
    vault = base / "mem-vault"
    env = {**make_env(base, vault, model), "XDG_CACHE_HOME": str(base / "mem-cache")}
    fill = _bulk_vault(vault, model, chunks, min(1000, chunks // 2), corpus)
    build = _reindex(env, base)
    qs = queries(corpus.paragraphs, 4, SEED + 31)
    patterns = regex_patterns(corpus.paragraphs, 3, SEED + 32)
    typos = typo_words(corpus.paragraphs, 3, SEED + 33)
    clients = [StdioMCP([sys.executable, "-m", "rlm_vault", "serve"], env, base) for _ in range(servers)]
    try:
        for client in clients:
            client.handshake()
        for client in clients:
            _semantic_on(client)
            _exercise(client, qs, patterns, typos)
        time.sleep(2)
        pss = [_pss(c.proc.pid) for c in clients]
        rss = [_vm(c.proc.pid).get("VmRSS", 0.0) for c in clients]
        models = model_processes(Path(env["XDG_CACHE_HOME"]) / "rlm-vault" / "models")
        model_pss = pss_mb(models)  # the machine's model process, which the servers started
        total = pss_mb([*(c.proc.pid for c in clients), *models])
    finally:
        for client in clients:
            client.close()
    notes = (
        f"{chunks:,} chunks + {min(1000, chunks // 2):,} insights (bulk {fill:.0f} s, reindex {build:.0f} s)"
    )
    report.add(
        Row(
            "mem_pss",
            f"A. {servers} servers, {notes.split(' (')[0]}: summed PSS",
            "<= 600 MB (aim 300)",
            "1,049 MB before",
            servers,
            value=f"{total:,.0f} MB (servers {', '.join(f'{v:.0f}' for v in pss)}; model process {model_pss:.0f})",
            ok=total <= 600 if servers == 4 and chunks >= 10000 else None,
            note=f"after 4 searches, 3 regex and 3 fuzzy greps each; {notes}; every process counted once",
        )
    )
    report.add(
        Row(
            "mem_rss",
            "A. one server's RSS in that run",
            "<= 250 MB",
            "353 MB before",
            servers,
            value=f"{max(rss):,.0f} MB",
            ok=max(rss) <= 250 if chunks >= 10000 else None,
        )
    )


def row_scale(base: Path, model: str, report: Report, corpus: Corpus, chunks: int, runs: int) -> None:
    """Row D: a bulk-written vault of `chunks` chunks served over stdio: rlm_chunk and rlm_search p50,
    one server's RSS after them, and cold start to tools/list."""
    vault = base / "scale-vault"
    env = {**make_env(base, vault, model), "XDG_CACHE_HOME": str(base / "scale-cache")}
    fill = _bulk_vault(vault, model, chunks, 0, corpus)
    build = _reindex(env, base)
    label = f"{chunks:,} chunks"
    cold_rows(report, "d_cold", label, cold_start(env, base, 3), 1000, prefix="D. ")
    client = StdioMCP([sys.executable, "-m", "rlm_vault", "serve"], env, base)
    try:
        client.handshake()
        _semantic_on(client)
        qs = queries(corpus.paragraphs, runs, SEED + 41)
        searches = [timed(lambda q=q: client.tool("rlm_search", {"query": q}))[0] for q in qs]
        writes = []
        for _ in range(runs):
            spec = corpus.chunk()
            args = {"content": spec.content, "summary": spec.summary, "project": spec.project}
            writes.append(timed(lambda a=args: client.tool("rlm_chunk", a))[0])
        rss = _vm(client.proc.pid).get("VmRSS", 0.0)
    finally:
        client.close()
    note = f"over stdio; vault bulk-written in {fill:.0f} s, caches built by reindex in {build:.0f} s"
    report.lat("d_chunk", f"D. rlm_chunk at {label}", writes, 25, note=note)
    report.lat("d_search", f"D. rlm_search at {label}", searches, 100)
    report.add(
        Row(
            "d_rss",
            f"D. one server's RSS at {label}",
            "<= 300 MB",
            n=1,
            value=f"{rss:,.0f} MB",
            ok=rss <= 300,
        )
    )


def run_rows(rows: set[str], plan: Plan, model: str, base: Path, report: Report) -> None:
    """The rows asked for by --rows beyond the main run: A (memory of several servers), D (100k chunks)."""
    if not rows & {"A", "D"}:
        return
    os.environ.update({**make_env(base, base / "vault", model), "XDG_CACHE_HOME": str(base / "cache")})
    corpus = Corpus(
        load_paragraphs(base.parent / f"rlm-bench-pydoc-{sys.version_info[0]}{sys.version_info[1]}.json")
    )
    if "A" in rows:
        row_memory(base, model, report, corpus, 2000 if plan.quick else 10000, 2 if plan.quick else 4)
    if "D" in rows:
        row_scale(base, model, report, corpus, 2000 if plan.quick else 100000, 5 if plan.quick else 30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (about a minute)")
    parser.add_argument("--scale", type=int, default=None, help="chunks in the scale run (default 10000)")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to this file")
    parser.add_argument("--model", default=None, help="model2vec model folder or name ('none' = BM25 only)")
    parser.add_argument(
        "--anchor", metavar="EXE", help="mcp-rlm-server executable (rlm-claude) to compare with"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    parser.add_argument(
        "--only",
        choices=["team", "model-sharing"],
        help="run one group of rows: team = many machines syncing one remote; model-sharing = row B, "
        "4 servers with a default-sized model",
    )
    parser.add_argument(
        "--rows",
        default="main,A,D",
        help="comma list of row groups: main (DESIGN.md §5 rows), A (memory of 4 servers), C (3,000 "
        "rlm_chunk calls, then what .git holds), D (100k chunks), search (only the rlm_search rows)",
    )
    parser.add_argument("--calls", type=int, default=3000, help="rlm_chunk calls of row C")
    parser.add_argument("--_paragraphs", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._paragraphs:
        _pydoc_paragraphs(Path(args._paragraphs))
        return 0
    model = (
        args.model
        or os.environ.get("RLM_BENCH_MODEL")
        or (str(DEFAULT_MODEL) if DEFAULT_MODEL.exists() else "none")
    )
    if Path(model).exists():  # the servers run in the temporary folder: a relative path would not load there
        model = str(Path(model).resolve())
    if args.quick:
        plan = Plan(
            chunks=200,
            insights=100,
            archive=120,
            scale=args.scale or 400,
            queries=10,
            writers=((2, 10), (8, 5)),
            cold_runs=2,
            transcript_mb=1.0,
            quick=True,
        )
    else:
        plan = Plan(
            chunks=2000,
            insights=1000,
            archive=1600,
            scale=args.scale or 10000,
            queries=50,
            writers=((2, 150), (8, 100)),
            cold_runs=5,
            transcript_mb=5.0,
            quick=False,
        )
    sys.path.insert(0, str(ROOT))
    base = Path(tempfile.mkdtemp(prefix="rlm-bench-"))
    report = Report()
    started = time.perf_counter()
    try:
        if args.only == "team":
            run_team(base, report, plan.quick)
        elif args.only == "model-sharing":
            (base / "home").mkdir(parents=True)
            os.environ.update(make_env(base, base / "vault-b", "none"))
            run_model_sharing(base, Path(model), report)
        else:
            rows = {r.strip().upper() for r in args.rows.split(",") if r.strip()}
            if "MAIN" in rows:
                run(plan, model, base, report, args.anchor)
            if "SEARCH" in rows:
                run_search_rows(plan, model, base, report)
            if "C" in rows:
                row_c(base, model, report, args.calls)
            run_rows(rows, plan, model, base, report)
    finally:
        report.meta["total_s"] = round(time.perf_counter() - started, 1)
        report.meta["load_end"] = os.getloadavg()
        print()
        print(
            f"rlm-vault benchmark ({'quick' if plan.quick else 'full'}; {os.cpu_count()} cores; Python "
            f"{sys.version.split()[0]}; model {Path(model).name}; {report.meta['total_s']} s)"
        )
        print(report.table())
        missed = [r.label for r in report.rows.values() if r.ok is False]
        print(f"\n{len(missed)} row(s) miss their target" + (": " + "; ".join(missed) if missed else ""))
        if args.json:
            Path(args.json).write_text(
                json.dumps(report.json(), indent=2, ensure_ascii=False), encoding="utf-8"
            )
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
