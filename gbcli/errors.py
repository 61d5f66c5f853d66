"""The one error type a user ever sees: a one-line message, a hint, and an exit code."""

from __future__ import annotations

import errno as codes

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


def explain_os_error(error: OSError) -> GbcliError:
    """A failure of the world around us (a full disk, a closed stdout, a permission) in one sentence, exit 1.

    Every errno gets a sentence of its own; the last one names the system's own words for anything rarer, so an
    OSError is never reported as a bug of ours.
    """
    name = f"'{error.filename}'" if error.filename is not None else "standard output"
    reason = error.strerror or type(error).__name__
    if error.errno in (codes.EPIPE,):
        return GbcliError(f"The reader of {name} went away before everything was written.", None)
    if error.errno == codes.ENOSPC:
        return GbcliError(f"No space left on the device to write {name}.", "Free some space, or write elsewhere.")
    if error.errno == codes.EDQUOT:
        return GbcliError(f"The disk quota is exhausted: cannot write {name}.", "Free some space, or write elsewhere.")
    if error.errno in (codes.EACCES, codes.EPERM):
        return GbcliError(
            f"Permission denied: {name} cannot be opened.",
            "Check the permissions of the file and of the folders above it.",
        )
    if error.errno == codes.EROFS:
        return GbcliError(f"{_capital(name)} is on a read-only file system.", "Write somewhere else.")
    if error.errno == codes.EBADF:
        return GbcliError(
            f"{_capital(name)} is closed, so nothing can be written to it.",
            "Run the command with its output going to a terminal, a file or a pipe.",
        )
    if error.errno == codes.ENOENT:
        return GbcliError(f"{_capital(name)} does not exist.", "Check the path.")
    if error.errno == codes.ENOTDIR:
        return GbcliError(f"A part of the path {name} is a file, not a folder.", "Check the path.")
    if error.errno == codes.EISDIR:
        return GbcliError(f"{_capital(name)} is a folder, not a file.", "Give a file.")
    if error.errno == codes.ELOOP:
        return GbcliError(f"{_capital(name)} is a loop of symbolic links.", "Point the link at a real file or folder.")
    if error.errno == codes.EIO:
        return GbcliError(f"Input/output error on {name}: the device failed.", "Check the disk or the mount.")
    if error.errno == codes.ENOMEM:
        return GbcliError("The system ran out of memory.", "Close other programs, or use a smaller model.")
    if error.errno == codes.EMFILE or error.errno == codes.ENFILE:
        return GbcliError("Too many files are open.", "Close other programs, or raise the limit (ulimit -n).")
    return GbcliError(f"The system refused an operation on {name}: {reason}.", None)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]
