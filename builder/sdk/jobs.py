"""`ml_client.jobs`: get, list (parent_job_name=...), stream, download, begin_cancel."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from azure.ai.ml.entities import Job
from azure.core.paging import ItemPaged
from azure.core.polling import LROPoller

from ..errors import JobError
from ..jobs import lifecycle, service
from ..jobs import stream as streaming
from . import entities
from ._base import Operations, archived_view
from .errors import invalid, sdk_errors
from .poller import finished, paged


class JobOperations(Operations):
    """Batch scoring jobs, one per invoke."""

    @sdk_errors
    def get(self, name: str, **kwargs: Any) -> Job:
        """The job (a PipelineJob, as Azure's batch invocations are) with its status; live counts
        in `properties` while it runs."""
        with self._store() as store:
            return entities.job_entity(service.show(store, name))

    @sdk_errors
    def list(self, *, parent_job_name: str | None = None, list_view_type: Any = None,
             **kwargs: Any) -> ItemPaged[Job]:
        """Jobs, newest first; with `parent_job_name`, the job's scoring step: a local job is its
        own step, so the one child has the job's name and downloads the same outputs."""
        with self._store() as store:
            if parent_job_name:
                return paged([entities.job_entity(service.show(store, parent_job_name), child=True)])
            return paged([entities.job_entity(rec) for rec in store.list_jobs(archived=archived_view(list_view_type))])

    @sdk_errors
    def stream(self, name: str, **kwargs: Any) -> None:
        """Print the job's progress until it ends, as `job stream` does; a Failed job raises JobException."""
        with self._store() as store:
            job = store.get_job(name)
            for line in streaming.follow(store, name, str(job.get("job_dir", ""))):
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
            done = store.get_job(name)
        if done.get("status") == "Failed":
            raise JobError(f"job {done['name']} Failed: {done.get('error') or 'see its logs'}")

    @sdk_errors
    def download(self, name: str, *, download_path: str | os.PathLike[str] = ".", output_name: str | None = None,
                 all: bool = False, **kwargs: Any) -> None:  # noqa: A002 - the SDK's keyword
        """Copy the job's outputs to DOWNLOAD_PATH/named-outputs/score/, as `job download` does."""
        with self._store() as store:
            service.download(store, name, output_name or "score", Path(download_path))

    @sdk_errors
    def begin_cancel(self, name: str, **kwargs: Any) -> LROPoller[None]:
        """Ask a running job to stop; it ends Canceled."""
        with self._store() as store:
            lifecycle.cancel(store, name)
        return finished(None)

    def create_or_update(self, job: Any, **kwargs: Any) -> Job:
        """Not available: only batch endpoint jobs run locally."""
        raise invalid("only batch endpoint jobs run locally: start one with ml_client.batch_endpoints.invoke")
