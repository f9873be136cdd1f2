"""How the fakes drive a coding agent's shell tool loop deterministically.

A line ``run: <command>`` in the last user text, with one of the agents' shell tools declared,
is answered with a call of that tool running the command, its arguments in the tool's own
shape. The tools are those the CLIs declare: Claude Code's ``Bash`` and Codex's
``exec_command`` (0.171.0), ``shell_command`` and ``shell`` (earlier versions). Likewise a
line ``search: <query>``, with Claude Code's ``WebSearch`` tool declared, is answered with a
call of that tool searching for the query."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

RUN = re.compile(r"^run: (.+)$", re.MULTILINE)
SEARCH = re.compile(r"^search: (.+)$", re.MULTILINE)
SEARCH_TOOL = "WebSearch"
SHELL_TOOLS: dict[str, Callable[[str], dict[str, Any]]] = {
    "Bash": lambda c: {"command": c, "description": "Run the command"},
    "exec_command": lambda c: {"cmd": c},
    "shell_command": lambda c: {"command": c},
    "shell": lambda c: {"command": ["bash", "-lc", c]},
}


def shell_call(text: str, declared: Iterable[str]) -> tuple[str, dict[str, Any]] | None:
    """(tool name, arguments) of the shell (or search) call `text` asks for, or None: no
    `run:` (`search:`) line, or no such tool among the `declared` tool names (the first
    declared shell tool is called)."""
    found = RUN.search(text)
    if found is None:
        query = SEARCH.search(text)
        if query is None or SEARCH_TOOL not in declared:
            return None
        return SEARCH_TOOL, {"query": query.group(1).strip()}
    name = next((n for n in declared if n in SHELL_TOOLS), None)
    return None if name is None else (name, SHELL_TOOLS[name](found.group(1).strip()))
