"""The channels_last guard of ``models.memory_format_for``, and the oneDNN defect it avoids.

PyTorch 2.14's oneDNN crashes or hangs computing the weight gradient of a strided 1x1 convolution
with fewer than 8 input channels in channels_last on CPUs limited to AVX2 (most laptops). Each
training step below runs in its own process with oneDNN limited to AVX2 (``ONEDNN_MAX_CPU_ISA``,
oneDNN's own switch, which makes an AVX-512 machine take the laptop's kernels), so a crash fails
one test instead of killing the test run, and a hang fails at the timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from course_utils.config import PROJECT_ROOT
from course_utils.models import (
    MIN_CHANNELS_LAST_1X1_STRIDED,
    BasicBlock,
    memory_format_for,
    resnet18,
    to_device,
)

#: One tiny training step, with Python and torch starting up, takes a few seconds; a hang must not
#: eat CI's time, and a busy machine may take several times longer.
STEP_SECONDS = 60

#: One training step of resnet18(width=4), the network with the offending convolution (the
#: projection shortcut of layer2: 4 input channels, stride 2), on a (16, 3, 32, 32) batch.
GUARDED_STEP = """
import torch
from torch import nn
from course_utils.models import resnet18
from course_utils.training import train_one_epoch
torch.manual_seed(0)
model = resnet18(width=4)
batch = [(torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,)))]
stats = train_one_epoch(model, batch, nn.CrossEntropyLoss(),
                        torch.optim.SGD(model.parameters(), lr=0.1), "cpu", channels_last=True)
assert stats.images == 16
print("ok")
"""

#: The same step with the guard bypassed: model and batch forced into channels_last.
UNGUARDED_STEP = """
import torch
from course_utils.models import resnet18
torch.manual_seed(0)
model = resnet18(width=4).to(memory_format=torch.channels_last)
x = torch.randn(16, 3, 32, 32).contiguous(memory_format=torch.channels_last)
loss = torch.nn.functional.cross_entropy(model(x), torch.randint(0, 10, (16,)))
loss.backward()
print("ok")
"""


def run_step(code: str, threads: int) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "OMP_NUM_THREADS": str(threads),
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=STEP_SECONDS,
        check=False,
    )


def test_the_guard_picks_nchw_only_for_the_offending_convolution_on_the_cpu():
    assert memory_format_for(resnet18(width=4), "cpu") == torch.contiguous_format
    assert memory_format_for(resnet18(width=8), "cpu") == torch.channels_last
    assert memory_format_for(resnet18(width=4), "cuda") == torch.channels_last  # not oneDNN
    assert memory_format_for(resnet18(width=64), "cpu", channels_last=False) == (
        torch.contiguous_format
    )
    narrow = MIN_CHANNELS_LAST_1X1_STRIDED - 1
    assert memory_format_for(BasicBlock(narrow, 16, stride=2), "cpu") == torch.contiguous_format
    assert memory_format_for(BasicBlock(narrow, 16, stride=1), "cpu") == torch.channels_last
    assert memory_format_for(nn.Conv2d(3, 8, 7, stride=2), "cpu") == torch.channels_last  # 7x7


def test_to_device_lays_out_the_weights_as_it_says():
    model = resnet18(width=8)
    assert to_device(model, "cpu") == torch.channels_last
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    narrow = resnet18(width=4).to(memory_format=torch.channels_last)  # a student's own choice
    assert to_device(narrow, "cpu") == torch.contiguous_format
    assert narrow.layer2[0].downsample[0].weight.is_contiguous()  # undone before any step


@pytest.mark.parametrize("threads", [1, 2])  # unguarded, 9 of 12 two-thread runs hung
def test_training_the_narrow_network_survives_avx2_kernels(threads: int):
    done = run_step(GUARDED_STEP, threads)
    assert done.returncode == 0 and "ok" in done.stdout, (
        f"exit status {done.returncode}\n{done.stdout}\n{done.stderr[-2000:]}"
    )


@pytest.mark.skipif(
    not torch.__version__.startswith("2.14."),
    reason=f"the defect was found in torch 2.14's oneDNN; this is torch {torch.__version__}",
)
def test_the_defect_is_real_without_the_guard():
    """The reproduction, with the guard bypassed: with torch 2.14's oneDNN it crashes (or hangs).
    If it runs, the kernel is fixed in this build, and the guard's reason is gone: this fails, to
    say so."""
    try:
        done = run_step(UNGUARDED_STEP, threads=1)
    except subprocess.TimeoutExpired:
        return  # hung for STEP_SECONDS: the defect, as seen with two threads
    assert done.returncode != 0, (
        "the unguarded step ran: this torch no longer has the AVX2 defect, so "
        "models.memory_format_for may keep channels_last for every layer"
    )
    # Killed by a signal (a segfault, or glibc's abort on a corrupted heap), not a Python error.
    assert done.returncode < 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
