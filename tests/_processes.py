"""The processes on this machine, for tests that check what a run leaves behind."""

from collections.abc import Iterator
from pathlib import Path


def command_lines() -> Iterator[tuple[int, str]]:
    """(pid, command line with spaces between arguments) of every process still readable."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            yield int(proc.name), cmdline
