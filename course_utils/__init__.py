"""Helpers for the course "Training ResNet-18 on CIFAR-10".

One module per concern, each pointing back to the notebook that teaches it:

- ``config``: paths, the smoke switch, seeding and random states, device selection (notebook 00)
- ``machine``: the environment report, a measured epoch time, the no-GPU warning (notebook 00)
- ``data``: CIFAR-10 loading, statistics, augmentation, DataLoaders (notebooks 01-02)
- ``models``: residual blocks, the ResNet family, memory layout (notebooks 03-04)
- ``training``: the configuration, the training loop, early stopping, ``fit`` (notebook 05)
- ``checkpoints``: saving atomically, loading safely, architecture checks (notebook 05)
- ``distributed``: the same run on several GPUs, under ``torchrun`` (notebook 05, README)
- ``evaluation``: the evaluation loop, predictions, metrics, t-SNE (notebook 06)
- ``transfer``: shipped and pretrained weights, linear probe and fine-tuning (notebook 08)
- ``plotting``: the figures of every notebook
- ``exercises``: the self-checks after each exercise; ``release``: the student notebooks
- ``cli``: ``python -m course_utils train``, a whole run from the command line

Importing the package does nothing but define names: no downloads, prints, seeding or device probing.
"""

from course_utils.config import get_device, is_smoke, set_seed

__all__ = ["get_device", "is_smoke", "set_seed"]
__version__ = "0.1.0"
