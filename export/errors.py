"""Errors raised by export and verification: each message is one line naming the file and the problem."""

from __future__ import annotations

from pathlib import Path


class ExportError(Exception):
    """An export or verification failure, reported to the user as one line."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = one_line(problem)
        super().__init__(f"{self.path}: {self.problem}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # rebuilt from (path, problem) when it crosses a process boundary (an export worker's
        # error reaches the server as itself, not as a broken process pool)
        return type(self), (self.path, self.problem)


class VerificationError(ExportError):
    """An artifact did not reproduce the reference outputs (or lost too much accuracy)."""


def one_line(text: object, limit: int = 300) -> str:
    """`text` with its whitespace and line breaks collapsed, shortened to `limit` characters."""
    line = " ".join(str(text).split()) or "unknown error"
    return line if len(line) <= limit else line[: limit - 3] + "..."
