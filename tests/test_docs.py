"""The docs hold together: every relative link in README.md and docs/*.md leads to an existing
file (and heading), and the README stays a page a newcomer reads to the end."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
HTML_ID = re.compile(r"""<a\s+(?:name|id)=["']([^"']+)["']""")
INLINE_CODE = re.compile(r"`+[^`]*`+")
# [text](target) and ![alt](target), with an optional "title"
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = ("http://", "https://", "mailto:")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, in_fence = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces -> '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a link may name in `path`: heading slugs (repeats get -1, -2...) and HTML ids."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        found.update(HTML_ID.findall(line))
        match = HEADING.match(line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every markdown link or image in `path`, code left out."""
    return [
        (number, target)
        for number, line in prose_lines(path.read_text(encoding="utf-8"))
        for target in LINK.findall(INLINE_CODE.sub("", line))
    ]


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """'file:line: target (why)' for every relative link in `path` that leads nowhere."""
    broken = []
    for number, target in links(path):
        if target.lower().startswith(EXTERNAL):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(root)}:{number}: {target}"
        if not dest.exists():
            broken.append(f"{where} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{where} (no heading #{anchor} in {dest.name})")
    return broken


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("Set-up: two commands", "set-up-two-commands"),
        ("Reports: look before trusting a score", "reports-look-before-trusting-a-score"),
        ("Other datasets: GeoTIFF chips and image/mask tiles", "other-datasets-geotiff-chips-and-imagemask-tiles"),
        ("The `cv` stage, **in bold**", "the-cv-stage-in-bold"),
        ("A [link](x.md) inside", "a-link-inside"),
        ("snake_case stays", "snake_case-stays"),
    ],
)
def test_slug_known_answers(heading: str, expected: str) -> None:
    assert slug(heading) == expected


def test_checker_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Second part\n", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text(
        "# Top\n"
        "[ok](docs/a.md) [ok](docs/a.md#second-part) [ok](#top) [web](https://x.org/missing)\n"
        "```\n[in code](nowhere.md)\n```\n"
        "`[inline](nowhere.md)` ![img](docs/missing.png)\n"
        "[bad anchor](docs/a.md#third) [bad local](#nothing)\n",
        encoding="utf-8",
    )
    assert broken_links(page, tmp_path) == [
        "README.md:6: docs/missing.png (no such file)",
        "README.md:7: docs/a.md#third (no heading #third in a.md)",
        "README.md:7: #nothing (no heading #nothing in README.md)",
    ]


def test_every_relative_link_resolves() -> None:
    broken = [problem for path in doc_files() for problem in broken_links(path)]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_readme_is_short() -> None:
    lines = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move a topic to a page under docs/"
    )


def test_the_python_api_examples_run(tmp_path, monkeypatch) -> None:
    """docs/python-api.md's self-contained examples run as written (the one that reads a project's
    files is left to the reader: it needs `cloudcli preprocess` first)."""
    text = (ROOT / "docs/python-api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    runnable = [b for b in blocks if "data/train.csv" not in b]
    assert len(runnable) == 2
    monkeypatch.chdir(tmp_path)
    for block in runnable:
        exec(compile(block, "docs/python-api.md", "exec"), {})
