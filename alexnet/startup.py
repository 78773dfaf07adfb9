"""The first import of every script: when the command started (--budget counts from here,
since importing torch alone takes seconds on a slow CPU), and, for a script run as a
program, Ctrl-C (or SIGTERM, SIGUSR1) while its libraries still import is one line and exit
128 + the signal, not a traceback through the import machinery; ``errors.run_main`` takes
over once the script runs. Standard library only, so it is in place before torch loads."""
import os
import sys
import time
from pathlib import Path

from alexnet.errors import STOP_SIGNALS

STARTED = time.monotonic()
PROJECT = Path(__file__).resolve().parent.parent


def _stop(signum, frame):
    sys.stderr.write("interrupted\n")
    os._exit(128 + signum)


def _run_as_program() -> bool:
    """Whether the process is one of the project's scripts (not pytest, not an import)."""
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    return main is not None and Path(main).resolve().is_relative_to(PROJECT)


if _run_as_program():
    import signal

    for sig in STOP_SIGNALS:
        signal.signal(sig, _stop)
