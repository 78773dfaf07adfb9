"""The error types for input the user gave that cannot be used.

Each script's ``cli()`` catches ``UserError`` once (``run_main``) and prints it as one
line, ``error: <file or option>: <problem>``, with exit code 2; anything else is a bug
and keeps its traceback. The subclasses only say where the problem lies. A wrong option
is one such line too (``OneLineParser``), and a file name that is not valid UTF-8 prints
with \\x escapes instead of crashing the print (``printable_console``).
"""
import argparse
import codecs
import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Callable

# what stops a run politely: Ctrl-C, kill, and SLURM's --signal=USR1 notice (no SIGUSR1 on Windows)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, name))


class UserError(Exception):
    """Input the user gave (a file, a folder, an option) that cannot be used."""


class DataError(UserError):
    """An image, a data folder or a class layout."""


class CheckpointError(UserError):
    """A checkpoint, a state_dict, an ONNX file or a class index file."""


class ArgumentError(UserError):
    """An option's value, or a combination of options."""


def require_counts(args: argparse.Namespace, *names: str) -> None:
    """Each named integer option (argparse's attribute name) is at least 1, or one line naming it."""
    for name in names:
        value = getattr(args, name)
        if value < 1:
            raise ArgumentError(f"--{name.replace('_', '-')} {value}: must be at least 1")


class OutputError(UserError):
    """An output folder or file that cannot be written, or is held by another run."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a wrong option is one line (``error: argument --epochs: invalid int
    value: 'ten'``) and exit code 2, like every other error of the scripts."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")


def run_main(main: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Each script's cli(): main(args)'s exit code, or for a UserError one line and 2, or
    for Ctrl-C or SIGTERM one line and 130 (after the ``finally`` clean-ups ran); when the
    reader of stdout goes away (``| head``), quietly 141, as a shell tool killed by SIGPIPE."""
    printable_console()
    with interrupts_raise():
        try:
            return main(args) or 0
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:
            # Python's documented recipe: point stdout at devnull so the exit's flush cannot fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141


@contextmanager
def interrupts_raise():
    """SIGINT, SIGTERM and SIGUSR1 (a cluster's notice before preemption) raise KeyboardInterrupt
    while inside; the handlers before are restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _interrupt) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _escape_bytes(err: UnicodeError) -> tuple[str, int]:
    """Error handler: a byte that was not UTF-8 (a surrogate, as Python reads such names)
    becomes \\xNN, any other character the console cannot show becomes \\uNNNN."""
    bad = err.object[err.start:err.end]
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else
                   f"\\u{ord(c):04x}" for c in bad), err.end


codecs.register_error("escape-bytes", _escape_bytes)


def printable_console() -> None:
    """Let print() show file names that are not UTF-8 (escaped) instead of raising UnicodeEncodeError.
    A stream the shell closed (``2>&-``) is None in Python: errors then go to stdout (or nowhere,
    if it is closed too), so that the run still writes its files and says what went wrong rather
    than failing on its first progress bar."""
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")
    if sys.stderr is None:
        sys.stderr = sys.stdout
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="escape-bytes")
