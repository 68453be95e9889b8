"""Hypothesis settings of the property-based tests.

The ``ci`` profile, loaded by default, draws the same examples on every run
and stores no example database, so a failure reproduces on any machine. Set
``HYPOTHESIS_PROFILE=dev`` for many more random examples, with failures kept
in ``.hypothesis/`` and replayed first on the next run.
"""

import os
from datetime import timedelta

from hypothesis import settings

# The examples take milliseconds each, so only a hang or a parser that is
# quadratic in its input length reaches this limit.
DEADLINE = timedelta(seconds=5)

settings.register_profile(
    "ci", derandomize=True, database=None, deadline=DEADLINE, max_examples=40
)
settings.register_profile("dev", deadline=DEADLINE, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
