"""``python -m sluiceway`` runs the CLI."""

from sluiceway.cli import main

if __name__ == "__main__":
    main()
