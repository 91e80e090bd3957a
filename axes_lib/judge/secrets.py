"""The Anthropic API key: from the argument, `ANTHROPIC_API_KEY` or a `.env` file, and never shown.

`Secret` holds the key so that `repr`, `str` and `vars()` of a judge never reveal it; `redact` removes
it from any text (error messages, logs) before that text leaves the judge. python-dotenv is not a
dependency of the project, so the few `.env` rules needed (comments, `export`, quotes) are parsed here.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV_VAR", "MissingAPIKeyError", "Secret", "available_claude_key", "dotenv_candidates", "resolve_api_key"]

ENV_VAR = "ANTHROPIC_API_KEY"

# Where `.env` files (and the default cache) are looked for: the repository that holds axes_lib.
# A module attribute, read at call time, so tests can point it elsewhere.
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class MissingAPIKeyError(RuntimeError):
    """No Anthropic API key is configured (argument, environment or `.env`)."""


class Secret:
    """Holds the key so that repr/str/vars() of the judge never show it; `redact` scrubs it from texts."""

    __slots__ = ("_value",)

    def __init__(self, value: str | None) -> None:
        self._value = value or None

    def get(self) -> str | None:
        """The key itself (to hand to the SDK), or None."""
        return self._value

    def redact(self, text: str) -> str:
        """`text` with every occurrence of the key replaced by `<redacted>`."""
        return text.replace(self._value, "<redacted>") if self._value else text

    def __repr__(self) -> str:
        return "<redacted>"

    __str__ = __repr__


def _parse_dotenv_key(path: Path) -> str | None:
    """The `ANTHROPIC_API_KEY=...` value of a .env file (optional `export`, quotes, comments), or None."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    value = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        name, sep, rest = line.partition("=")
        if not sep or name.strip() != ENV_VAR:
            continue
        rest = rest.strip()
        if rest[:1] in {'"', "'"}:
            quote = rest[0]
            end = rest.find(quote, 1)
            rest = rest[1:end] if end > 0 else rest[1:]
        else:
            rest = rest.split(" #", 1)[0].strip()
        value = rest or None  # a later line wins, as in a shell
    return value


def dotenv_candidates() -> list[Path]:
    """`.env` in the current folder, in the git root above it, and in the repository holding axes_lib."""
    cwd = Path.cwd()
    paths = [cwd / ".env"]
    for parent in cwd.parents:
        if (parent / ".git").exists():
            paths.append(parent / ".env")
            break
    paths.append(_PACKAGE_ROOT / ".env")
    unique: list[Path] = []
    for p in paths:
        if p not in unique:
            unique.append(p)
    return unique


def resolve_api_key(api_key: str | None = None) -> str | None:
    """The key from the argument, else `ANTHROPIC_API_KEY`, else a `.env` file; None when none is set."""
    if api_key is not None:
        return api_key.strip() or None
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return env
    for path in dotenv_candidates():
        if path.is_file():
            value = _parse_dotenv_key(path)
            if value:
                return value
    return None


def available_claude_key() -> bool:
    """True when an Anthropic API key is configured (environment or `.env`); never reveals the key."""
    return resolve_api_key(None) is not None
