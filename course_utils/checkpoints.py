"""Checkpoints: save a run's state atomically, load it safely, and check it fits.

A checkpoint is a dictionary of tensors and plain Python values (never pickled objects), so it can be
read with ``torch.load(weights_only=True)``, which cannot run code hidden in a file. Every checkpoint
carries its configuration and a description of the network, so loading one into the wrong network
fails with a message that says which network it holds.

The checkpoints that ship with the course (:data:`SHIPPED_CHECKPOINTS`) and those published at a
URL are found, downloaded and checked against their sha256 here (:func:`load_pretrained`); an
instructor ships a run with :func:`ship_checkpoint`.

Explained in notebook 05 (training with early stopping); shipped checkpoints in notebook 08.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlparse

import torch
from torch import nn

from course_utils.config import PROJECT_ROOT, REPOSITORY
from course_utils.models import describe_architecture, model_architecture

#: Version of the checkpoint layout that :func:`course_utils.training.fit` writes. A file with a
#: higher number was written by a newer ``course_utils``; :func:`load_checkpoint` refuses it.
CHECKPOINT_FORMAT = 1
#: What a checkpoint needs to be resumed from (``last.pt`` has all of them, ``best.pt`` does not).
RESUME_KEYS = ("optimizer", "early_stopping", "history", "rng", "epoch", "config")


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable, unsafe to load, or does not fit the model."""


class ArchitectureMismatchError(CheckpointError):
    """The checkpoint was saved from a different network than the one it is loaded into."""


def save_checkpoint(path: str | os.PathLike[str], **state: Any) -> Path:
    """Save ``state`` to ``path`` atomically: a crash mid-save never leaves a broken file.

    The state is written to a temporary file in the same folder, flushed to disk, and only then
    renamed over ``path`` (``os.replace`` is atomic), so ``path`` always holds either the old or the
    new checkpoint, whole. Store only tensors and plain Python values (dicts, lists, numbers,
    strings), so that :func:`load_checkpoint` can use the safe ``torch.load(weights_only=True)``.

    Returns:
        ``path`` as a ``Path``. Explained in notebook 05.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the rename makes them visible
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp makes the file private; give it normal rights
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Read a checkpoint safely and load its parts into the objects given.

    ``torch.load(weights_only=True)`` only rebuilds tensors and plain Python values; a file that
    holds any other pickled object (which could run arbitrary code when loaded) is refused.

    Args:
        path: the checkpoint file.
        model: load the weights (``state["model"]``) into it, after checking the architecture.
        optimizer, scheduler, scaler: load their states too, when given and present.
        map_location: where to put the tensors (``"cpu"`` works everywhere).

    Returns:
        The whole checkpoint dictionary.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is corrupt, truncated, or holds objects that are unsafe to load.
        ArchitectureMismatchError: ``model`` is not the network the checkpoint was saved from.

    Explained in notebook 05.
    """
    path = Path(path)
    state = _read_checkpoint(path, map_location)
    if model is not None:
        load_model_state(path, state, model)
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    return state


def _read_checkpoint(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    """The checkpoint dictionary in ``path``, read with ``torch.load(weights_only=True)``; every
    way the file can be wrong (missing, damaged, unsafe, too new) raises with what to do."""
    if not path.is_file():
        raise FileNotFoundError(
            f"No checkpoint at {path}. Check the path, or train first to create it."
        )
    try:
        with warnings.catch_warnings():
            # A damaged file can look like an unusual pickle protocol; the error below says more.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a damaged file can fail in any part of the parser
        # The safe unpickler names the class it refused ("unsupported GLOBAL ..."); random bytes
        # fail it too, with other messages, and are reported as what they are: a damaged file.
        if isinstance(exc, pickle.UnpicklingError) and "GLOBAL" in str(exc):
            raise CheckpointError(
                f"Refusing to load {path}: it holds pickled Python objects other than tensors and "
                f"plain values, and loading those can run arbitrary code. Load only checkpoints "
                f"written by save_checkpoint(); if you trust this file, read it yourself with "
                f"torch.load(path, weights_only=False)."
            ) from exc
        raise CheckpointError(
            f"{path} is not a readable checkpoint: it is corrupt or truncated "
            f"({_first_words(exc)}). Delete it and use another checkpoint (best.pt or last.pt), or "
            f"train again."
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path} holds a {type(state).__name__}, not a checkpoint dictionary."
        )
    if int(state.get("format", CHECKPOINT_FORMAT)) > CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {state['format']}, newer than this course_utils reads "
            f"({CHECKPOINT_FORMAT}). Update the course (git pull, then make setup)."
        )
    return state


def _first_words(exc: Exception) -> str:
    """What the parser objected to, in a few words (torch's own message is a page of advice)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first[:120]}" if first else type(exc).__name__


def load_model_state(path: str | os.PathLike[str], state: dict[str, Any], model: nn.Module) -> None:
    """Load a checkpoint already read from ``path`` into ``model``, after checking that it is the
    network the weights came from (:class:`ArchitectureMismatchError` otherwise)."""
    if "model" not in state:
        raise CheckpointError(f"{path} holds no model weights (no 'model' entry).")
    saved, current = state.get("architecture"), model_architecture(model)
    mismatch = (
        f"{path} holds {describe_architecture(saved)} but the model is "
        f"{describe_architecture(current)}. Build the model the checkpoint describes"
    )
    if saved is not None and saved != current:
        raise ArchitectureMismatchError(f"{mismatch} (see its 'architecture' entry).")
    differences = state_dict_differences(state["model"], model.state_dict())
    if differences:
        raise ArchitectureMismatchError(f"{mismatch}: {differences}.")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:  # anything else load_state_dict objects to
        raise ArchitectureMismatchError(f"{mismatch}. PyTorch reports: {str(exc)[:500]}") from exc


def state_dict_differences(saved: dict[str, torch.Tensor], wanted: dict[str, torch.Tensor]) -> str:
    """A one-line summary of how two state dicts differ ("" if their keys and shapes agree)."""
    missing = [k for k in wanted if k not in saved]
    unexpected = [k for k in saved if k not in wanted]
    shapes = [
        f"{k}: {tuple(saved[k].shape)} in the file, {tuple(wanted[k].shape)} in the model"
        for k in wanted
        if k in saved and saved[k].shape != wanted[k].shape
    ]
    parts = [
        f"{len(found)} {what} (first: {found[0]})"
        for what, found in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", shapes),
        )
        if found
    ]
    return "; ".join(parts)


def check_resumable(
    path: Path, state: dict[str, Any], config: dict[str, Any], free_fields: Iterable[str] = ()
) -> None:
    """A resumed run must continue with the configuration it started with.

    Args:
        path: the checkpoint, for the messages.
        state: what :func:`load_checkpoint` returned.
        config: the configuration of the run that resumes, as plain values.
        free_fields: fields that may differ (they do not change the arithmetic of training).
    """
    missing = [k for k in RESUME_KEYS if k not in state]
    if missing:
        raise CheckpointError(
            f"{path} cannot be resumed from: it lacks {missing}. Resume from a last.pt written by "
            f"fit(); best.pt holds only the weights."
        )
    saved = state["config"]
    differences = {
        k: (saved.get(k), value)
        for k, value in config.items()
        if k not in free_fields and saved.get(k) != value
    }
    if differences:
        details = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in differences.items())
        raise ValueError(
            f"Cannot resume {path} with a different configuration ({details}). Resume with the "
            f"saved configuration (TrainConfig.from_dict(state['config'])), or start a new run."
        )


def kept_message(*paths: Path) -> str:
    """Which of ``paths`` exist, for an error raised mid-run: what the student still has."""
    kept = [str(p) for p in paths if p.is_file()]
    if not kept:
        return "No checkpoint had been saved yet."
    return f"The last good checkpoints are kept unchanged: {', '.join(kept)}."


# --------------------------------------------------------------------------------------------------
# Shipped and downloaded checkpoints, checked by their sha256
# --------------------------------------------------------------------------------------------------


class Shipped(NamedTuple):
    """A checkpoint that ships with the course: where it lies under ``checkpoints/``, and the
    sha256 of its bytes (``sha256sum checkpoints/<path>`` prints it)."""

    path: str
    sha256: str


#: The checkpoints shipped in ``checkpoints/``, by name. One line per checkpoint; retraining one
#: changes its bytes, so its sha256 here must be updated in the same commit.
SHIPPED_CHECKPOINTS: dict[str, Shipped] = {
    # The `cpu` preset, seed 0: its command and measured metrics lie beside it in checkpoints/cpu/.
    "cpu": Shipped(
        "cpu/best.pt", "d43909e23f7cb1cecc8b2e5a8ad58425bed0bba7117eac82a801913a6b17eaa3"
    ),
}
#: Where shipped checkpoints lie in a checkout of the course.
CHECKPOINTS_DIR = PROJECT_ROOT / "checkpoints"
#: Where a shipped checkpoint is downloaded from when the course was installed without its
#: ``checkpoints/`` folder (``pip install`` on Colab): the same file in the course's repository.
SHIPPED_URL = f"https://raw.githubusercontent.com/{REPOSITORY}/main/checkpoints"

class ChecksumError(CheckpointError):
    """A file's sha256 is not the one it should have: it was changed, damaged or replaced."""


class PretrainedNotFoundError(FileNotFoundError):
    """Pretrained weights are neither on disk nor downloadable (no internet)."""


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, as 64 hex digits (what ``sha256sum`` prints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str, fix: str) -> None:
    """Raise :class:`ChecksumError` unless ``path``'s sha256 starts with ``expected``.

    Args:
        path: the file.
        expected: its sha256 (all 64 hex digits, or a prefix of at least 8, as torch hub uses).
        fix: what to do about a mismatch, for the message.
    """
    expected = expected.lower()
    if len(expected) < 8:
        raise ValueError(f"a sha256 needs at least 8 hex digits, got {expected!r}")
    actual = sha256_of(path)
    if not actual.startswith(expected):
        raise ChecksumError(
            f"{path} has sha256 {actual}, but {expected} was expected: the file was changed, "
            f"damaged or replaced since it was published. {fix}"
        )


def _is_url(source: str) -> bool:
    return urlparse(source).scheme in ("http", "https", "ftp", "file")


def _cache_path(url: str, sha256: str) -> Path:
    """Where torch hub keeps a downloaded file: ``<hub dir>/checkpoints/<name>``, the name carrying
    the start of its sha256 (torch hub's convention, as in ``resnet18-f37072fd.pth``)."""
    name = Path(urlparse(url).path).name or "checkpoint.pt"
    if sha256[:8].lower() not in name:
        stem, dot, suffix = name.rpartition(".")
        name = f"{stem}-{sha256[:8].lower()}.{suffix}" if dot else f"{name}-{sha256[:8].lower()}"
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _download(url: str, sha256: str, progress: bool = True) -> Path:
    """The file at ``url``, downloaded once into torch hub's cache and checked against
    ``sha256``."""
    cached = _cache_path(url, sha256)
    fix = f"Delete {cached} and run again to download it anew, or check the sha256 you gave."
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        try:  # torch hub writes to a temporary file and checks the hash before renaming it
            torch.hub.download_url_to_file(url, str(cached), hash_prefix=sha256, progress=progress)
        except OSError as exc:  # no network, DNS failure, HTTP error, ...
            raise PretrainedNotFoundError(
                f"Could not download {url} ({exc}). Without internet: download that file on a "
                f"machine that has it and put it at {cached} (torch hub's cache; the TORCH_HOME "
                f"environment variable moves it), or give the file's local path instead of the URL."
            ) from exc
        except RuntimeError as exc:  # torch hub's "invalid hash value"
            raise ChecksumError(
                f"The download of {url} does not have sha256 {sha256} ({exc})."
            ) from exc
    check_sha256(cached, sha256, fix)
    return cached


def pretrained_file(source: str | os.PathLike[str], sha256: str | None = None) -> Path:
    """The local file of a pretrained checkpoint, its sha256 checked.

    Args:
        source: the name of a shipped checkpoint (a key of :data:`SHIPPED_CHECKPOINTS`), a URL
            (downloaded once into torch hub's cache), or a local path.
        sha256: the file's expected sha256; required for a URL, optional for a path, and for a
            shipped name taken from the table.

    Raises:
        ChecksumError: the file's sha256 is not the expected one.
        PretrainedNotFoundError: a URL (or a shipped file missing from this installation) could
            not be downloaded; the message says where to put the file by hand.
        FileNotFoundError: ``source`` is neither a shipped name, a URL nor a file.

    Explained in notebook 08.
    """
    text = os.fspath(source)
    if text in SHIPPED_CHECKPOINTS:
        shipped = SHIPPED_CHECKPOINTS[text]
        path = CHECKPOINTS_DIR / shipped.path
        if not path.is_file():  # installed without the checkpoints/ folder (as on Colab)
            return _download(f"{SHIPPED_URL}/{shipped.path}", shipped.sha256)
        check_sha256(
            path,
            sha256 or shipped.sha256,
            f"Restore the shipped file (git checkout -- checkpoints/{shipped.path}). If you "
            f"retrained it on purpose, put its new sha256 (sha256sum checkpoints/{shipped.path}) "
            f"into SHIPPED_CHECKPOINTS in course_utils/checkpoints.py.",
        )
        return path
    if _is_url(text):
        if sha256 is None:
            raise ValueError(
                f"A URL needs the sha256 of its file, so that a changed or damaged download is "
                f"caught: load_pretrained({text!r}, sha256=...) (sha256sum FILE prints it)."
            )
        return _download(text, sha256)
    path = Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"No shipped checkpoint named {text!r} (shipped: {sorted(SHIPPED_CHECKPOINTS) or 'none'}) "
            f"and no file at {path}. Give a shipped name, a checkpoint file (such as "
            f"runs/<run>/best.pt), or a URL with its sha256."
        )
    if sha256 is not None:
        check_sha256(path, sha256, "Use the file that was published with this sha256.")
    return path


def load_pretrained(
    source: str | os.PathLike[str],
    sha256: str | None = None,
    model: nn.Module | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """:func:`pretrained_file` (a shipped name such as ``"cpu"``, a URL with its ``sha256``, or a
    path; the sha256 checked), then :func:`load_checkpoint` (into ``model`` if given, after the
    architecture check). Returns the checkpoint dictionary; ``training.model_from_checkpoint``
    builds the network it describes. Notebooks 06 and 08."""
    return load_checkpoint(pretrained_file(source, sha256), model, map_location=map_location)


#: What a shipped checkpoint drops: the state that only resuming a run needs (``last.pt``'s).
TRAINING_STATE = ("optimizer", "scheduler", "scaler", "ema", "early_stopping", "history", "rng")
#: The files of a run folder that ship beside the checkpoint.
SHIPPED_FILES = ("metrics.json", "history.csv")


def ship_checkpoint(
    run_dir: str | os.PathLike[str], name: str, checkpoints_dir: Path = CHECKPOINTS_DIR
) -> Shipped:
    """Copy a finished run's best checkpoint into ``checkpoints/<name>/``, for instructors.

    Keeps the weights, in float32, and the metadata that describes them, without the state that
    only resuming needs (:data:`TRAINING_STATE`); beside them the run's ``metrics.json`` and
    ``history.csv``, and in a file named ``command`` the command that trained it. Returns the line
    to put into :data:`SHIPPED_CHECKPOINTS` (``python -m course_utils ship RUN --name NAME``
    prints it).

    Raises:
        FileNotFoundError: the run has not finished (no ``best.pt`` or ``metrics.json``).
    """
    run = Path(run_dir)
    missing = [f for f in ("best.pt", *SHIPPED_FILES) if not (run / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{run} lacks {', '.join(missing)}: ship a run that has finished (its metrics.json "
            f"is written after the test)."
        )
    state = load_checkpoint(run / "best.pt")
    state = {key: value for key, value in state.items() if key not in TRAINING_STATE}
    state["model"] = {
        key: value.float() if value.is_floating_point() else value
        for key, value in state["model"].items()
    }
    target = Path(checkpoints_dir) / name
    save_checkpoint(target / "best.pt", **state)
    for file in SHIPPED_FILES:
        (target / file).write_bytes((run / file).read_bytes())
    metrics = json.loads((run / "metrics.json").read_text())
    command = metrics.get("command", "(not recorded: see config in metrics.json)")
    (target / "command").write_text(command + "\n")
    return Shipped(f"{name}/best.pt", sha256_of(target / "best.pt"))
