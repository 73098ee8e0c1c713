"""The ``sluiceway`` command line (Typer + Rich); ``main`` is the console script."""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading

from sluiceway.cli.app import ExitCode, app, exit_code_for

__all__ = ["ExitCode", "app", "exit_code_for", "main"]

#: Set to ``0`` to let the interpreter tear itself down the slow way at exit.
FAST_EXIT_VARIABLE = "SLUICEWAY_FAST_EXIT"


def main() -> None:
    """Entry point of the ``sluiceway`` console script and ``python -m sluiceway``."""
    try:
        app(prog_name="sluiceway")
    except SystemExit as exc:
        wanted = os.environ.get(FAST_EXIT_VARIABLE, "1").strip().lower()
        if _owns_process() and wanted not in ("0", "false", "no", "off") and not _needs_teardown():
            _exit_now(exc.code)
        raise


def _owns_process() -> bool:
    """True when this process is the ``sluiceway`` command (its script or ``-m``), not a
    program that calls :func:`main` and goes on after it."""
    script = os.path.basename(sys.argv[0]) if sys.argv else ""
    return script in ("sluiceway", "sluiceway.exe", "__main__.py") and (
        script != "__main__.py" or os.path.dirname(sys.argv[0]).endswith("sluiceway")
    )


#: Client libraries that finish work when their objects are destroyed at teardown:
#: librdkafka completes a closing consumer's last offset commit and group leave in
#: ``rd_kafka_destroy``, which runs when the interpreter frees the consumer (seen: a
#: member leaving its group with fast exit left its last offsets uncommitted, and the
#: next owner read 200 messages again). A process that loaded one exits normally.
_TEARDOWN_MODULES = ("confluent_kafka",)


def _needs_teardown() -> bool:
    return any(name in sys.modules for name in _TEARDOWN_MODULES)


def _exit_now(code: object) -> None:
    """End the process the way the interpreter would, minus tearing down its heap.

    Finalization frees every object and module one by one: after a run that loaded
    pyarrow, botocore's service models, deltalake and the like, that alone took
    0.1-0.4 s of a few-second job, for nothing the process keeps. Everything the
    interpreter does that has an effect outside the process still happens, in its
    order: non-daemon threads are joined (executors shut down), ``atexit`` handlers
    run (observability flushes, logging shutdown, temporary directories), and the
    standard streams are flushed. Every file the pipeline writes is closed by its
    stage before the run returns.
    """
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # SystemExit("message"): printed, status 1, as the interpreter does
        print(code, file=sys.stderr)
        status = 1
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # Closed, or a broken pipe: nothing is left to lose.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    os._exit(status & 0xFF)
