"""What `begin_*` operations return: the SDK's LROPoller, already finished.

Local operations run to their end before `begin_*` returns (a deployment's image is built by
then), so the poller has nothing left to poll: `.result()` gives the entity, `.done()` is True,
`.wait()` returns at once. Errors are raised by `begin_*` itself, as the SDK's exception types.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from azure.core.paging import ItemPaged
from azure.core.polling import LROPoller, NoPolling

T = TypeVar("T")


def finished(result: T) -> LROPoller[T]:
    """An LROPoller whose operation has finished with `result`."""
    return LROPoller(None, result, lambda initial: initial, NoPolling())


def paged(items: Iterable[T]) -> ItemPaged[T]:
    """The SDK's ItemPaged over `items` (one page), as its `list` operations return."""
    page = list(items)
    return ItemPaged(lambda token: page if token is None else [], lambda got: (None, iter(got)))
