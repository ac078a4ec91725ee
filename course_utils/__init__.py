"""Helpers for the course "Training ResNet-18 on CIFAR-10".

One module per concern, each pointing back to the notebook that teaches it:

- ``config``: paths, the smoke switch, seeding, device selection (notebook 00)
- ``data``: CIFAR-10 loading, statistics, augmentation, DataLoaders (notebooks 01-02)
- ``models``: residual blocks and the ResNet family (notebooks 03-04)
- ``training``: the training loop, early stopping, checkpoints (notebook 05)
- ``evaluation``: predictions, metrics, t-SNE (notebook 06)
- ``plotting``: the figures of every notebook

Importing the package does nothing but define names: no downloads, prints, seeding or device probing.
"""

from course_utils.config import get_device, is_smoke, set_seed

__all__ = ["get_device", "is_smoke", "set_seed"]
__version__ = "0.1.0"
