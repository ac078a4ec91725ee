"""Self-checks for the notebooks' exercises, with a fallback so that a student is never stuck.

Every exercise asks for a function (or a class) and is followed by a cell that checks it::

    mean, std = check_mean_std(my_mean_std, train.images)

A check runs the student's code on inputs it chooses, compares the result with an independent
computation, and prints one line that starts with the exercise's name and one of three verdicts:

- ``correct``: the notebook goes on with the student's result;
- ``not solved yet``: the function still raises the placeholder's ``NotImplementedError``;
- ``not right yet``: the answer is wrong (or crashed), and the line says *how*: each check
  recognises the plausible wrong answers (no skip connection, ``img / 2 + 0.5``, patience off by
  one, calling the reference implementation, ...) and names the mistake.

In the last two cases the check returns the reference result from ``course_utils`` and the rest
of the notebook runs on that. So an unsolved exercise never stops "Run All": the student
notebooks (made by :mod:`course_utils.release`) put the placeholder ``raise`` inside the
exercise's function, where only the check calls it, and the check catches it.

The checks live in one module per notebook (``notebook01`` ... ``notebook09``), on the shared
machinery of ``core``. ``tests/test_selfchecks.py`` feeds every check its list of wrong answers.
Importing this package loads the checks of every notebook, so a check imports what only it needs
(scikit-learn, SciPy through ``diagnostics``, the module whose function it compares against)
inside its function, when it runs ("lazy" in the comments). Used by notebooks 01-09.
"""

from course_utils.exercises.core import (
    CHECK_SOLUTIONS_ENV,
    CORRECT,
    FALLBACK,
    IMAGENET_MEAN,
    IMAGENET_STD,
    NOT_RIGHT,
    NOT_SOLVED,
    SolutionCheckError,
    Wrong,
    check_exercise,
    results_match,
    self_check,
)
from course_utils.exercises.notebook01 import (
    check_mean_of_per_image_std,
    check_mean_std,
)
from course_utils.exercises.notebook02 import (
    check_denormalize,
    check_train_val_split,
)
from course_utils.exercises.notebook03 import (
    BOTTLENECK_CASES,
    check_basic_block_forward,
    check_bottleneck,
)
from course_utils.exercises.notebook04 import (
    CONV_CASES,
    check_conv_arithmetic,
    check_make_layer,
    measure_conv,
)
from course_utils.exercises.notebook05 import (
    STOPPING_RUNS,
    check_should_stop,
    check_train_one_epoch,
    early_stopping_decision,
    stop_decisions,
)
from course_utils.exercises.notebook06 import (
    check_confusion_matrix,
    check_precision_recall_f1,
)
from course_utils.exercises.notebook07 import check_mean_and_spread
from course_utils.exercises.notebook09 import check_ece, check_grad_cam_map, check_temperature

__all__ = [
    "BOTTLENECK_CASES",
    "CHECK_SOLUTIONS_ENV",
    "CONV_CASES",
    "CORRECT",
    "FALLBACK",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NOT_RIGHT",
    "NOT_SOLVED",
    "STOPPING_RUNS",
    "SolutionCheckError",
    "Wrong",
    "check_basic_block_forward",
    "check_bottleneck",
    "check_confusion_matrix",
    "check_conv_arithmetic",
    "check_denormalize",
    "check_ece",
    "check_exercise",
    "check_grad_cam_map",
    "check_make_layer",
    "check_mean_and_spread",
    "check_mean_of_per_image_std",
    "check_mean_std",
    "check_precision_recall_f1",
    "check_should_stop",
    "check_temperature",
    "check_train_one_epoch",
    "check_train_val_split",
    "early_stopping_decision",
    "measure_conv",
    "results_match",
    "self_check",
    "stop_decisions",
]
