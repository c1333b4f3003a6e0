"""``python -m tests.sim``: run seeds of the whole-member simulation, or replay one."""

from tests.sim.cli import main

raise SystemExit(main())
