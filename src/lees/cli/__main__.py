"""``python -m lees.cli``: the ``lees`` command, as ``torchrun ... -m lees.cli`` launches it."""

from . import main

raise SystemExit(main())
