"""`bepbuild job ...`: batch scoring jobs."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import OutputOpt, QueryOpt, SetOpt, YesOpt, confirm, emit, guarded, new_app, store
from ._refused import refuse

app = new_app("Jobs: one per invoke, named by a GUID unless --job-name is given.")

NameOpt = Annotated[str, typer.Option("--name", "-n", help="Job name.")]


def web_view(job: dict[str, object]) -> str:
    """Where a person looks at a job: its folder (logs, outputs)."""
    return str(job.get("job_dir", ""))


@app.command("show")
@guarded
def show(
    name: NameOpt,
    web: Annotated[bool, typer.Option("--web", help="Open the job's page on the dashboard (bepbuild serve; "
                                                   "started in the background when none runs).")] = False,
    output: OutputOpt = "json",
    query: QueryOpt = None,
) -> None:
    """Show a job: status, settings, counts, where its outputs and logs are."""
    from ..jobs import service

    job = service.show(store(), name)
    if web:
        from .serve import show_job_page

        show_job_page(job)
    emit(job, output, query, "job")


@app.command("list")
@guarded
def list_(
    endpoint_name: Annotated[str | None, typer.Option("--endpoint-name", "-e", help="Jobs of this endpoint.")] = None,
    deployment_name: Annotated[str | None, typer.Option("--deployment-name", "-d", help="Of this deployment.")] = None,
    status: Annotated[str | None, typer.Option("--status", help="Only jobs with this status.")] = None,
    parent_job_name: Annotated[
        str | None, typer.Option("--parent-job-name", "-p", help="The scoring step of this job (the job itself).")
    ] = None,
    max_results: Annotated[int | None, typer.Option("--max-results", "-r")] = None,
    all_results: Annotated[bool, typer.Option("--all-results", help="Accepted: every job is listed.")] = False,
    include_archived: Annotated[bool, typer.Option("--include-archived", help="Archived jobs too.")] = False,
    archived_only: Annotated[bool, typer.Option("--archived-only", help="Only archived jobs.")] = False,
    output: OutputOpt = "json",
    query: QueryOpt = None,
) -> None:
    """List jobs, newest first."""
    s = store()
    if parent_job_name:  # a local job is its own scoring step (Azure's batchscoring child)
        emit([s.get_job(parent_job_name)], output, query, "job")
        return
    from ..jobs import service

    archived = "only" if archived_only else "include" if include_archived else "exclude"
    emit(service.list_jobs(s, endpoint=endpoint_name, deployment=deployment_name, status=status, limit=max_results,
                           archived=archived), output, query, "job")


@app.command("update")
@guarded
def update(name: NameOpt, set_: SetOpt = None, output: OutputOpt = "json", query: QueryOpt = None) -> None:
    """Change a job's description, display_name, tags or experiment_name."""
    from ..updates import update_job

    emit(update_job(store(), name, set_ or []), output, query, "job")


@app.command("archive")
@guarded
def archive(name: NameOpt) -> None:
    """Hide a job from `job list` (its folder and outputs stay)."""
    from ..updates import archive_job

    archive_job(store(), name, True)
    typer.echo(f"archived job {name}", err=True)


@app.command("restore")
@guarded
def restore(name: NameOpt) -> None:
    """Show an archived job in `job list` again."""
    from ..updates import archive_job

    archive_job(store(), name, False)
    typer.echo(f"restored job {name}", err=True)


@app.command("cancel")
@guarded
def cancel(name: NameOpt, output: OutputOpt = "json", query: QueryOpt = None) -> None:
    """Cancel a running job: instances stop claiming; the job ends Canceled."""
    from ..jobs import lifecycle

    emit(lifecycle.cancel(store(), name), output, query, "job")


@app.command("delete")
@guarded
def delete(name: NameOpt, yes: YesOpt = False) -> None:
    """Delete a job no host is running: its record and its job folder (an --output-path folder stays)."""
    from ..jobs import lifecycle

    confirm(yes, f"Delete job {name} and its job folder?")
    lifecycle.delete(store(), name)


@app.command("resume")
@guarded
def resume(
    name: NameOpt,
    no_wait: Annotated[bool, typer.Option("--no-wait")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    output: OutputOpt = "json",
    query: QueryOpt = None,
) -> None:
    """Finish a job whose host process or instances died; finished mini-batches are not redone."""
    from ..jobs import lifecycle, service
    from ._progress import JobProgress

    s = store()
    lifecycle.resume(s, name)  # holds the job's host lock, for the run below
    if no_wait:
        service.run_detached(name, s)
        emit(s.get_job(name), output, query, "job")
        return
    with JobProgress(name, quiet) as view:
        done = service.run_attached(s, name, watch=view.update)
    emit(s.get_job(name), output, query, "job")
    if done["status"] != "Completed":
        raise typer.Exit(1)


@app.command("stream")
@guarded
def stream(name: NameOpt) -> None:
    """Follow a job until it ends, as az ml job stream: progress lines, then a summary (exit 1 unless Completed)."""
    from ..jobs import records
    from ..jobs import stream as streaming

    s = store()
    job = records.lookup(s, name)
    for line in streaming.follow(s, name, web_view(job)):
        typer.echo(line)
    if s.get_job(name)["status"] != "Completed":
        raise typer.Exit(1)


@app.command("download")
@guarded
def download(
    name: NameOpt,
    output_name: Annotated[str, typer.Option("--output-name", help="score")] = "score",
    download_path: Annotated[str, typer.Option("--download-path", "-p")] = ".",
) -> None:
    """Copy a job's outputs (the whole folder tree) to DOWNLOAD_PATH/named-outputs/score/."""
    from pathlib import Path

    from ..jobs import service
    from ._common import note, one_line

    target, skipped = service.download(store(), name, output_name, Path(download_path))
    if skipped:
        shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        note(one_line(f"note: skipped {len(skipped)} link(s) or special file(s) not leading to a file inside the "
                      f"outputs: {shown}"))
    typer.echo(str(target))


@app.command("logs")
@guarded
def logs(name: NameOpt) -> None:
    """Print the job's result and progress overview, and where its logs are."""
    from pathlib import Path

    from bepbuild_runtime import layout

    from ..jobs import records

    job = records.lookup(store(), name)
    root = Path(job["job_dir"])
    overview = Path(layout.LOG_PROGRESS_PREFIX)
    found = sorted((root / overview.parent).glob(overview.name + "*.txt"))[-1:]
    for f in [*found, root / layout.LOG_RESULT, root / layout.LOG_ERROR]:
        if f.exists():
            typer.echo(f"== {f.name}\n{f.read_text()}")
    typer.echo(f"logs: {root / layout.LOGS_DIR}")


_ONLY_BATCH = "only batch endpoint jobs run locally: start one with bepbuild batch-endpoint invoke"
refuse(app, "create", _ONLY_BATCH)
refuse(app, "validate", _ONLY_BATCH)
_LOGS = "their logs are in the job folder (bepbuild job logs)"
refuse(app, "show-services", f"local jobs expose no services; {_LOGS}")
refuse(app, "connect-ssh", f"local jobs take no SSH connections; {_LOGS}")
