"""What the plugin tells a person when it cannot do what was asked, and with which exit code.

Every expected failure (no kubeconfig, an unknown run, an API error) becomes a CliError: one line
on stderr and an exit code, never a traceback.
"""

from __future__ import annotations

from typing import Final

NOT_FOUND: Final = 1
"""Exit code: no such run, pods or results; nothing to show; the cluster refused."""
USAGE: Final = 2
"""Exit code: the command line or the parameters are wrong."""


class CliError(Exception):
    """A failure to report on one line, with the exit code the command ends with."""

    def __init__(self, message: str, exit_code: int = NOT_FOUND) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
