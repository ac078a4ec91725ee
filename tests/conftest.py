"""Shared fixtures. Real CIFAR-10 is found through COURSE_DATA_DIR (CI sets it).

Without data, tests that need it are skipped, unless COURSE_REQUIRE_DATA=1 (CI), where they fail.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest
import torch

from course_utils.config import PROJECT_ROOT, data_dir, data_is_required
from course_utils.data import JPEG_ZIP, OFFICIAL_FOLDER

matplotlib.use("Agg")  # no screen in tests


def _has_cifar(folder: Path) -> bool:
    return (folder / JPEG_ZIP).is_file() or (folder / OFFICIAL_FOLDER).is_dir()


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable data folder holding real CIFAR-10 (decoded arrays are cached there)."""
    folder = data_dir()
    if _has_cifar(folder):
        return folder
    shared = PROJECT_ROOT.parent / "shared" / "data"
    if (shared / JPEG_ZIP).is_file():  # developers' checkout: link the shared copy into a tmp dir
        link_dir = tmp_path_factory.mktemp("cifar")
        (link_dir / JPEG_ZIP).symlink_to(shared / JPEG_ZIP)
        return link_dir
    message = (
        f"real CIFAR-10 not found in {folder}: set COURSE_DATA_DIR to a folder holding "
        f"{JPEG_ZIP} or {OFFICIAL_FOLDER}/"
    )
    if data_is_required():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session", autouse=True)
def one_thread_per_worker():
    """Every test process computes on one thread (`make test` also sets OMP_NUM_THREADS=1). Its
    workers run side by side, one a core; two threads in each would wait for each other at every
    operation whenever the other worker, or another program, keeps a core busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """Run a test on one thread: tiny models run faster (no threads waiting on each other, which on
    a busy machine can make them 10x slower), and the results are the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
