"""`bepbuild test` and `bepbuild batch-deployment test`: try a deployment in its own image before any job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .. import output
from ..errors import UserError
from ._common import QueryOpt, SetOpt, emit, guarded, store
from ._lazy import module
from ._progress import build_status
from .build import (
    BackendOpt,
    BaseImageOpt,
    ForceOpt,
    QuietOpt,
    RelockOpt,
    SkipOpt,
    StrictOpt,
    TemplatesOpt,
    options,
)

report = module("bepbuild.testing.report")
run = module("bepbuild.testing.run")

InputOpt = Annotated[str | None, typer.Option("--input", "-i", help="Files to score: a folder, a file, an http(s) "
                                                                     "URL or azureml:<data>.")]
InputTypeOpt = Annotated[str | None, typer.Option("--input-type", help="uri_folder or uri_file.")]
LimitOpt = Annotated[int | None, typer.Option("--limit", help="Score the first N files (default: one mini-batch).")]
MiniBatchOpt = Annotated[int | None, typer.Option("--mini-batch-size", help="Files per run() (default: the "
                                                                            "deployment's).")]
PytestOpt = Annotated[list[Path] | None, typer.Option("--pytest", help="Run your tests (a file or folder; "
                                                                      "repeatable) inside the deployment's image.")]
JunitOpt = Annotated[Path | None, typer.Option("--junit-xml", help="Write the --pytest report here (JUnit XML).")]
NoEnvCheckOpt = Annotated[bool, typer.Option("--no-env-check", help="Skip pip check, the lock, Python and import "
                                                                    "checks.")]
TestOutputOpt = Annotated[str, typer.Option("--output", "-o", help="table (a report for people), json, yaml or "
                                                                   "none.")]


def _request(input_: str | None, input_type: str | None, limit: int | None, mini_batch_size: int | None,
             pytest: list[Path] | None, junit_xml: Path | None, no_env_check: bool, builder: str = "auto"
             ) -> run.Request:
    return run.Request(input=input_, input_type=input_type, limit=limit, mini_batch_size=mini_batch_size,
                       pytest=list(pytest or []), junit_xml=junit_xml, env_check=not no_env_check, backend=builder)


def _show(reports: list[dict[str, Any]], fmt: str, query: str | None, many: bool) -> None:
    """Print the reports as asked, then end with exit 1 unless every one passed."""
    if fmt == "table":
        for r in reports:
            typer.echo(report.text(r))
        if many:
            typer.echo(output.render([report.row(r) for r in reports], "table", None, "deployment-test"))
    else:
        emit(reports if many else reports[0], fmt, query)
    if not all(r["ok"] for r in reports):
        raise typer.Exit(1)


@guarded
def test(
    file: Annotated[Path | None, typer.Argument(help="deployment.yml (built as deploy builds it, registered "
                                                     "nowhere); omit it with --name or --all")] = None,
    endpoint_name: Annotated[str | None, typer.Option("--endpoint-name", "-e", help="Endpoint (overrides the "
                                                                                     "file's).")] = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="A registered deployment of the endpoint.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every deployment of --endpoint-name, one after the "
                                                     "other.")] = False,
    input_: InputOpt = None,
    input_type: InputTypeOpt = None,
    limit: LimitOpt = None,
    mini_batch_size: MiniBatchOpt = None,
    pytest: PytestOpt = None,
    junit_xml: JunitOpt = None,
    no_env_check: NoEnvCheckOpt = False,
    set_: SetOpt = None,
    base_image: BaseImageOpt = None,
    strict: StrictOpt = False,
    relock: RelockOpt = False,
    force: ForceOpt = False,
    builder: BackendOpt = "auto",
    skip_script_validation: SkipOpt = False,
    templates: TemplatesOpt = None,
    quiet: QuietOpt = False,
    output_: TestOutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Try a deployment in its own isolated image: import, init(), run() on a few files, environment checks.

    Exit 0 only when every item succeeded (as Azure counts them) and every check passed.
    """
    req = _request(input_, input_type, limit, mini_batch_size, pytest, junit_xml, no_env_check, builder)
    s = store()
    if file is not None:
        if all_ or name:
            raise UserError("give a deployment file, or --name / --all with --endpoint-name, not both")
        opts = options(base_image, strict, relock, force, builder, skip_script_validation, templates)
        with build_status(quiet, f"testing {file}") as log:
            reports = [run.test_file(s, file, endpoint_name=endpoint_name, sets=set_ or [], opts=opts, req=req,
                                     log=log)]
    else:
        if not endpoint_name or not (all_ or name) or (all_ and name):
            raise UserError("give a deployment file, or --endpoint-name with --name NAME or --all")
        with build_status(quiet, f"testing {endpoint_name}") as log:
            reports = (run.test_all(s, endpoint_name, req, log) if all_
                       else [run.test_registered(s, endpoint_name, name or "", req, log)])
    _show(reports, output_, query, many=all_)


@guarded
def deployment_test(
    name: Annotated[str, typer.Option("--name", "-n", help="Deployment name.")],
    endpoint_name: Annotated[str, typer.Option("--endpoint-name", "-e", help="Endpoint name.")],
    input_: InputOpt = None,
    input_type: InputTypeOpt = None,
    limit: LimitOpt = None,
    mini_batch_size: MiniBatchOpt = None,
    pytest: PytestOpt = None,
    junit_xml: JunitOpt = None,
    no_env_check: NoEnvCheckOpt = False,
    builder: BackendOpt = "auto",
    quiet: QuietOpt = False,
    output_: TestOutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Try a registered deployment in the image its jobs run: import, init(), run() on a few files, checks."""
    req = _request(input_, input_type, limit, mini_batch_size, pytest, junit_xml, no_env_check, builder)
    with build_status(quiet, f"testing {endpoint_name}/{name}") as log:
        reports = [run.test_registered(store(), endpoint_name, name, req, log)]
    _show(reports, output_, query, many=False)
