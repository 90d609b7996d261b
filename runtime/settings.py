"""The deployment settings the runtime obeys, read from `<job>/job.json` (key `settings`).

The one definition of each setting and its default (Azure's): the host's deployment schema
(bepbuild.specs) takes its defaults from here, and writes a job's settings with `as_job` after
checking them with `from_job`, exactly as the instances read them. Both the flat keys
(`max_retries`, `timeout`) and Azure's nested `retry_settings: {max_retries, timeout}` are
accepted; the flat keys win.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from . import layout

# Azure's task_overhead_timeout: what a mini-batch costs besides run() (scheduling, reading, writing).
TASK_OVERHEAD_SECONDS = 30.0
APPEND_ROW = "append_row"
SUMMARY_ONLY = "summary_only"
_LEVELS = {"warning": logging.WARNING, "info": logging.INFO, "debug": logging.DEBUG}


@dataclass(frozen=True)
class Settings:
    """One deployment's batch settings, with Azure's defaults."""

    mini_batch_size: int = 10
    max_concurrency_per_instance: int = 1
    instance_count: int = 1
    output_action: str = APPEND_ROW
    output_file_name: str = "predictions.csv"
    max_retries: int = 3
    timeout: float = 30.0
    error_threshold: int = -1
    logging_level: str = "info"
    environment_variables: dict[str, str] = field(default_factory=dict)
    progress_update_timeout: float | None = None  # None: Azure's default, see progress_timeout

    @property
    def progress_timeout(self) -> float:
        """Seconds an instance may show no sign of life before it counts as dead (Azure's
        progress_update_timeout, default 3 x (timeout + task overhead))."""
        if self.progress_update_timeout is not None:
            return self.progress_update_timeout
        return 3 * (self.timeout + TASK_OVERHEAD_SECONDS)

    @property
    def log_level(self) -> int:
        """The `logging` level number of `logging_level`."""
        return _LEVELS[self.logging_level]

    @property
    def tries(self) -> int:
        """How many times a mini-batch may be tried (Azure's max_retries is run_max_try)."""
        return max(1, self.max_retries)


DEFAULTS = Settings()


def as_job(settings: Settings) -> dict[str, Any]:
    """`settings` as the host writes them into job.json (flat keys), for `from_job` to read back."""
    out = asdict(settings)
    if out["progress_update_timeout"] is None:
        del out["progress_update_timeout"]
    if float(out["timeout"]).is_integer():  # whole seconds, as Azure's YAML gives them
        out["timeout"] = int(out["timeout"])
    return out


def load_job(job_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed `<job>/job.json`."""
    with open(layout.path(job_dir, layout.JOB_FILE), encoding="utf-8") as f:
        job = json.load(f)
    if not isinstance(job, dict):
        raise ValueError(f"{layout.JOB_FILE} must hold a JSON object")
    return job


def from_job(job: dict[str, Any]) -> Settings:
    """Settings from a parsed job.json; raises ValueError on a value the runtime cannot use."""
    raw = dict(job.get("settings") or {})
    retry = raw.pop("retry_settings", None) or {}
    for key in ("max_retries", "timeout"):
        if key not in raw and key in retry:
            raw[key] = retry[key]
    known = Settings.__dataclass_fields__
    values: dict[str, Any] = {}
    for key, value in raw.items():
        # Unknown keys are the host's business (it validated them); ignore rather than refuse.
        if key not in known or value is None:
            continue
        values[key] = value
    try:
        for key in ("mini_batch_size", "max_concurrency_per_instance", "instance_count", "max_retries",
                    "error_threshold"):
            if key in values:
                values[key] = int(values[key])
        for key in ("timeout", "progress_update_timeout"):
            if key in values:
                values[key] = float(values[key])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad numeric setting in {layout.JOB_FILE}: {exc}") from None
    if "logging_level" in values:
        values["logging_level"] = str(values["logging_level"]).lower()
    env = values.get("environment_variables", {})
    if not isinstance(env, dict):
        raise ValueError("settings.environment_variables must be a mapping")
    values["environment_variables"] = {str(k): str(v) for k, v in env.items()}
    settings = Settings(**values)
    _check(settings)
    return settings


def load(job_dir: str | os.PathLike[str]) -> Settings:
    """Settings of the job in `job_dir`."""
    return from_job(load_job(job_dir))


def _check(s: Settings) -> None:
    if s.output_action not in (APPEND_ROW, SUMMARY_ONLY):
        raise ValueError(f"output_action must be {APPEND_ROW} or {SUMMARY_ONLY}, not {s.output_action!r}")
    if s.logging_level not in _LEVELS:
        raise ValueError(f"logging_level must be one of {', '.join(_LEVELS)}, not {s.logging_level!r}")
    if s.mini_batch_size < 1 or s.max_concurrency_per_instance < 1:
        raise ValueError("mini_batch_size and max_concurrency_per_instance must be at least 1")
    if s.timeout <= 0:
        raise ValueError("timeout must be a positive number of seconds")
    if s.progress_update_timeout is not None and s.progress_update_timeout <= 0:
        raise ValueError("progress_update_timeout must be a positive number of seconds")
