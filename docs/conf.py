"""Sphinx configuration of the course website (`make book`; README, "The course website").

The site is built from the repository itself: README.md is the landing page, every notebook in
notebooks/ is executed by MyST-NB (its outputs go to the build folder, never back into notebooks/),
the student notebooks are offered as downloads, and the API reference is generated from the
docstrings of `course_utils`. Pages load nothing from other sites: math is rendered to MathML when
the site is built, and the Colab badge is served from the site itself.
"""

from __future__ import annotations

import json
import os
import pkgutil
import sys
from pathlib import Path

from docutils import nodes
from sphinx.transforms import SphinxTransform

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # autodoc and the notebooks use this checkout's course_utils

import course_utils  # noqa: E402
from course_utils import config as course_config  # noqa: E402

SMOKE = course_config.is_smoke()  # `make book SMOKE=1` sets COURSE_SMOKE=1
# `make book EXECUTE=0` sets COURSE_BOOK_EXECUTE=0: the pages without running the notebooks (the
# test of the site in `make test`, where nbval has just executed them).
EXECUTE = os.environ.get("COURSE_BOOK_EXECUTE", "1").strip() != "0"
OWNER, NAME = course_config.REPOSITORY.split("/")
PAGES_URL = f"https://{OWNER}.github.io/{NAME}/"  # where the Pages workflow publishes the site
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
LOCAL_COLAB_BADGE = "/docs/_static/colab-badge.svg"  # the same badge, served by the site itself

# The notebooks draw with matplotlib's inline backend, so that their figures become images on the
# page; MPLBACKEND=Agg (as set in CI) would draw them nowhere. The kernels inherit this variable.
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"

project = "Training ResNet-18 on CIFAR-10"
author = "the course authors"
copyright = f"{author}, MIT License"  # noqa: A001 (Sphinx's name)

extensions = [
    "myst_nb",  # Markdown (MyST) and executed Jupyter notebooks
    "sphinx.ext.autodoc",  # the API reference, from the docstrings
    "sphinx.ext.napoleon",  # docstrings in Google style (Args:, Returns:)
    "sphinx.ext.viewcode",  # each documented function links to its source
    "sphinx.ext.githubpages",  # .nojekyll, so that GitHub Pages serves _static/
]

# The source folder is the repository root; only these files are pages.
root_doc = "README"
include_patterns = ["README.md", "data/README.md", "notebooks/[0-9][0-9]_*.ipynb", "docs/*.md"]
exclude_patterns = ["build", ".venv", "work"]

myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3  # `[text](#a-heading)` links resolve like on GitHub

# Execution: each notebook runs top to bottom in a fresh kernel, and its outputs are cached by the
# hash of its code, so a rebuild only re-runs notebooks that changed. Smoke and full builds keep
# separate caches (the Makefile passes the folder), since the same code gives different outputs.
nb_execution_mode = "cache" if EXECUTE else "off"
nb_execution_cache_path = str(
    ROOT / "build" / ("book-smoke" if SMOKE else "book") / "jupyter_cache"
)
nb_execution_timeout = 600 if SMOKE else -1  # seconds per cell; a full training cell may take hours
nb_execution_raise_on_error = True  # a notebook that fails fails the build
nb_execution_show_tb = True
nb_merge_streams = True
# Widget outputs (tqdm's progress bars in notebooks) stay inert on the page: drawing them would load
# the widget scripts from a CDN, and a finished progress bar tells a reader nothing.
nb_ipywidgets_js = {}

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True}
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" as fields, not a second description of each attribute

html_theme = "sphinx_book_theme"
html_title = "ResNet-18 on CIFAR-10"
html_baseurl = PAGES_URL
html_static_path = ["_static"]
html_css_files = ["course.css"]
html_math_renderer = "mathml"
# Light or dark as the reader's system prefers; left empty, the theme logs a console error on a
# reader's first visit ("Got invalid theme mode").
html_context = {"default_mode": "auto"}
html_theme_options = {
    "repository_url": course_config.REPOSITORY_URL,
    "repository_branch": "main",
    "path_to_docs": "",
    "use_repository_button": True,
    "use_source_button": True,
    "home_page_in_toc": True,
}
if not EXECUTE:
    html_theme_options["announcement"] = (
        "Test build: the notebooks were not run, so the pages show no outputs. "
        "Publish the full build (make book)."
    )
elif SMOKE:
    html_theme_options["announcement"] = (
        "Smoke build: every notebook ran on a small subset of CIFAR-10 for a few epochs, so its "
        "numbers are not the course's. Publish the full build (make book)."
    )


def _notebook_title(path: Path) -> str:
    """The first Markdown heading of a notebook, e.g. '05 · Training with early stopping'."""
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


def _navigation() -> str:
    """The site's table of contents, appended to README.md (which stays plain GitHub Markdown)."""
    notebooks = sorted(ROOT.glob("notebooks/[0-9][0-9]_*.ipynb"))
    entries = "\n".join(f"notebooks/{path.stem}" for path in notebooks)
    return (
        f"\n\n```{{toctree}}\n:hidden:\n:caption: Notebooks\n\n{entries}\n```\n"
        "\n```{toctree}\n:hidden:\n:caption: For students\n\ndocs/students\ndata/README\n```\n"
        "\n```{toctree}\n:hidden:\n:caption: Reference\n\ndocs/api\n```\n"
    )


def _student_downloads() -> str:
    """One line per student notebook: a download link and a Colab link."""
    lines = []
    for path in sorted(ROOT.glob("student/[0-9][0-9]_*.ipynb")):
        colab = f"{course_config.COLAB_URL}/student/{path.name}"
        lines.append(
            f"- {_notebook_title(path)}: {{download}}`{path.name} <../student/{path.name}>` "
            f"or [open in Colab]({colab})"
        )
    return "\n\n" + "\n".join(lines) + "\n"


def _api_reference() -> str:
    """A section per public module of course_utils, each generated from its docstrings (which are
    reStructuredText, hence eval-rst)."""
    modules = sorted(m.name for m in pkgutil.iter_modules(course_utils.__path__))
    sections = [
        f"\n## `course_utils.{name}`\n\n```{{eval-rst}}\n.. automodule:: course_utils.{name}\n```\n"
        for name in modules
        if not name.startswith("_")
    ]
    return "\n" + "".join(sections)


GENERATED = {"README": _navigation, "docs/students": _student_downloads, "docs/api": _api_reference}


def add_generated_content(app, docname: str, source: list[str]) -> None:
    """Append what is generated from the repository (so pages never list stale files)."""
    if docname in GENERATED:
        source[0] += GENERATED[docname]()


def reread_generated(app, env, added, changed, removed) -> list[str]:
    """Read the pages with generated content on every build: Sphinx sees only that their own file
    did not change, not that a notebook, a student notebook or a module was added or changed."""
    return [docname for docname in GENERATED if docname in env.found_docs]


class LocalColabBadge(SphinxTransform):
    """Serve the Colab badge from the site, so that pages load no image from another site."""

    default_priority = 100

    def apply(self, **kwargs) -> None:
        for image in self.document.findall(nodes.image):
            if image["uri"] == COLAB_BADGE:
                image["uri"] = LOCAL_COLAB_BADGE


def _mathml(latex: str, display: str) -> str:
    from latex2mathml.converter import convert

    return convert(latex.strip(), display=display)


def visit_inline_math(translator, node: nodes.math) -> None:
    translator.body.append(_mathml(node.astext(), "inline"))
    raise nodes.SkipNode


def visit_block_math(translator, node: nodes.math_block) -> None:
    translator.body.append(f'<div class="math">{_mathml(node.astext(), "block")}</div>\n')
    raise nodes.SkipNode


def write_index_redirect(app, exception: Exception | None) -> None:
    """GitHub Pages serves index.html; the landing page is README.html."""
    if exception is None and app.builder.format == "html":
        (Path(app.outdir) / "index.html").write_text(
            '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
            '<meta http-equiv="refresh" content="0; url=README.html">'
            "<title>Training ResNet-18 on CIFAR-10</title></head>"
            '<body><a href="README.html">Training ResNet-18 on CIFAR-10</a></body></html>\n',
            encoding="utf-8",
        )


def setup(app) -> None:
    app.add_html_math_renderer("mathml", (visit_inline_math, None), (visit_block_math, None))
    app.add_transform(LocalColabBadge)
    app.connect("source-read", add_generated_content)
    app.connect("env-get-outdated", reread_generated)
    app.connect("build-finished", write_index_redirect)
