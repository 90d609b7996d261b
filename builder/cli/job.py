"""`bepbuild job ...`: batch scoring jobs."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import OutputOpt, QueryOpt, emit, guarded, new_app, store

app = new_app("Jobs: one per invoke, named by a GUID unless --job-name is given.")

NameOpt = Annotated[str, typer.Option("--name", "-n", help="Job name.")]


@app.command("show")
@guarded
def show(
    name: NameOpt,
    web: Annotated[bool, typer.Option("--web", help="Print the job folder (there is no studio locally).")] = False,
    output: OutputOpt = "json",
    query: QueryOpt = None,
) -> None:
    """Show a job: status, settings, counts, where its outputs and logs are."""
    job = store().get_job(name)
    if web:
        typer.echo(job.get("job_dir", ""), err=True)
    emit(job, output, query)


@app.command("list")
@guarded
def list_(
    endpoint_name: Annotated[str | None, typer.Option("--endpoint-name", "-e")] = None,
    max_results: Annotated[int | None, typer.Option("--max-results", "-r")] = None,
    output: OutputOpt = "json",
    query: QueryOpt = None,
) -> None:
    """List jobs, newest first."""
    emit(store().list_jobs(endpoint=endpoint_name, limit=max_results), output, query)
