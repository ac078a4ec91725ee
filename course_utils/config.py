"""Course-wide settings, and the settings of a training run.

Course-wide: where data and runs go, the repository URL, the default seed, the sizes of smoke
mode, seeding and device selection (notebook 00). A run's: :class:`TrainConfig`, every
hyperparameter of a run in one dataclass with its unit and help, the named recipes
:data:`PRESETS` (``full`` for a GPU, ``cpu`` for a laptop), and the split sizes (notebook 05).
Nothing in this module runs at import time: the environment is read when a function is called,
so setting ``COURSE_SMOKE`` or ``COURSE_DATA_DIR`` in a notebook before calling these functions
takes effect.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from course_utils.models import CIFAR_SHORTCUTS, DOUBLING, NUM_CLASSES, RESNET_SPECS, STEMS

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


def set_seed(seed: int = DEFAULT_SEED, *, deterministic: bool = False) -> None:
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


# --------------------------------------------------------------------------------------------------
# A training run's settings: TrainConfig, the presets, and the values its fields may take
# --------------------------------------------------------------------------------------------------

TRAIN_SIZE = 50_000  # images in the official training split
VAL_SIZE = 5_000  # held out of it for validation (the usual 45,000 / 5,000 split)
CROP_PADDING = 4  # pixels of zero padding before the random 32x32 crop (He et al., 2016, sec. 4.2)
#: Progressive resizing (``TrainConfig.small_crops``): the side of the early epochs' crops, random
#: windows of the unpadded 32x32 image, with 56% of its pixels (with ``small_scaled``, the side
#: that whole images are scaled down to).
SMALL_CROP = 24
#: A small-crop step's cost, as a fraction of a whole-image step's: the pixels' share, which plans
#: the budget; a run's own pace then corrects it (``training.Pacer``).
SMALL_CROP_COST = (SMALL_CROP / 32) ** 2
#: The input statistics a run can normalize with (``TrainConfig.normalization``): the run's own
#: training images (right), ImageNet's, or CIFAR-10's mean with the widely copied 0.2023 "std".
#: Notebook 07 measures what the two wrong ones cost.
NORMALIZATIONS = ("dataset", "imagenet", "per-image-std")
ARCHS = ("resnet", "cifar_resnet")
LOADERS = ("auto", "tensor", "torch")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("onecycle", "linear", "cosine", "multistep", "step", "cyclic", "warmup_cosine", "none")
#: Schedules that count epochs: stepped once after every epoch (every batch would decay the lr
#: hundreds of times too fast; ``schedule_every_batch`` makes that mistake on purpose).
PER_EPOCH_SCHEDULES = ("cosine", "multistep", "step")
#: What early stopping and the best checkpoint can watch, and which direction is better.
MONITOR_MODES = {"val_acc": "max", "val_loss": "min"}


def flag_name(field_name: str) -> str:
    """The command-line flag of a :class:`TrainConfig` field: ``batch_size`` -> ``--batch-size``."""
    return "--" + field_name.replace("_", "-")


class ConfigError(ValueError):
    """A :class:`TrainConfig` field has a value it cannot take. ``field`` names it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


def setting(
    default: Any,
    help: str,
    choices: Sequence[Any] | None = None,
    valid: tuple[Callable[[Any], bool], str] | None = None,
) -> Any:
    """A :class:`TrainConfig` field with its one help text, and the values it may take.

    The command line (``python -m course_utils train --help``) is generated from these, so a
    setting is described once. ``valid`` is ``(check, "what the check wants")``.
    """
    return field(default=default, metadata={"help": help, "choices": choices, "valid": valid})


POSITIVE = (lambda v: v > 0, "a number > 0")
AT_LEAST_1 = (lambda v: v >= 1, "an integer >= 1")
AT_LEAST_2 = (lambda v: v >= 2, "an integer >= 2")
NOT_NEGATIVE = (lambda v: v >= 0, "a number >= 0")
FRACTION = (lambda v: 0 <= v < 1, "a number in [0, 1)")
OPEN_FRACTION = (lambda v: 0 < v < 1, "a number in (0, 1)")


@dataclass
class TrainConfig:
    """Every setting of a training run, with its unit. Saved inside each checkpoint.

    The defaults are a sound starting point for ResNet-18 on CIFAR-10; :data:`PRESETS` holds the
    tuned recipes. An invalid value raises :class:`ConfigError` naming the field. Explained in
    notebook 05.
    """

    # Model
    arch: str = setting(
        "resnet",
        "'resnet': the ImageNet family; 'cifar_resnet': the paper's CIFAR nets",
        choices=ARCHS,
    )
    depth: int = setting(18, "resnet: 18, 34, 50, 101, 152; cifar_resnet: 6n+2 (20, 32, 56, ...)")
    shortcut: str = setting(
        "B", "A: zero-padding identity; B: projection where shapes change; none: plain",
        choices=CIFAR_SHORTCUTS,
    )  # fmt: skip
    width: int = setting(
        64, "channels of the stem, and of the first stage times its stage multiple (64: the "
        "usual ResNet-18)", valid=AT_LEAST_1,
    )  # fmt: skip
    stage_multiples: tuple[int, ...] = setting(
        DOUBLING,
        "resnet: each stage's channels as a multiple of width (the paper doubles them: 1,2,4,8)",
    )
    stem: str = setting(
        "cifar", "'cifar': 3x3 conv; 'imagenet': 7x7 conv + max-pool", choices=STEMS
    )
    zero_init_residual: bool = setting(
        False, "start every block as the identity (Goyal et al. 2017)"
    )
    whiten_stem: bool = setting(
        False, "start the first convolution from the principal components of image patches"
    )
    conv_init_scale: float = setting(
        1.0, "multiply every convolution's initial weights by this: BatchNorm follows each one, "
        "so the network computes the same function, but its early steps turn those weights "
        "1/scale^2 times faster", valid=POSITIVE,
    )  # fmt: skip
    # Transfer learning (notebook 08): start from trained weights, with a new head
    init: str = setting(
        "scratch",
        "'scratch' (random weights), 'imagenet' (torchvision's), a shipped checkpoint's name, "
        "a checkpoint file, or a URL#sha256=HEX",
    )
    freeze_backbone: bool = setting(
        False, "linear probe: train only the head; the backbone and its BatchNorm stay as loaded"
    )
    backbone_lr: float = setting(
        1.0, "the backbone's learning rate as a fraction of lr (fine-tuning: e.g. 0.1)",
        valid=POSITIVE,
    )  # fmt: skip
    # Data
    val_size: int = setting(
        VAL_SIZE, "images held out of the 50,000 for validation", valid=AT_LEAST_1
    )
    train_size: int | None = setting(
        None, "train on only this many of the training images, a stratified subset (default: all)",
        valid=AT_LEAST_1,
    )  # fmt: skip
    normalization: str = setting(
        "dataset",
        "input statistics: the training images' own, or a common mistake (see data.NORMALIZATIONS)",
        choices=NORMALIZATIONS,
    )
    smoke: bool = setting(False, "use the small smoke subset (sizes in config.SMOKE)")
    batch_size: int = setting(128, "training images per optimizer step", valid=AT_LEAST_1)
    eval_batch_size: int = setting(500, "images per batch when evaluating", valid=AT_LEAST_1)
    crop_padding: int = setting(
        CROP_PADDING, "pixels of zero padding around an image before its random crop (tensor loader)",
        valid=NOT_NEGATIVE,
    )  # fmt: skip
    crop_size: int = setting(
        32, "side of the random training crop: below 32, training sees parts of images (faster), "
        "validation and test whole ones (tensor loader)",
        valid=(lambda v: 8 <= v <= 32, "pixels in [8, 32]"),
    )  # fmt: skip
    image_size: int = setting(
        32, "side the images are resized to (bilinear) before the network, in training and "
        "testing: the seeds' Resize(227) (tensor loader; 32: as stored; notebook 07 measures it)",
        valid=(lambda v: 32 <= v <= 512, "pixels in [32, 512]"),
    )  # fmt: skip
    alternate_flip: bool = setting(
        False, "flip each image in every other epoch, not at random (tensor loader)"
    )
    small_crops: float = setting(
        0.0, f"progressive resizing: the epochs that start in this first fraction of the steps "
        f"train on {SMALL_CROP}x{SMALL_CROP} crops of the unpadded images (cheaper), the later "
        f"ones as usual (tensor loader; 0: off)", valid=FRACTION,
    )  # fmt: skip
    small_scaled: bool = setting(
        False, f"with --small-crops: those epochs train on whole images scaled down to "
        f"{SMALL_CROP}x{SMALL_CROP} (bilinear, after the usual crop and flip), not on crops of them",
    )  # fmt: skip
    rotation: float = setting(
        0.0,
        "max random rotation in degrees (0: crop + flip only)",
        valid=(lambda v: 0 <= v <= 180, "degrees in [0, 180]"),
    )
    loader: str = setting(
        "auto", "'tensor': batched augmentation on the device; 'torch': DataLoader", choices=LOADERS
    )
    num_workers: int | None = setting(
        None, "DataLoader worker processes (default: config's choice)", valid=NOT_NEGATIVE
    )
    # Optimization
    epochs: int = setting(30, "passes over the training split", valid=AT_LEAST_1)
    steps: int | None = setting(
        None, "optimizer steps in all, if fewer than epochs x batches: the last epoch stops early "
        "(a time budget sets it)", valid=AT_LEAST_1,
    )  # fmt: skip
    optimizer: str = setting("sgd", "'sgd' (with momentum) or 'adam'", choices=OPTIMIZERS)
    lr: float = setting(0.1, "learning rate (the peak for onecycle)", valid=POSITIVE)
    momentum: float = setting(0.9, "SGD momentum", valid=FRACTION)
    nesterov: bool = setting(True, "Nesterov momentum for SGD")
    weight_decay: float = setting(
        5e-4, "L2 penalty, multiplied by the lr each step", valid=NOT_NEGATIVE
    )
    decay_norms: bool = setting(
        True, "weight decay also on the BatchNorm scales and shifts and the biases "
        "(--no-decay-norms: on convolution and linear weights only)",
    )  # fmt: skip
    bn_bias_lr: float = setting(
        1.0, "BatchNorm shifts learn this many times faster, with weight decay this many times "
        "smaller (airbench: 64)", valid=POSITIVE,
    )  # fmt: skip
    freeze_bn_scale: bool = setting(False, "keep every BatchNorm scale at 1 (not trained)")
    ghost_batch: int | None = setting(
        None, "ghost BatchNorm: training statistics over groups of this many images, not the "
        "whole batch (default: the whole batch)", valid=AT_LEAST_2,
    )  # fmt: skip
    label_smoothing: float = setting(
        0.0, "probability mass spread over all classes", valid=FRACTION
    )
    mixup: float = setting(
        0.0, "mixup: blend image pairs, weight ~ Beta(a, a); a here (0: off)", valid=NOT_NEGATIVE
    )
    cutmix: float = setting(
        0.0,
        "CutMix: paste a patch of another image, area ~ Beta(a, a) (0: off)",
        valid=NOT_NEGATIVE,
    )
    ema: float = setting(
        0.0, "decay of a moving average of the weights used to validate and test (0: off)",
        valid=FRACTION,
    )  # fmt: skip
    ema_ramp: bool = setting(
        False, "grow the average's decay from 0 up to --ema as the cube of the fraction of the "
        "run done (airbench's schedule): the average follows the weights early, smooths them late",
    )  # fmt: skip
    lookahead: int = setting(
        0, "every this many steps, copy the weight average (--ema) back into the network "
        "(Lookahead; 0: never)", valid=NOT_NEGATIVE,
    )  # fmt: skip
    tta: bool = setting(False, "validate and test on each image and its mirror, averaged")
    tta_shift: int = setting(
        0, "with --tta, also test (not validate) on each image shifted this many pixels up-left "
        "and down-right, each with its mirror: 6 views (0: the 2 of the flip)",
        valid=(lambda v: 0 <= v <= 4, "pixels in [0, 4]"),
    )  # fmt: skip
    minutes: float | None = setting(
        None,
        "time budget: measure this machine, then choose the epochs to fit (0: none, use --epochs)",
        valid=NOT_NEGATIVE,
    )
    # Learning-rate schedule
    schedule: str = setting(
        "onecycle", "the learning-rate schedule (see build_scheduler)", choices=SCHEDULES
    )
    warmup: float = setting(
        0.25, "onecycle, linear, warmup_cosine: fraction of all steps spent warming up",
        valid=OPEN_FRACTION,
    )
    div_factor: float = setting(
        25.0, "onecycle, linear, cyclic, warmup_cosine: the starting lr is lr / this",
        valid=POSITIVE,
    )
    final_div_factor: float = setting(
        1e4, "onecycle, linear: the final lr is the starting lr / this", valid=POSITIVE
    )
    min_lr: float = setting(
        0.0, "cosine, warmup_cosine: the lr reached at the end", valid=NOT_NEGATIVE
    )
    milestones: tuple[int, ...] = setting((15, 25), "multistep: epochs after which lr *= gamma")
    step_size: int = setting(10, "step: epochs between two decays", valid=AT_LEAST_1)
    gamma: float = setting(0.1, "multistep/step: factor applied at each decay", valid=OPEN_FRACTION)
    cycle_epochs: float = setting(4.0, "cyclic: epochs per up-and-down cycle", valid=POSITIVE)
    schedule_every_batch: bool = setting(
        False, "a common mistake, measured in notebook 07: step a schedule that counts epochs "
        "(step, multistep, cosine) after every batch",
    )  # fmt: skip
    # Early stopping and the best checkpoint (on the validation split, never the test set)
    monitor: str = setting(
        "val_acc", "metric for early stopping and best.pt", choices=tuple(MONITOR_MODES)
    )
    patience: int | None = setting(
        10, "epochs without improvement before stopping (none: never)", valid=AT_LEAST_1
    )
    min_delta: float = setting(
        0.0, "smallest change that counts as an improvement", valid=NOT_NEGATIVE
    )
    # Speed and reproducibility
    channels_last: bool = setting(True, "NHWC memory layout: faster convolutions")
    threads: int = setting(
        0,
        "CPU threads for PyTorch (0: time a few steps at the start and keep the fastest count)",
        valid=NOT_NEGATIVE,
    )
    amp: bool = setting(False, "mixed precision: float16 on CUDA, bfloat16 on the CPU")
    sync_bn: bool = setting(
        False, "torchrun: BatchNorm statistics over the global batch, not each process's share"
    )
    seed: int = setting(DEFAULT_SEED, "seeds the split, the weights, the shuffles and augmentation")

    def __post_init__(self) -> None:
        self.milestones = tuple(int(m) for m in self.milestones)
        self.stage_multiples = tuple(int(m) for m in self.stage_multiples)
        if self.minutes == 0:  # `--minutes 0` switches a preset's budget off: one "off" value
            self.minutes = None
        for f in dataclasses.fields(self):
            value, choices, valid = (
                getattr(self, f.name),
                f.metadata["choices"],
                f.metadata["valid"],
            )
            if choices is not None and value not in choices:
                raise ConfigError(f.name, f"{f.name} must be one of {list(choices)}, got {value!r}")
            if valid is not None and value is not None and not valid[0](value):
                raise ConfigError(f.name, f"{f.name} must be {valid[1]}, got {value!r}")
        if self.arch == "resnet" and self.depth not in RESNET_SPECS:
            raise ConfigError(
                "depth", f"depth must be one of {sorted(RESNET_SPECS)}, got {self.depth!r}"
            )
        if self.arch == "resnet" and self.shortcut == "A":
            raise ConfigError("shortcut", "shortcut A (zero padding) is for arch cifar_resnet")
        if self.arch == "cifar_resnet" and (self.depth < 8 or (self.depth - 2) % 6):
            raise ConfigError(
                "depth", f"cifar_resnet depth must be 6n+2 (20, 32, ...), got {self.depth}"
            )
        smoke_train = SMOKE.train_per_class * NUM_CLASSES
        available = smoke_train if self.smoke else TRAIN_SIZE - self.val_size
        if self.train_size is not None and self.train_size > available:
            where = "in smoke mode" if self.smoke else f"after {self.val_size} are held out"
            raise ConfigError(
                "train_size", f"train_size must be at most the {available} training images "
                f"there are {where}, got {self.train_size}",
            )  # fmt: skip
        if any(m < 1 for m in self.milestones):
            raise ConfigError(
                "milestones", f"milestones must be epochs >= 1, got {self.milestones}"
            )
        if self.arch == "resnet" and (
            len(self.stage_multiples) != 4 or any(m < 1 for m in self.stage_multiples)
        ):
            raise ConfigError(
                "stage_multiples", "stage_multiples must be four whole numbers >= 1, one for "
                f"each stage of the network, e.g. 1,2,4,8; got {self.stage_multiples}",
            )  # fmt: skip
        if self.arch == "cifar_resnet" and self.stage_multiples != DOUBLING:
            raise ConfigError(
                "stage_multiples", "the paper's CIFAR networks have fixed widths (16, 32, 64): "
                "stage_multiples is for arch resnet",
            )  # fmt: skip
        network = (self.arch, self.stem, self.width, self.shortcut, self.stage_multiples)
        if self.init == "imagenet" and network != ("resnet", "imagenet", 64, "B", DOUBLING):
            raise ConfigError(
                "init", "init 'imagenet' loads torchvision's ImageNet ResNet, which needs "
                "--stem imagenet --width 64 (and the defaults --arch resnet --shortcut B "
                "--stage-multiples 1,2,4,8)",
            )  # fmt: skip
        if self.lookahead and not self.ema:
            raise ConfigError("lookahead", "lookahead copies the weight average back: set --ema")
        if self.ema_ramp and not self.ema:
            raise ConfigError("ema_ramp", "ema_ramp schedules the weight average's decay: set --ema")
        if self.schedule_every_batch and self.schedule not in PER_EPOCH_SCHEDULES:
            raise ConfigError(
                "schedule_every_batch", f"schedule {self.schedule!r} already steps as it should; "
                "schedule_every_batch is the mistake made with step, multistep or cosine",
            )  # fmt: skip
        if self.ghost_batch and self.sync_bn:
            raise ConfigError(
                "ghost_batch", "ghost BatchNorm takes statistics over groups of each process's "
                "images, sync_bn over all processes' images: choose one",
            )  # fmt: skip
        if self.ghost_batch and self.freeze_backbone:
            raise ConfigError(
                "ghost_batch",
                "a frozen backbone's BatchNorm uses its stored statistics: drop --ghost-batch",
            )
        if self.small_scaled and not self.small_crops:
            raise ConfigError(
                "small_scaled", "--small-scaled scales the images of the small-crop epochs: set "
                "--small-crops too (the fraction of the steps that train on them)",
            )  # fmt: skip
        if self.conv_init_scale != 1.0 and self.init != "scratch":
            raise ConfigError(
                "conv_init_scale", f"--init {self.init} starts from trained weights, which "
                "--conv-init-scale would rescale: use one or the other",
            )  # fmt: skip
        if self.tta_shift and not self.tta:
            raise ConfigError("tta_shift", "the shifted views are test-time augmentation: set --tta")
        if self.freeze_backbone and self.sync_bn:
            raise ConfigError(
                "sync_bn",
                "a frozen backbone's BatchNorm uses its stored statistics: drop --sync-bn",
            )
        if self.loader == "tensor" and self.rotation:
            raise ConfigError(
                "rotation", "the tensor loader does not rotate: use --loader torch with --rotation"
            )
        tensor_only = self.tensor_loader_flags()
        if self.loader_kind == "torch" and tensor_only:
            why = "--rotation" if self.rotation else "--loader torch"
            raise ConfigError(
                "loader", f"{', '.join(tensor_only)}: only the tensor loader augments this way, "
                f"and {why} takes the per-image DataLoader instead. Drop {why}, or switch them "
                "off (the cpu preset's: --no-alternate-flip --crop-padding 4 --small-crops 0).",
            )  # fmt: skip

    @property
    def loader_kind(self) -> str:
        """``"tensor"`` or ``"torch"``: the loader ``loader`` names, ``"auto"`` resolved (the tensor
        loader, unless the run rotates images, which only the per-image DataLoader does)."""
        if self.loader == "auto":
            return "torch" if self.rotation else "tensor"
        return self.loader

    def tensor_loader_flags(self) -> list[str]:
        """The flags of this configuration that only the tensor loader (``data.TensorLoader``)
        can serve: its crops, flips, resizing and progressive resizing."""
        asked = [
            ("--alternate-flip", self.alternate_flip),
            (f"--crop-padding {self.crop_padding}", self.crop_padding != CROP_PADDING),
            (f"--crop-size {self.crop_size}", self.crop_size != 32),
            (f"--small-crops {self.small_crops:g}", bool(self.small_crops)),
            ("--small-scaled", self.small_scaled),
            (f"--image-size {self.image_size}", self.image_size != 32),
        ]
        return [flag for flag, on in asked if on]

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain Python values (lists, numbers, strings), for JSON and
        checkpoints that ``torch.load(weights_only=True)`` can read."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Rebuild a configuration saved with :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def per_process_batch_size(self, world_size: int) -> int:
        """``batch_size`` is the global batch: under torchrun, each of the ``world_size``
        processes loads an equal share of it. Raises :class:`ConfigError` if it does not divide."""
        if self.batch_size % world_size:
            below = max(world_size, self.batch_size - self.batch_size % world_size)
            raise ConfigError(
                "batch_size",
                f"batch_size {self.batch_size} is the global batch, shared equally by the "
                f"{world_size} processes torchrun started, so it must divide by {world_size}: "
                f"use --batch-size {below} or {below + world_size}, for example.",
            )
        return self.batch_size // world_size


#: The named training recipes, in one place. ``python -m course_utils train --preset NAME`` runs
#: one; command-line flags override single fields. Both schedules (one-cycle, linear) reach their
#: small learning rates only at the end: validation accuracy can stall mid-run and then climb, so
#: early stopping is off (``patience=None``) and the best checkpoint is still chosen on validation.
#: Where each choice comes from, and what it measured: benchmarks/README.md, "Presets".
PRESETS: dict[str, TrainConfig] = {
    # The GPU recipe: the usual ResNet-18 (width 64, CIFAR stem), batch 512, one-cycle to lr 0.4,
    # label smoothing 0.1, mixed precision. Not yet measured on a GPU in this repository.
    "full": TrainConfig(
        width=64,
        epochs=30,
        batch_size=512,
        lr=0.4,
        schedule="onecycle",
        warmup=0.25,
        label_smoothing=0.1,
        patience=None,
        amp=True,
        channels_last=True,
    ),
    # The CPU recipe: a narrow ResNet-18 (width 16, 0.7 M parameters), and as many steps as fit in
    # 15 minutes on the machine that runs it (measured at the start, and held to while it runs; see
    # course_utils.machine and Pacer). Chosen by 5-minute screens, one lever at a time, against an
    # anchor recipe on the same machine: results/experiments/cpu-recipe.csv, benchmarks/README.md.
    "cpu": TrainConfig(
        width=16,
        minutes=15,
        epochs=14,  # replaced by the steps that fit in the budget
        batch_size=128,
        lr=0.2,
        schedule="linear",  # can be shortened or lengthened mid-run to end on time
        warmup=0.23,
        div_factor=5.0,  # from lr 0.04 up to 0.2 ...
        final_div_factor=14.0,  # ... and down to about 0.003
        label_smoothing=0.2,
        tta=True,
        tta_shift=1,  # six test views: +0.3 points on the same weights (benchmarks/README.md)
        # 1,000 images (100 a class) to choose the epoch, not 5,000: with this schedule the last
        # epoch was the best in every run measured, so the other 4,000 train (notebook 07)
        val_size=1_000,
        # progressive resizing: the epochs in the first half of the steps train on 24x24 crops
        # (56% of the pixels), so more epochs fit (notebook 07 measures it)
        small_crops=0.5,
        # airbench's augmentation for short training: shifts of at most 2 pixels, and each image
        # flipped in every other epoch (notebook 02 explains them, notebook 07 measures them)
        crop_padding=2,
        alternate_flip=True,
        patience=None,
        amp=False,
        channels_last=True,
        num_workers=0,  # (DataLoader path only) a worker process would take one of the 2 cores
    ),
}


def smoke_config(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` shrunk to the smoke-mode sizes of ``config.SMOKE`` (a copy; ``cfg`` is unchanged)."""
    return dataclasses.replace(
        cfg,
        smoke=True,
        epochs=SMOKE.epochs,
        batch_size=SMOKE.batch_size,
        width=SMOKE.width,
        num_workers=SMOKE.num_workers,
        minutes=None,  # a fixed number of epochs: smoke runs check the code path, not the clock
    )
