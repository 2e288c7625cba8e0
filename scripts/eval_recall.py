"""Insight recall evaluation: short EN/FR/JA insights, asked for in other words than their own.

The insights of tests/data/recall_set.json are stored through the real service (`MemoryService.remember`,
one commit each, in a temporary vault); each question is then asked with `MemoryService.search` (what
rlm_search runs, hybrid when a model is given) and `MemoryService.recall` (rlm_recall). A question counts
as found when its insight is among the first 3 results (hit@3). Plain BM25 (scripts/plain_bm25.py) over
the insight texts is printed beside.

Held-out discipline: every insight belongs to the "tune" or the "heldout" half (or to none: a
distractor); all insights are stored, and `--half` picks whose questions are asked. Ranking changes are
tuned on the tune half only.

    python scripts/eval_recall.py [--half tune|heldout|all] [--model DIR|none] [--data FILE] [--misses]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from plain_bm25 import PlainBM25

K = 3
DATA = ROOT / "tests" / "data" / "recall_set.json"
MODEL = ROOT / "../shared/models/minilm-l6-m2v-256"  # as in eval_locomo.py: beside the checkout
_MISSES: list[tuple[str, str, str, list[str]]] = []  # (ranker, question, wanted, got), for --misses


@dataclass(frozen=True, slots=True)
class Case:
    text: str
    key: str
    lang: str


def load(path: Path, half: str) -> tuple[list[dict[str, Any]], list[Case]]:
    """All insights, and the questions of the chosen half."""
    data = json.loads(path.read_text(encoding="utf-8"))
    insights: list[dict[str, Any]] = data["insights"]
    by_key = {i["key"]: i for i in insights}
    cases = [
        Case(q["text"], q["key"], by_key[q["key"]]["lang"])
        for q in data["questions"]
        if half == "all" or by_key[q["key"]]["half"] == half
    ]
    return insights, cases


def _service(folder: Path, model: str) -> Any:
    from rlm_vault.config import Config
    from rlm_vault.service import open_service

    return open_service(Config(vault=folder / "vault", project="", embedding_model=model))


def evaluate(
    insights: list[dict[str, Any]], cases: list[Case], model: str
) -> dict[str, dict[str, list[bool]]]:
    """hit@3 of each question, by ranker ("plain", "search", "recall") then language."""
    found: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    plain = PlainBM25({i["key"]: i["content"] for i in insights})
    with tempfile.TemporaryDirectory() as folder:
        svc = _service(Path(folder), model)
        key_of = {}
        for item in insights:
            out = svc.remember(item["content"], item["category"], "medium", "")
            key_of[out["id"]] = item["key"]
        semantic = svc.reindex(wait_model=True)["semantic"]
        if model != "none" and not semantic["enabled"]:
            print(f"model not used: {semantic['reason']}", file=sys.stderr)
        for case in cases:
            searched = [key_of.get(h["id"], "") for h in svc.search(case.text, limit=K)["results"]]
            recalled = [key_of.get(r["id"], "") for r in svc.recall(case.text, limit=K)["insights"]]
            for name, ranked in (
                ("plain", plain.search(case.text, K)),
                ("search", searched),
                ("recall", recalled),
            ):
                hit = case.key in ranked[:K]
                found[name][case.lang].append(hit)
                found[name]["all"].append(hit)
                if not hit:
                    _MISSES.append((name, case.text, case.key, ranked[:K]))
        svc.close()
    return found


def table(found: dict[str, dict[str, list[bool]]]) -> str:
    """A Markdown table: hit@3 per ranker, overall and per language."""
    langs = ["all", "en", "fr", "ja"]
    rows = [f"| ranker | {' | '.join(langs)} |", "|---|" + "---|" * len(langs)]
    for name in ("plain", "search", "recall"):
        cells = []
        for lang in langs:
            hits = found[name].get(lang, [])
            cells.append(f"{sum(hits) / len(hits):.3f} ({len(hits)})" if hits else "-")
        rows.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--half", choices=["tune", "heldout", "all"], default="tune")
    parser.add_argument("--model", default=str(MODEL), help="model2vec folder or name; 'none' = BM25 only")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--misses", action="store_true", help="list the questions not found")
    args = parser.parse_args(argv)
    insights, cases = load(args.data, args.half)
    found = evaluate(insights, cases, args.model)
    print(f"half={args.half}: {len(cases)} questions over {len(insights)} insights; model={args.model}")
    print(table(found))
    if args.misses:
        for name, text, key, ranked in _MISSES:
            print(f"miss [{name}] {text!r} -> wanted {key}, got {ranked}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
