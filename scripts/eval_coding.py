"""Retrieval evaluation on long user-assistant coding conversations, generated here from templates and a seed.

Each conversation (hundreds of messages, both roles, much code) is written through the real tools
(`MemoryService.chunk`, one chunk per message, one commit each, in a temporary vault, each message
dated a few minutes after the one before), then questions are asked with `MemoryService.search` (what
rlm_search runs). Question kinds:

- fact: a detail stated once ("the staging database listens on port 5433");
- instruction: a rule or preference the user gave ("never commit straight to main");
- order: the first or the last of several changes made to one component;
- update: a setting changed several times; the question asks what is true now;
- summary: every message of one thread (a short back-and-forth about one problem).

Recall@10 is the share of a question's evidence messages in the top 10; NDCG@10 uses binary gains.
Both are reported per kind for plain BM25 (scripts/plain_bm25.py) over the same messages, the engine
with BM25 alone, and the hybrid. Two vocabularies exist: "tune" (a web shop backend) is what ranking
may be tuned on; "heldout" (a telemetry pipeline, other phrasings) is only reported. `--seed` changes
names, values, code and the order of everything.

    python scripts/eval_coding.py [--set tune|heldout] [--seed 7] [--conversations 3] [--messages 300]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from eval_locomo import second_stage
from plain_bm25 import PlainBM25

KINDS = ("fact", "instruction", "order", "update", "summary")
K = 10
SEEDS = {"tune": 7, "heldout": 1009}


# -- vocabularies --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Vocab:
    """Everything topic-specific: names, planted facts, rules, settings, threads and phrasings."""

    project: str
    roles: Callable[[str, str], str]  # (role, text) -> the chunk's content
    components: tuple[str, ...]
    identifiers: tuple[str, ...]
    facts: tuple[tuple[str, str, tuple[str, ...]], ...]  # (statement with {v}, question, values)
    rules: tuple[tuple[str, str], ...]  # (what the user says, the question)
    settings: tuple[tuple[str, tuple[str, ...]], ...]  # (setting, values in the order they are set)
    changes: tuple[tuple[str, str], ...]  # (request "add retries to {c}", report "added retries to {c}")
    threads: tuple[tuple[str, tuple[str, ...]], ...]  # (subject for the question, messages user/assistant)
    first: tuple[str, ...]  # question templates over {c}
    last: tuple[str, ...]
    now: tuple[str, ...]  # question templates over {s}
    summarize: tuple[str, ...]  # question templates over {t}
    chatter: tuple[str, ...]  # filler templates over {c}, {i}, {j}
    noise: tuple[str, ...]  # filler sharing words with the planted facts and rules, answering nothing


def _colon(role: str, text: str) -> str:
    return f"{role}: {text}"


def _bracket(role: str, text: str) -> str:
    return f"[{role}]\n{text}"


TUNE = Vocab(
    project="shop-api",
    roles=_colon,
    components=(
        "checkout service",
        "auth middleware",
        "product catalog",
        "order queue",
        "payment client",
        "session cache",
        "admin dashboard",
        "search endpoint",
    ),
    identifiers=(
        "fetchOrderItems",
        "validate_cart",
        "PaymentClient.charge",
        "session_store.get_user",
        "buildInvoicePdf",
        "apply_discount_code",
        "OrderQueue.enqueue",
        "refreshAccessToken",
        "render_admin_table",
        "catalog.load_products",
        "computeShippingCost",
        "parse_search_query",
    ),
    facts=(
        (
            "The staging database listens on port {v}, not the default one.",
            "Which port is the staging database on?",
            ("5433", "5544", "6543", "15432"),
        ),
        (
            "Our Stripe test account id is {v}, use it for the sandbox.",
            "What is the Stripe sandbox account id?",
            ("acct_9QX2", "acct_7LM4", "acct_3TR8"),
        ),
        (
            "The product images live in the S3 bucket {v}.",
            "Where are product images stored?",
            ("shop-media-eu", "img-prod-west", "catalog-assets-01"),
        ),
        (
            "Carol from the platform team owns the {v} alerts.",
            "Who is responsible for the pager alerts of that service?",
            ("checkout", "payment", "search"),
        ),
        (
            "The nightly export job runs at {v} UTC on the worker box.",
            "When does the nightly export run?",
            ("02:30", "03:15", "04:45"),
        ),
        (
            "We pinned SQLAlchemy to version {v} because of the async session bug.",
            "Which SQLAlchemy version did we pin and why?",
            ("2.0.23", "2.0.19", "1.4.52"),
        ),
        (
            "The load test reached {v} requests per second before the database saturated.",
            "How much throughput did the load test get?",
            ("840", "1250", "2100"),
        ),
        (
            "Feature flags are read from the {v} table at startup.",
            "Where do feature flags come from?",
            ("flags", "settings_kv", "toggles"),
        ),
    ),
    rules=(
        (
            "From now on please add type hints to every public function you write.",
            "What did I ask about annotating functions?",
        ),
        (
            "Never commit directly to main; every change goes through a pull request.",
            "What is my rule about the main branch?",
        ),
        (
            "I prefer pytest fixtures over setUp methods, keep tests in that style.",
            "Which testing style do I prefer?",
        ),
        (
            "Use ruff for formatting and linting, not black or flake8.",
            "Which formatter did I tell you to use?",
        ),
        (
            "Keep every function under 40 lines; split it otherwise.",
            "What limit did I set on function length?",
        ),
        (
            "Please log errors as structured JSON, no print statements anywhere.",
            "How should errors be logged according to me?",
        ),
    ),
    settings=(
        ("request timeout", ("30 seconds", "45 seconds", "20 seconds")),
        ("connection pool size", ("10", "25", "40")),
        ("cache TTL", ("5 minutes", "15 minutes", "1 hour")),
        ("max upload size", ("10 MB", "25 MB", "8 MB")),
    ),
    changes=(
        ("add retries with backoff to the {c}", "added retries with exponential backoff to the {c}"),
        ("write unit tests for the {c}", "wrote unit tests covering the {c}"),
        ("profile the {c} and fix the slow path", "profiled the {c} and removed the N+1 query"),
        ("move the {c} settings to environment variables", "moved the {c} settings into env vars"),
        ("add metrics to the {c}", "added Prometheus counters to the {c}"),
        ("rename the {c} handlers for clarity", "renamed the {c} handlers"),
    ),
    threads=(
        (
            "the flaky checkout integration test",
            (
                "The checkout integration test is flaky again on CI, it failed twice today.",
                "It fails when the order worker has not committed yet; the test reads too early.",
                "Can we just add a retry?",
                "A retry would hide the race. I made the fixture wait for the commit event instead.",
                "ok, run it twenty times",
                "20 of 20 runs passed.",
                "great, merge it",
            ),
        ),
        (
            "the memory leak in the image resizer",
            (
                "Memory of the image resizer worker grows until it is OOM killed after a few hours.",
                "The thumbnail cache keeps a reference to every Pillow image; nothing evicts them.",
                "How do we bound it?",
                "I replaced the dict with an LRU of 256 entries and close each image after resizing.",
                "memory looks flat now",
                "Yes, 6 hours at 180 MB steady.",
            ),
        ),
        (
            "the login redirect loop",
            (
                "Users who log in from the cart page end up in a redirect loop.",
                "The next parameter points back to /login when the session cookie is missing SameSite.",
                "why only from the cart?",
                "The cart page is served from the shop subdomain, so the cookie is cross-site there.",
                "fix it please",
                "Set SameSite=Lax and validated the next URL against an allowlist.",
            ),
        ),
        (
            "the slow admin orders page",
            (
                "The admin orders page takes 9 seconds to load with the full history.",
                "It loads every order with its items, one query per order.",
                "can we paginate?",
                "Added keyset pagination and a joined load of the items; the page now takes 300 ms.",
                "nice",
            ),
        ),
    ),
    first=("What was the first change we made to the {c}?", "What did we do first on the {c}?"),
    last=("What was the last change to the {c}?", "What is the most recent thing we did on the {c}?"),
    now=("What is the {s} now?", "What is the current {s}?", "Which {s} do we use at the moment?"),
    summarize=("Summarize the discussion about {t}.", "What did we conclude about {t}?"),
    chatter=(
        "Can you look at {i} in the {c}? It seems slow under load.",
        "Why does the {c} log a warning every time {i} runs?",
        "Please refactor {i} so that the {c} does not import the ORM directly.",
        "The {c} returns a 500 when {i} gets an empty list.",
        "Run the test suite for the {c} again.",
        "Does {j} still call {i}, or did we remove that path?",
        "thanks",
        "looks good",
    ),
    noise=(
        "The staging database was slow this morning, can you check the {c}?",
        "Which port does the {c} bind to in docker compose?",
        "Add the Stripe webhook secret to the {c} config.",
        "Upload the new product images for the {c} demo.",
        "Who reviews pull requests for the {c}?",
        "The nightly build of the {c} failed on a lint error.",
        "Bump SQLAlchemy in the {c} lockfile?",
        "Can the load test target the {c} too?",
        "Add a feature flag around the new {c} code.",
        "Write the tests for {i} with fixtures.",
        "Is the formatting of {i} right? The diff looks odd.",
        "Does {i} log anything when it fails?",
        "What is the default timeout of {i}?",
        "Let's increase the pool in the {c} benchmark only.",
    ),
)

HELDOUT = Vocab(
    project="telemetry",
    roles=_bracket,
    components=(
        "metrics exporter",
        "ingest parser",
        "job scheduler",
        "retention sweeper",
        "sensor gateway",
        "alert router",
        "storage compactor",
        "config loader",
    ),
    identifiers=(
        "parseSensorFrame",
        "flush_batch",
        "Scheduler.run_pending",
        "exporter.push_metrics",
        "compactSegments",
        "route_alert",
        "ConfigLoader.from_env",
        "decode_payload",
        "sweepExpiredSeries",
        "gateway.open_stream",
        "mergeLabelSets",
        "write_wal_entry",
    ),
    facts=(
        (
            "Grafana for the lab cluster is reachable at {v}.",
            "What is the address of the lab dashboards?",
            ("grafana.lab:3300", "10.4.0.12:3000", "dash.lab:8080"),
        ),
        (
            "Each sensor sends a frame every {v} milliseconds.",
            "How often do sensors report?",
            ("250", "500", "125"),
        ),
        (
            "The WAL is kept on the {v} volume because of its fsync latency.",
            "Which disk holds the write-ahead log?",
            ("nvme0", "ssd-fast", "local-raid"),
        ),
        (
            "Dmitri maintains the {v} protobuf schema.",
            "Who looks after the wire format definitions?",
            ("frame", "alert", "series"),
        ),
        (
            "Retention for raw series is {v} days before downsampling.",
            "How long do we keep raw data?",
            ("14", "30", "7"),
        ),
        (
            "We use zstd level {v} for segment compression.",
            "Which compression settings do segments use?",
            ("3", "6", "9"),
        ),
        (
            "The ingest benchmark peaked at {v} frames per second on one core.",
            "What throughput did ingest reach in the benchmark?",
            ("48000", "72000", "35000"),
        ),
        (
            "Alert routes are defined in {v} in the ops repository.",
            "Where is alert routing configured?",
            ("routes.yaml", "alerting/rules.toml", "pager.json"),
        ),
    ),
    rules=(
        (
            "Always write the changelog entry in the same pull request as the code.",
            "What did I say about release notes?",
        ),
        (
            "Don't use global state in the plugins, pass a context object explicitly.",
            "How should plugins get their state, per my guidance?",
        ),
        ("I want docstrings in Google style everywhere.", "Which documentation format did I ask for?"),
        ("No new dependencies without asking me first.", "What is my policy on adding packages?"),
        (
            "Prefer dataclasses with slots to plain dicts for records.",
            "What should records be modelled with, as I requested?",
        ),
        (
            "Use UTC for every stored timestamp, convert only for display.",
            "What did I decide about time zones?",
        ),
    ),
    settings=(
        ("batch size", ("500 frames", "2000 frames", "1000 frames")),
        ("flush interval", ("10 seconds", "2 seconds", "5 seconds")),
        ("worker count", ("4", "8", "6")),
        ("alert cooldown", ("15 minutes", "30 minutes", "5 minutes")),
    ),
    changes=(
        ("make the {c} idempotent", "made the {c} idempotent with a dedup key"),
        ("add structured logging to the {c}", "switched the {c} to structured logs"),
        ("port the {c} to asyncio", "ported the {c} to asyncio tasks"),
        ("cover the {c} with property tests", "added Hypothesis property tests for the {c}"),
        ("add a dry-run flag to the {c}", "added --dry-run to the {c}"),
        ("split the {c} into smaller modules", "split the {c} into three modules"),
    ),
    threads=(
        (
            "the duplicated alerts after a restart",
            (
                "After a restart the alert router sends every alert twice.",
                "The dedup window lives in memory, so a restart forgets what was already sent.",
                "could we persist it?",
                "I store the last fingerprints in the WAL and reload them on start.",
                "try a restart under load",
                "No duplicates across 12 restarts.",
            ),
        ),
        (
            "gaps in the sensor graphs",
            (
                "There are gaps of a few seconds in the sensor graphs every hour.",
                "The compactor holds the segment lock while it rewrites, and ingest drops frames meanwhile.",
                "can ingest buffer instead?",
                "Ingest now buffers up to 5 s in a ring and flushes after the lock is released.",
                "graphs are continuous now",
            ),
        ),
        (
            "the clock skew between gateways",
            (
                "Two gateways disagree by 3 seconds and the merged series look jagged.",
                "One box had NTP disabled after the image upgrade.",
                "should we trust device timestamps at all?",
                "We now stamp frames on arrival and keep the device time as a label.",
                "ok",
                "Also added an alert when skew exceeds 500 ms.",
            ),
        ),
        (
            "the config reload crash",
            (
                "Sending SIGHUP to reload the config crashes the scheduler half the time.",
                "The reload swaps the job table while a tick iterates over it.",
                "lock it?",
                "I build the new table aside and swap the reference atomically at the end of a tick.",
                "fine",
            ),
        ),
    ),
    first=("Which change came first for the {c}?", "How did our work on the {c} start?"),
    last=("What did we do most recently to the {c}?", "Which change to the {c} came last?"),
    now=("What is our {s} at present?", "What {s} are we using now?", "What is the latest {s}?"),
    summarize=("Give me a recap of {t}.", "What happened with {t}?"),
    chatter=(
        "The {c} spends most of its time in {i}, can you check why?",
        "Could {j} share the buffer with {i} in the {c}?",
        "Let's rename {i} in the {c}, the name is confusing.",
        "The {c} throws a KeyError inside {i} on malformed input.",
        "Rerun the benchmarks for the {c}.",
        "Is {i} thread-safe?",
        "ok",
        "perfect, thanks",
    ),
    noise=(
        "The lab dashboards show nothing for the {c} since yesterday.",
        "Sensors in hall B report odd values to the {c}.",
        "Move the {c} data off the slow disk?",
        "Regenerate the protobuf code for the {c}.",
        "Downsampling in the {c} looks wrong for old data.",
        "Compression of {i} output is poor, any idea?",
        "Benchmark {i} on two cores as well.",
        "The routing tests for the {c} fail on CI.",
        "Add a changelog line for the {c} fix.",
        "Where does {i} keep its state between calls?",
        "Document {i} please.",
        "Which package provides {i}?",
        "Convert the timestamps in the {c} export.",
        "The flush in {i} takes too long with large batches.",
    ),
)

VOCABS = {"tune": TUNE, "heldout": HELDOUT}


# -- generation ----------------------------------------------------------------------------------
@dataclass
class Message:
    role: str
    text: str


@dataclass
class Question:
    kind: str
    text: str
    evidence: set[int] = field(default_factory=set)  # message positions


@dataclass
class Conversation:
    messages: list[Message]
    questions: list[Question]


def _code(rng: random.Random, vocab: Vocab) -> str:
    name = rng.choice(vocab.identifiers).split(".")[-1]
    other = rng.choice(vocab.identifiers)
    arg = rng.choice(["items", "payload", "rows", "frame", "request", "batch"])
    snake = "".join(f"_{ch.lower()}" if ch.isupper() else ch for ch in name).lstrip("_")
    lines = [
        "```python",
        f"def {snake}({arg}, *, limit: int = {rng.randint(2, 500)}):",
        f'    """{rng.choice(["Return", "Build", "Check", "Load"])} the {arg} for {rng.choice(vocab.components)}."""',
        f"    result = {other}({arg}[:limit])",
        "    if not result:",
        f'        raise ValueError(f"empty {arg}: {{{arg}!r}}")',
        f"    return [r for r in result if r.{rng.choice(['id', 'status', 'ts', 'name'])}]",
        "```",
    ]
    return "\n".join(lines)


def _filler(rng: random.Random, vocab: Vocab) -> list[Message]:
    """A user message from the chatter templates and an assistant answer, mostly with code."""
    comp, ident, other = (
        rng.choice(vocab.components),
        rng.choice(vocab.identifiers),
        rng.choice(vocab.identifiers),
    )
    templates = vocab.noise if rng.random() < 0.3 else vocab.chatter
    ask = rng.choice(templates).format(c=comp, i=ident, j=other)
    if len(ask) < 20:  # "thanks", "ok": a one-line answer
        return [
            Message("user", ask),
            Message("assistant", rng.choice(["You're welcome.", "Noted.", "Sure."])),
        ]
    answer = (
        f"In the {comp}, `{ident}` {rng.choice(['copies the list twice', 'holds a lock too long', 'ignores the limit', 'swallows the exception'])}. "
        f"Here is a fix:\n\n{_code(rng, vocab)}\n\n{rng.choice(['Tests pass.', 'I ran the suite: green.', 'This keeps the API unchanged.'])}"
    )
    return [Message("user", ask), Message("assistant", answer)]


def generate(vocab: Vocab, seed: int, messages: int = 300) -> Conversation:
    """One conversation of about `messages` messages with its questions (deterministic for a seed)."""
    rng = random.Random(seed)
    # Blocks are lists of (message, label); labels say which question the message is evidence for.
    blocks: list[tuple[float, list[tuple[Message, str]]]] = []
    questions: dict[str, Question] = {}

    def planted(time: float, items: list[tuple[Message, str]]) -> None:
        blocks.append((time, items))

    for n, (statement, question, values) in enumerate(rng.sample(vocab.facts, min(5, len(vocab.facts)))):
        label = f"fact{n}"
        questions[label] = Question("fact", question)
        lead = Message(
            "user",
            rng.choice(["By the way:", "For the record,", "Note:", "FYI"])
            + " "
            + statement.format(v=rng.choice(values)),
        )
        planted(rng.random(), [(lead, label), (Message("assistant", "Got it, I'll keep that in mind."), "")])
    for n, (said, question) in enumerate(rng.sample(vocab.rules, min(4, len(vocab.rules)))):
        label = f"rule{n}"
        questions[label] = Question("instruction", question)
        planted(
            rng.random(),
            [(Message("user", said), label), (Message("assistant", "Understood, I will follow that."), "")],
        )
    for n, comp in enumerate(rng.sample(vocab.components, 2)):
        steps = rng.sample(vocab.changes, 4)
        times = sorted(rng.random() for _ in steps)
        first, last = f"first{n}", f"last{n}"
        questions[first] = Question("order", rng.choice(vocab.first).format(c=comp))
        questions[last] = Question("order", rng.choice(vocab.last).format(c=comp))
        for i, ((ask, done), time) in enumerate(zip(steps, times)):
            label = first if i == 0 else last if i == len(steps) - 1 else ""
            planted(
                time,
                [
                    (Message("user", f"Next, let's {ask.format(c=comp)}."), label),
                    (Message("assistant", f"I {done.format(c=comp)}.\n\n{_code(rng, vocab)}"), label),
                ],
            )
    for n, (setting, values) in enumerate(rng.sample(vocab.settings, 3)):
        label = f"now{n}"
        questions[label] = Question("update", rng.choice(vocab.now).format(s=setting))
        times = sorted(rng.random() for _ in values)
        for i, (value, time) in enumerate(zip(values, times)):
            tag = label if i == len(values) - 1 else ""
            if i == 0:
                said = Message("assistant", f"The {setting} is set to {value} in settings.py.")
                planted(time, [(said, tag)])
            else:
                planted(
                    time,
                    [
                        (Message("user", f"Change the {setting} to {value}."), tag),
                        (Message("assistant", f"Done: the {setting} is now {value}."), tag),
                    ],
                )
    for n, (subject, lines) in enumerate(rng.sample(vocab.threads, 2)):
        label = f"thread{n}"
        questions[label] = Question("summary", rng.choice(vocab.summarize).format(t=subject))
        roles = ("user", "assistant")
        planted(rng.random(), [(Message(roles[i % 2], text), label) for i, text in enumerate(lines)])

    planted_count = sum(len(items) for _, items in blocks)
    while planted_count < messages:
        pair = _filler(rng, vocab)
        planted(rng.random(), [(m, "") for m in pair])
        planted_count += len(pair)

    out: list[Message] = []
    for _, items in sorted(blocks, key=lambda block: block[0]):
        for message, label in items:
            if label:
                questions[label].evidence.add(len(out))
            out.append(message)
    return Conversation(out, list(questions.values()))


# -- scoring -------------------------------------------------------------------------------------
def recall_ndcg(ranked: list[int], evidence: set[int]) -> tuple[float, float]:
    top = ranked[:K]
    recall = len(evidence.intersection(top)) / len(evidence)
    dcg = sum(1 / math.log2(i + 2) for i, pos in enumerate(top) if pos in evidence)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(evidence), K)))
    return recall, dcg / ideal


@dataclass
class Score:
    n: int = 0
    recall: float = 0.0
    ndcg: float = 0.0

    def add(self, pair: tuple[float, float]) -> None:
        self.n += 1
        self.recall += pair[0]
        self.ndcg += pair[1]

    def cells(self) -> str:
        return f"{self.recall / max(self.n, 1):.3f} | {self.ndcg / max(self.n, 1):.3f}"


class _Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 3, 9, 0)

    def __call__(self) -> datetime:
        return self.now


def run(
    vocab: Vocab, seeds: list[int], messages: int, model: str, modes: tuple[str, ...]
) -> dict[str, dict[str, Score]]:
    """Scores per mode ("plain", "bm25", "hybrid") and kind ("all" too), over one conversation per seed."""
    from rlm_vault.config import Config
    from rlm_vault.service import open_service

    scores = {mode: {kind: Score() for kind in (*KINDS, "all")} for mode in modes}
    for seed in seeds:
        conv = generate(vocab, seed, messages)
        contents = [vocab.roles(m.role, m.text) for m in conv.messages]
        with tempfile.TemporaryDirectory() as folder:
            clock = _Clock()
            config = Config(vault=Path(folder) / "vault", project=vocab.project, embedding_model="none")
            writer = open_service(config, clock=clock)
            rng = random.Random(seed)
            for pos, content in enumerate(contents):
                clock.now += timedelta(minutes=rng.randint(1, 6)) + timedelta(hours=16 * (pos % 90 == 89))
                writer.chunk(content, extra={"message": pos}, dedup=False, redact=True)
            position = {c.id: int(str(c.extra.get("message"))) for c in writer.fresh().chunks()}
            for mode in modes:
                if mode == "plain":
                    baseline = PlainBM25({str(i): text for i, text in enumerate(contents)})
                    rank: Callable[[str], list[int]] = lambda q, baseline=baseline: [
                        int(k) for k in baseline.search(q, K)
                    ]
                else:
                    svc = open_service(
                        replace(config, embedding_model=model if mode == "hybrid" else "none"), clock=clock
                    )
                    svc.reindex(wait_model=True)
                    if mode == "hybrid" and not svc.semantic_status()["enabled"]:
                        raise SystemExit(f"hybrid asked but {svc.semantic_status()['reason']}")
                    rank = lambda q, svc=svc, position=position: [
                        position.get(h["id"], -1) for h in svc.search(q, limit=K)["results"]
                    ]
                for question in conv.questions:
                    pair = recall_ndcg(rank(question.text), question.evidence)
                    scores[mode][question.kind].add(pair)
                    scores[mode]["all"].add(pair)
                if mode != "plain":
                    svc.close()
    return scores


def report(scores: dict[str, dict[str, Score]]) -> str:
    modes = list(scores)
    head = "| kind | n | " + " | ".join(f"{m} R@10 | {m} NDCG@10" for m in modes) + " |"
    rows = [head, "|---|---|" + "---|---|" * len(modes)]
    for kind in (*KINDS, "all"):
        n = scores[modes[0]][kind].n
        rows.append(f"| {kind} | {n} | " + " | ".join(scores[m][kind].cells() for m in modes) + " |")
    if "plain" in scores:
        base = scores["plain"]["all"]
        for mode in modes[1:]:
            s = scores[mode]["all"]
            rows.append(
                f"{mode} / plain: R@10 {s.recall / max(base.recall, 1e-9):.2f}x, "
                f"NDCG@10 {s.ndcg / max(base.ndcg, 1e-9):.2f}x"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=list(VOCABS), default="tune", help="vocabulary (tune or held out)")
    parser.add_argument("--seed", type=int, default=None, help="first seed (default: one per set)")
    parser.add_argument("--conversations", type=int, default=3)
    parser.add_argument("--messages", type=int, default=300, help="messages per conversation")
    parser.add_argument("--model", default=str(ROOT / "../shared/models/minilm-l6-m2v-256"))
    parser.add_argument("--mode", choices=["plain", "bm25", "hybrid", "all"], default="all")
    parser.add_argument(
        "--second", default="", help="second-stage weights to try, e.g. neighbour=0.2,recency=0"
    )
    args = parser.parse_args(argv)
    second_stage(args.second)
    seed = SEEDS[args.set] if args.seed is None else args.seed
    modes = ("plain", "bm25", "hybrid") if args.mode == "all" else ("plain", args.mode)
    if args.mode == "plain":
        modes = ("plain",)
    seeds = [seed + i for i in range(args.conversations)]
    print(f"set={args.set} seeds={seeds} messages={args.messages} model={Path(args.model).name}")
    print(report(run(VOCABS[args.set], seeds, args.messages, args.model, modes)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
