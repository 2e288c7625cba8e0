"""`python -m rlm_vault` runs the CLI; with no arguments it serves MCP over stdio."""

from .cli import main

raise SystemExit(main())
