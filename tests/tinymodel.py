"""A real, tiny model2vec model built on the fly for tests (deps.md §3(b)): no hub, no download.

Each word gets a deterministic vector summed from hashed character trigrams, so words sharing
trigrams (typos, plurals) are close and unrelated words are not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np


def trigram_vector(word: str, dim: int) -> np.ndarray:
    """A unit vector for `word`, the sum of one random vector per character trigram."""
    vector = np.zeros(dim, dtype=np.float32)
    padded = f"<{word}>"
    for i in range(len(padded) - 2):
        seed = int.from_bytes(hashlib.blake2b(padded[i : i + 3].encode(), digest_size=8).digest(), "little")
        vector += np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vector / (np.linalg.norm(vector) or 1.0)


def build_tiny_model(words: Iterable[str], path: Path, dim: int = 64) -> Path:
    """Save a model2vec StaticModel over `words` (WordLevel tokenizer) to `path`; returns `path`."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = {"[UNK]": 0, "[PAD]": 1}
    for word in words:
        vocab.setdefault(word.lower(), len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    ordered = sorted(vocab.items(), key=lambda item: item[1])
    special = ("[UNK]", "[PAD]")
    vectors = np.stack(
        [
            np.zeros(dim, np.float32) if token in special else trigram_vector(token, dim)
            for token, _ in ordered
        ]
    )
    model = StaticModel(vectors=vectors, tokenizer=tokenizer, normalize=True, base_model_name="tiny-test")
    model.save_pretrained(str(path))
    return Path(path)
