"""`bepbuild batch-endpoint invoke`: start a job on a folder or file, and follow it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import OutputOpt, QueryOpt, SetOpt, emit, guarded, note, store
from ._lazy import module
from ._progress import JobProgress

invoke_spec = module("bepbuild.jobs.invoke_spec")
service = module("bepbuild.jobs.service")


@guarded
def invoke(
    name: Annotated[str, typer.Option("--name", "-n", help="Endpoint name.")],
    input: Annotated[
        str | None, typer.Option("--input", "-i", help="Local folder/file, http(s) URL, or azureml:<data>@latest.")
    ] = None,
    deployment_name: Annotated[str | None, typer.Option("--deployment-name", "-d", help="Not the default one.")] = None,
    input_type: Annotated[str | None, typer.Option("--input-type", help="uri_folder or uri_file.")] = None,
    mini_batch_size: Annotated[int | None, typer.Option("--mini-batch-size", "-m")] = None,
    instance_count: Annotated[int | None, typer.Option("--instance-count", "-c")] = None,
    max_retries: Annotated[int | None, typer.Option("--max-retries")] = None,
    timeout: Annotated[int | None, typer.Option("--timeout", help="Seconds per run() call.")] = None,
    error_threshold: Annotated[int | None, typer.Option("--error-threshold")] = None,
    output_path: Annotated[str | None, typer.Option("--output-path", help="Folder for the outputs.")] = None,
    set_: SetOpt = None,
    job_name: Annotated[str | None, typer.Option("--job-name", help="Name instead of a GUID.")] = None,
    experiment_name: Annotated[str | None, typer.Option("--experiment-name", help="Default: the endpoint.")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="inputs.yml: inputs: and outputs:.")] = None,
    inputs: Annotated[str | None, typer.Option("--inputs", help="Inputs as JSON: {NAME: {type, path}}.")] = None,
    outputs: Annotated[str | None, typer.Option("--outputs", help="Outputs as JSON: {NAME: {type, path}}.")] = None,
    backend: Annotated[str, typer.Option("--backend", help="docker (default) or process.")] = "docker",
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Return once the job is queued.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    output: OutputOpt = "json",
    query: QueryOpt = None,
) -> None:
    """Score the input with the endpoint's default (or the named) deployment; prints the job."""
    io = invoke_spec.resolve(invoke_spec.InvokeIO(input, input_type, output_path), file=file, inputs=inputs,
                             outputs=outputs)
    s = store()
    req = service.InvokeRequest(
        endpoint=name,
        input=io.input or "",
        deployment=deployment_name,
        input_type=io.input_type,
        mini_batch_size=mini_batch_size,
        instance_count=instance_count,
        max_retries=max_retries,
        timeout=timeout,
        error_threshold=error_threshold,
        output_path=io.output_path,
        sets=set_ or [],
        job_name=job_name,
        backend=backend,
        experiment_name=experiment_name,
    )
    if backend not in ("docker", "process"):
        from ..errors import UserError

        raise UserError(f"--backend must be docker or process, got {backend!r}")
    job = service.invoke(s, req)
    for n in job.get("notices") or []:
        note(f"note: {n}")
    if no_wait:
        service.run_detached(job["name"])
        emit(s.get_job(job["name"]), output, query, "job")
        return
    with JobProgress(job["name"], quiet) as view:
        done = service.run_attached(s, job["name"], watch=view.update)
    if not quiet:
        note(f"job {done['name']}: {done['status']}" + (f" ({done['error']})" if done.get("error") else ""))
        if done.get("output_file") and done["status"] == "Completed":
            note(f"output: {done['output_file']}")
    emit(s.get_job(job["name"]), output, query, "job")
    if done["status"] != "Completed":
        raise typer.Exit(1)
