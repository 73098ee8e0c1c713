"""The CLI ends its process without tearing down the heap, and loses nothing doing so."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_CHILD = textwrap.dedent(
    """
    import atexit, sys, threading, time
    from pathlib import Path
    from sluiceway.cli import _exit_now

    out = Path(sys.argv[1])
    atexit.register(lambda: (out / "atexit").write_text("ran"))

    def late() -> None:
        time.sleep(0.3)
        (out / "thread").write_text("joined")

    threading.Thread(target=late).start()  # not a daemon: the exit waits for it
    sys.stdout.write("buffered, no newline")
    code = sys.argv[2]
    _exit_now(None if code == "none" else int(code) if code.lstrip("-").isdigit() else code)
    (out / "after").write_text("must not happen")
    """
)


@pytest.mark.parametrize(
    ("code", "status"), [("0", 0), ("none", 0), ("6", 6), ("-1", 255), ("bad spec", 1)]
)
def test_exit_now_joins_threads_runs_atexit_and_flushes(
    tmp_path: Path, code: str, status: int
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path), code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == status, done.stderr
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "thread").read_text() == "joined"
    assert not (tmp_path / "after").exists()
    assert done.stdout == "buffered, no newline"
    if code == "bad spec":
        assert done.stderr.strip() == "bad spec"


_SITE = textwrap.dedent(
    """
    import os

    class _Teardown:
        def __del__(self, _open=os.open, _write=os.write, _close=os.close,
                    _path=os.environ["TEARDOWN_MARKER"], _flags=os.O_WRONLY | os.O_CREAT):
            fd = _open(_path, _flags)
            _write(fd, b"torn down")
            _close(fd)

    _teardown = _Teardown()  # freed when the interpreter clears this module at exit
    if os.environ.get("LOAD_KAFKA"):
        import confluent_kafka  # noqa: F401
    """
)


def _command(
    tmp_path: Path, marker: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m sluiceway ARGS`` with a finalizer that marks the heap's teardown."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_SITE)
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "sluiceway", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": path, "TEARDOWN_MARKER": str(marker), **env},
    )


def test_the_command_skips_teardown_and_keeps_its_exit_codes(tmp_path: Path) -> None:
    """With fast exit the heap is not torn down (no finalizer runs); without, it is."""
    missing = tmp_path / "nope.yaml"
    for fast in ("1", "0"):
        marker = tmp_path / f"teardown-{fast}"
        done = _command(tmp_path, marker, "run", str(missing), SLUICEWAY_FAST_EXIT=fast)
        assert done.returncode == 2, done.stderr
        assert "nope.yaml" in done.stderr + done.stdout
        ok = _command(tmp_path, marker, "--help", SLUICEWAY_FAST_EXIT=fast)
        assert ok.returncode == 0 and "run" in ok.stdout
        # Two processes ran; each tears down only without fast exit.
        assert marker.exists() == (fast == "0")


def test_a_process_that_loaded_librdkafka_exits_the_normal_way(tmp_path: Path) -> None:
    """librdkafka finishes a closed consumer's commit in its destructor: keep teardown."""
    marker = tmp_path / "teardown"
    done = _command(tmp_path, marker, "--help", SLUICEWAY_FAST_EXIT="1", LOAD_KAFKA="1")
    assert done.returncode == 0, done.stderr
    assert marker.exists()
