"""What the code and docs cite lives in the repository.

The packages and the documentation may not point at documents outside the repository (a
specification or environment notes that only some checkouts have); the algorithm notes are in
docs/algorithm.md and the platform facts in docs/operations.md. A section reference, e.g.
docs/algorithm.md §Chained cost, must name a heading that exists in that file.
"""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCANNED = ("densenas_core", "service", "workers", "docs", "README.md")
FORBIDDEN = ("SPEC §", "SPEC.md", "ENVIRONMENT.md", "/work/shared", "shared/seed")
SECTION_DOCS = ("docs/algorithm.md", "docs/operations.md")
_REF = re.compile(r"(docs/(?:algorithm|operations)\.md)\s*§")
# a reference may wrap onto the next comment or docstring line
_WRAP = re.compile(r"\s*\n\s*(?:#+:?\s*)?")


def _scanned_files() -> list[pathlib.Path]:
    files = []
    for name in SCANNED:
        path = ROOT / name
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        for f in candidates:
            if f.is_file() and "__pycache__" not in f.parts and f.suffix not in {".pyc", ".png"}:
                files.append(f)
    return files


def _text(path: pathlib.Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None  # binary


def _headings(doc: str) -> list[str]:
    text = (ROOT / doc).read_text(encoding="utf-8")
    heads = [m.group(1).strip() for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", text, re.M)]
    return sorted(heads, key=len, reverse=True)  # longest first: "Cost" vs "Cost loss"


def test_scanned_files_exist() -> None:
    for name in SCANNED + SECTION_DOCS:
        assert (ROOT / name).exists(), name


@pytest.mark.parametrize("needle", FORBIDDEN)
def test_no_reference_outside_the_repository(needle: str) -> None:
    hits = []
    for path in _scanned_files():
        text = _text(path)
        if text is None:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if needle in line:
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, (
        f"{needle!r} points outside the repository; cite docs/algorithm.md or "
        "docs/operations.md instead:\n" + "\n".join(hits)
    )


def test_section_references_name_existing_headings() -> None:
    headings = {doc: _headings(doc) for doc in SECTION_DOCS}
    files = (
        _scanned_files()
        + sorted((ROOT / "tests").rglob("*.py"))
        + sorted((ROOT / "bench").rglob("*.py"))
    )
    bad, seen = [], 0
    for path in files:
        text = _text(path)
        if text is None:
            continue
        for m in _REF.finditer(text):
            seen += 1
            after = _WRAP.sub(" ", text[m.end() : m.end() + 120])
            doc = m.group(1)
            ok = any(
                after.startswith(h) and not after[len(h) : len(h) + 1].isalnum()
                for h in headings[doc]
            )
            if not ok:
                line = text.count("\n", 0, m.start()) + 1
                bad.append(f"{path.relative_to(ROOT)}:{line}: {doc} §{after[:40]!r}")
    assert seen > 0, "no section references found: is the pattern still right?"
    assert not bad, "references to headings that do not exist:\n" + "\n".join(bad)
