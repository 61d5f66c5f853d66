"""The one error type a user ever sees: a one-line message, a hint, and an exit code."""

from __future__ import annotations

USAGE = 2  # the user asked for something that cannot be done as asked
RUNTIME = 1  # the request was fine but something failed while doing it
INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


class GbcliError(Exception):
    """A failure explained to the user in one sentence, with a hint on what to do next."""

    def __init__(self, message: str, hint: str | None = None, *, exit_code: int = RUNTIME) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code


def usage_error(message: str, hint: str | None = None) -> GbcliError:
    """A mistake in how the command was called (exit code 2)."""
    return GbcliError(message, hint, exit_code=USAGE)
