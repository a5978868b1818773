"""``python -m capgate``: the same command as the ``capgate`` console script."""

from __future__ import annotations

from capgate.cli import console_main

if __name__ == "__main__":
    console_main()
