"""Tests for course_utils.transfer: pretrained weights into the course ResNet, checked against
torchvision; the linear probe; parameter groups; sha256 checks; errors without internet; and
``python -m course_utils train --init ... --freeze-backbone`` end to end.

Nothing here touches the network: torchvision models are built with ``weights=None`` (random
weights under torchvision's key names), torch hub's cache is a temporary folder, and a "download"
either reads a ``file://`` URL or raises as it would offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import urllib.error
from dataclasses import replace
from pathlib import Path

import jupytext
import numpy as np
import pytest
import torch
import torchvision
from near_ties import assert_accuracy_agrees
from torch import nn

from course_utils import checkpoints as C
from course_utils import data as D
from course_utils import transfer as T
from course_utils.checkpoints import ArchitectureMismatchError, load_checkpoint, save_checkpoint
from course_utils.cli import main
from course_utils.config import PROJECT_ROOT
from course_utils.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CIFAR10Arrays,
    build_loaders,
    cifar10_splits,
)
from course_utils.evaluation import predict
from course_utils.exercises import NOT_RIGHT, NOT_SOLVED
from course_utils.exercises.notebook08 import check_parameter_groups
from course_utils.models import model_architecture, resnet18
from course_utils.training import (
    PRESETS,
    ConfigError,
    TrainConfig,
    build_model,
    build_optimizer,
    build_scheduler,
    model_from_checkpoint,
    smoke_config,
    train_one_epoch,
)

pytestmark = pytest.mark.usefixtures("one_thread")

RESNET18_URL = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Running statistics away from their initial 0 and 1, as after training."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.copy_(torch.randn(bn.num_features, generator=generator))
                bn.running_var.copy_(torch.rand(bn.num_features, generator=generator) + 0.5)
    return model


def backbone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache, and downloads that fail as they do without internet."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(url: str, dst: str, *args, **kwargs) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return Path(torch.hub.get_dir())


def save_course_checkpoint(
    path: Path, cfg: TrainConfig, num_classes: int, seed: int = 0
) -> nn.Module:
    """A checkpoint as fit() writes best.pt, of a model with random weights and statistics."""
    torch.manual_seed(seed)
    model = randomize_batchnorm(build_model(cfg, num_classes), seed)
    save_checkpoint(path, model=model.state_dict(), config=cfg.to_dict(), format=1,
                    architecture=model_architecture(model), classes=[str(i) for i in range(num_classes)],
                    mean=[0.5] * 3, std=[0.25] * 3, epoch=1, score=0.5, monitor="val_acc")  # fmt: skip
    return model


# --- torchvision weights in the course ResNet ------------------------------------------------------


def test_torchvision_state_dict_loads_into_the_course_resnet():
    reference = randomize_batchnorm(torchvision.models.resnet18(weights=None)).eval()
    ours = resnet18(stem="imagenet", num_classes=10)
    head_before = ours.fc.weight.clone()
    T.load_backbone(ours, reference.state_dict(), "torchvision")
    ours.eval()
    for key, value in reference.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(ours.state_dict()[key], value), key
    assert ours.fc.out_features == 10 and torch.equal(ours.fc.weight, head_before)  # head untouched
    # The same function as torchvision's network up to the head.
    reference.fc = nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_features(x), reference(x), rtol=1e-4, atol=1e-5)


def test_replace_head_keeps_the_features_and_the_state_dict_keys():
    reference = torchvision.models.resnet18(weights=None).eval()
    ours = resnet18(stem="imagenet", num_classes=1000)
    ours.load_state_dict(reference.state_dict())  # the whole network, 1,000-class head included
    features = backbone_state(ours)
    new_head = T.replace_head(ours, 10)
    assert ours.fc is new_head and (new_head.in_features, new_head.out_features) == (512, 10)
    assert ours.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    assert ours.state_dict().keys() == resnet18(stem="imagenet", num_classes=10).state_dict().keys()
    assert all(torch.equal(ours.state_dict()[k], v) for k, v in features.items())


def test_load_backbone_says_what_does_not_fit():
    with pytest.raises(ArchitectureMismatchError, match="stem='imagenet'"):  # the 3x3 CIFAR stem
        T.load_backbone(
            resnet18(num_classes=10), torchvision.models.resnet18(weights=None).state_dict()
        )
    narrow = TrainConfig(width=8)
    checkpoint = {
        "model": build_model(narrow, 6).state_dict(),
        "architecture": model_architecture(build_model(narrow, 6)),
    }
    T.load_backbone(build_model(narrow, 4), checkpoint)  # another number of classes is fine
    with pytest.raises(ArchitectureMismatchError, match="width=8.*width=16"):
        T.load_backbone(build_model(replace(narrow, width=16), 4), checkpoint)


# --- the linear probe --------------------------------------------------------------------------------


def test_linear_probe_trains_the_head_only_and_keeps_batchnorm_statistics():
    cfg = TrainConfig(width=8, lr=0.1, freeze_backbone=True)
    torch.manual_seed(0)
    model = T.freeze_backbone(
        randomize_batchnorm(build_model(replace(cfg, freeze_backbone=False), 4))
    )
    plain_keys = build_model(replace(cfg, freeze_backbone=False), 4).state_dict().keys()
    assert model.state_dict().keys() == plain_keys  # checkpoints of a probe load anywhere
    before, head_before = backbone_state(model), model.fc.weight.clone()

    optimizer = build_optimizer(model, cfg)
    assert T.learning_rates(optimizer, model).keys() == {"fc.weight", "fc.bias"}
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 4, (8,))
    model.train()
    nn.functional.cross_entropy(model(x), y).backward()
    for name, parameter in model.named_parameters():
        assert (parameter.grad is not None) == name.startswith("fc."), name

    batches = [(torch.randn(8, 3, 32, 32), torch.randint(0, 4, (8,))) for _ in range(3)]
    train_one_epoch(model, batches, nn.CrossEntropyLoss(), optimizer, "cpu")
    assert model.training and not model.bn1.training  # train mode outside, BatchNorm frozen inside
    after = backbone_state(model)
    for key, value in before.items():  # weights, running statistics and num_batches_tracked
        assert torch.equal(after[key], value), key
    assert not torch.equal(model.fc.weight, head_before)

    # Without the frozen BatchNorm, requires_grad=False alone lets the statistics drift.
    naive = randomize_batchnorm(build_model(replace(cfg, freeze_backbone=False), 4))
    for name, parameter in naive.named_parameters():
        parameter.requires_grad_(name.startswith("fc."))
    stats_before = naive.bn1.running_mean.clone()
    train_one_epoch(naive, batches, nn.CrossEntropyLoss(), build_optimizer(naive, cfg), "cpu")
    assert not torch.equal(naive.bn1.running_mean, stats_before)


# --- parameter groups --------------------------------------------------------------------------------


def test_parameter_groups_give_the_backbone_a_smaller_learning_rate():
    cfg = TrainConfig(width=8, lr=0.2, backbone_lr=0.1, epochs=2)
    model = build_model(cfg, 4)
    optimizer = build_optimizer(model, cfg)
    head, backbone = optimizer.param_groups
    assert (head["name"], head["lr"], backbone["name"]) == ("head", 0.2, "backbone")
    assert backbone["lr"] == pytest.approx(0.02)
    assert {id(p) for p in head["params"]} == {id(p) for p in model.fc.parameters()}
    names = [n for n, _ in model.named_parameters()]
    assert sorted(T.learning_rates(optimizer, model)) == sorted(names)  # each parameter once
    # One-cycle peaks each group at its own lr, and keeps the ratio all the way.
    scheduler, per_batch = build_scheduler(optimizer, cfg, steps_per_epoch=5)
    assert per_batch and [g["max_lr"] for g in optimizer.param_groups] == pytest.approx([0.2, 0.02])
    for _ in range(7):
        optimizer.step()
        scheduler.step()
        assert head["lr"] == pytest.approx(10 * backbone["lr"])
    cyclic = replace(cfg, schedule="cyclic")
    optimizer = build_optimizer(build_model(cyclic, 4), cyclic)
    scheduler, _ = build_scheduler(optimizer, cyclic, steps_per_epoch=5)
    assert scheduler.max_lrs == pytest.approx([0.2, 0.02])
    assert scheduler.base_lrs == pytest.approx([0.2 / cfg.div_factor, 0.02 / cfg.div_factor])


def test_one_learning_rate_is_one_group_in_the_model_order():
    model = build_model(TrainConfig(width=8), 10)
    (group,) = build_optimizer(model, TrainConfig(width=8)).param_groups
    assert [id(p) for p in group["params"]] == [id(p) for p in model.parameters()]
    frozen_cfg = TrainConfig(width=8, freeze_backbone=True, backbone_lr=0.1)  # nothing to fine-tune
    frozen = build_model(frozen_cfg, 10)
    assert [g["name"] for g in build_optimizer(frozen, frozen_cfg).param_groups] == ["head"]


def test_learning_rates_refuses_a_parameter_in_two_groups():
    model = build_model(TrainConfig(width=8), 4)
    with pytest.raises(ValueError, match="fc.weight is in two parameter groups"):
        T.learning_rates([{"params": list(model.parameters()), "lr": 0.1},
                          {"params": list(model.fc.parameters()), "lr": 0.1}], model)  # fmt: skip


# --- sha256 checks and where files come from ---------------------------------------------------------


def test_a_shipped_checkpoint_is_checked_before_it_is_loaded(tmp_path, monkeypatch):
    cfg = TrainConfig(width=8)
    path = tmp_path / "tiny" / "best.pt"
    model = save_course_checkpoint(path, cfg, 10)
    monkeypatch.setattr(C, "CHECKPOINTS_DIR", tmp_path)
    monkeypatch.setitem(C.SHIPPED_CHECKPOINTS, "tiny", C.Shipped("tiny/best.pt", sha256(path)))

    fresh = build_model(cfg, 10)
    state = C.load_pretrained("tiny", model=fresh)
    assert state["classes"] == [str(i) for i in range(10)]
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())

    path.write_bytes(path.read_bytes() + b"\0")  # one byte more: a changed file
    with pytest.raises(C.ChecksumError) as refused:
        C.load_pretrained("tiny")
    message = str(refused.value)
    assert sha256(path) in message and "git checkout -- checkpoints/tiny/best.pt" in message
    assert "SHIPPED_CHECKPOINTS" in message


def test_a_local_path_and_unknown_names(tmp_path):
    path = tmp_path / "best.pt"
    save_course_checkpoint(path, TrainConfig(width=8), 10)
    assert C.load_pretrained(path)["epoch"] == 1
    assert C.load_pretrained(str(path), sha256=sha256(path)[:12])["epoch"] == 1
    with pytest.raises(C.ChecksumError):
        C.load_pretrained(path, sha256="0" * 64)
    with pytest.raises(FileNotFoundError, match="No shipped checkpoint named 'nonesuch'"):
        C.load_pretrained("nonesuch")


def test_a_url_is_downloaded_once_into_torch_hubs_cache_and_hash_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    published = tmp_path / "server" / "full.pt"
    save_course_checkpoint(published, TrainConfig(width=8), 10)
    url, digest = published.as_uri(), sha256(published)
    with pytest.raises(ValueError, match="sha256"):
        C.load_pretrained(url)
    with pytest.raises(C.ChecksumError):  # torch hub's own check, during the download
        C.load_pretrained(url, sha256="0" * 64)
    assert C.load_pretrained(url, sha256=digest)["epoch"] == 1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / f"full-{digest[:8]}.pt"
    assert cached.is_file() and sha256(cached) == digest
    published.unlink()  # the second time, the cache answers
    assert C.load_pretrained(url, sha256=digest)["epoch"] == 1


def test_every_shipped_checkpoint_matches_its_sha256():
    for name, shipped in C.SHIPPED_CHECKPOINTS.items():
        assert len(shipped.sha256) == 64 and int(shipped.sha256, 16) >= 0, name
        path = C.CHECKPOINTS_DIR / shipped.path
        assert path.is_file(), f"{name}: {path} is missing"
        assert sha256(path) == shipped.sha256, f"{name}: update its sha256 in SHIPPED_CHECKPOINTS"


# --- without internet ----------------------------------------------------------------------------------


def test_imagenet_weights_offline_say_which_file_to_put_where(offline_hub):
    with pytest.raises(C.PretrainedNotFoundError) as missing:
        T.imagenet_state_dict(18, progress=False)
    message = str(missing.value)
    assert RESNET18_URL in message
    assert str(offline_hub / "checkpoints" / "resnet18-f37072fd.pth") in message
    with pytest.raises(C.PretrainedNotFoundError, match="put it at"):
        C.load_pretrained("https://example.org/full.pt", sha256="ab" * 32)


def test_imagenet_weights_placed_by_hand_are_used_offline(offline_hub):
    reference = torchvision.models.resnet18(weights=None)
    (offline_hub / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), offline_hub / "checkpoints" / "resnet18-f37072fd.pth")
    cfg = TrainConfig(init="imagenet", stem="imagenet", width=64)
    model = build_model(cfg, num_classes=10)
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)
    assert model.fc.out_features == 10


def test_config_checks_the_transfer_settings():
    with pytest.raises(ConfigError) as wrong_stem:
        TrainConfig(init="imagenet")  # the CIFAR stem at width 64
    assert wrong_stem.value.field == "init" and "--stem imagenet" in str(wrong_stem.value)
    with pytest.raises(ConfigError, match="sync-bn"):
        TrainConfig(freeze_backbone=True, sync_bn=True)
    with pytest.raises(ConfigError):
        TrainConfig(backbone_lr=0)


# --- data helpers --------------------------------------------------------------------------------------


def test_select_classes_relabels_in_the_given_order():
    labels = np.arange(20) % 10
    data = CIFAR10Arrays(
        np.arange(20, dtype=np.uint8)[:, None, None, None] * np.ones((1, 32, 32, 3), np.uint8),
        labels,
    )
    vehicles = D.select_classes(data, T.VEHICLES)
    assert vehicles.classes == T.VEHICLES and len(vehicles) == 8
    names = [data.classes[label] for label in labels[vehicles.images[:, 0, 0, 0]]]
    assert names == [T.VEHICLES[label] for label in vehicles.labels]
    with pytest.raises(ValueError, match="unknown classes"):
        D.select_classes(data, ["unicorn"])


def test_resized_batches():
    batches = [(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))]
    ((images, labels),) = D.Resized(batches, 64)
    assert images.shape == (2, 3, 64, 64) and labels.tolist() == [0, 1]


def test_imagenet_constants_are_torchvisions():
    transforms = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
    assert list(IMAGENET_MEAN) == transforms.mean and list(IMAGENET_STD) == transforms.std
    assert [T.IMAGENET_SIZE] == transforms.crop_size


# --- notebook 08's exercise ------------------------------------------------------------------------------


def notebook_solution(name: str):
    path = PROJECT_ROOT / "notebooks" / "08_transfer_learning.py"
    namespace: dict = {"nn": nn, "torch": torch}
    for cell in jupytext.read(path).cells:
        if cell.cell_type == "code" and "### BEGIN SOLUTION" in cell.source:
            exec(compile(cell.source, path.name, "exec"), namespace)  # noqa: S102
    return namespace[name]


def _check(student, capsys) -> tuple[str, dict]:
    model = build_model(TrainConfig(width=8), 4)
    rates = check_parameter_groups(student, model)
    assert rates == T.learning_rates(T.parameter_groups(model, 0.1, 0.1), model)  # always usable
    return capsys.readouterr().out, rates


def _head_and_rest(model, head_lr, rest_lr, rest=None):
    head_ids = {id(p) for p in model.fc.parameters()}
    rest = [p for p in model.parameters() if id(p) not in head_ids] if rest is None else rest
    return [{"params": list(model.fc.parameters()), "lr": head_lr}, {"params": rest, "lr": rest_lr}]


WRONG_GROUPS = {  # a wrong answer, and the phrase its diagnosis must contain
    "swapped": (lambda m, lr, f: _head_and_rest(m, lr * f, lr), "swapped"),
    "divided": (lambda m, lr, f: _head_and_rest(m, lr, lr / f), "lr / backbone_lr"),
    "one lr": (lambda m, lr, f: [{"params": list(m.parameters()), "lr": lr}], "same learning rate"),
    "head twice": (
        lambda m, lr, f: _head_and_rest(m, lr, lr * f, rest=list(m.parameters())),
        "in two parameter groups",
    ),
    "no head": (lambda m, lr, f: _head_and_rest(m, lr, lr * f)[1:], "the head's"),
    "hard-coded": (lambda m, lr, f: _head_and_rest(m, lr, 0.01), "expected"),
    "a dict": (lambda m, lr, f: {"params": list(m.parameters()), "lr": lr}, "list of dictionaries"),
    "reference": (lambda m, lr, f: T.parameter_groups(m, lr, f), "build the groups yourself"),
    "the head by position": (
        lambda m, lr, f: [{"params": list(m.parameters())[-2:], "lr": lr},
                          {"params": list(m.parameters())[:-2], "lr": lr * f}],
        "by name",
    ),  # fmt: skip
}


def test_the_exercise_accepts_the_solution(capsys):
    out, _ = _check(notebook_solution("my_parameter_groups"), capsys)
    assert "correct" in out


@pytest.mark.parametrize("wrong", WRONG_GROUPS, ids=list(WRONG_GROUPS))
def test_the_exercise_names_each_mistake(wrong, capsys):
    answer, phrase = WRONG_GROUPS[wrong]
    out, _ = _check(answer, capsys)
    assert NOT_RIGHT in out and phrase in out, out


def test_the_exercise_unsolved_falls_back(capsys):
    def unsolved(model, lr, backbone_lr):
        raise NotImplementedError

    out, _ = _check(unsolved, capsys)
    assert NOT_SOLVED in out


# --- the command line, end to end -----------------------------------------------------------------------


def test_cli_rejects_imagenet_weights_for_the_cifar_stem(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--smoke", "--init", "imagenet", "--no-progress"])
    assert stopped.value.code == 2 and "--init" in capsys.readouterr().err


def test_cli_linear_probe_from_a_checkpoint(cifar_root: Path, tmp_path: Path):
    cfg = smoke_config(PRESETS["cpu"])  # the network the smoke run builds
    init = tmp_path / "pretrained.pt"
    pretrained = save_course_checkpoint(init, cfg, num_classes=6)  # another task: 6 classes
    out = tmp_path / "run"
    env = {**os.environ, "COURSE_DATA_DIR": str(cifar_root), "OMP_NUM_THREADS": "1"}
    env.pop("COURSE_SMOKE", None)
    done = subprocess.run(
        [sys.executable, "-m", "course_utils", "train", "--smoke", "--epochs", "1", "--init",
         str(init), "--freeze-backbone", "--out", str(out), "--no-progress"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["init"] == str(init) and metrics["config"]["freeze_backbone"]
    best = load_checkpoint(out / "best.pt")["model"]
    for key, value in backbone_state(pretrained).items():  # weights and BatchNorm statistics
        assert torch.equal(best[key], value), key
    assert best["fc.weight"].shape == (10, pretrained.fc.in_features)  # a new 10-class head


# --- the shipped checkpoint on the real test set --------------------------------------------------------


def test_the_shipped_cpu_checkpoint_scores_what_its_metrics_say(cifar_root: Path):
    """The course ships it (README, notebooks 06 and 08): a missing one is a failure. Its run
    tested it on another machine's kernels, so the predictions may differ on near ties."""
    assert "cpu" in C.SHIPPED_CHECKPOINTS, "the shipped 'cpu' checkpoint is not registered"
    model, state = model_from_checkpoint(C.pretrained_file("cpu"))  # its sha256 checked
    cfg = TrainConfig.from_dict(state["config"])
    assert not cfg.amp, "this test compares float32 scores"
    splits = cifar10_splits(cifar_root, val_size=cfg.val_size, seed=cfg.seed, smoke=False)
    *_, test_loader = build_loaders(splits, cfg, state["mean"], state["std"], torch.device("cpu"))
    pred = predict(model, test_loader, "cpu", channels_last=cfg.channels_last, amp=cfg.amp,
                   tta=cfg.tta, tta_shift=cfg.tta_shift)
    recorded = json.loads((C.CHECKPOINTS_DIR / "cpu" / "metrics.json").read_text())
    assert len(pred) == 10_000
    assert_accuracy_agrees(recorded["test_accuracy"], pred.logits, pred.labels)


def test_ship_checkpoint_keeps_float32_weights_and_the_runs_record(tmp_path, monkeypatch):
    run = tmp_path / "run"
    cfg = TrainConfig(width=8)
    model = save_course_checkpoint(run / "best.pt", cfg, 10)
    state = load_checkpoint(run / "best.pt")  # as if a run had kept its optimizer state too
    state["optimizer"] = {"state": {}, "param_groups": []}
    state["model"] = {k: v.double() if v.is_floating_point() else v for k, v in state["model"].items()}
    save_checkpoint(run / "best.pt", **state)
    with pytest.raises(FileNotFoundError, match="metrics.json, history.csv"):
        C.ship_checkpoint(run, "tiny", tmp_path / "checkpoints")
    command = "python -m course_utils train --preset cpu --seed 0"
    (run / "metrics.json").write_text(json.dumps({"test_accuracy": 0.5, "command": command}))
    (run / "history.csv").write_text("epoch,val_acc\n1,0.5\n")

    shipped = C.ship_checkpoint(run, "tiny", tmp_path / "checkpoints")
    folder = tmp_path / "checkpoints" / "tiny"
    assert shipped == C.Shipped("tiny/best.pt", sha256(folder / "best.pt"))
    assert (folder / "command").read_text() == command + "\n"
    assert (folder / "history.csv").read_text() == (run / "history.csv").read_text()
    saved = torch.load(folder / "best.pt", weights_only=True)
    assert "optimizer" not in saved and saved["config"] == cfg.to_dict()
    for key, value in model.state_dict().items():
        assert saved["model"][key].dtype == (torch.float32 if value.is_floating_point() else value.dtype)
        assert torch.allclose(saved["model"][key].double(), value.double()), key

    monkeypatch.setattr(C, "CHECKPOINTS_DIR", tmp_path / "checkpoints")
    monkeypatch.setitem(C.SHIPPED_CHECKPOINTS, "tiny", shipped)
    C.load_pretrained("tiny", model=build_model(cfg, 10))  # by name, sha256 checked
