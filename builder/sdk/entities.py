"""bepbuild's records -> the SDK's entities, as `get`/`list` return them.

Each entity is built with the SDK's own class and constructor, plus what the service would fill in:
an id in the shape of Azure's resource ids (one local workspace), `provisioning_state`, and
`creation_context` (a SystemData with the record's times).
"""

from __future__ import annotations

import datetime
from typing import Any

from azure.ai.ml import Output
from azure.ai.ml.entities import (
    AmlCompute,
    AzureBlobDatastore,
    BatchDeployment,
    BatchEndpoint,
    BatchJob,
    BatchRetrySettings,
    BuildContext,
    CodeConfiguration,
    Data,
    Environment,
    JobResourceConfiguration,
    Model,
    ModelBatchDeployment,
    ModelBatchDeploymentSettings,
    PipelineJob,
    ResourceConfiguration,
    SystemData,
)

# The defaults class the SDK itself gives a fetched endpoint (`endpoint.defaults.deployment_name = ...`).
from azure.ai.ml.entities._endpoint.batch_endpoint import RestBatchEndpointDefaults

# One local workspace: ids keep the shape of Azure's resource ids, which the SDK's helpers parse
# (e.g. a datastore id in params_override).
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
RESOURCE_GROUP = "bepbuild"
WORKSPACE = "local"
LOCATION = "local"
WORKSPACE_ID = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
                f"/providers/Microsoft.MachineLearningServices/workspaces/{WORKSPACE}")
DEFAULT_DATASTORE = "workspaceblobstore"
JOB_TYPE = "Microsoft.MachineLearningServices/workspaces/jobs"
SUCCEEDED = "Succeeded"


def arm_id(*parts: str) -> str:
    """The resource id of a local resource: WORKSPACE_ID/<kind>/<name>/..."""
    return "/".join((WORKSPACE_ID, *parts))


def when(text: Any) -> datetime.datetime | None:
    """A record's ISO 8601 time (`...Z`) as an aware datetime; None when absent or unreadable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)


def system_data(rec: dict[str, Any], modified: Any = None) -> SystemData:
    """creation_context of a record: created_at, and last_modified_at (`modified`, else updated_at)."""
    created = when(rec.get("created_at"))
    changed = when(modified) or when(rec.get("updated_at")) or created
    return SystemData(created_at=created, created_by="bepbuild", created_by_type="User",
                      last_modified_at=changed, last_modified_by="bepbuild", last_modified_by_type="User")


def endpoint_entity(rec: dict[str, Any], scoring_uri: str | None = None) -> BatchEndpoint:
    """A stored endpoint; `scoring_uri` is where `bepbuild serve` takes Azure's REST invoke, if it runs."""
    name = rec["name"]
    defaults = RestBatchEndpointDefaults(deployment_name=(rec.get("defaults") or {}).get("deployment_name"))
    return BatchEndpoint(name=name, description=rec.get("description"), tags=dict(rec.get("tags") or {}),
                         auth_mode=rec.get("auth_mode", "aad_token"), defaults=defaults, scoring_uri=scoring_uri,
                         location=LOCATION, provisioning_state=SUCCEEDED, id=arm_id("batchEndpoints", name),
                         creation_context=system_data(rec))


def _model(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    return Model(name=value.get("name"), version=value.get("version"), description=value.get("description"),
                 tags=dict(value.get("tags") or {}), path=value.get("path"), type=value.get("type", "custom_model"))


def _environment(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    build = value.get("build")
    return Environment(
        name=value.get("name"), version=value.get("version"), description=value.get("description"),
        tags=dict(value.get("tags") or {}), image=value.get("image"), conda_file=value.get("conda_file"),
        build=BuildContext(path=build["path"], dockerfile_path=build.get("dockerfile_path", "Dockerfile"))
        if isinstance(build, dict) else None,
        os_type=value.get("os_type"), inference_config=value.get("inference_config"),
    )


def _resources(value: dict[str, Any]) -> ResourceConfiguration | JobResourceConfiguration:
    common = {"instance_count": value.get("instance_count"), "instance_type": value.get("instance_type"),
              "properties": value.get("properties") or None}
    if value.get("shm_size") is not None or value.get("docker_args") is not None:
        return JobResourceConfiguration(**common, shm_size=value.get("shm_size"), docker_args=value.get("docker_args"))
    return ResourceConfiguration(**common)


def deployment_entity(doc: dict[str, Any], *, legacy: bool = False) -> BatchDeployment:
    """A deployment document (a stored record, or a spec with absolute paths) as a ModelBatchDeployment;
    `legacy`: as the legacy BatchDeployment with its settings at the top level."""
    code = doc.get("code_configuration")
    settings = dict(doc.get("settings") or {})
    retry = settings.pop("retry_settings", None)
    settings["retry_settings"] = BatchRetrySettings(**retry) if isinstance(retry, dict) else None
    common: dict[str, Any] = {
        "name": doc["name"], "endpoint_name": doc.get("endpoint_name"), "description": doc.get("description"),
        "tags": dict(doc.get("tags") or {}), "properties": dict(doc.get("properties") or {}),
        "model": _model(doc.get("model")), "environment": _environment(doc.get("environment")),
        # An MLflow deployment without a scoring script runs bepbuild's generated driver: no code given.
        "code_configuration": CodeConfiguration(code=code.get("code"), scoring_script=code.get("scoring_script"))
        if isinstance(code, dict) and not code.get("generated") else None,
        "compute": doc.get("compute"),
        "resources": _resources(doc["resources"]) if isinstance(doc.get("resources"), dict) else None,
    }
    if "image" in doc:  # a stored deployment: what the service fills in
        common.update(provisioning_state=doc.get("provisioning_state", SUCCEEDED), creation_context=system_data(doc),
                      id=arm_id("batchEndpoints", str(doc.get("endpoint_name")), "deployments", doc["name"]))
    if legacy:
        return BatchDeployment(**common, **settings)
    return ModelBatchDeployment(**common, settings=ModelBatchDeploymentSettings(
        mini_batch_size=settings.pop("mini_batch_size", None), **settings))


def _asset_id(kind: str, rec: dict[str, Any]) -> str:
    return arm_id(kind, rec["name"], "versions", str(rec["version"]))


def model_entity(rec: dict[str, Any]) -> Model:
    """A registered model version; `path` is its copy in the registry."""
    return Model(name=rec["name"], version=rec["version"], path=rec.get("path"), type=rec.get("type", "custom_model"),
                 description=rec.get("description"), tags=dict(rec.get("tags") or {}), stage=rec.get("stage"),
                 id=_asset_id("models", rec), creation_context=system_data(rec))


def environment_entity(rec: dict[str, Any]) -> Environment:
    """A registered environment version (a build context: its copy in the registry)."""
    build = rec.get("build")
    return Environment(
        name=rec["name"], version=rec["version"], description=rec.get("description"), tags=dict(rec.get("tags") or {}),
        image=rec.get("image"), conda_file=rec.get("conda_file"),
        build=BuildContext(path=rec.get("path"), dockerfile_path=build.get("dockerfile_path", "Dockerfile"))
        if isinstance(build, dict) else None,
        id=_asset_id("environments", rec), creation_context=system_data(rec),
    )


def data_entity(rec: dict[str, Any]) -> Data:
    """A registered data version (a local path or an http(s) URL, read in place)."""
    return Data(name=rec["name"], version=rec["version"], path=rec.get("path"), type=rec.get("type", "uri_folder"),
                description=rec.get("description"), tags=dict(rec.get("tags") or {}),
                id=_asset_id("data", rec), creation_context=system_data(rec))


def compute_entity(rec: dict[str, Any]) -> AmlCompute:
    """A compute profile; always provisioned (there is nothing to create)."""
    return AmlCompute(name=rec["name"], description=rec.get("description"), size=rec.get("size"),
                      tags=dict(rec.get("tags") or {}), min_instances=rec.get("min_instances", 0),
                      max_instances=rec.get("max_instances", 1),
                      idle_time_before_scale_down=rec.get("idle_time_before_scale_down"), tier=rec.get("tier"),
                      location=rec.get("location") or LOCATION, provisioning_state=SUCCEEDED,
                      id=arm_id("computes", rec["name"]), creation_context=system_data(rec))


def datastore_entity(name: str, folder: str) -> AzureBlobDatastore:
    """A local datastore: the folder `azureml://datastores/<name>/paths/...` outputs land in."""
    return AzureBlobDatastore(name=name, account_name=LOCATION, container_name=name, id=arm_id("datastores", name),
                              description=f"local folder {folder}")


def batch_job(rec: dict[str, Any]) -> BatchJob:
    """What invoke and list_jobs return: the job's id, name, type and status."""
    return BatchJob(id=arm_id("jobs", rec["name"]), name=rec["name"], type=JOB_TYPE, status=rec.get("status"))


def job_entity(rec: dict[str, Any], *, child: bool = False) -> PipelineJob:
    """A job as `jobs.get` returns it; `child`: as its scoring step (`jobs.list(parent_job_name=...)`),
    which a local job is itself: same name, same outputs."""
    counts = rec.get("counts") or {}
    props = {
        "endpoint_name": rec.get("endpoint"), "deployment_name": rec.get("deployment"), "backend": rec.get("backend"),
        "output_file": rec.get("output_file"), "summary": rec.get("summary"), "error": rec.get("error"),
        "mini_batches": rec.get("mini_batches"), "job_dir": rec.get("job_dir"),
        **{f"counts.{k}": v for k, v in counts.items()},
    }
    return PipelineJob(
        name=rec["name"], display_name=rec.get("display_name") or ("batchscoring" if child else rec["name"]),
        description=rec.get("description"), tags=dict(rec.get("tags") or {}),
        experiment_name=rec.get("experiment_name") or rec.get("endpoint"),
        properties={k: str(v) for k, v in props.items() if v is not None}, status=rec.get("status"),
        outputs={"score": Output(type="uri_folder", path=rec.get("output_dir"))} if rec.get("output_dir") else {},
        jobs={}, id=arm_id("jobs", rec["name"]), creation_context=system_data(rec, rec.get("ended_at")),
    )
