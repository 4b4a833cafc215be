"""The engine's error hierarchy.

Every error a user can meet carries a one-line ``title``, an optional ``detail`` and a
suggested ``fix``. The private ``engine._linux`` layer raises only ``OSError``; the domain
layer translates it once, with ``raise X from err``.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of all flue errors. ``str(err)`` is the title; ``render()`` gives everything."""

    exit_code = 125

    def __init__(self, title: str, detail: str = "", fix: str = "") -> None:
        super().__init__(title)
        self.title = title
        self.detail = detail
        self.fix = fix

    def render(self) -> str:
        lines = [self.title]
        if self.detail:
            lines.append(self.detail)
        if self.fix:
            lines.append(f"fix: {self.fix}")
        return "\n".join(lines)


class ProfileError(EngineError):
    """A profile is invalid. Carries the file, line and key when known."""

    def __init__(
        self,
        title: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
        detail: str = "",
        fix: str = "",
    ) -> None:
        where = ""
        if file:
            where = file
            if line:
                where += f":{line}"
            where += ": "
        if key:
            title = f"{title} (key '{key}')"
        super().__init__(where + title, detail, fix)
        self.file = file
        self.line = line
        self.key = key


class LaunchError(EngineError):
    """The sandbox could not be set up or the command could not be started."""


class CommandNotFound(LaunchError):
    exit_code = 127


class CommandNotExecutable(LaunchError):
    exit_code = 126


class PrivilegeError(EngineError):
    """An operation needs a privilege or delegation the caller does not have."""


class UnsupportedKernel(EngineError):
    """The kernel lacks a feature flue needs (or needs for this profile)."""


class LimitUnavailable(EngineError):
    """A resource limit the profile asks for cannot be enforced here."""
