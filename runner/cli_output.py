"""The CLI's stdout: the command's one JSON document (or `--help`'s text) and nothing else;
its exit statuses; an error as one line on stderr.

Python's `print` is not the only writer to file descriptor 1: a task module printing at
import, a logging handler or a Powertools Logger made at import (each holds `sys.stdout`
as it was then), a child process (it inherits fd 1) and `os.write(1, ...)` all bypass
`sys.stdout`. So the CLI takes the descriptor first, before any task module is imported:
fd 1 then names stderr for the rest of the process, and the document is written to the
descriptor taken.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

EXIT_OK = 0
EXIT_FAILED = 1
# The command line was refused; nothing ran. sysexits.h's EX_USAGE, not 2: with `--wait`,
# 2 is a task that FAILED, and a script must tell "my command line" from "the task".
EXIT_USAGE = 64
# Ctrl-C: the process ends by SIGINT (a shell reports 128 + 2), so a script running the
# CLI in a loop stops too, as it does for any well-behaved tool.
EXIT_INTERRUPTED = 130
# A closed stdout: what a shell reports for a process killed by SIGPIPE (128 + 13).
EXIT_CLOSED_PIPE = 141


def fail(message: str, code: int) -> int:
    """Report an error in one line on stderr; returns `code`."""
    line = " ".join(message.split())  # one line, whatever the message held
    with contextlib.suppress(OSError, AttributeError):  # no stderr: the exit status says it
        print(f"error: {line}", file=sys.stderr, flush=True)
    return code


class Output:
    """Where the command's document goes: the descriptor stdout had when the CLI started."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def take(cls) -> Output | None:
        """Take stdout's descriptor and point fd 1 at stderr; None if stdout is closed."""
        if sys.stdout is None:
            # Closed when Python started (`>&-`): fd 1 may since name a file Python opened.
            return None
        try:
            sys.stdout.flush()
            fd = os.dup(1)  # not inherited by child processes (PEP 446)
        except (OSError, ValueError):
            return None
        try:
            os.dup2(2, 1)
        except OSError:  # no stderr either: what others write to fd 1 goes nowhere
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.close(devnull)
        return cls(fd)

    def write(self, text: str, *, ran: bool) -> int:
        """Write the whole text; a reader that went away (`| head`) ends quietly (141).

        `ran`: the command has run, so a failed write must not read as if nothing did.
        """
        data = text.encode()
        try:
            while data:
                data = data[os.write(self.fd, data) :]
        except BrokenPipeError:
            return EXIT_CLOSED_PIPE
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if ran:
                return fail(
                    f"the command ran, but its output could not be written: {reason}", EXIT_FAILED
                )
            return fail(f"cannot write to stdout: {reason}", EXIT_FAILED)
        return EXIT_OK


def exit_with(code: int) -> None:
    """End the process with `code`; EXIT_INTERRUPTED ends it by SIGINT, as Ctrl-C would."""
    if code == EXIT_INTERRUPTED:
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    sys.exit(code)
