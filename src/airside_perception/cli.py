"""Shared pieces of the command-line tools: one-line errors with exit code 2, path checks."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from typing import Dict, List, NoReturn, Optional, Sequence

USAGE_ERROR = 2
NOT_HERE = 3  # the step needs what this machine lacks


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line that names the fix, and exit with 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        sys.exit(USAGE_ERROR)


def fail(prog: str, message: str, code: int = USAGE_ERROR) -> NoReturn:
    sys.stderr.write(f"{prog}: error: {message}\n")
    sys.exit(code)


def code_of(exc: BaseException) -> int:
    """The exit code of a refused request: 3 where this machine lacks what it needs, else 2."""
    from airside_perception.errors import CapabilityError

    return NOT_HERE if isinstance(exc, CapabilityError) else USAGE_ERROR


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative: give 0 or more")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return value


def writable_file(path: str) -> str:
    """Checks that ``path`` can be created, creating its folder when missing (before any work is
    done); returns it unchanged."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{path} is a folder: give a file name")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"folder {folder} cannot be created ({exc.strerror}): pick another "
                                         "path") from None
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"cannot write {path}: pick a writable path")
    return path


def task_versions(values: Optional[Sequence[str]], tasks: Sequence[str], defaults: Dict[str, str],
                  known: Sequence[str] = ("segmentation", "detection", "occupancy")) -> Dict[str, str]:
    """``--version`` values: ``V`` (every task) and/or ``task=V`` (repeatable), over ``defaults``
    (the configured versions), for the measured ``tasks`` (a known task not measured is ignored).
    Raises ValueError naming the fix."""
    out = {t: defaults[t] for t in tasks if t in defaults}
    for value in values or []:
        task, sep, version = value.partition("=")
        if not sep:
            out.update({t: value for t in tasks})
        elif task not in known:
            raise ValueError(f"--version {value}: '{task}' is not one of the tasks ({', '.join(known)})")
        elif not version:
            raise ValueError(f"--version {value}: give a version after '='")
        elif task in tasks:
            out[task] = version
    missing = [t for t in tasks if t not in out]
    if missing:
        raise ValueError(f"no version for {', '.join(missing)}: pass --version {missing[0]}=V")
    return out


def machine() -> str:
    """This machine in one line: CPU model and count, platform, Python."""
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        pass
    return (f"{platform.node()}: {os.cpu_count()} cores, {model or platform.processor() or platform.machine()}, "
            f"{platform.platform()}, Python {platform.python_version()}")


def command_line(argv: Optional[List[str]], prog: str) -> str:
    """The command as it was given (for result files)."""
    return " ".join([prog] + list(sys.argv[1:] if argv is None else argv))
