#!/usr/bin/env python3
"""Bootstrap and run the project with nothing but Python installed.

    python3 tasks.py run     # install into .venv if needed, then run the engine (scoring up --demo)
    python3 tasks.py test    # install into .venv if needed, then run the test suite
    python3 tasks.py check   # the gates CI runs before the tests: lint, format, types, imports

Anything after the task name is passed on (``python3 tasks.py test -k leaderboard``,
``python3 tasks.py run up --port 9000``); ``check`` takes the names of the gates to run
(``python3 tasks.py check types imports``), all of them by default.
The virtual environment is rebuilt only when ``pyproject.toml`` changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("SCORING_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".installed"


def ensure_venv() -> None:
    """Create ``.venv`` and install the project with its dev extras, once per pyproject."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    if not (BIN / "python").exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(digest)


#: The gates: each a command of the venv, configured in pyproject.toml.
CHECKS = {
    "lint": ["ruff", "check", "."],
    "format": ["ruff", "format", "--check", "."],
    "types": ["mypy"],  # strict, on engine/, api/, workers/ and scoring/
    "imports": ["lint-imports"],  # the layers of DESIGN.md
}


def check(names: list[str]) -> int:
    """Run the named gates (all by default), each to its end; 1 if any failed."""
    unknown = set(names) - set(CHECKS)
    if unknown:
        print(f"unknown check(s) {sorted(unknown)}; choose from {list(CHECKS)}")
        return 2
    failed = []
    for name in names or CHECKS:
        program, *args = CHECKS[name]
        print(f"== {name}: {program} {' '.join(args)}", flush=True)
        if subprocess.call([str(BIN / program), *args], cwd=ROOT) != 0:
            failed.append(name)
    print(f"== failed: {', '.join(failed)}" if failed else "== all checks passed", flush=True)
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    task, rest = (argv[0], argv[1:]) if argv else ("help", [])
    if task not in {"run", "test", "check"}:
        print(__doc__)
        return 0 if task == "help" else 2
    ensure_venv()
    if task == "check":
        return check(rest)
    if task == "run":
        cmd = [str(BIN / "scoring"), *(rest or ["up", "--demo"])]
    else:
        cmd = [str(BIN / "python"), "-m", "pytest", *rest]
    os.chdir(ROOT)
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
