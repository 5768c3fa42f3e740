"""``python -m trilemma.cli`` (and ``torchrun -m trilemma.cli``): the ``trilemma`` command."""

import sys

from . import main

sys.exit(main())
