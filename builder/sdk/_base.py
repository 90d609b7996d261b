"""What every operations group shares: its client, and one registry connection per call."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..store import Store

if TYPE_CHECKING:
    from .client import MLClient


class Operations:
    """Base of the operations groups (`ml_client.batch_endpoints`, `ml_client.jobs`, ...)."""

    def __init__(self, client: MLClient) -> None:
        self._client = client

    @contextmanager
    def _store(self) -> Iterator[Store]:
        # A connection per call: an MLClient may be used from several threads (notebooks do), and
        # BEPBUILD_HOME is read when the call is made.
        store = Store.open()
        try:
            yield store
        finally:
            store.close()


def archived_view(list_view_type: Any) -> str:
    """ListViewType (ActiveOnly, ArchivedOnly, All) as the store's `archived` argument."""
    value = str(getattr(list_view_type, "value", list_view_type) or "ActiveOnly").lower()
    return {"archivedonly": "only", "all": "include"}.get(value, "exclude")
