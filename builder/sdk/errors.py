"""bepbuild's errors raised as the SDK's exception types, carrying bepbuild's one-line messages.

Code written for Azure catches `ResourceNotFoundError` for unknown names and `ValidationException`
for bad specs; each is raised `from` the bepbuild error, which stays reachable as `__cause__`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from azure.ai.ml.exceptions import (
    ErrorCategory,
    ErrorTarget,
    JobException,
    MlException,
    UserErrorException,
    ValidationException,
)
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from ..errors import BepbuildError, ConflictError, JobError, NotFoundError, SpecError, UserError

F = TypeVar("F", bound=Callable[..., Any])


def translate(e: BepbuildError) -> Exception:
    """The SDK exception that stands for bepbuild error `e` (same message: its one line)."""
    line = e.line()
    if isinstance(e, NotFoundError):
        return ResourceNotFoundError(message=line)
    if isinstance(e, ConflictError):
        return ResourceExistsError(message=line)
    if isinstance(e, SpecError):
        return ValidationException(message=line, no_personal_data_message=line, target=ErrorTarget.UNKNOWN,
                                   error_category=ErrorCategory.USER_ERROR)
    if isinstance(e, UserError):
        return UserErrorException(message=line, no_personal_data_message=line, target=ErrorTarget.UNKNOWN)
    if isinstance(e, JobError):
        return JobException(message=line, no_personal_data_message=line, target=ErrorTarget.JOB,
                            error_category=ErrorCategory.USER_ERROR)
    return MlException(message=line, no_personal_data_message=line, error_category=ErrorCategory.SYSTEM_ERROR)


def sdk_errors(fn: F) -> F:
    """Decorate an operation: bepbuild errors leave it as the SDK's exception types."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BepbuildError as e:
            raise translate(e) from e

    return wrapper  # type: ignore[return-value]


def invalid(message: str) -> ValidationException:
    """A ValidationException for what the SDK layer itself refuses (an entity type, an argument)."""
    return ValidationException(message=message, no_personal_data_message=message, target=ErrorTarget.UNKNOWN,
                               error_category=ErrorCategory.USER_ERROR)
