"""The ``detrc`` command of the wheel: the Rust command line, run in this process."""

from __future__ import annotations

import signal
import sys


def main() -> None:
    # Behave as the cargo-built binary: die quietly on a closed pipe (`detrc inspect m | head`)
    # and stop at once on Ctrl-C, instead of Python's handlers that would only act once the
    # Rust call returns.
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    from detrc import _detrc

    # argv[0] is whatever launched us (a venv script, `python -m detrc`); clap names the
    # program from it in usage lines, so it is always "detrc".
    sys.exit(_detrc.cli(["detrc", *sys.argv[1:]]))
