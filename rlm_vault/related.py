"""Related terms of common developer vocabulary, used to widen a query that names a topic in other words.

"formatter linter choice" should find "Use ruff, never black"; "timezone storage" should find "store
timestamps in UTC". Each group below lists words and short phrases (EN, FR, JA) that a person may use
for one topic; a query naming one of them also looks, at a lower weight, for the others. The list is
small and generic on purpose: it names tools and concepts, never phrasings of particular notes.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from rlm_vault import textproc

__all__ = ["GROUPS", "Expansion", "Target", "covers", "expand"]

# One tuple per topic. A Latin entry matches a query holding all its words (stemmed); a Japanese or
# Chinese entry matches as a substring. Entries that are ordinary English words in other senses
# ("black", "image", "name") are left out unless the topic needs them.
GROUPS: tuple[tuple[str, ...], ...] = (
    ("formatter", "formatting", "code formatter", "code style", "mise en forme", "black", "prettier", "autopep8", "yapf", "gofmt",
     "rustfmt", "clang-format", "ruff format", "isort", "formateur", "フォーマッタ", "整形"),
    ("linter", "lint", "linting", "ruff", "flake8", "pylint", "eslint", "static analysis", "clippy",
     "analyse statique", "リンター", "静的解析"),
    ("type checker", "type checking", "type hints", "typing", "mypy", "pyright", "annotations",
     "typage", "型チェック", "型ヒント"),
    ("test", "tests", "testing", "pytest", "unittest", "jest", "test suite", "coverage", "tester",
     "テスト", "試験"),
    ("timezone", "time zone", "tz", "utc", "gmt", "tzinfo", "fuseau horaire", "タイムゾーン", "時差",
     "協定世界時"),
    ("timestamp", "datetime", "epoch", "iso 8601", "horodatage", "タイムスタンプ", "日時"),
    ("database", "db", "relational", "postgres", "postgresql", "mysql", "sqlite", "sql", "base de donnees", "bdd",
     "データベース"),
    ("deploy", "deployment", "release", "ship", "rollout", "production", "prod", "deploiement",
     "deployer", "mise en production", "livraison", "デプロイ", "リリース", "本番"),
    ("store", "storage", "persist", "save", "stocker", "stockage", "enregistrer", "保存", "格納"),
    ("git", "commit", "branch", "merge", "rebase", "pull request", "version control", "branche",
     "コミット", "ブランチ"),
    ("dependency", "dependencies", "package", "pip", "poetry", "uv", "npm", "yarn", "pnpm", "library",
     "dependance", "paquet", "bibliotheque", "依存", "パッケージ", "ライブラリ"),
    ("ci", "continuous integration", "github actions", "pipeline", "jenkins", "gitlab ci",
     "integration continue"),
    ("docker", "container", "kubernetes", "k8s", "pod", "conteneur", "コンテナ"),
    ("log", "logs", "logging", "logger", "journaux", "journalisation", "ログ"),
    ("config", "configuration", "settings", "environment variable", "env", "parametres", "reglages",
     "設定", "環境変数"),
    ("secret", "secrets", "password", "credential", "credentials", "api key", "token", "mot de passe",
     "パスワード", "認証情報", "秘密"),
    ("authentication", "auth", "login", "signin", "oauth", "sso", "authentification", "connexion",
     "認証", "ログイン"),
    ("cache", "caching", "redis", "memcached", "キャッシュ"),
    ("error", "exception", "bug", "crash", "failure", "erreur", "panne", "エラー", "例外", "バグ"),
    ("performance", "speed", "latency", "response time", "p95", "p99", "slow", "fast", "perf", "lenteur", "rapide", "性能", "速度",
     "遅い", "速い"),
    ("docs", "documentation", "readme", "docstring", "ドキュメント", "文書"),
    ("editor", "ide", "vscode", "vim", "neovim", "emacs", "editeur", "エディタ"),
    ("api", "endpoint", "route", "http", "エンドポイント"),
    ("indentation", "indent", "tabs", "spaces", "インデント"),
    ("naming", "snake_case", "camelcase", "naming convention", "nommage", "命名"),
    ("backup", "backups", "snapshot", "restore", "sauvegarde", "バックアップ"),
    ("cron", "schedule", "scheduled", "nightly", "planifie", "定期", "スケジュール"),
    ("review", "code review", "reviewer", "approval", "relecture", "revue", "レビュー"),
    ("monitoring", "metrics", "alert", "alerts", "dashboard", "grafana", "prometheus", "supervision",
     "監視", "メトリクス"),
    ("language", "english", "french", "japanese", "langue", "anglais", "francais", "japonais", "言語",
     "英語", "日本語", "フランス語"),
    ("frontend", "ui", "css", "react", "vue", "フロントエンド"),
    ("migration", "migrate", "schema", "alembic", "マイグレーション", "スキーマ"),
    ("encoding", "utf-8", "utf8", "unicode", "charset", "encodage", "文字コード", "エンコーディング"),
    ("deadline", "due date", "echeance", "date limite", "締め切り", "期限"),
    ("javascript", "js", "node", "nodejs", "typescript", "deno", "bun", "npm"),
    ("python", "cpython", "pypy", "python3"),
    ("payment", "payments", "billing", "invoice", "invoices", "stripe", "paiement", "facturation", "facture",
     "決済", "請求"),
    ("retention", "retain", "kept", "keep", "conserver", "conserve", "garder", "保持", "保存期間"),
    ("prefer", "preference", "favourite", "favorite", "choice", "prefere", "好み", "選択"),
)  # fmt: skip


Target = tuple[frozenset[str], ...]  # one entry: for each of its words, the stems that word may take


@dataclass(frozen=True, slots=True)
class Expansion:
    """What a query gains: per matched topic, the other entries of that topic as `Target`s."""

    groups: tuple[tuple[Target, ...], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.groups)

    def targets(self) -> list[Target]:
        """Every target of every matched topic, deduplicated, in a stable order."""
        return list(dict.fromkeys(t for group in self.groups for t in group))


def _is_cjk(entry: str) -> bool:
    return any(textproc.is_cjk(ch) for ch in entry)


def _keys(text: str) -> frozenset[str]:
    """Language-independent keys of the Latin words of `text`: folded, Porter-stemmed, stop words out."""
    out = set()
    for _, word, cjk in textproc.words(text):
        folded = textproc.fold(word)
        if not cjk and not textproc.is_stop(folded):
            out.add(textproc.stems(folded, "en")[0])
    return frozenset(out)


def _target(entry: str) -> Target:
    """The entry as the index sees it: its words in order, each the set of stems it may take."""
    by_pos: dict[int, set[str]] = {}
    for pos, term in textproc.terms(entry):
        by_pos.setdefault(pos, set()).add(term)
    return tuple(frozenset(by_pos[pos]) for pos in sorted(by_pos))


@dataclass(frozen=True, slots=True)
class _Entry:
    group: int
    keys: frozenset[str]  # Latin entries: all must be in the query
    cjk: str  # CJK entries: a substring of the query
    target: Target


@lru_cache(maxsize=1)
def _table() -> tuple[_Entry, ...]:
    entries: list[_Entry] = []
    for n, group in enumerate(GROUPS):
        for entry in group:
            if _is_cjk(entry):
                text = unicodedata.normalize("NFKC", entry)
                entries.append(_Entry(n, frozenset(), text, _target(text)))
            elif keys := _keys(entry):
                entries.append(_Entry(n, keys, "", _target(entry)))
    return tuple(entries)


@lru_cache(maxsize=4096)
def expand(query: str) -> Expansion:
    """The entries related to `query`'s topics that the query does not already contain."""
    entries = _table()
    keys = _keys(query)
    text = unicodedata.normalize("NFKC", query)
    hit = {e for e in entries if (e.keys and e.keys <= keys) or (e.cjk and e.cjk in text)}
    if not hit:
        return Expansion()
    own = set(textproc.tokens(query))
    groups = []
    for n in sorted({e.group for e in hit}):
        targets = (e.target for e in entries if e.group == n and e not in hit and e.target)
        fresh = [t for t in dict.fromkeys(targets) if not all(word & own for word in t)]
        if fresh:
            groups.append(tuple(fresh))
    return Expansion(tuple(groups))


def covers(target: Target, terms: frozenset[str] | set[str]) -> bool:
    """True when every word of `target` is among `terms` (in one of its stems)."""
    return all(word & terms for word in target)
