"""One small exception hierarchy, caught once at the CLI edge.

User errors (bad files, bad flags, unknown names) exit 2; failures of the work itself exit 1.
"""

from __future__ import annotations


class BepbuildError(Exception):
    """Base of every error bepbuild reports as one line."""

    exit_code = 1

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.message = message
        self.source = source
        self.field = field
        super().__init__(self.line())

    def line(self) -> str:
        parts = [p for p in (self.source, self.field) if p]
        parts.append(self.message)
        return ": ".join(parts)


class UserError(BepbuildError):
    """Something the user gave is wrong; exit 2."""

    exit_code = 2


class SpecError(UserError):
    """A YAML spec or override is invalid."""


class NotFoundError(UserError):
    """A named asset does not exist in the registry."""


class ConflictError(UserError):
    """The asked change clashes with what exists (e.g. an output file that is already there)."""


class BuildError(BepbuildError):
    """An image build failed."""


class EngineError(BepbuildError):
    """The Docker engine is missing or misbehaves."""


class JobError(BepbuildError):
    """A batch job failed."""
