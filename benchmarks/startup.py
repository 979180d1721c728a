"""How long ``headstart --help`` and ``headstart fit --help`` take, start to exit.

The first thing a new user types; the bar is one second. Each command runs as a fresh
process (``python -m headstart``, what the ``headstart`` script runs), several times; the
median is printed, beside a bare ``python -c pass`` for the interpreter's own start-up.

Usage: python benchmarks/startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "headstart --help": ["-m", "headstart", "--help"],
    "headstart fit --help": ["-m", "headstart", "fit", "--help"],
}


def seconds(arguments: list[str]) -> float:
    """Wall time of one fresh interpreter running ``arguments`` to its exit."""
    start = time.perf_counter()
    subprocess.run([sys.executable, *arguments], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    for arguments in COMMANDS.values():
        seconds(arguments)  # warm the file-system cache and the bytecode
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):  # interleaved, so a busy moment costs every command alike
        for name, arguments in COMMANDS.items():
            times[name].append(seconds(arguments))
    for name, measured in times.items():
        print(
            f"{name:22} median {statistics.median(measured):.3f} s "
            f"(min {min(measured):.3f}, max {max(measured):.3f}, {args.runs} runs)"
        )


if __name__ == "__main__":
    main()
