"""Retrieval evaluation on LoCoMo (evaluation only, CC BY-NC 4.0: the data is never copied here).

By default each conversation is written through the real tools (`MemoryService.chunk`, one commit per
chunk, in a temporary vault), one chunk per session or per turn, then every question (category 5
excluded) is asked with `MemoryService.search` (what rlm_search runs); a question counts as found at k
when one of its evidence sessions/turns is among the top k. Prints R@1, R@5, R@10 and MRR for BM25 only
and hybrid, beside a plain BM25 baseline (scripts/plain_bm25.py) over the same documents. `--engine
direct` feeds the search caches directly (fast, for tuning).

Held-out discipline: `--split tune` keeps the conversations ranking changes are tuned on (the first three
of the file), `--split heldout` the others (reported, never tuned on); `--swap` exchanges the two parts
as a cross-check, and `--conversations 0,3` picks conversations by position.

    python scripts/eval_locomo.py [--data ../shared/eval/locomo-dev.json] [--model DIR] [--level turn]
        [--split tune|heldout|all] [--swap]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rlm_vault.embeddings import Embedder, Model2VecEmbedder
from rlm_vault.index import SearchDoc, Weights
from rlm_vault.search import Fusion, SearchEngine

sys.path.insert(0, str(ROOT / "scripts"))
from plain_bm25 import PlainBM25

KS = (1, 5, 10)
TUNE = (0, 1, 2)  # positions in the file of the conversations ranking is tuned on; the rest is held out


@dataclass(frozen=True, slots=True)
class Shape:
    """How a conversation becomes chunks (the document shape is part of what is measured)."""

    captions: bool = True  # an image a speaker shared is described in the transcript
    context: int = 0  # turns before and after a turn, added to a turn chunk


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    evidence: frozenset[str]  # unit keys: "S3" (session) or "D3:7" (turn)


# -- the data ------------------------------------------------------------------------------------
def load(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        data: list[dict[str, Any]] = json.load(handle)
    return data


def sessions(conv: dict[str, Any]) -> Iterator[tuple[int, str, list[dict[str, Any]]]]:
    """(number, date text, turns) of each session, in order."""
    numbers = sorted(int(m.group(1)) for key in conv if (m := re.fullmatch(r"session_(\d+)", key)))
    for n in numbers:
        yield n, conv.get(f"session_{n}_date_time", ""), conv[f"session_{n}"]


def iso(date_text: str) -> str:
    try:
        return datetime.strptime(date_text, "%I:%M %p on %d %B, %Y").strftime("%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return "2023-01-01T00:00:00Z"


def line(turn: dict[str, Any], shape: Shape) -> str:
    text = f"{turn['speaker']}: {turn['text']}"
    if shape.captions and turn.get("blip_caption"):
        text += f" [shares {turn['blip_caption']}]"
    return text


def doc(doc_id: str, created: str, summary: str, body: str) -> SearchDoc:
    sha = hashlib.sha256(body.encode()).hexdigest()
    return SearchDoc(
        doc_id, "chunk", "locomo", "conversation", "", "", "session", (), (), created, summary, body, sha
    )


def session_docs(conv: dict[str, Any], shape: Shape) -> dict[str, SearchDoc]:
    """One chunk per session: its date then one line per turn."""
    out = {}
    for n, date, turns in sessions(conv):
        body = "\n".join(line(turn, shape) for turn in turns)
        out[f"S{n}"] = doc(f"S{n}", iso(date), date, body)
    return out


def turn_docs(conv: dict[str, Any], shape: Shape) -> dict[str, SearchDoc]:
    """One chunk per turn: the date, the turn, and `shape.context` turns around it."""
    out = {}
    for _, date, turns in sessions(conv):
        for i, turn in enumerate(turns):
            around = turns[max(0, i - shape.context) : i + shape.context + 1]
            body = "\n".join(line(t, shape) for t in around)
            key = turn["dia_id"]
            out[key] = doc(key.replace(":", "-"), iso(date), f"{date} {line(turn, shape)}", body)
    return out


def questions(sample: dict[str, Any], level: str) -> list[Question]:
    out = []
    for qa in sample["qa"]:
        if qa.get("category") == 5:
            continue
        turns = {e for item in qa.get("evidence", []) for e in re.findall(r"D\d+:\d+", item)}
        keys = {t.split(":")[0].replace("D", "S") for t in turns} if level == "session" else turns
        if keys:
            out.append(Question(qa["question"], frozenset(keys)))
    return out


def select(
    data: list[dict[str, Any]], split: str, swap: bool = False, picked: str = ""
) -> list[dict[str, Any]]:
    """The conversations of one part of the split (or those picked by position, e.g. "0,3")."""
    if picked:
        return [data[int(i)] for i in picked.split(",")]
    tune = {i for i in range(len(data)) if (i in TUNE) != swap}
    if split == "all":
        return data
    return [conv for i, conv in enumerate(data) if (i in tune) == (split == "tune")]


def plain(docs: dict[str, SearchDoc]) -> PlainBM25:
    """The plain BM25 baseline over "summary body" of each document, keyed by unit."""
    return PlainBM25({key: f"{d.summary}\n{d.body}" for key, d in docs.items()})


# -- scoring -------------------------------------------------------------------------------------
@dataclass
class Tally:
    n: int = 0
    found: dict[int, int] | None = None
    rr: float = 0.0

    def add(self, ranked: list[str], evidence: frozenset[str]) -> None:
        self.found = self.found or {k: 0 for k in KS}
        self.n += 1
        rank = next((i for i, key in enumerate(ranked) if key in evidence), None)
        for k in KS:
            self.found[k] += rank is not None and rank < k
        self.rr += 0.0 if rank is None else 1.0 / (rank + 1)

    def row(self) -> dict[str, float]:
        found = self.found or {k: 0 for k in KS}
        return {**{f"R@{k}": found[k] / max(self.n, 1) for k in KS}, "MRR": self.rr / max(self.n, 1)}


def evaluate(
    data: list[dict[str, Any]],
    level: str,
    embedder: Embedder | None,
    shape: Shape,
    weights: Weights,
    fusion: Fusion,
) -> tuple[dict[str, float], float]:
    tally, elapsed = Tally(), 0.0
    for sample in data:
        docs = (session_docs if level == "session" else turn_docs)(sample["conversation"], shape)
        if fusion.method == "plain":
            baseline = plain(docs)
            for q in questions(sample, level):
                tally.add(baseline.search(q.text, max(KS)), q.evidence)
            continue
        key_of = {d.id: key for key, d in docs.items()}
        with tempfile.TemporaryDirectory() as cache:
            engine = SearchEngine(Path(cache), embedder, weights=weights, fusion=fusion)
            engine.rebuild(lambda docs=docs: list(docs.values()))  # type: ignore[misc]
            for q in questions(sample, level):
                start = time.perf_counter()
                hits = engine.search(q.text, limit=max(KS))
                elapsed += time.perf_counter() - start
                tally.add([key_of[h.id] for h in hits], q.evidence)
            engine.close()
    return tally.row(), elapsed / max(tally.n, 1)


class _Clock:
    """The time a chunk is written: the session's own date, so `created` is the conversation's."""

    def __init__(self) -> None:
        self.now = datetime(2023, 1, 1)

    def __call__(self) -> datetime:
        return self.now


def evaluate_tools(
    data: list[dict[str, Any]], level: str, model: str, shape: Shape
) -> dict[str, tuple[dict[str, float], float]]:
    """Write each conversation through the service, then ask the questions with BM25 only and hybrid."""
    from rlm_vault.config import Config
    from rlm_vault.service import open_service

    tallies = {"plain": Tally(), "bm25": Tally(), "hybrid": Tally()}
    elapsed = {"plain": 0.0, "bm25": 0.0, "hybrid": 0.0}
    for sample in data:
        docs = (session_docs if level == "session" else turn_docs)(sample["conversation"], shape)
        baseline = plain(docs)
        for q in questions(sample, level):
            tallies["plain"].add(baseline.search(q.text, max(KS)), q.evidence)
        with tempfile.TemporaryDirectory() as folder:
            clock = _Clock()
            config = Config(vault=Path(folder) / "vault", project="locomo", embedding_model="none")
            writer = open_service(config, clock=clock)
            for key, d in docs.items():
                clock.now = datetime.strptime(d.created, "%Y-%m-%dT%H:%M:%SZ")
                writer.chunk(d.body, summary=d.summary, extra={"locomo": key}, dedup=False, redact=True)
            key_of = {c.id: str(c.extra.get("locomo")) for c in writer.store.fresh().chunks()}
            for mode in ("bm25", "hybrid"):
                svc = open_service(
                    replace(config, embedding_model=model if mode == "hybrid" else "none"), clock=clock
                )
                svc.reindex(wait_model=True)
                for q in questions(sample, level):
                    start = time.perf_counter()
                    hits = svc.search(q.text, limit=max(KS))["results"]
                    elapsed[mode] += time.perf_counter() - start
                    tallies[mode].add([key_of.get(h["id"], "") for h in hits], q.evidence)
                svc.close()
    return {mode: (t.row(), elapsed[mode] / max(t.n, 1)) for mode, t in tallies.items()}


def second_stage(spec: str) -> None:
    """Make every search engine of this run use other second-stage weights (tuning only)."""
    if not spec:
        return
    import rlm_vault.search
    from rlm_vault.rerank import Rerank

    chosen = Rerank(**{k: float(v) for k, v in (part.split("=") for part in spec.split(","))})
    rlm_vault.search.Rerank = lambda: chosen  # type: ignore[assignment,misc]
    print(f"second stage: {chosen}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "../shared/eval/locomo-dev.json")
    parser.add_argument("--model", default=str(ROOT / "../shared/models/minilm-l6-m2v-256"))
    parser.add_argument("--level", choices=["session", "turn", "both"], default="both")
    parser.add_argument("--mode", choices=["plain", "bm25", "hybrid", "both"], default="both")
    parser.add_argument("--split", choices=["tune", "heldout", "all"], default="all")
    parser.add_argument("--swap", action="store_true", help="tune on the held-out part and the reverse")
    parser.add_argument(
        "--conversations", default="", help="positions in the file, e.g. 0,3 (overrides --split)"
    )
    parser.add_argument("--weight", type=float, default=Fusion().bm25_weight, help="BM25 share in the fusion")
    parser.add_argument("--method", choices=["weighted", "rrf"], default=Fusion().method)
    parser.add_argument("--k1", type=float, default=Weights().k1)
    parser.add_argument("--b", type=float, default=Weights().b)
    parser.add_argument(
        "--model-form",
        choices=["float16", "int8", "float32"],
        default="float16",
        help="shared memory-mapped float16 or int8 copy (default float16), or float32 in this process only",
    )
    parser.add_argument("--no-captions", action="store_true", help="leave shared-image captions out")
    parser.add_argument("--context", type=int, default=0, help="neighbouring turns in a turn chunk")
    parser.add_argument(
        "--engine",
        choices=["tools", "direct"],
        default="tools",
        help="write and search through the service (default) or feed the caches directly",
    )
    parser.add_argument(
        "--second", default="", help="second-stage weights to try, e.g. neighbour=0.2,recency=0"
    )
    args = parser.parse_args(argv)
    second_stage(args.second)
    if args.engine == "tools":
        return _main_tools(args)

    data = select(load(args.data), args.split, args.swap, args.conversations)
    shape = Shape(captions=not args.no_captions, context=args.context)
    weights = replace(Weights(), k1=args.k1, b=args.b)
    fusion = replace(Fusion(), method=args.method, bm25_weight=args.weight)
    embedder = None
    if args.mode != "bm25":
        form = args.model_form
        embedder = Model2VecEmbedder(args.model, dtype=form, via="memory" if form == "float32" else "mapped")
        if not embedder.wait(120):
            print(embedder.status()[1], file=sys.stderr)
            return 1
    levels = ["session", "turn"] if args.level == "both" else [args.level]
    modes = ["plain", "bm25", "hybrid"] if args.mode == "both" else [args.mode]
    print(f"split={args.split}{' swapped' if args.swap else ''} ({len(data)} conversations)")
    print(f"shape={shape} weights={weights} fusion={fusion} model form={args.model_form}")
    print(f"| level | mode | {' | '.join(f'R@{k}' for k in KS)} | MRR | ms/query |")
    print("|---|---|" + "---|" * (len(KS) + 2))
    for level in levels:
        for mode in modes:
            used = embedder if mode == "hybrid" else None
            how = replace(fusion, method="plain") if mode == "plain" else fusion
            row, per_query = evaluate(data, level, used, shape, weights, how)
            cells = " | ".join(f"{row[name]:.3f}" for name in [*(f"R@{k}" for k in KS), "MRR"])
            print(f"| {level} | {mode} | {cells} | {per_query * 1000:.1f} |", flush=True)
    return 0


def _main_tools(args: argparse.Namespace) -> int:
    data = select(load(args.data), args.split, args.swap, args.conversations)
    shape = Shape(captions=not args.no_captions, context=args.context)
    levels = ["session", "turn"] if args.level == "both" else [args.level]
    print(f"split={args.split}{' swapped' if args.swap else ''} ({len(data)} conversations)")
    print(f"through the tools; shape={shape}; model={args.model}")
    print(f"| level | mode | {' | '.join(f'R@{k}' for k in KS)} | MRR | ms/query |")
    print("|---|---|" + "---|" * (len(KS) + 2))
    for level in levels:
        for mode, (row, per_query) in evaluate_tools(data, level, args.model, shape).items():
            cells = " | ".join(f"{row[name]:.3f}" for name in [*(f"R@{k}" for k in KS), "MRR"])
            print(f"| {level} | {mode} | {cells} | {per_query * 1000:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
