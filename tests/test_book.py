"""The course website, read in a real browser (headless Chromium).

By default the test builds the site as `make book SMOKE=1 EXECUTE=0` does: from the notebooks as
they are, without executing them, since `make test` has just executed every solution notebook with
nbval and each notebook should run once. It serves the site on 127.0.0.1 only and opens every
page: no page may log a JavaScript error or load anything from another site, every image must have
loaded, and every internal link and anchor must lead somewhere. Screenshots of the landing page and
of every notebook page are kept in the site's folder, under screenshots/.

With ``COURSE_BOOK=build/book`` the same checks read a site built with its notebooks executed
(`make book`, as the Pages workflow builds it), and then every notebook page must also show at
least one figure among its outputs: the Pages workflow runs it so after its build.

The build needs the [docs] extra (Sphinx, MyST-NB, Playwright; `make test` installs it); the browser
checks need a Chromium: Debian's `chromium` package (`apt-get install chromium`), or the browser
named by COURSE_CHROMIUM. Without them those tests are skipped, except under CI=true, where they
fail.
"""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from course_utils.config import DATA_DIR_ENV, PROJECT_ROOT

#: A site built elsewhere, with its notebooks executed, to check instead of building one.
BOOK_ENV = "COURSE_BOOK"
EXECUTED = bool(os.environ.get(BOOK_ENV))
BOOK = PROJECT_ROOT / os.environ.get(BOOK_ENV, "build/book-smoke-unexecuted")
SITE = BOOK / "html"
SCREENSHOTS = BOOK / "screenshots"
BUILD_COMMAND = ["make", "book", "SMOKE=1", "EXECUTE=0"]
CHROMIUM_ENV = "COURSE_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
VIEWPORT = {"width": 1280, "height": 900}
IMAGE_WAIT_MS = 10_000  # how long a page's images may take to arrive from the local server

# Every <img> on the page, after asking lazy images to load now: did it load, and is it an output?
IMAGES_JS = """async (waitMs) => {
  const images = [...document.images];
  images.forEach((img) => { img.loading = "eager"; });
  const loaded = (img) => img.complete ? Promise.resolve() : new Promise((done) => {
    img.addEventListener("load", done);
    img.addEventListener("error", done);
  });
  const timeout = new Promise((done) => setTimeout(done, waitMs));
  await Promise.race([Promise.all(images.map(loaded)), timeout]);
  return images.map((img) => ({
    src: img.getAttribute("src"),
    loaded: img.complete && img.naturalWidth > 0,
    output: img.closest(".cell_output") !== null,
  }));
}"""
LINKS_JS = "() => [...document.querySelectorAll('a[href]')].map((a) => a.href)"
IDS_JS = """() => [...document.querySelectorAll('[id]')].map((e) => e.id)
  .concat([...document.querySelectorAll('a[name]')].map((e) => e.name))"""


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _skip_or_fail(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"{reason} (CI=true, so this check may not be skipped)")
    pytest.skip(reason)


def _chromium() -> str | None:
    if os.environ.get(CHROMIUM_ENV):
        return os.environ[CHROMIUM_ENV]
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def _notebooks() -> list[Path]:
    return sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@dataclass
class Page:
    """What the browser saw on one page of the site."""

    path: str  # relative to the site root, e.g. "notebooks/05_training.html"
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed requests
    images: list[dict] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)


@pytest.fixture(scope="module")
def site(cifar_root: Path) -> dict[str, object]:
    """The site: built here without executing the notebooks, or the executed one ``COURSE_BOOK``
    names (checked as it is)."""
    if EXECUTED:
        assert (SITE / "index.html").is_file(), f"{BOOK_ENV}={BOOK}: no site in {SITE}"
        digest = _digest(PROJECT_ROOT / "notebooks")
        return {"notebooks_before": digest, "notebooks_after": digest}
    missing = [
        m for m in ("sphinx", "myst_nb", "playwright") if importlib.util.find_spec(m) is None
    ]
    if missing:
        _skip_or_fail(
            f"the website tools are not installed ({', '.join(missing)}): run "
            "`make book` once, or `pip install -e '.[docs]'`"
        )
    if shutil.which("make") is None:
        _skip_or_fail("`make` is needed to build the site")
    before = _digest(PROJECT_ROOT / "notebooks")
    result = subprocess.run(
        BUILD_COMMAND,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, DATA_DIR_ENV: str(cifar_root)},
    )
    assert result.returncode == 0, (
        f"`{' '.join(BUILD_COMMAND)}` failed (exit {result.returncode}):\n"
        + _build_problems(result.stdout + result.stderr)
    )
    return {"notebooks_before": before, "notebooks_after": _digest(PROJECT_ROOT / "notebooks")}


@pytest.fixture(scope="module")
def server(site) -> str:
    """The built site, served on 127.0.0.1 only, at a free port (for Chromium: without one, the
    browser checks skip, or fail under CI; the build above has run every notebook either way)."""
    if _chromium() is None:
        _skip_or_fail(
            f"no Chromium found (looked for {', '.join(CHROMIUM_NAMES)} and ${CHROMIUM_ENV}): "
            "install Debian's package with `apt-get install chromium`"
        )

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # one line per request would drown pytest's output
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=SITE))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def pages(server: str) -> dict[str, Page]:
    """Open every page of the site in headless Chromium and record what happened."""
    from playwright.sync_api import sync_playwright

    paths = sorted(
        str(path.relative_to(SITE))
        for path in SITE.rglob("*.html")
        if not path.relative_to(SITE).parts[0].startswith("_static")
    )
    assert paths, f"no pages in {SITE}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    screenshot_pages = {"README.html"} | {f"notebooks/{p.stem}.html" for p in _notebooks()}
    seen: dict[str, Page] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        for path in paths:
            context = browser.new_context(viewport=VIEWPORT)  # each page as on a first visit
            page = context.new_page()
            record = Page(path)

            def outside(route, record=record) -> None:
                record.errors.append(f"loads a resource from another site: {route.request.url}")
                route.abort()

            page.route(lambda url: not url.startswith(server), outside)
            page.on(
                "console",
                lambda m, r=record: (
                    m.type == "error" and r.errors.append(f"console error: {m.text}")
                ),
            )
            page.on("pageerror", lambda e, r=record: r.errors.append(f"JavaScript exception: {e}"))
            page.on(
                "response",
                lambda resp, r=record: (
                    resp.status >= 400 and r.errors.append(f"HTTP {resp.status} for {resp.url}")
                ),
            )
            response = page.goto(server + path, wait_until="load")
            if response is None or not response.ok:
                record.errors.append(
                    f"the page itself did not load ({response and response.status})"
                )
            html = (SITE / path).read_text(encoding="utf-8", errors="replace")
            redirect = re.search(r'http-equiv="refresh" content="0; url=([^"]+)"', html)
            if redirect:  # index.html sends GitHub Pages visitors on to the landing page
                page.wait_for_url(server + redirect.group(1), wait_until="load")
            record.images = page.evaluate(IMAGES_JS, IMAGE_WAIT_MS)
            record.links = page.evaluate(LINKS_JS)
            record.ids = set(page.evaluate(IDS_JS))
            if path in screenshot_pages:
                figure = page.locator(".cell_output img").first
                if figure.count():
                    figure.scroll_into_view_if_needed()
                shot = SCREENSHOTS / (Path(path).stem + ".png")
                page.screenshot(path=str(shot))
            seen[path] = record
            context.close()
        browser.close()
    print(f"\nscreenshots of the site: {SCREENSHOTS}")
    return seen


@pytest.mark.timeout(1800)  # builds the site (every notebook executed) the first time
def test_building_the_site_leaves_notebooks_untouched(site):
    before, after = site["notebooks_before"], site["notebooks_after"]
    changed = sorted(
        name for name in before.keys() | after.keys() if before.get(name) != after.get(name)
    )
    assert not changed, f"building the site changed files in notebooks/: {changed}"


@pytest.mark.timeout(1800)
def test_no_page_has_errors(pages):
    problems = [f"{page.path}: {error}" for page in pages.values() for error in page.errors]
    assert not problems, "\n".join(sorted(set(problems)))


@pytest.mark.timeout(1800)
def test_every_image_loaded(pages):
    broken = [
        f"{page.path}: image {image['src']!r} did not load (natural width 0)"
        for page in pages.values()
        for image in page.images
        if not image["loaded"]
    ]
    assert not broken, "\n".join(sorted(set(broken)))


@pytest.mark.timeout(1800)
def test_every_internal_link_and_anchor_resolves(pages, server):
    broken = []
    for page in pages.values():
        for href in page.links:
            if not href.startswith(server):
                continue  # another site: checked by tests/test_links.py where it is ours
            url = urlsplit(href)
            target = unquote(url.path)[len(urlsplit(server).path) :] or "index.html"
            if target.endswith("/"):
                target += "index.html"
            if not (SITE / target).is_file():
                broken.append(f"{page.path}: link to {href}: no such file in the site")
            elif url.fragment and target.endswith(".html"):
                ids = pages[target].ids if target in pages else _ids_in_file(SITE / target)
                if unquote(url.fragment) not in ids:
                    broken.append(f"{page.path}: link to {href}: no anchor #{url.fragment} there")
    assert not broken, "\n".join(sorted(set(broken)))


@pytest.mark.timeout(1800)
def test_every_notebook_has_a_page_and_a_screenshot(pages):
    missing = [n.name for n in _notebooks() if f"notebooks/{n.stem}.html" not in pages]
    assert not missing, f"notebooks without a page in the site: {missing}"
    shots = sorted(SCREENSHOTS.glob("*.png"))
    assert len(shots) == len(_notebooks()) + 1, (
        f"expected a screenshot per notebook and README: {shots}"
    )


@pytest.mark.timeout(1800)
def test_every_notebook_page_shows_a_figure(pages):
    if not EXECUTED:
        pytest.skip(
            f"this site was built without executing the notebooks (`make test` executes them "
            f"with nbval); {BOOK_ENV}=build/book checks the executed site, as the Pages workflow "
            f"does"
        )
    problems = []
    for notebook in _notebooks():
        path = f"notebooks/{notebook.stem}.html"
        if path not in pages:
            problems.append(f"{notebook.name}: no page {path} in the site")
        elif notebook.stem in TEXT_ONLY_NOTEBOOKS:
            continue
        elif not any(image["output"] and image["loaded"] for image in pages[path].images):
            problems.append(f"{path}: no figure among the notebook's outputs")
    assert not problems, "\n".join(problems)


@pytest.mark.timeout(1800)
def test_student_notebooks_are_offered_as_downloads(pages):
    downloads = {
        Path(urlsplit(href).path).name
        for page in pages.values()
        for href in page.links
        if "/_downloads/" in href
    }
    students = {path.name for path in (PROJECT_ROOT / "student").glob("[0-9][0-9]_*.ipynb")}
    assert students, "no student notebooks found in student/"
    assert students <= downloads, (
        f"student notebooks with no download link: {sorted(students - downloads)}"
    )


def _build_problems(output: str) -> str:
    """The warnings and errors of a failed build, then its last lines (its progress is noise)."""
    lines = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", line) for line in output.splitlines()]
    problems = [
        line
        for line in lines
        if re.search(r"WARNING|ERROR|Error\b|\*\*\*", line) and "IPKernelApp" not in line
    ]
    return "\n".join([*problems[:40], "...", *lines[-8:]])


def _ids_in_file(path: Path) -> set[str]:
    return set(
        re.findall(r'\b(?:id|name)="([^"]+)"', path.read_text(encoding="utf-8", errors="replace"))
    )


#: Notebooks whose outputs are tables and text only (the environment report of the setup notebook).
TEXT_ONLY_NOTEBOOKS = {"00_setup"}
