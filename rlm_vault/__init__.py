"""rlm-vault: persistent memory for Claude Code, kept as a git repository of Markdown notes."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
