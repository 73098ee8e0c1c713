"""The ``sluiceway`` command line (Typer + Rich); ``main`` is the console script."""

from sluiceway.cli.app import ExitCode, app, exit_code_for

__all__ = ["ExitCode", "app", "exit_code_for", "main"]


def main() -> None:
    """Entry point of the ``sluiceway`` console script and ``python -m sluiceway``."""
    app(prog_name="sluiceway")
