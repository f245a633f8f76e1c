"""The README is a front door: short, its two commands first, and every link in it (and in docs/) resolves."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    out, in_code = set(), False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            out.add(_slug(line.lstrip("#")))
    return out


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_readme_is_short_and_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 250, len(text.splitlines())
    first_block = text[text.index("```"):]
    first_block = first_block[:first_block.index("```", 3)]
    assert "make demo" in first_block and "make test" in first_block


def test_every_link_in_the_readme_and_docs_resolves():
    broken, checked = [], 0
    for page in _pages():
        for m in LINK.finditer(page.read_text()):
            target = m.group(1) or m.group(2)
            if re.match(r"^[a-z]+:", target):  # http(s), mailto: not followed offline
                continue
            checked += 1
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            if not dest.exists() or ROOT not in dest.parents and dest != ROOT:
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no heading #{anchor})")
    assert broken == [] and checked >= 20, broken


def test_no_page_points_to_files_outside_the_repository():
    for page in _pages():
        text = page.read_text()
        assert "DESIGN.md" not in text and "design card" not in text, page
