"""The folder scoring containers get to write (their output mount) never holds bepbuild's own files.

`--output-path` inside BEPBUILD_HOME or the jobs folder is refused; a folder that *holds* them was
not. A root host stages a user's folder (containers write into the job's outputs/), but a non-root
host mounts the output folder itself, read-write, into containers that run as the host user: with
`--output-path` one level above BEPBUILD_HOME, a scoring script rewrote registered models (their
read-only modes are the host user's to change), the registry database and other jobs' folders. Seen
with a host of uid 1234 in the docker group: `run()` appended to every file under
`$AZUREML_BI_OUTPUT_PATH/home/assets/models/` and the registered models changed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bepbuild import config
from bepbuild.errors import UserError
from bepbuild.jobs import outputs


def _holds(folder: Path, inner: Path) -> bool:
    f, i = folder.resolve(), inner.resolve()
    return f == i or f in i.parents


@pytest.mark.parametrize("which", ["home", "jobs"])
def test_a_non_root_hosts_containers_never_write_a_folder_holding_bepbuilds_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, which: str) -> None:
    if which == "jobs":
        monkeypatch.setenv("BEPBUILD_JOBS_DIR", str(tmp_path / "work" / "jobs"))
    own = config.home() if which == "home" else config.jobs_dir()
    own.mkdir(parents=True, exist_ok=True)
    job_dir = config.jobs_dir() / "job-1"
    job_dir.mkdir(parents=True)
    given = own.parent  # e.g. --output-path ~ with BEPBUILD_HOME=~/.bepbuild
    try:
        out = outputs.output_dir(str(given), job_dir)
    except UserError as e:  # refused in one line: fine
        assert "\n" not in e.line()
        return
    monkeypatch.setattr(os, "getuid", lambda: 1234)  # a host user in the docker group
    monkeypatch.setattr(os, "getgid", lambda: 1234)
    _user, staged = outputs.share_with_containers(job_dir, out, made=False, backend="docker")
    mounted = staged or out  # what the instances get read-write as their output folder
    assert not _holds(mounted, config.home()) and not _holds(mounted, config.jobs_dir()), mounted
