"""Helpers for the course "Training ResNet-18 on CIFAR-10".

One module per concern, each pointing back to the notebook that teaches it, in layers: a module
imports only from layers with smaller numbers (``tests/test_layering.py`` checks it, counting
imports made inside functions too), so the package has no import cycles. From the bottom up:

- layer 1, ``models``: residual blocks, the ResNet family, memory layout (notebooks 03-04)
- layer 2, ``config``: paths, smoke mode, seeds, devices; ``TrainConfig``, presets (00, 05)
- layer 3, ``data``: CIFAR-10 loading, statistics, augmentation, DataLoaders (notebooks 01-02)
- layer 3, ``checkpoints``: save atomically, load safely, shipped ones by sha256 (05, 08)
- layer 4, ``evaluation``: the evaluation loop (gathered under torchrun), metrics, t-SNE (06)
- layer 4, ``transfer``: pretrained weights, a new head, probe and fine-tuning (notebook 08)
- layer 4, ``plotting``: the figures of every notebook
- layer 5, ``distributed``: the same run on several GPUs, under ``torchrun`` (README)
- layer 6, ``training``: optimizer, schedule, the loop, early stopping, ``fit`` (notebook 05)
- layer 7, ``machine``: what this machine is, its measured speed, the time budget (00, 05)
- layer 7, ``diagnostics``: the learning-rate range test, calibration, Grad-CAM (notebook 09)
- layer 8, ``run``: one run from configuration to report, behind ``train`` (notebook 05)
- layer 9, ``transfer_experiment``: pretrain on animals, transfer to vehicles, per seed (08)
- layer 9, ``exercises``: the self-checks after each exercise
- layer 9, ``release``: the student notebooks, made from the solutions
- layer 10, ``experiments``: grids of runs over seeds, and analyses of them (notebook 07)
- layer 11, ``cli``: ``python -m course_utils``: parses flags, calls ``run`` or ``experiments``

Importing the package does nothing but define names: no downloads, prints, seeding or device probing.
"""

from course_utils.config import get_device, is_smoke, set_seed

__all__ = ["get_device", "is_smoke", "set_seed"]
__version__ = "0.1.0"
