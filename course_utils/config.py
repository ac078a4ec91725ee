"""Course-wide settings: paths, the smoke switch, seeding and device selection.

The settings every notebook shares live here: where data and runs go, the repository URL, the
default seed and the sizes of smoke mode. (A training run's own hyperparameters live in
``course_utils.training.TrainConfig`` and its presets.) Nothing
in this module runs at import time: the environment is read when a function is called, so setting
``COURSE_SMOKE`` or ``COURSE_DATA_DIR`` in a notebook before calling these functions takes effect.

Explained in notebook 00 (setup & imports).
"""

from __future__ import annotations

import os
import platform
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: Environment variable that points the course at another data directory.
DATA_DIR_ENV = "COURSE_DATA_DIR"
#: Environment variable that switches on smoke mode (``1``, ``true`` or ``yes``).
SMOKE_ENV = "COURSE_SMOKE"
#: Environment variable under which missing data makes tests fail instead of skip (set by CI).
REQUIRE_DATA_ENV = "COURSE_REQUIRE_DATA"

#: The repository root: the folder that holds ``course_utils/`` (and, in a checkout, pyproject.toml).
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _course_folder() -> Path:
    """The checkout when running from one; otherwise (a pip install, as on Colab) the current
    folder, so that data and runs never land inside site-packages."""
    return PROJECT_ROOT if (PROJECT_ROOT / "pyproject.toml").is_file() else Path.cwd()

#: The course's public repository, written once here: Colab badges and the Colab setup cell of every
#: notebook use it (tests/test_notebooks.py checks that they agree). Change it in a fork.
REPOSITORY = "resnet18-cifar10-course/resnet18-cifar10"
REPOSITORY_URL = f"https://github.com/{REPOSITORY}"
COLAB_URL = f"https://colab.research.google.com/github/{REPOSITORY}/blob/main"

#: Seed used by every notebook and by the training presets unless told otherwise.
DEFAULT_SEED = 0


@dataclass(frozen=True)
class SmokeSizes:
    """How much smaller smoke mode makes every run. One place for all of its numbers.

    Smoke mode keeps the code path students run and only shrinks the work, so CI can execute every
    notebook on a small *real* subset of CIFAR-10 in a few minutes on two CPU cores.
    """

    train_per_class: int = 100  # images per class kept from the training split (1,000 in all)
    val_per_class: int = 20  # images per class held out for validation (200 in all)
    test_per_class: int = 50  # images per class kept from the test split (500 in all)
    epochs: int = 2  # training epochs
    batch_size: int = 100  # images per batch
    width: int = 16  # ResNet base width (64 is the full model)
    tsne_samples: int = 300  # points in the t-SNE plot
    num_workers: int = 0  # DataLoader worker processes: none, for speed and robustness


SMOKE = SmokeSizes()


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def is_smoke() -> bool:
    """Whether smoke mode is on (``COURSE_SMOKE=1``). Read anew on every call."""
    return _truthy(os.environ.get(SMOKE_ENV))


def data_is_required() -> bool:
    """Whether missing data must be an error rather than a skipped test (CI sets this)."""
    return _truthy(os.environ.get(REQUIRE_DATA_ENV))


def data_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """The directory that holds (or will hold) CIFAR-10.

    Args:
        root: an explicit directory; wins over everything else.

    Returns:
        ``root`` if given, else ``$COURSE_DATA_DIR`` if set, else ``data/`` in the course's folder
        (the checkout, or the current folder when the package was installed with pip).
    """
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return _course_folder() / "data"


def runs_dir() -> Path:
    """Default parent folder for training runs (checkpoints, histories, figures)."""
    return _course_folder() / "runs"


def set_seed(seed: int = DEFAULT_SEED, deterministic: bool = False) -> None:
    """Seed Python, NumPy and PyTorch (CPU and every GPU) so that a run can be repeated.

    Args:
        seed: the seed for every generator.
        deterministic: also ask cuDNN for deterministic algorithms (slower on a GPU; CPU runs are
            already deterministic for the operations this course uses).

    Explained in notebook 00.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds the CPU and all CUDA devices
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def rng_states() -> dict[str, Any]:
    """The states of every random generator a run uses (Python, NumPy, PyTorch CPU and CUDA), as
    tensors so that a ``weights_only`` checkpoint can hold them."""
    version, mt_state, gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": torch.tensor(mt_state, dtype=torch.int64),  # 625 words of the Mersenne Twister
        "python_gauss": gauss,  # None or a float
        "python_version": version,
        "numpy": torch.from_numpy(np_keys.astype(np.int64)),  # 624 words
        "numpy_pos": int(np_pos),
        "numpy_gauss": (int(np_has_gauss), float(np_gauss)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore generators saved with :func:`rng_states`."""
    mt_state = tuple(int(v) for v in states["python"].tolist())
    random.setstate((states["python_version"], mt_state, states["python_gauss"]))
    np_keys = states["numpy"].numpy().astype(np.uint32)
    has_gauss, gauss = states["numpy_gauss"]
    np.random.set_state(("MT19937", np_keys, states["numpy_pos"], has_gauss, gauss))
    torch.set_rng_state(states["torch"].cpu())
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])


def get_device(prefer: str | None = None) -> torch.device:
    """Pick the fastest available device: CUDA, then Apple's MPS, then the CPU.

    Args:
        prefer: force a device by name (``"cpu"``, ``"cuda"``, ``"mps"``); ``None`` picks.

    Explained in notebook 00.
    """
    if prefer is not None:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_num_workers() -> int:
    """A safe number of DataLoader worker processes for this machine.

    Worker processes in notebooks are fragile on Windows and macOS (they re-import the notebook's
    code through ``spawn``), and smoke mode wants none; elsewhere use up to 4, leaving a core free.
    """
    if is_smoke() or platform.system() in {"Windows", "Darwin"}:
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def autocast_dtype(device: torch.device) -> torch.dtype:
    """The reduced precision that mixed precision uses on ``device``: float16 on CUDA (with a
    gradient scaler), bfloat16 elsewhere (same range as float32, so no scaler is needed)."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16


#: oneDNN's switch that caps the instruction sets its kernels may use (``AVX2`` gives the kernels of
#: a common laptop on any newer CPU), and words in the names of the caps that still let its kernels
#: compute bfloat16 natively: AVX512_CORE_BF16 and every level above it (AVX512_CORE_FP16, which
#: oneDNN also calls AVX10_1_512, and the AMX ones), or no cap (ALL, DEFAULT).
ONEDNN_ISA_ENV = "ONEDNN_MAX_CPU_ISA"
ONEDNN_BF16_ISAS = ("BF16", "FP16", "AVX10", "AMX", "ALL", "DEFAULT")


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (Intel AMX or AVX512-BF16), and oneDNN may
    use those instructions (``ONEDNN_MAX_CPU_ISA`` does not cap its kernels below them).

    Elsewhere bfloat16 is emulated, and mixed precision on the CPU costs time instead of saving
    it (a training step took 10 times longer with AVX2 kernels on a CPU with AMX); the command line
    then leaves it off. Explained in notebook 05.
    """
    cap = os.environ.get(ONEDNN_ISA_ENV, "").strip().upper()
    if cap and not any(name in cap for name in ONEDNN_BF16_ISAS):
        return False
    cpu = torch.cpu
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private, so looked up
    return any(getattr(cpu, name, lambda: False)() for name in checks)
