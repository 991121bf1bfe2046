"""Create or reuse the project's virtual environment and print its Python.

Used by the README's two commands (``scripts/generate.sh`` and
``scripts/test.sh``), so each of them does all of its own set-up on a fresh
machine. Standard library only: it runs before any dependency exists.

The environment lives in ``.venv`` at the repository root. It is reused when the
dependencies it was built from (``pyproject.toml``) are unchanged and it already
holds the requested extras; otherwise the missing pieces are installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tomllib  # Python 3.11+: older interpreters stop here, which is the requirement
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
STAMP = VENV / "trellis2-stamp.json"


def _requirements(pyproject: dict, extras: list[str]) -> list[str]:
    project = pyproject["project"]
    reqs = list(project["dependencies"])
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"bootstrap: unknown extra {extra!r}; known: {', '.join(sorted(optional))}")
        reqs.extend(optional[extra])
    return reqs


def _venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--extras", default="", help="comma-separated optional-dependency groups")
    args = parser.parse_args()
    extras = sorted({e for e in args.extras.split(",") if e})

    raw = (ROOT / "pyproject.toml").read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    pyproject = tomllib.loads(raw.decode())

    stamp = {}
    if STAMP.exists():
        try:
            stamp = json.loads(STAMP.read_text())
        except ValueError:
            stamp = {}
    python = _venv_python()
    have = set(stamp.get("extras", [])) if stamp.get("pyproject") == digest else None
    if python.exists() and have is not None and set(extras) <= have:
        print(python)
        return 0

    log = sys.stderr
    if not python.exists():
        print(f"bootstrap: creating {VENV}", file=log)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    wanted = sorted(set(extras) | (have or set()))
    reqs = _requirements(pyproject, wanted)
    print(f"bootstrap: installing {len(reqs)} requirements (extras: {', '.join(wanted) or 'none'})", file=log)
    # pip's own output goes to stderr: stdout carries only the interpreter path.
    subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *reqs],
        check=True,
        stdout=log,
    )
    tmp = STAMP.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pyproject": digest, "extras": wanted}))
    tmp.replace(STAMP)
    print(python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
