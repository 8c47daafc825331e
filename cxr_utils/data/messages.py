"""How the data layer talks: one status line per step, and exception text squeezed onto one line."""

from __future__ import annotations


def one_line(e: object) -> str:
    """An exception's text squeezed onto one line (UserError messages are printed as a single line)."""
    return " ".join(str(e).split())


def log(msg: str) -> None:
    """One progress/status line on stdout (the CLI and notebooks show it)."""
    print(msg, flush=True)
