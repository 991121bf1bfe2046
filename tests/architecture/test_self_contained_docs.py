"""Docstrings and comments stand on their own: no section references (a section sign and a
number) into a document that is not in the repository. Say the fact where it is used instead."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECTION_REFERENCE = re.compile("\u00a7" + r"\s*\d")  # the section sign, spelled so this file passes
def _sources() -> list[Path]:
    return [p for top in ("backend", "kernels", "trellis2_blender", "scripts", "tests")
            for p in sorted((ROOT / top).rglob("*.py"))]


def _references(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return [f"{path.relative_to(ROOT).as_posix()}:{n}: {line.strip()}"
            for n, line in enumerate(text.splitlines(), 1) if SECTION_REFERENCE.search(line)]


def test_no_section_references():
    found = [ref for p in _sources() for ref in _references(p)]
    assert not found, "docstrings/comments point to sections of an outside document:\n" + "\n".join(found)

