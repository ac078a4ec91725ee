"""Tests for course_utils.models, checked against torchvision's ResNets as the reference.

torchvision models are always built with ``weights=None``: nothing is downloaded.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from course_utils.models import (
    RESNET_SPECS,
    BasicBlock,
    Bottleneck,
    GhostBatchNorm2d,
    PadShortcut,
    ResNet,
    cifar_resnet,
    count_parameters,
    gradient_norms,
    model_architecture,
    parameters_per_stage,
    plain_resnet,
    replace_batchnorm,
    resnet,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    use_ghost_batchnorm,
    whitening_init,
)

DEPTHS = (18, 34, 50, 101, 152)
FACTORIES = {18: resnet18, 34: resnet34, 50: resnet50, 101: resnet101, 152: resnet152}
IMAGENET_CLASSES = 1000
# ResNet-18 with a 3x3 stem and a 10-class head: torchvision's 11,689,512, less its 7x7 stem conv
# (9,408) and 1000-class head (513,000), plus a 3x3 stem conv (1,728) and a 10-class head (5,130).
CIFAR_RESNET18_PARAMS = 11_173_962


def torchvision_resnet(depth: int) -> nn.Module:
    return getattr(torchvision.models, f"resnet{depth}")(weights=None)


def randomise_batchnorm(model: nn.Module, generator: torch.Generator) -> None:
    """Give every BatchNorm non-trivial weights and running statistics, so that a mix-up of two
    BatchNorms (or a missing one) changes the output instead of hiding behind weight 1, bias 0."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                # gamma < 1 keeps the output of a 152-layer network of moderate size
                module.weight.uniform_(0.2, 0.6, generator=generator)
                module.bias.normal_(0.0, 0.1, generator=generator)
                module.running_mean.normal_(0.0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)


def blocks_of(model: ResNet) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck))]


# --- parameter counts and torchvision equivalence ------------------------------------------------


def test_cifar_resnet18_parameter_count() -> None:
    model = resnet18()
    assert count_parameters(model) == CIFAR_RESNET18_PARAMS
    reference = torchvision_resnet(18)
    from_torchvision = (
        sum(p.numel() for p in reference.parameters())
        - reference.conv1.weight.numel()
        + 64 * 3 * 3 * 3  # 3x3 stem conv, 3 -> 64 channels
        - sum(p.numel() for p in reference.fc.parameters())
        + 512 * 10
        + 10  # 10-class head
    )
    assert count_parameters(model) == from_torchvision
    assert count_parameters(ResNet(BasicBlock, (2, 2, 2, 2), num_classes=10)) == (
        CIFAR_RESNET18_PARAMS
    )


@pytest.mark.parametrize("depth", DEPTHS)
def test_imagenet_stem_matches_torchvision(depth: int) -> None:
    torch.manual_seed(depth)
    reference = torchvision_resnet(depth)
    ours = FACTORIES[depth](stem="imagenet", num_classes=IMAGENET_CLASSES)

    # the same parameters, under the same names, with the same shapes
    ref_count = sum(p.numel() for p in reference.parameters())
    assert count_parameters(ours) == ref_count
    ref_shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    our_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert our_shapes == ref_shapes

    # and the same function: load torchvision's weights, compare outputs in eval mode
    generator = torch.Generator().manual_seed(depth)
    randomise_batchnorm(reference, generator)
    ours.load_state_dict(reference.state_dict(), strict=True)
    reference.eval()
    ours.eval()
    x = torch.randn(2, 3, 64, 64, generator=generator)  # small input: ResNet-152 on 2 CPU cores
    with torch.no_grad():
        expected = reference(x)
        actual = ours(x)
        features = ours.forward_features(x)
    assert actual.shape == (2, IMAGENET_CLASSES)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    # the features are what torchvision's head sees
    torch.testing.assert_close(reference.fc(features), expected, atol=1e-5, rtol=1e-5)


def test_torchvision_loads_our_weights() -> None:
    ours = resnet18(stem="imagenet", num_classes=IMAGENET_CLASSES)
    reference = torchvision_resnet(18)
    reference.load_state_dict(ours.state_dict(), strict=True)


def test_cifar_stem_keys_match_torchvision() -> None:
    ours = resnet18(num_classes=IMAGENET_CLASSES)
    reference = torchvision_resnet(18)
    assert list(ours.state_dict()) == list(reference.state_dict())
    assert ours.conv1.weight.shape == (64, 3, 3, 3)  # torchvision's is (64, 3, 7, 7)
    assert isinstance(ours.maxpool, nn.Identity)


def test_factories_agree_with_specs() -> None:
    for depth, (block, layers) in RESNET_SPECS.items():
        model = resnet(depth, width=8)
        stages = [model.layer1, model.layer2, model.layer3, model.layer4]
        assert tuple(len(stage) for stage in stages) == layers
        assert all(isinstance(b, block) for b in blocks_of(model))
        # 2 layers per BasicBlock or 3 per Bottleneck, plus the stem conv and the fc
        convs_per_block = 2 if block is BasicBlock else 3
        assert convs_per_block * sum(layers) + 2 == depth


def test_parameters_per_stage_matches_torchvision() -> None:
    ours = resnet18(stem="imagenet", num_classes=IMAGENET_CLASSES)
    reference = torchvision_resnet(18)

    def n(*modules: nn.Module) -> int:
        return sum(p.numel() for m in modules for p in m.parameters())

    expected = {
        "stem": n(reference.conv1, reference.bn1),
        "layer1": n(reference.layer1),
        "layer2": n(reference.layer2),
        "layer3": n(reference.layer3),
        "layer4": n(reference.layer4),
        "fc": n(reference.fc),
    }
    per_stage = parameters_per_stage(ours)
    assert per_stage == expected
    assert list(per_stage) == list(expected)
    assert sum(per_stage.values()) == count_parameters(ours)


def test_count_parameters_trainable_only() -> None:
    model = resnet18(width=8)
    total = sum(p.numel() for p in model.parameters())
    model.layer1.requires_grad_(False)
    frozen = sum(p.numel() for p in model.layer1.parameters())
    assert count_parameters(model, trainable_only=False) == total
    assert count_parameters(model) == total - frozen
    assert parameters_per_stage(model)["layer1"] == 0


# --- shapes --------------------------------------------------------------------------------------

STEM_STRIDE = {"cifar": 1, "imagenet": 4}  # 3x3 stride-1 conv | 7x7 stride-2 conv + stride-2 pool


@pytest.mark.parametrize("size", [32, 224])
@pytest.mark.parametrize("width", [16, 64])
@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_resnet18_shapes(stem: str, width: int, size: int) -> None:
    torch.manual_seed(0)
    model = resnet18(stem=stem, width=width).eval()
    x = torch.randn(2, 3, size, size)
    side = size // STEM_STRIDE[stem]
    expected = {
        "stem": (2, width, side, side),
        "layer1": (2, width, side, side),
        "layer2": (2, 2 * width, side // 2, side // 2),
        "layer3": (2, 4 * width, side // 4, side // 4),
        "layer4": (2, 8 * width, side // 8, side // 8),
        "pool": (2, 8 * width),
        "fc": (2, 10),
    }
    with torch.no_grad():
        outputs = model.stage_outputs(x)
        logits = model(x)
        features = model.forward_features(x)
    assert list(outputs) == list(expected)  # keys, in the order the input flows through them
    assert {k: tuple(v.shape) for k, v in outputs.items()} == expected
    assert logits.shape == (2, 10)
    assert features.shape == (2, 8 * width) == (2, model.num_features)
    torch.testing.assert_close(outputs["fc"], logits)
    torch.testing.assert_close(outputs["pool"], features)


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_bottleneck_shapes(stem: str) -> None:
    width = 16
    model = resnet50(stem=stem, width=width, num_classes=7).eval()
    side = 32 // STEM_STRIDE[stem]
    with torch.no_grad():
        outputs = model.stage_outputs(torch.randn(2, 3, 32, 32))
    assert outputs["stem"].shape == (2, width, side, side)
    assert outputs["layer1"].shape == (2, 4 * width, side, side)  # expansion 4
    assert outputs["layer4"].shape == (2, 4 * 8 * width, side // 8, side // 8)
    assert outputs["pool"].shape == (2, 4 * 8 * width)
    assert outputs["fc"].shape == (2, 7)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="cifar.*imagenet"):
        resnet18(stem="tiny")
    with pytest.raises(ValueError, match="18"):
        resnet(20)
    with pytest.raises(ValueError, match="shortcut"):
        plain_resnet(18, zero_init_residual=True)


def basic_stage_parameters(c_in: int, c: int, stride: int) -> int:
    """Parameters of a stage of two BasicBlocks, counted by hand: two 3x3 convolutions and two
    BatchNorms (weight and bias) per block, and a 1x1 projection with its BatchNorm where the
    first block changes the shape."""
    first = 9 * c_in * c + 9 * c * c + 2 * (2 * c)
    if stride != 1 or c_in != c:
        first += c_in * c + 2 * c
    return first + 9 * c * c * 2 + 2 * (2 * c)


@pytest.mark.parametrize(
    ("width", "multiples"), [(8, (1, 4, 12, 16)), (16, (1, 2, 6, 6)), (16, (1, 2, 4, 8))]
)
def test_stage_multiples_set_each_stage_width(width: int, multiples: tuple[int, ...]) -> None:
    model = resnet18(width=width, stage_multiples=multiples)
    channels = [width * m for m in multiples]
    outputs = model.stage_outputs(torch.randn(2, 3, 32, 32))
    for i, (name, c) in enumerate(zip(["layer1", "layer2", "layer3", "layer4"], channels)):
        assert outputs[name].shape == (2, c, 32 >> i, 32 >> i)
    expected = {
        "stem": 27 * width + 2 * width,  # 3x3 conv from RGB, no bias, and its BatchNorm
        **{
            f"layer{i + 1}": basic_stage_parameters(c_in, c, 1 if i == 0 else 2)
            for i, (c_in, c) in enumerate(zip([width, *channels], channels))
        },
        "fc": channels[-1] * 10 + 10,
    }
    assert parameters_per_stage(model) == expected
    if multiples == (1, 2, 4, 8):  # the default, and the paper's doubling
        assert count_parameters(model) == count_parameters(resnet18(width=width))
        assert "stage_multiples" not in model_architecture(model)
    else:
        assert model_architecture(model)["stage_multiples"] == list(multiples)


def test_default_stage_multiples_give_the_paper_network() -> None:
    assert count_parameters(resnet18(stage_multiples=(1, 2, 4, 8))) == CIFAR_RESNET18_PARAMS
    assert resnet18().stage_multiples == (1, 2, 4, 8)
    assert cifar_resnet(20).stage_multiples == (1, 2, 4)  # three stages: 16, 32, 64 channels


@pytest.mark.parametrize("multiples", [(1, 2, 4), (1, 2, 4, 0), (1, 2, 4.5, 8), (1, 2, 4, 8, 16)])
def test_bad_stage_multiples_raise(multiples: tuple) -> None:
    with pytest.raises(ValueError, match="stage_multiples must give one whole number >= 1"):
        resnet18(width=8, stage_multiples=multiples)


# --- ghost BatchNorm -----------------------------------------------------------------------------


@pytest.mark.parametrize(("batch", "ghost", "sizes"), [(32, 8, [8, 8, 8, 8]), (20, 8, [10, 10])])
def test_ghost_batchnorm_normalizes_each_group_on_its_own(batch: int, ghost: int, sizes: list):
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=(batch, 3, 4, 4)).astype(np.float32)
    layer = GhostBatchNorm2d(3, ghost, momentum=0.1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.0, 0.5, 2.0]))
        layer.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    out = layer.train()(torch.from_numpy(x)).detach().numpy()

    running_mean, running_var, start = np.zeros(3), np.ones(3), 0
    for size in sizes:  # NumPy: each group normalized by its own statistics, one after the other
        group = x[start : start + size]
        mean, var = group.mean(axis=(0, 2, 3)), group.var(axis=(0, 2, 3))
        expected = (group - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5)
        expected = expected * np.array([1.0, 0.5, 2.0])[:, None, None] + np.array([0, 1, -1])[
            :, None, None
        ]
        np.testing.assert_allclose(out[start : start + size], expected, atol=1e-4)
        unbiased = group.var(axis=(0, 2, 3), ddof=1)
        running_mean = 0.9 * running_mean + 0.1 * mean
        running_var = 0.9 * running_var + 0.1 * unbiased
        start += size
    np.testing.assert_allclose(layer.running_mean.numpy(), running_mean, rtol=1e-5)
    np.testing.assert_allclose(layer.running_var.numpy(), running_var, rtol=1e-5)


def test_ghost_batchnorm_is_plain_batchnorm_in_eval_and_for_small_batches():
    torch.manual_seed(0)
    plain, ghost = nn.BatchNorm2d(4), GhostBatchNorm2d(4, 16)
    assert ghost.state_dict().keys() == plain.state_dict().keys()  # checkpoints load either way
    x = torch.randn(16, 4, 3, 3)  # one group: the whole batch
    torch.testing.assert_close(ghost.train()(x), plain.train()(x))
    torch.testing.assert_close(ghost.running_var, plain.running_var)
    x = torch.randn(64, 4, 3, 3)
    torch.testing.assert_close(ghost.eval()(x), plain.eval()(x))
    with pytest.raises(ValueError, match="at least 2 images"):
        GhostBatchNorm2d(4, 1)


def test_use_ghost_batchnorm_keeps_the_network():
    torch.manual_seed(0)
    model = resnet18(width=8).eval()
    model.bn1.weight.requires_grad_(False)
    x = torch.randn(4, 3, 32, 32)
    before, state = model(x), {k: v.clone() for k, v in model.state_dict().items()}
    use_ghost_batchnorm(model, 32)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 20 and all(type(m) is GhostBatchNorm2d for m in norms)  # 17 + 3 shortcuts
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    torch.testing.assert_close(model(x), before)
    assert not model.bn1.weight.requires_grad and model.layer1[0].bn1.weight.requires_grad


def test_replace_batchnorm_reaches_every_depth_and_only_the_layers_chosen():
    class Marked(nn.BatchNorm2d):
        pass

    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4),
        nn.Sequential(nn.Sequential(nn.BatchNorm2d(5)), Marked(6)), nn.BatchNorm1d(7),
    )  # fmt: skip
    keys = model.state_dict().keys()
    replaced = []

    def make(bn: nn.BatchNorm2d) -> nn.BatchNorm2d:
        replaced.append(bn.num_features)
        return Marked(bn.num_features)

    assert replace_batchnorm(model, make) is model
    assert sorted(replaced) == [4, 5]  # not the subclass, not BatchNorm1d
    assert type(model[1]) is Marked and type(model[2][0][0]) is Marked
    assert model.state_dict().keys() == keys
    replace_batchnorm(model, make, which=lambda bn: bn.num_features == 6)
    assert sorted(replaced) == [4, 5, 6]


# --- initialisation ------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [18, 50])
def test_zero_init_residual(depth: int) -> None:
    model = resnet(depth, width=16, zero_init_residual=True)
    for block in blocks_of(model):
        last = block.bn3 if isinstance(block, Bottleneck) else block.bn2
        assert torch.all(last.weight == 0)
        others = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d) and m is not last]
        assert all(torch.all(m.weight == 1) for m in others)
    default = resnet(depth, width=16)
    default_bns = [m for m in default.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) for m in default_bns)

    # a block whose residual branch starts at zero is the identity (on ReLU outputs, x >= 0)
    stage = model.layer1 if depth == 18 else model.layer1[1:]  # ResNet-50's layer1[0] projects
    x = torch.relu(torch.randn(4, stage[0].conv1.in_channels, 8, 8))
    torch.testing.assert_close(stage(x), x)


def test_kaiming_init() -> None:
    torch.manual_seed(0)
    model = resnet18()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20  # 1 stem + 16 in blocks + 3 projections
    for layer in convs:
        fan_out = layer.out_channels * layer.kernel_size[0] * layer.kernel_size[1]
        expected_std = math.sqrt(2.0 / fan_out)  # He et al. 2015, for ReLU
        assert layer.weight.std().item() == pytest.approx(expected_std, rel=0.1)
        assert abs(layer.weight.mean().item()) < 0.1 * expected_std


# --- blocks, with and without the shortcut -------------------------------------------------------


def batchnorm_eval(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    return x * scale[None, :, None, None] + shift[None, :, None, None]


def conv(x: torch.Tensor, layer: nn.Conv2d) -> torch.Tensor:
    return F.conv2d(x, layer.weight, stride=layer.stride, padding=layer.padding)


def residual_branch(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The block's main path, written out by hand from its parameters."""
    out = torch.relu(batchnorm_eval(conv(x, block.conv1), block.bn1))
    if isinstance(block, Bottleneck):
        out = torch.relu(batchnorm_eval(conv(out, block.conv2), block.bn2))
        return batchnorm_eval(conv(out, block.conv3), block.bn3)
    return batchnorm_eval(conv(out, block.conv2), block.bn2)


@pytest.mark.parametrize("block_type", [BasicBlock, Bottleneck])
@pytest.mark.parametrize(("inplanes", "planes", "stride"), [(16, 16, 1), (16, 32, 1), (16, 32, 2)])
def test_block_against_hand_written(
    block_type: type[BasicBlock | Bottleneck], inplanes: int, planes: int, stride: int
) -> None:
    torch.manual_seed(0)
    if block_type is Bottleneck and inplanes == planes:
        inplanes = planes * Bottleneck.expansion  # the shape-keeping Bottleneck takes 4x planes
    out_planes = planes * block_type.expansion
    residual = block_type(inplanes, planes, stride)
    plain = block_type(inplanes, planes, stride, shortcut=False)
    generator = torch.Generator().manual_seed(1)
    randomise_batchnorm(residual, generator)
    randomise_batchnorm(plain, generator)
    residual.eval()
    plain.eval()
    x = torch.randn(2, inplanes, 8, 8)

    projects = stride != 1 or inplanes != out_planes
    assert (residual.downsample is not None) == projects
    assert plain.downsample is None
    with torch.no_grad():
        if projects:
            identity = batchnorm_eval(conv(x, residual.downsample[0]), residual.downsample[1])
        else:
            identity = x
        expected_residual = torch.relu(residual_branch(residual, x) + identity)
        expected_plain = torch.relu(residual_branch(plain, x))
        torch.testing.assert_close(residual(x), expected_residual)
        torch.testing.assert_close(plain(x), expected_plain)
    assert expected_plain.shape == (2, out_planes, 8 // stride, 8 // stride)


@pytest.mark.parametrize("depth", [18, 50])
def test_plain_resnet_has_no_shortcut(depth: int) -> None:
    plain = plain_resnet(depth, width=16)
    residual = resnet(depth, width=16)
    assert all(block.downsample is None for block in blocks_of(plain))
    assert not any("downsample" in name for name, _ in plain.named_modules())
    assert not any("downsample" in key for key in plain.state_dict())
    projections = sum(
        p.numel()
        for b in blocks_of(residual)
        if b.downsample is not None
        for p in b.downsample.parameters()
    )
    assert projections > 0
    assert count_parameters(plain) == count_parameters(residual) - projections


# --- training ------------------------------------------------------------------------------------


def fixed_batch(n: int = 32, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, size, size, generator=generator)
    y = torch.randint(0, 10, (n,), generator=generator)
    return x, y


def train_steps(model: nn.Module, steps: int, lr: float = 3e-3) -> list[float]:
    x, y = fixed_batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_small_resnet18_overfits_one_batch() -> None:
    torch.manual_seed(0)
    losses = train_steps(resnet18(width=16), steps=15)
    assert losses[0] > 1.5  # about ln(10) = 2.3 at the start
    assert losses[-1] < 0.05


def test_plain_resnet_still_trains() -> None:
    torch.manual_seed(0)
    losses = train_steps(plain_resnet(18, width=16), steps=8)
    assert losses[-1] < 0.5 * losses[0]


def test_gradient_norms() -> None:
    torch.manual_seed(0)
    model = resnet18(width=8)
    x, y = fixed_batch(n=8)
    norms = gradient_norms(model, x, y)
    conv_names = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert list(norms) == conv_names  # every conv, from input to output
    assert all(math.isfinite(v) and v > 0 for v in norms.values())

    # the same numbers from an independent autograd call
    weights = [model.get_submodule(name).weight for name in conv_names]
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), weights)
    for name, grad in zip(conv_names, grads):
        assert norms[name] == pytest.approx(grad.norm().item(), rel=1e-4)

    plain = plain_resnet(18, width=8)
    assert list(gradient_norms(plain, x, y)) == [
        name for name in conv_names if "downsample" not in name
    ]


# --------------------------------------------------------------------------------------------------
# The paper's CIFAR-10 networks (He et al. 2016, Sec. 4.2 and Table 6)
# --------------------------------------------------------------------------------------------------

#: Table 6 of He et al. (2016): parameters of the CIFAR-10 ResNets, as the paper prints them.
PAPER_CIFAR_PARAMS = {20: 0.27e6, 32: 0.46e6, 44: 0.66e6, 56: 0.85e6, 110: 1.7e6}


@pytest.mark.parametrize("depth", sorted(PAPER_CIFAR_PARAMS))
def test_cifar_resnet_parameter_counts_match_the_paper(depth: int) -> None:
    option_a = count_parameters(cifar_resnet(depth, "A"))
    digits = 2 if depth < 110 else 1  # the paper rounds to 0.27M ... 1.7M
    assert round(option_a / 1e6, digits) == pytest.approx(PAPER_CIFAR_PARAMS[depth] / 1e6)
    assert count_parameters(cifar_resnet(depth, "none")) == option_a  # padding has no weights
    # option B adds two projections (16->32 and 32->64, 1x1 conv + BatchNorm) and nothing else
    projections = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert count_parameters(cifar_resnet(depth, "B")) == option_a + projections


@pytest.mark.parametrize("depth", [20, 56])
def test_cifar_resnet_has_6n_plus_2_weighted_layers_and_the_paper_shapes(depth: int) -> None:
    model = cifar_resnet(depth).eval()
    main_path = [
        m for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and "downsample" not in name
    ]  # fmt: skip
    assert len(main_path) == depth
    x = torch.randn(2, 3, 32, 32)
    out = model.layer1(model.relu(model.bn1(model.conv1(x))))
    assert out.shape == (2, 16, 32, 32)
    assert model.layer3(model.layer2(out)).shape == (2, 64, 8, 8)
    assert model(x).shape == (2, 10)


def test_option_a_shortcut_is_the_subsampled_input_padded_with_zeros() -> None:
    x = torch.randn(2, 16, 32, 32)
    out = PadShortcut(16, 32, stride=2)(x)
    assert out.shape == (2, 32, 16, 16)
    torch.testing.assert_close(out[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(out[:, 16:]) == 0
    plain = cifar_resnet(20, "none")
    assert all(block.downsample is None and not block.shortcut for block in plain.layer2)
    with pytest.raises(ValueError, match="6n"):
        cifar_resnet(18)
    with pytest.raises(ValueError, match="shortcut"):
        cifar_resnet(20, "C")


def paper_cifar_keys(depth: int, shortcut: str) -> list[str]:
    """The state dict keys of a CIFAR ResNet, written out from the paper's description with
    torchvision's names: the stem, three stages of n BasicBlocks and the head; with option B also
    a projection (1x1 conv + BatchNorm) in the first block of layer2 and of layer3."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["conv1.weight", *(f"bn1.{name}" for name in bn)]
    for stage in (1, 2, 3):
        for index in range((depth - 2) // 6):
            block = f"layer{stage}.{index}"
            keys += [f"{block}.conv1.weight", *(f"{block}.bn1.{name}" for name in bn)]
            keys += [f"{block}.conv2.weight", *(f"{block}.bn2.{name}" for name in bn)]
            if shortcut == "B" and stage > 1 and index == 0:
                keys += [f"{block}.downsample.0.weight"]
                keys += [f"{block}.downsample.1.{name}" for name in bn]
    return keys + ["fc.weight", "fc.bias"]


@pytest.mark.parametrize("shortcut", ["A", "B", "none"])
def test_cifar_resnet_is_a_three_stage_resnet(shortcut: str) -> None:
    model = cifar_resnet(20, shortcut).eval()
    assert isinstance(model, ResNet)
    assert list(model.state_dict()) == paper_cifar_keys(20, shortcut)  # no layer4
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        outputs = model.stage_outputs(x)
        features = model.forward_features(x)
    assert list(outputs) == ["stem", "layer1", "layer2", "layer3", "pool", "fc"]
    assert outputs["layer3"].shape == (2, 64, 8, 8)
    assert features.shape == (2, 64) == (2, model.num_features)
    torch.testing.assert_close(outputs["pool"], features)
    per_stage = parameters_per_stage(model)
    assert list(per_stage) == ["stem", "layer1", "layer2", "layer3", "fc"]
    assert sum(per_stage.values()) == count_parameters(model)


@pytest.mark.parametrize(
    ("shortcut", "downsample", "projections"),
    [("A", PadShortcut, 0), ("B", nn.Sequential, 2), ("none", type(None), 0)],
)
def test_cifar_resnet_builds_only_the_shortcuts_it_keeps(
    monkeypatch: pytest.MonkeyPatch, shortcut: str, downsample: type, projections: int
) -> None:
    """_make_layer decides each shortcut before it builds the block: option A makes no projection
    that is then thrown away."""
    built = []
    conv_init = nn.Conv2d.__init__

    def counting_init(self: nn.Conv2d, *args: object, **kwargs: object) -> None:
        built.append(self)
        conv_init(self, *args, **kwargs)

    monkeypatch.setattr(nn.Conv2d, "__init__", counting_init)
    model = cifar_resnet(20, shortcut)
    kept = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(kept) == 1 + 18 + projections  # stem, 9 blocks of two, and option B's 1x1 convs
    assert {id(m) for m in built} == {id(m) for m in kept} and len(built) == len(kept)
    assert model.layer1[0].downsample is None  # 16 -> 16 channels at stride 1: x itself fits
    assert type(model.layer2[0].downsample) is downsample
    assert type(model.layer3[0].downsample) is downsample


@pytest.mark.parametrize("block_type", [BasicBlock, Bottleneck])
def test_block_uses_the_downsample_it_is_given(block_type: type[BasicBlock | Bottleneck]) -> None:
    torch.manual_seed(0)
    out_planes = 8 * block_type.expansion
    pad = PadShortcut(4, out_planes, stride=2)
    block = block_type(4, 8, stride=2, downsample=pad)
    randomise_batchnorm(block, torch.Generator().manual_seed(1))
    block.eval()
    assert block.downsample is pad
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in pad.modules())
    x = torch.randn(2, 4, 8, 8)
    zeros = torch.zeros(2, out_planes - 4, 4, 4)
    with torch.no_grad():
        expected = torch.relu(residual_branch(block, x) + torch.cat([x[:, :, ::2, ::2], zeros], 1))
        torch.testing.assert_close(block(x), expected)
    with pytest.raises(ValueError, match="plain block"):
        block_type(4, 8, stride=2, shortcut=False, downsample=pad)


def test_resnet_shortcut_takes_a_kind_or_a_boolean() -> None:
    for flag, kind in [(True, "B"), (False, "none")]:
        by_flag = ResNet(BasicBlock, (1, 1, 1, 1), width=8, shortcut=flag)
        by_kind = ResNet(BasicBlock, (1, 1, 1, 1), width=8, shortcut=kind)
        assert list(by_flag.state_dict()) == list(by_kind.state_dict())
        assert by_flag.shortcut_type == by_kind.shortcut_type == kind
        assert model_architecture(by_flag) == model_architecture(by_kind)
    option_a = ResNet(BasicBlock, (1, 1, 1, 1), width=8, shortcut="A")
    firsts = [option_a.layer2[0], option_a.layer3[0], option_a.layer4[0]]
    assert all(isinstance(block.downsample, PadShortcut) for block in firsts)
    plain = ResNet(BasicBlock, (1, 1, 1, 1), width=8, shortcut=False)
    assert count_parameters(option_a) == count_parameters(plain)  # padding has no weights
    assert model_architecture(option_a)["shortcut"] == "A"
    with pytest.raises(ValueError, match="shortcut"):
        ResNet(BasicBlock, (1, 1, 1, 1), shortcut="C")
    with pytest.raises(ValueError, match="3"):
        ResNet(BasicBlock, (1, 1))


def test_cifar_resnet_architecture() -> None:
    assert model_architecture(cifar_resnet(20)) == {
        "name": "resnet20_cifar",
        "shortcut": "A",
        "num_classes": 10,
    }
    assert model_architecture(cifar_resnet(56, "none", num_classes=100)) == {
        "name": "plain56_cifar",
        "shortcut": "none",
        "num_classes": 100,
    }
    # three stages that are not the paper's network get the general description
    other = model_architecture(ResNet(BasicBlock, (3, 3, 3), width=8))
    assert other["name"] == "resnet(BasicBlock, [3, 3, 3])" and other["width"] == 8


def test_whitening_init_gives_uncorrelated_unit_variance_features() -> None:
    generator = torch.Generator().manual_seed(0)
    smooth = F.avg_pool2d(torch.randn(60, 3, 12, 12, generator=generator), 3, 1, 1)  # correlated
    conv = nn.Conv2d(3, 16, 3, bias=False)
    whitening_init(conv, smooth, eps=1e-12)
    # An independent reference: the patches' covariance and its top eigenvectors from NumPy.
    windows = np.lib.stride_tricks.sliding_window_view(smooth.double().numpy(), (3, 3), axis=(2, 3))
    patches = windows.transpose(0, 2, 3, 1, 4, 5).reshape(-1, 27)  # (N * 10 * 10, 27)
    eigenvalues, eigenvectors = np.linalg.eigh(patches.T @ patches / len(patches))
    top = conv.weight[:8].detach().double().reshape(8, 27).numpy()
    for j in range(8):  # filter j is eigenvector j (largest first) over the root of its eigenvalue
        expected = eigenvectors[:, -1 - j] / np.sqrt(eigenvalues[-1 - j])
        error = min(abs(top[j] - expected).max(), abs(top[j] + expected).max())
        assert error < 1e-4 * abs(expected).max(), j
    features = patches @ top.T  # (patches, 8): what the first 8 filters compute
    np.testing.assert_allclose(features.T @ features / len(features), np.eye(8), atol=1e-4)
    torch.testing.assert_close(conv.weight[8:], -conv.weight[:8])  # and their negatives
