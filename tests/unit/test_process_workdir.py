"""The process backend's work/<instance>/ folders (its workers' temp folders): made by the host for each
instance's life, removed when that instance ends and, at the job's end, all of work/; never through
a link, and whatever the scoring code (the same user) left in their place is the host's to replace."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bepbuild.jobs.backends import ProcessBackend
from bepbuild_runtime import layout


def _backend(job: Path) -> ProcessBackend:
    backend = ProcessBackend()
    backend._job_dir = job
    return backend


def _exit_now(backend: ProcessBackend, instance: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    backend.procs[instance] = proc


def test_an_instance_that_ends_has_its_work_folder_removed_and_only_its_own(tmp_path: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    backend = _backend(job)
    for inst in ("instance-0", "instance-1"):
        assert backend._make_work(inst)
        (job / layout.WORK_DIR / inst / f"bepbuild-{inst}.0-x").mkdir()
        (job / layout.WORK_DIR / inst / f"bepbuild-{inst}.0-x" / "scratch.bin").write_bytes(b"x" * 10)
    _exit_now(backend, "instance-0")
    assert backend.exited() == {"instance-0": 0}
    assert sorted(p.name for p in (job / layout.WORK_DIR).iterdir()) == ["instance-1"]
    backend.cleanup()
    assert not (job / layout.WORK_DIR).exists()
    backend._remove_work("instance-0")  # makes nothing on its way
    assert not (job / layout.WORK_DIR).exists()


def test_links_and_files_in_the_work_folders_places(tmp_path: Path) -> None:
    job, outside = tmp_path / "job", tmp_path / "outside"
    (outside / "instance-0").mkdir(parents=True)
    (outside / "instance-0" / "keep.txt").write_text("not bepbuild's")
    job.mkdir()
    backend = _backend(job)
    (job / layout.WORK_DIR).symlink_to(outside)  # work/ itself a link
    backend._remove_work("instance-0")
    backend._remove_work(None)
    assert (outside / "instance-0" / "keep.txt").read_text() == "not bepbuild's"
    assert backend._make_work("instance-0") and (job / layout.WORK_DIR).is_dir()
    assert not (job / layout.WORK_DIR).is_symlink() and (outside / "instance-0" / "keep.txt").exists()
    (job / layout.WORK_DIR / "instance-0").rmdir()
    (job / layout.WORK_DIR / "instance-0").symlink_to(outside / "instance-0")  # work/<instance> a link
    backend._remove_work("instance-0")
    assert (outside / "instance-0" / "keep.txt").exists() and not (job / layout.WORK_DIR / "instance-0").exists()
    (job / layout.WORK_DIR / "instance-0").write_text("a file")  # a file where the folder goes
    assert backend._make_work("instance-0") and (job / layout.WORK_DIR / "instance-0").is_dir()
    backend._remove_work(None)
    (job / layout.WORK_DIR).write_text("a file")  # work/ itself a file
    assert backend._make_work("instance-1") and (job / layout.WORK_DIR / "instance-1").is_dir()


def test_work_left_by_an_earlier_host_goes_with_the_job_s_instances(tmp_path: Path) -> None:
    """A host killed before its instances ended leaves work/: whoever stops what is left of the job (a
    resume, a cancel, the record of its end, a delete) removes it, and only it."""
    job, outside = tmp_path / "job", tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not bepbuild's")
    earlier = _backend(job)
    job.mkdir()
    (job / layout.CONTROL_DIR).mkdir()
    assert earlier._make_work("instance-0")
    (job / layout.WORK_DIR / "instance-0" / "bepbuild-instance-0.0-x").mkdir()
    (job / layout.WORK_DIR / "instance-0" / "bepbuild-instance-0.0-x" / "link").symlink_to(outside)
    (job / "keep.txt").write_text("the job's")
    assert ProcessBackend().remove_job({"job_dir": str(job)}) == 0  # a new host: no instance left to stop
    assert not (job / layout.WORK_DIR).exists()
    assert (outside / "keep.txt").read_text() == "not bepbuild's" and (job / "keep.txt").exists()
