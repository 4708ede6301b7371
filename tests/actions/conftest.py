"""Action tests use the engine suite's netns fleet (real sshd hosts) for the runs that touch hosts."""

from tests.engine.conftest import fleet  # noqa: F401 - the fixture, re-exported for this package
