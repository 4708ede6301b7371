"""One exception tree for kprov. The CLI catches KprovError once and prints one line + hint."""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    SUCCESS = 0
    TASK_FAILED = 1
    BAD_INPUT = 2
    UNREACHABLE = 3
    INTERRUPTED = 130


class KprovError(Exception):
    """Base error: a message, an optional hint, and the exit status it maps to."""

    exit_status: ExitStatus = ExitStatus.TASK_FAILED

    def __init__(self, message: str, hint: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        #: extra lines shown under the message (e.g. the stderr tail of a failed command)
        self.detail = detail

    def __str__(self) -> str:
        return self.message


class InputError(KprovError):
    """Bad command-line usage or bad user-provided data."""

    exit_status = ExitStatus.BAD_INPUT


class InventoryError(InputError):
    """An inventory that cannot be loaded or validated."""


class RoleError(InputError):
    """A role (tasks/defaults/handlers/templates) that cannot be loaded or rendered."""


class TemplateError(RoleError):
    """A Jinja2 template or templated argument that failed to render."""


class HostConnectionError(KprovError):
    """A host that cannot be reached over SSH (or whose host key does not match)."""

    exit_status = ExitStatus.UNREACHABLE


class HostKeyError(HostConnectionError):
    """Unknown or changed SSH host key."""


class CommandFailed(KprovError):
    """A command on a host exited non-zero."""

    def __init__(self, message: str, *, rc: int, stderr_tail: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint, detail=stderr_tail or None)
        self.rc = rc
        self.stderr_tail = stderr_tail


class CommandTimedOut(KprovError):
    """A command on a host ran longer than its task's timeout (the host stays usable)."""


class TaskFailed(KprovError):
    """A task failed on one or more hosts."""


class LabError(KprovError):
    """The local lab could not be created, started or torn down."""


class PrerequisiteMissing(InputError):
    """A program or privilege kprov needs on the operator's machine is missing."""


class BundleError(KprovError):
    """An offline bundle that is missing, corrupt or cannot be built."""


class CloudError(KprovError):
    """An error from a cloud provider API (EC2)."""


class SmokeFailed(KprovError):
    """The smoke test could not reach the app through every node."""


class LockHeld(InputError):
    """Another kprov run holds the cluster (locally) or a host (on the host) for changes."""
