"""Every Markdown link in README.md, data/README.md, docs/*.md and the notebooks' Markdown cells
leads somewhere: internal paths and anchors exist, Colab and GitHub links are built from
config.REPOSITORY and name a file that exists, no link is broken into literal brackets by a link
nested in another, and every table is one a Markdown renderer reads as a table.

The links are read the way GitHub and the course website read them, by a CommonMark parser
(markdown-it-py, which jupytext already installs), so what is checked is what readers click.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from course_utils.config import COLAB_URL, PROJECT_ROOT, REPOSITORY, REPOSITORY_URL

OWNER, NAME = REPOSITORY.split("/")
PAGES_URL = f"https://{OWNER}.github.io/{NAME}/"  # where .github/workflows/pages.yml publishes
MARKDOWN_FILES = [
    "README.md",
    "data/README.md",
    *sorted(p.as_posix() for p in PROJECT_ROOT.glob("docs/*.md")),
]
NOTEBOOK_FOLDERS = ["notebooks", "student"]
PARSER = MarkdownIt("commonmark").enable("table")


@dataclass(frozen=True)
class Source:
    """One piece of Markdown: a file, or one Markdown cell of a notebook."""

    name: str  # for messages: "README.md" or "notebooks/03_residual_blocks.ipynb, cell 4"
    folder: Path  # relative links start here
    text: str


def _sources() -> list[Source]:
    sources = []
    for name in MARKDOWN_FILES:
        path = PROJECT_ROOT / name
        sources.append(Source(Path(name).as_posix(), path.parent, path.read_text(encoding="utf-8")))
    for folder in NOTEBOOK_FOLDERS:
        for path in sorted((PROJECT_ROOT / folder).glob("*.ipynb")):
            cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
            for index, cell in enumerate(cells):
                if cell["cell_type"] == "markdown":
                    text = "".join(cell["source"])
                    sources.append(Source(f"{folder}/{path.name}, cell {index}", path.parent, text))
    return sources


SOURCES = _sources()
FILES = sorted({source.name.split(",")[0] for source in SOURCES})


def _of(file: str) -> list[Source]:
    return [source for source in SOURCES if source.name.split(",")[0] == file]


def _inline_tokens(source: Source) -> list[Token]:
    """Every inline token of the rendered Markdown, with its children (links, images, text)."""
    return [token for token in PARSER.parse(source.text) if token.type == "inline"]


def _targets(source: Source) -> list[str]:
    """Every link's href and image's src in the Markdown, as a renderer sees them."""
    targets = []
    for inline in _inline_tokens(source):
        for child in inline.children or []:
            if child.type == "link_open":
                targets.append(child.attrs["href"])
            elif child.type == "image":
                targets.append(child.attrs["src"])
    return targets


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading (what `myst_heading_anchors` in docs/conf.py also produces)."""
    heading = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return heading.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    """The heading anchors of a Markdown file or of a notebook's Markdown cells."""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        text = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    else:
        text = path.read_text(encoding="utf-8")
    tokens = PARSER.parse(text)
    return {
        _slug(tokens[i + 1].content)
        for i, token in enumerate(tokens)
        if token.type == "heading_open"
    }


def _is_external(target: str) -> bool:
    return bool(urlsplit(target).scheme)


@pytest.mark.parametrize("file", FILES)
def test_internal_links_and_anchors_exist(file):
    broken = [problem for source in _of(file) for problem in _broken_internal_links(source)]
    assert not broken, "broken links:\n" + "\n".join(broken)


def _broken_internal_links(source: Source) -> list[str]:
    broken = []
    for target in _targets(source):
        if _is_external(target):
            continue
        url = urlsplit(target)
        path = (source.folder / unquote(url.path)).resolve() if url.path else None
        if path is not None and not path.exists():
            broken.append(f"{source.name}: {target}: no such file")
            continue
        if url.fragment and (path is None or path.suffix in {".md", ".ipynb"}):
            in_file = path if path is not None else _own_file(source)
            if unquote(url.fragment) not in _anchors(in_file):
                broken.append(
                    f"{source.name}: {target}: no heading with the anchor #{url.fragment}"
                )
    return broken


def _own_file(source: Source) -> Path:
    return PROJECT_ROOT / source.name.split(",")[0]


@pytest.mark.parametrize("file", FILES)
def test_colab_and_github_links_are_built_from_the_repository(file):
    broken = [problem for source in _of(file) for problem in _foreign_links(source)]
    assert not broken, "\n".join(broken)


def _foreign_links(source: Source) -> list[str]:
    broken = []
    for target in _targets(source):
        if "colab.research.google.com/github/" in target:
            if not target.startswith(COLAB_URL + "/"):
                broken.append(
                    f"{target}: a Colab link must start with config.COLAB_URL ({COLAB_URL})"
                )
            elif not (PROJECT_ROOT / target[len(COLAB_URL) + 1 :]).is_file():
                broken.append(
                    f"{target}: Colab would open {target[len(COLAB_URL) + 1 :]}, "
                    "which is not in the repository"
                )
        elif target.startswith((f"{REPOSITORY_URL}/blob/main/", f"{REPOSITORY_URL}/tree/main/")):
            path = target.split("/main/", 1)[1].split("#")[0]
            if not (PROJECT_ROOT / path).exists():
                broken.append(f"{target}: {path} is not in the repository")
        elif ".github.io" in target and not target.startswith(PAGES_URL):
            broken.append(f"{target}: the course website is {PAGES_URL} (from config.REPOSITORY)")
    return [f"{source.name}: {problem}" for problem in broken]


@pytest.mark.parametrize("file", FILES)
def test_no_link_is_nested_in_another(file):
    """A link written inside another link's text or target (say a badge pasted into a badge's
    target) is not a link to a Markdown renderer: it shows as literal brackets and parentheses."""
    broken = [problem for source in _of(file) for problem in _nested_links(source)]
    assert not broken, (
        "broken link syntax (write each badge as [![alt](image)](target)):\n" + "\n".join(broken)
    )


def _nested_links(source: Source) -> list[str]:
    broken = []
    for inline in _inline_tokens(source):
        line = f"{source.name}, line {inline.map[0] + 1}: " if inline.map else f"{source.name}: "
        shown = inline.content if len(inline.content) < 160 else inline.content[:157] + "..."
        for child in inline.children or []:
            if child.type == "text" and "](" in child.content:
                broken.append(f"{line}link syntax shown as text in {shown!r}")
            if child.type == "link_open" and (
                "[" in child.attrs["href"] or "](" in child.attrs["href"]
            ):
                broken.append(f"{line}a link inside a link's target: {child.attrs['href']!r}")
    return sorted(set(broken))


@pytest.mark.parametrize("file", FILES)
def test_tables_are_read_as_tables(file):
    """A table whose separator row has a different number of columns than its header is shown as
    plain text with pipes."""
    broken = [problem for source in _of(file) for problem in _broken_tables(source)]
    assert not broken, (
        "rows that are not read as a table (does the separator row have as many columns as the "
        "header?):\n" + "\n".join(broken)
    )


def _broken_tables(source: Source) -> list[str]:
    tokens = PARSER.parse(source.text)
    return [
        f"{source.name}, line {token.map[0] + 1}: {tokens[i + 1].content.splitlines()[0]}"
        for i, token in enumerate(tokens)
        if token.type == "paragraph_open" and tokens[i + 1].content.lstrip().startswith("|")
    ]


def test_readme_links_to_the_course_online():
    readme = next(s for s in SOURCES if s.name == "README.md")
    linked = PAGES_URL in _targets(readme)
    assert linked, (
        f"README.md should link to the course website, {PAGES_URL} (built from config.REPOSITORY)"
    )


def test_the_checks_catch_what_they_are_for():
    """Each check above rejects the mistake it is for (a checker that passes everything is worse
    than none): a missing file, a missing anchor, a Colab link to another repository, a badge
    nested in a badge's target, and a table with one separator column too many."""
    badge = "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
    bad = Source(
        "bad.md",
        PROJECT_ROOT,
        "\n\n".join(
            [
                "[gone](notebooks/99_missing.ipynb)",
                "[anchor](README.md#no-such-heading)",
                "[other](https://colab.research.google.com/github/someone/else/blob/main/x.ipynb)",
                f"{badge}({badge}({COLAB_URL}/student/00_setup.ipynb))",
                "| a | b |\n| --- | --- | --- |\n| 1 | 2 |",
            ]
        ),
    )
    internal = "\n".join(_broken_internal_links(bad))
    assert "99_missing.ipynb: no such file" in internal
    assert "no heading with the anchor #no-such-heading" in internal
    assert "must start with config.COLAB_URL" in "\n".join(_foreign_links(bad))
    assert "link syntax shown as text" in "\n".join(_nested_links(bad))
    assert "| a | b |" in "\n".join(_broken_tables(bad))
    good = Source(
        "good.md",
        PROJECT_ROOT,
        f"{badge}({COLAB_URL}/student/00_setup.ipynb)\n\n"
        "[set-up](README.md#set-up)\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n",
    )
    assert not (
        _broken_internal_links(good)
        + _foreign_links(good)
        + _nested_links(good)
        + _broken_tables(good)
    )
