"""``python -m course_utils ...``: the course's command line (see ``course_utils.cli``)."""

import sys

import matplotlib

from course_utils.cli import main

# The command line only writes figures to files: no window, no display needed. (Here, not in
# main(): a notebook that calls main() keeps its own backend.)
matplotlib.use("Agg")
sys.exit(main())
