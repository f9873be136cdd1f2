"""How the fakes drive a coding agent's shell tool loop deterministically.

A line ``run: <command>`` in the last user text, with one of the agents' shell tools declared,
is answered with a call of that tool running the command, its arguments in the tool's own
shape. The tools are those the CLIs declare: Claude Code's ``Bash`` and Codex's
``exec_command`` (0.171.0), ``shell_command`` and ``shell`` (earlier versions)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

RUN = re.compile(r"^run: (.+)$", re.MULTILINE)
SHELL_TOOLS: dict[str, Callable[[str], dict[str, Any]]] = {
    "Bash": lambda c: {"command": c, "description": "Run the command"},
    "exec_command": lambda c: {"cmd": c},
    "shell_command": lambda c: {"command": c},
    "shell": lambda c: {"command": ["bash", "-lc", c]},
}


def shell_call(text: str, declared: Iterable[str]) -> tuple[str, dict[str, Any]] | None:
    """(tool name, arguments) of the shell call `text` asks for, or None: no `run:` line, or
    no shell tool among the `declared` tool names (the first declared one is called)."""
    found = RUN.search(text)
    if found is None:
        return None
    name = next((n for n in declared if n in SHELL_TOOLS), None)
    return None if name is None else (name, SHELL_TOOLS[name](found.group(1).strip()))
