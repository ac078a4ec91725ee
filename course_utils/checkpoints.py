"""Checkpoints: save a run's state atomically, load it safely, and check it fits.

A checkpoint is a dictionary of tensors and plain Python values (never pickled objects), so it can be
read with ``torch.load(weights_only=True)``, which cannot run code hidden in a file. Every checkpoint
carries its configuration and a description of the network, so loading one into the wrong network
fails with a message that says which network it holds.

Explained in notebook 05 (training with early stopping).
"""

from __future__ import annotations

import os
import pickle
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

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

    if model is not None:
        _load_model_state(path, state, model)
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    return state


def _first_words(exc: Exception) -> str:
    """What the parser objected to, in a few words (torch's own message is a page of advice)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first[:120]}" if first else type(exc).__name__


def _load_model_state(path: Path, state: dict[str, Any], model: nn.Module) -> None:
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
