"""The recipe options: schedules against their formulas, mixup/CutMix, the weight average, flip TTA,
and the time budget's arithmetic (with a fake clock)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from course_utils.checkpoints import load_checkpoint
from course_utils.config import set_seed
from course_utils.data import Augmentation, Splits, TensorLoader, build_loaders, cifar10_splits
from course_utils.evaluation import predict, tta_views, views_per_image
from course_utils.machine import (
    DEADLINE_MARGIN,
    REPORT_SECONDS,
    SAFETY_MARGIN,
    TIMED_BATCHES,
    BudgetError,
    Throughput,
    fit_to_budget,
    measure_throughput,
    plan_steps,
)
from course_utils.models import GhostBatchNorm2d, resnet18
from course_utils.training import (
    AverageDecay,
    ConfigError,
    Pacer,
    TrainConfig,
    build_ema,
    build_mixing,
    build_model,
    build_scheduler,
    copy_average_into,
    fit,
    learning_rates,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def lrs_per_batch(cfg: TrainConfig, steps_per_epoch: int) -> list[float]:
    """The lr used by every optimizer step of a run, stepping the schedule after each batch."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    schedule = build_scheduler(optimizer, cfg, steps_per_epoch)
    assert schedule.per_batch
    lrs = []
    for _ in range(cfg.steps or cfg.epochs * steps_per_epoch):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.scheduler.step()
    return lrs


def test_cyclic_schedule_is_a_triangle():
    cfg = TrainConfig(schedule="cyclic", lr=0.4, div_factor=8, cycle_epochs=2, epochs=5)
    low, high, half = 0.4 / 8, 0.4, 10  # 2 epochs of 10 batches per cycle: 10 up, 10 down
    lrs = lrs_per_batch(cfg, steps_per_epoch=10)
    for t, lr in enumerate(lrs):
        position = t % (2 * half)
        fraction = position / half if position <= half else 2 - position / half  # /\ in [0, 1]
        assert lr == pytest.approx(low + (high - low) * fraction), t


def test_warmup_cosine_is_a_line_then_a_half_cosine():
    cfg = TrainConfig(
        schedule="warmup_cosine", lr=0.2, div_factor=10, warmup=0.2, min_lr=0.001, epochs=5
    )
    total, warm = 50, 10
    lrs = lrs_per_batch(cfg, steps_per_epoch=10)
    for t, lr in enumerate(lrs):
        if t < warm:
            expected = 0.2 * (0.1 + 0.9 * t / warm)
        else:
            expected = (
                0.001 + (0.2 - 0.001) * (1 + math.cos(math.pi * (t - warm) / (total - warm))) / 2
            )
        assert lr == pytest.approx(expected, rel=1e-6), t


def test_linear_schedule_is_two_straight_lines_ending_at_its_final_lr():
    cfg = TrainConfig(schedule="linear", lr=0.5, div_factor=5, final_div_factor=14, warmup=0.2,
                      epochs=3, steps=25)  # fmt: skip
    start, end = 0.5 / 5, 0.5 / 5 / 14
    lrs = lrs_per_batch(cfg, steps_per_epoch=10)
    assert len(lrs) == 25  # steps, not epochs x batches: the last epoch is cut at 5 batches
    warm = 5  # 20% of 25
    for t in range(warm):
        assert lrs[t] == pytest.approx(start + (0.5 - start) * t / warm), t
    for t in range(warm, 25):  # from the peak at step 5 down to `end` at the last step, 24
        assert lrs[t] == pytest.approx(0.5 + (end - 0.5) * (t - warm) / (24 - warm)), t
    np.testing.assert_allclose(learning_rates(cfg, 10), lrs)


def test_onecycle_spans_the_steps_when_they_are_set():
    cfg = TrainConfig(schedule="onecycle", lr=0.3, epochs=4, steps=36)
    lrs = lrs_per_batch(cfg, steps_per_epoch=10)
    assert len(learning_rates(cfg, 10)) == 36
    assert lrs[-1] == pytest.approx(0.3 / 25 / 1e4, rel=1e-6)  # its final lr at step 36, not 40
    assert max(lrs) == pytest.approx(0.3)


def test_mixup_blends_images_and_labels_by_the_same_weight():
    torch.manual_seed(0)
    images, labels = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
    mix = build_mixing(TrainConfig(mixup=1.0), num_classes=10)
    mixed, soft = mix(images, labels)
    assert soft.shape == (8, 10)
    torch.testing.assert_close(soft.sum(1), torch.ones(8))
    lam = soft[torch.arange(8), labels]
    partner = labels.roll(1)  # torchvision mixes each image with the previous one in the batch
    weight = torch.where(labels == partner, torch.ones(8), lam)
    lam = lam[labels != partner][0].item()  # one weight for the whole batch
    torch.testing.assert_close(mixed, lam * images + (1 - lam) * images.roll(1, 0))
    assert torch.all((weight == 1) | (weight - lam).abs().lt(1e-6))


def test_cutmix_pastes_a_patch_and_weighs_labels_by_its_area():
    torch.manual_seed(1)
    images = torch.rand(8, 3, 32, 32)
    labels = torch.arange(8)  # all different, so each label weight is readable
    mix = build_mixing(TrainConfig(cutmix=1.0), num_classes=10)
    mixed, soft = mix(images, labels)
    torch.testing.assert_close(soft.sum(1), torch.ones(8))
    from_partner = (mixed != images).any(1)  # (B, H, W): pixels that came from the other image
    assert torch.equal(mixed[:, :, from_partner[0]], images.roll(1, 0)[:, :, from_partner[0]])
    area = from_partner[0].float().mean().item()
    assert soft[0, 0].item() == pytest.approx(1 - area, abs=1 / 32)  # patch may be clipped
    assert soft[0, 7].item() == pytest.approx(area, abs=1 / 32)


def test_no_mixing_unless_asked():
    assert build_mixing(TrainConfig(), num_classes=10) is None
    assert build_ema(nn.Linear(2, 2), 0.0) is None


def test_ema_is_the_hand_computed_average():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    ema = build_ema(model, decay=0.9)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    expected = None
    for _ in range(4):
        optimizer.zero_grad()
        model(torch.randn(8, 4)).pow(2).mean().backward()
        optimizer.step()
        ema.update_parameters(model)
        weights = model.weight.detach().clone()
        expected = weights if expected is None else 0.9 * expected + 0.1 * weights
    torch.testing.assert_close(ema.module.weight, expected)
    assert not torch.allclose(ema.module.weight, model.weight)


def test_ramped_average_decay_grows_as_the_cube_of_the_run_done():
    ramp = AverageDecay(0.9, ramp=True, total=200)
    assert ramp.at(0) == 0.0
    assert ramp.at(100) == pytest.approx(0.9 / 8)
    assert ramp.at(200) == ramp.at(400) == pytest.approx(0.9)  # never past the decay asked for
    assert AverageDecay(0.9).at(0) == AverageDecay(0.9).at(150) == 0.9  # no ramp: constant


def test_ramped_ema_is_the_hand_computed_average():
    model = nn.Linear(1, 1, bias=False)
    ema = build_ema(model, decay=0.95, ramp=True)
    ema.multi_avg_fn.total = 10
    weights = np.random.default_rng(0).normal(size=12)
    expected = None
    for step, w in enumerate(weights):  # step: the updates averaged in before this one
        with torch.no_grad():
            model.weight.fill_(float(w))
        ema.update_parameters(model)
        decay = 0.95 * min(1.0, step / 10) ** 3
        expected = w if expected is None else decay * expected + (1 - decay) * w
    assert ema.module.weight.item() == pytest.approx(expected, rel=1e-5)
    # early on the average follows the weights; at the end it lags them
    assert abs(ema.module.weight.item() - weights[-1]) > 0.01


def test_ghost_batch_gives_every_batchnorm_its_groups():
    model = build_model(TrainConfig(width=8, ghost_batch=32, freeze_bn_scale=True))
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(type(m) is GhostBatchNorm2d and m.ghost_batch == 32 for m in norms)
    assert not any(m.weight.requires_grad for m in norms)  # freeze_bn_scale still applies
    plain = build_model(TrainConfig(width=8))
    assert not any(isinstance(m, GhostBatchNorm2d) for m in plain.modules())
    with pytest.raises(ConfigError, match="ghost BatchNorm.*sync_bn"):
        TrainConfig(ghost_batch=32, sync_bn=True)
    with pytest.raises(ConfigError, match="frozen backbone.*drop --ghost-batch"):
        TrainConfig(ghost_batch=32, freeze_backbone=True)


def test_conv_init_scale_keeps_the_function_and_turns_the_weights_faster():
    # BatchNorm after every convolution divides out the scale: in training mode (batch
    # statistics) the scaled network computes what the unscaled one does, and the gradient of
    # each convolution's weights is 1/scale times as large (van Laarhoven 2017).
    set_seed(0)
    plain = build_model(TrainConfig(width=8))
    set_seed(0)
    scaled = build_model(TrainConfig(width=8, conv_init_scale=0.5))
    convs = [(a, b) for a, b in zip(plain.modules(), scaled.modules()) if isinstance(a, nn.Conv2d)]
    assert len(convs) == 20  # the stem, 16 in the blocks, 3 projection shortcuts
    for a, b in convs:
        torch.testing.assert_close(b.weight, 0.5 * a.weight)
    torch.testing.assert_close(scaled.fc.weight, plain.fc.weight)  # no BatchNorm after the head
    # In float64 (BatchNorm's backward cancels large terms: float32 leaves about 1% of error), and
    # with BatchNorm's eps, which the scale does not divide out, made negligible.
    images, labels = torch.randn(16, 3, 32, 32, dtype=torch.float64), torch.arange(16) % 10
    losses = []
    for model in (plain, scaled):
        for norm in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            norm.eps = 1e-12
        loss = nn.functional.cross_entropy(model.double().train()(images), labels)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=0)
    for a, b in convs:
        torch.testing.assert_close(b.weight.grad, 2.0 * a.weight.grad, rtol=1e-6, atol=1e-12)
    with pytest.raises(ConfigError, match="trained weights.*--conv-init-scale"):
        TrainConfig(conv_init_scale=0.5, init="imagenet", stem="imagenet", width=64)


def test_ramped_ema_needs_an_average():
    with pytest.raises(ConfigError, match="ema_ramp.*set --ema"):
        TrainConfig(ema_ramp=True)
    TrainConfig(ema=0.95, ema_ramp=True, lookahead=5)  # airbench's Lookahead: accepted


def test_flip_tta_is_the_mean_of_the_two_views_softmax():
    torch.manual_seed(0)
    model = resnet18(width=8).eval()
    images, labels = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    pred = predict(model, [(images, labels)], "cpu", channels_last=False, tta=True)
    with torch.no_grad():
        expected = (model(images).softmax(1) + model(images.flip(-1)).softmax(1)) / 2
    np.testing.assert_allclose(pred.probs, expected.numpy(), rtol=1e-4, atol=1e-6)


def test_shifted_views_move_the_image_with_mirrored_edges():
    images = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    views = tta_views(images, shift=1)
    assert len(views) == 6 and all(v.shape == images.shape for v in views)
    reference = np.pad(images.numpy(), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")  # NumPy
    expected = [images.numpy(), reference[..., :5, :5], reference[..., 2:, 2:]]
    for i, view in enumerate(expected):
        np.testing.assert_array_equal(views[2 * i].numpy(), view)
        np.testing.assert_array_equal(views[2 * i + 1].numpy(), view[..., ::-1])
    np.testing.assert_array_equal(views[2][..., 1:, 1:], images[..., :-1, :-1])  # moved 1 pixel
    assert len(tta_views(images)) == 2 and views_per_image(tta=True, tta_shift=1) == 6


def test_six_view_tta_is_the_mean_of_the_six_views_softmax():
    torch.manual_seed(0)
    model = resnet18(width=8).eval()
    images, labels = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    pred = predict(model, [(images, labels)], "cpu", channels_last=False, tta=True, tta_shift=2)
    padded = torch.from_numpy(np.pad(images.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)), "reflect"))
    with torch.no_grad():
        views = [images, padded[..., :32, :32], padded[..., 4:, 4:]]
        expected = sum(model(v).softmax(1) + model(v.flip(-1)).softmax(1) for v in views) / 6
    np.testing.assert_allclose(pred.probs, expected.numpy(), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="--tta"):
        TrainConfig(tta_shift=1)


def test_flip_tta_loss_stays_finite_when_a_probability_underflows():
    """Early in training, eval-mode BatchNorm can give logits hundreds apart: softmax then
    underflows to 0 for the true class, and log(mean(softmax)) would be -inf."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, 3))
    with torch.no_grad():
        model[1].weight.mul_(1_000)
    images, labels = torch.randn(8, 3, 2, 2), torch.arange(8) % 3
    pred = predict(model, [(images, labels)], "cpu", channels_last=False, tta=True)
    assert np.isfinite(pred.logits).all() and np.isfinite(pred.loss)
    with torch.no_grad():  # the plain cross-entropy of each view bounds the averaged one
        worst = max(nn.functional.cross_entropy(model(v), labels, reduction="none").max()
                    for v in (images, images.flip(-1)))  # fmt: skip
    assert pred.loss <= float(worst)


# --------------------------------------------------------------------------------------------------
# The time budget
# --------------------------------------------------------------------------------------------------


def test_whole_epochs_by_hand():
    speed = Throughput(train=0.5, eval=0.1)  # seconds per batch
    # 600 s budget, 30 s spent; test 20 batches (2 s) and the report; each epoch 100 x 0.5 + 10 x 0.1
    left = (600 - 30) * (1 - SAFETY_MARGIN) - 2.0 - REPORT_SECONDS
    assert plan_steps(600, 30, speed, 100, 10, 20) // 100 == math.floor(left / 51.0)
    assert plan_steps(60, 30, speed, 100, 10, 20) // 100 == 0


def test_plan_steps_by_hand():
    speed = Throughput(train=0.5, eval=0.1)
    # left = (600 - 30) * 0.95 - 2 - 10 = 529.5 s. One epoch (100 steps + 1 s validation) is
    # 51 s, so 10 epochs take 510 s; an 11th validation (1 s) leaves 529.5 - 11 = 518.5 s of
    # training: 1037 steps, 37 of them in the 11th epoch.
    left = (600 - 30) * (1 - SAFETY_MARGIN) - 2.0 - REPORT_SECONDS
    assert left == pytest.approx(529.5)
    assert plan_steps(600, 30, speed, 100, 10, 20) == 1037
    # 60 s budget: left = 28.5 - 12 = 16.5 s; one validation (1 s), then 31 steps of a first epoch
    assert plan_steps(60, 30, speed, 100, 10, 20) == 31
    assert plan_steps(10, 5, speed, 100, 10, 20) == 0  # nothing left after the test and report


class FakeClock:
    """A clock that advances by a fixed step on every reading (time.perf_counter's stand-in)."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_fit_to_budget_chooses_the_steps_with_a_fake_clock(capsys):
    images = np.zeros((40, 32, 32, 3), dtype=np.uint8)
    from course_utils.data import CIFAR10Arrays

    data = CIFAR10Arrays(images, np.arange(40) % 10, tuple(str(i) for i in range(10)), "fake")
    loaders = (TensorLoader(data, 4), TensorLoader(data, 4), TensorLoader(data, 4))  # 10 each
    cfg = TrainConfig(width=8, minutes=10, batch_size=4)
    clock = FakeClock(step=TIMED_BATCHES * 0.3)  # each start/stop pair reads 0.3 s per batch
    planned, deadline = fit_to_budget(cfg, resnet18(width=8), loaders, torch.device("cpu"), 0.0,
                                      clock)  # fmt: skip
    # Readings: train start/stop, eval start/stop, then "now": 5 readings, each a step later.
    spent, speed = 5 * TIMED_BATCHES * 0.3, Throughput(0.3, 0.3)
    # by hand: (600 s - spent) less the margin, the test (10 x 0.3 s) and the report, over
    # an epoch of 10 training and 10 validation batches of 0.3 s each
    by_hand = math.floor(((600 - spent) * (1 - SAFETY_MARGIN) - 10 * 0.3 - REPORT_SECONDS) / 6.0)
    assert planned.steps == plan_steps(600, spent, speed, 10, 10, 10)
    assert planned.steps // 10 == by_hand
    assert planned.epochs == math.ceil(planned.steps / 10)  # the last one partial
    assert deadline == pytest.approx(600 * (1 - DEADLINE_MARGIN) - 10 * 0.3 - REPORT_SECONDS)
    out = capsys.readouterr().out
    assert planned.minutes == 10 and f"{planned.steps} steps of 4 images fit" in out
    # Six test views where validation (timed) has two: the test costs 3 timed batches per batch.
    six = replace(cfg, tta=True, tta_shift=1)
    planned, deadline = fit_to_budget(six, resnet18(width=8), loaders, torch.device("cpu"), 0.0,
                                      FakeClock(step=TIMED_BATCHES * 0.3))  # fmt: skip
    assert planned.steps == plan_steps(600, spent, speed, 10, 10, 30)
    assert deadline == pytest.approx(600 * (1 - DEADLINE_MARGIN) - 30 * 0.3 - REPORT_SECONDS)
    # Progressive resizing: half the steps on 24x24 crops, planned at their share of the pixels.
    half = replace(cfg, small_crops=0.5)
    planned, _ = fit_to_budget(half, resnet18(width=8), loaders, torch.device("cpu"), 0.0,
                               FakeClock(step=TIMED_BATCHES * 0.3))  # fmt: skip
    cheaper = Throughput(0.3 * (0.5 * (24 / 32) ** 2 + 0.5), 0.3)
    assert planned.steps == plan_steps(600, spent, cheaper, 10, 10, 10) > by_hand * 10
    with pytest.raises(BudgetError, match="Not even 50% of an epoch fits in 0.1 minutes"):
        fit_to_budget(
            TrainConfig(width=8, minutes=0.1), resnet18(width=8), loaders, "cpu", 0.0,
            FakeClock(step=TIMED_BATCHES * 0.3),
        )  # fmt: skip


# --------------------------------------------------------------------------------------------------
# The options inside fit: resumable, and the average is what is kept
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data(cifar_root: Path):
    splits = cifar10_splits(cifar_root, smoke=True)
    return splits.train.subset(np.arange(200)), splits.val.subset(np.arange(100))


def test_fit_ramps_the_average_over_the_steps_it_plans(tiny_data, tmp_path, monkeypatch):
    seen = []  # (step, total) of every ramped update
    original = AverageDecay.at
    monkeypatch.setattr(AverageDecay, "at", lambda self, step: seen.append((step, self.total))
                        or original(self, step))  # fmt: skip
    cfg = TrainConfig(width=8, epochs=2, batch_size=50, eval_batch_size=100, ema=0.9,
                      ema_ramp=True, patience=None)  # fmt: skip
    loaders = (TensorLoader(tiny_data[0], 50, shuffle=True, drop_last=True),
               TensorLoader(tiny_data[1], 100))  # fmt: skip
    fit(resnet18(width=8), *loaders, cfg, "cpu", out_dir=tmp_path / "run", progress=False)
    # 2 epochs of 4 steps: the first step starts the average, the 7 after it are ramped over 8
    # (each update asks once per kind of tensor: the float weights, BatchNorm's integer counts)
    assert sorted(set(seen)) == [(step, 8) for step in range(1, 8)]


@pytest.mark.parametrize("average", [{}, {"ema_ramp": True, "lookahead": 2}],
                         ids=["ema", "airbench-lookahead"])  # fmt: skip
def test_ema_and_mixing_resume_exactly(tiny_data, tmp_path: Path, average: dict):
    cfg = TrainConfig(width=8, epochs=3, batch_size=50, eval_batch_size=100, lr=0.05, ema=0.9,
                      mixup=0.4, cutmix=1.0, tta=True, patience=None, **average)  # fmt: skip

    def run(folder: str, **kwargs):
        loaders = (
            TensorLoader(tiny_data[0], 50, shuffle=True, augment=True, drop_last=True),
            TensorLoader(tiny_data[1], 100),
        )
        return fit(resnet18(width=8), *loaders, cfg, "cpu", out_dir=tmp_path / folder,
                   progress=False, **kwargs)  # fmt: skip

    set_seed(0)
    whole = run("whole")
    set_seed(0)
    first = run("part", stop_after_epoch=1)
    set_seed(99)  # another session: the checkpoint must restore everything that matters
    resumed = run("part", resume=first.last_checkpoint)
    a, b = load_checkpoint(whole.last_checkpoint), load_checkpoint(resumed.last_checkpoint)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
    for key in a["ema"]:
        torch.testing.assert_close(a["ema"][key], b["ema"][key], rtol=0, atol=0)
    assert whole.history["val_acc"].tolist() == resumed.history["val_acc"].tolist()
    # best.pt holds the averaged weights, which are what was validated
    best = load_checkpoint(whole.best_checkpoint)
    ema_weights = {k.removeprefix("module."): v for k, v in a["ema"].items() if k != "n_averaged"}
    if best["epoch"] == 3:
        torch.testing.assert_close(best["model"]["fc.weight"], ema_weights["fc.weight"])
    if cfg.lookahead:  # the last step (12 of 12) was a 2nd one: the average was copied back
        torch.testing.assert_close(a["model"]["fc.weight"], ema_weights["fc.weight"])
    else:
        assert not torch.equal(a["model"]["fc.weight"], ema_weights["fc.weight"])


def test_pacer_shortens_the_plan_and_the_linear_schedule_when_the_machine_slows_down(monkeypatch):
    from course_utils import training

    now = [0.0]  # a clock moved by hand: each batch "takes" the seconds the test says
    monkeypatch.setattr(training, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    cfg = TrainConfig(schedule="linear", epochs=3, steps=100, lr=1.0, warmup=0.2)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    scheduler = build_scheduler(optimizer, cfg, 40).scheduler
    pacer = Pacer(cfg, 40, deadline=100.0, scheduler=scheduler)
    pacer.validated(0.0)
    assert (pacer.total, pacer.epochs) == (100, 3)

    def epoch(number: int, seconds_per_batch: float) -> list[int]:
        served = []
        for batch in pacer.batches(range(40), number):
            served.append(batch)
            now[0] += seconds_per_batch
        return served

    assert epoch(1, 1.0) == list(range(40)) and pacer.total == 100  # 1 s a step: on plan
    # 2 s a step from now on: at step 50 (t = 60 s) only 40 s are left, room for 20 more steps
    assert epoch(2, 2.0) == list(range(30)) and (pacer.total, pacer.epochs) == (70, 2)
    assert scheduler.lr_lambdas[0].total == 70  # the line now ends at the new last step
    assert list(Pacer(cfg, 40, None, None).batches(range(40), 3)) == list(range(20))  # no clock


def test_pacer_plans_the_small_crop_epochs_of_progressive_resizing_at_their_cost(monkeypatch):
    from course_utils import training
    from course_utils.config import SMALL_CROP_COST

    now = [0.0]
    monkeypatch.setattr(training, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    cfg = TrainConfig(schedule="linear", epochs=4, steps=160, small_crops=0.5, lr=1.0)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    scheduler = build_scheduler(optimizer, cfg, 40).scheduler
    # The plan's cost: 80 small-crop steps and 80 whole-image ones, at 1 s a whole-image step.
    deadline = 80 * SMALL_CROP_COST + 80
    pacer = Pacer(cfg, 40, deadline=deadline, scheduler=scheduler)
    pacer.validated(0.0)
    # Epochs 1 and 2 start within the first half of the 160 steps; a plan that grows later does
    # not go back to small crops once an epoch trained on whole images.
    assert [pacer.small_crops(e, [True] * (e - 1)) for e in (1, 2, 3)] == [True, True, False]
    assert not pacer.small_crops(3, [True, False])
    # By brute force: the most steps after `done` whose cost fits in `seconds`.
    assert pacer.small_crops(1, [])
    for done, seconds in [(0, 10.0), (20, 50.0), (70, 30.0), (0, 500.0)]:
        costs = [SMALL_CROP_COST if step < 80 else 1.0 for step in range(done, done + 1000)]
        expected = sum(1 for total in np.cumsum(costs) if total <= seconds + 1e-9)
        assert pacer._steps_in(seconds, done, 160, whole=1.0) == expected

    def epoch(number: int, seconds_per_batch: float) -> list[int]:
        served = []
        pacer.small_crops(number, [True] * (number - 1))
        for batch in pacer.batches(range(40), number):
            served.append(batch)
            now[0] += seconds_per_batch
        return served

    # Small-crop steps at their planned cost keep the plan: the pacer does not mistake their
    # speed for the whole-image pace and grow the run.
    assert epoch(1, SMALL_CROP_COST) == list(range(40)) and pacer.total == 160
    assert epoch(2, SMALL_CROP_COST) == list(range(40)) and pacer.total == 160
    assert epoch(3, 1.0) == list(range(40)) and pacer.total == 160


def test_small_crops_are_windows_of_the_unpadded_image_and_switch_back(tmp_path: Path):
    from course_utils.config import SMALL_CROP
    from course_utils.data import CIFAR10Arrays

    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (6, 32, 32, 3), dtype=np.uint8)
    data = CIFAR10Arrays(images, np.arange(6) % 10, tuple(str(i) for i in range(10)), "fake")
    loader = TensorLoader(data, 6, augment=True, stats=((0, 0, 0), (1 / 255, 1 / 255, 1 / 255)))
    loader.use_small_crops(True)
    (x, _), = list(loader)
    assert x.shape == (6, 3, SMALL_CROP, SMALL_CROP) and x.min() >= 1  # no padding shows
    side = 32 - SMALL_CROP + 1
    for crop, source in zip(x.round().to(torch.uint8).permute(0, 2, 3, 1).numpy(), images):
        windows = [source[i:i + SMALL_CROP, j:j + SMALL_CROP] for i in range(side)
                   for j in range(side)]  # fmt: skip
        assert any(np.array_equal(crop, w) or np.array_equal(crop, w[:, ::-1]) for w in windows)
    loader.use_small_crops(False)
    assert next(iter(loader))[0].shape == (6, 3, 32, 32)
    with pytest.raises(ValueError, match="does not augment"):
        TensorLoader(data, 6).use_small_crops(True)
    with pytest.raises(ConfigError, match="--small-crops 0.5: only the tensor loader"):
        TrainConfig(small_crops=0.5, loader="torch")
    batches = [(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.int64))]  # not a TensorLoader
    with pytest.raises(ValueError, match="needs a data.TensorLoader"):
        fit(resnet18(width=4), batches, batches, TrainConfig(small_crops=0.5, epochs=1), "cpu",
            out_dir=tmp_path / "run", progress=False)  # fmt: skip
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_scaled_small_images_are_the_usual_crops_shrunk_with_torchvision_resize():
    from torchvision.transforms.v2 import functional as TF

    from course_utils.config import SMALL_CROP
    from course_utils.data import CIFAR10Arrays

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    data = CIFAR10Arrays(images, np.arange(8) % 10, tuple(str(i) for i in range(10)), "fake")

    def first_batch(scaled: bool | None) -> torch.Tensor:
        loader = TensorLoader(data, 8, shuffle=True, augment=True, seed=5)
        if scaled is not None:
            loader.use_small_crops(True, scaled=scaled)
        return next(iter(loader))[0]

    whole, scaled = first_batch(None), first_batch(True)  # the same seed: the same crops
    assert scaled.shape == (8, 3, SMALL_CROP, SMALL_CROP)
    expected = TF.resize(whole, [SMALL_CROP, SMALL_CROP], antialias=True)  # torchvision's Resize
    torch.testing.assert_close(scaled, expected, rtol=0, atol=1e-4)
    assert not torch.allclose(first_batch(False), scaled)  # crops of it are something else
    with pytest.raises(ConfigError, match="--small-scaled.*set --small-crops"):
        TrainConfig(small_scaled=True)


def test_lookahead_copies_the_average_back():
    model = nn.Linear(3, 2)
    ema = build_ema(model, 0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update_parameters(model)  # the first update copies; make the average differ first
    with torch.no_grad():
        model.weight.add_(2.0)
    ema.update_parameters(model)
    copy_average_into(model, ema)
    torch.testing.assert_close(model.weight, ema.module.weight)
    assert not torch.equal(model.weight, ema.module.weight + 1)


def test_alternate_flip_shows_each_image_once_each_way_in_two_epochs():
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    images[:, :, :16] = 0  # the left half dark: a flip moves the dark half to the right
    from course_utils.data import CIFAR10Arrays, set_loader_epoch

    data = CIFAR10Arrays(images, np.arange(16) % 10, tuple(str(i) for i in range(10)), "fake")
    flip_halves = Augmentation(alternate_flip=True)
    loader = TensorLoader(data, 16, shuffle=False, augment=flip_halves, seed=3)
    flipped = {}
    for epoch in (1, 2, 3):
        set_loader_epoch(loader, 3, epoch)
        (x, _), = list(loader)
        dark_right = x[:, :, 8:24, 26:].mean((1, 2, 3)) < x[:, :, 8:24, :6].mean((1, 2, 3))
        flipped[epoch] = dark_right
    assert torch.equal(flipped[1], ~flipped[2]) and torch.equal(flipped[1], flipped[3])
    assert 0 < int(flipped[1].sum()) < 16  # a random half, not all or none


def test_fit_runs_the_planned_steps_and_cuts_the_last_epoch(tiny_data, tmp_path: Path):
    cfg = TrainConfig(width=8, epochs=5, steps=10, batch_size=50, eval_batch_size=100, lr=0.05,
                      schedule="linear", patience=None)  # fmt: skip
    loaders = (
        TensorLoader(tiny_data[0], 50, shuffle=True, augment=True, drop_last=True),  # 4 batches
        TensorLoader(tiny_data[1], 100),
    )
    set_seed(0)
    result = fit(resnet18(width=8), *loaders, cfg, "cpu", out_dir=tmp_path, progress=False)
    assert result.epochs_run == 3  # 4 + 4 + 2 steps
    state = load_checkpoint(result.last_checkpoint)
    assert state["scheduler"]["last_epoch"] == 10  # the scheduler counted 10 optimizer steps
    assert result.config.steps == 10


def test_measure_throughput_divides_by_the_batches_a_small_loader_has():
    images = np.zeros((8, 32, 32, 3), dtype=np.uint8)
    from course_utils.data import CIFAR10Arrays

    data = CIFAR10Arrays(images, np.arange(8) % 10, tuple(str(i) for i in range(10)), "fake")
    tiny_eval = TensorLoader(data, 4)  # 2 batches, fewer than TIMED_BATCHES
    assert len(tiny_eval) < TIMED_BATCHES
    speed = measure_throughput(resnet18(width=8), TensorLoader(data, 1), tiny_eval,
                               TrainConfig(width=8), "cpu", FakeClock(step=1.0))  # fmt: skip
    # each timing reads the clock twice, one step apart: 1 s over the batches actually run
    assert speed.train == pytest.approx(1.0 / TIMED_BATCHES)  # 8 single images: all 8 timed
    assert speed.eval == pytest.approx(1.0 / 2)


def test_smaller_crops_are_windows_of_the_padded_image_and_evaluation_sees_whole_ones():
    from course_utils.data import CIFAR10Arrays

    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (6, 32, 32, 3), dtype=np.uint8)  # no zeros: padding shows
    data = CIFAR10Arrays(images, np.arange(6) % 10, tuple(str(i) for i in range(10)), "fake")
    loader = TensorLoader(data, 6, augment=Augmentation(crop_padding=2, crop_size=24),
                          stats=((0, 0, 0), (1 / 255, 1 / 255, 1 / 255)), seed=1)  # fmt: skip
    (x, _), = list(loader)
    assert x.shape == (6, 3, 24, 24)
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))  # NumPy's own zero padding
    for crop, source in zip(x.round().to(torch.uint8).permute(0, 2, 3, 1).numpy(), padded):
        windows = [source[i:i + 24, j:j + 24] for i in range(13) for j in range(13)]
        assert any(np.array_equal(crop, w) or np.array_equal(crop, w[:, ::-1]) for w in windows)
    # A run's configuration crops its training images only; validation sees whole ones.
    cfg = TrainConfig(crop_size=24, crop_padding=2, loader="tensor", batch_size=6,
                      eval_batch_size=6)  # fmt: skip
    train, whole, _ = build_loaders(Splits(data, data, data), cfg, (0, 0, 0), (1, 1, 1), "cpu")
    assert next(iter(train))[0].shape == (6, 3, 24, 24)
    assert next(iter(whole))[0].shape == (6, 3, 32, 32)
    with pytest.raises(ValueError, match="crop_size 40 does not fit"):
        TensorLoader(data, 6, augment=Augmentation(crop_padding=2, crop_size=40))


def test_image_size_resizes_every_split_and_needs_the_tensor_loader():
    """The seeds' Resize(227), as a run's configuration: training, validation and test images all
    reach the network at the same size."""
    from course_utils.data import CIFAR10Arrays

    images = np.random.default_rng(2).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    data = CIFAR10Arrays(images, np.arange(6) % 10, tuple(str(i) for i in range(10)), "fake")
    cfg = TrainConfig(image_size=227, stem="imagenet", batch_size=6, eval_batch_size=6)
    loaders = build_loaders(Splits(data, data, data), cfg, (0, 0, 0), (1, 1, 1), "cpu")
    assert [next(iter(loader))[0].shape for loader in loaders] == [(6, 3, 227, 227)] * 3
    with pytest.raises(ConfigError, match="--image-size 64: only the tensor loader"):
        TrainConfig(image_size=64, rotation=10.0)
    with pytest.raises(ConfigError, match=r"image_size must be pixels in \[32, 512\], got 16"):
        TrainConfig(image_size=16)


def test_augment_true_is_the_default_augmentation():
    from course_utils.data import CIFAR10Arrays

    images = np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    data = CIFAR10Arrays(images, np.arange(8) % 10, tuple(str(i) for i in range(10)), "fake")
    plain, spelled_out = (TensorLoader(data, 4, shuffle=True, augment=a, seed=2)
                          for a in (True, Augmentation(crop_padding=4, crop_size=32)))  # fmt: skip
    for (x, y), (x2, y2) in zip(plain, spelled_out):
        assert torch.equal(x, x2) and torch.equal(y, y2)
