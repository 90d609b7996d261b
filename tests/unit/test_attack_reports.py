"""The host's job reports never read through links that a scoring container planted.

`processed_mini-batches.csv` merges the attempts CSVs of `logs/sys/job_report/attempts/`, and
`job_error.txt` quotes the tracebacks of `logs/user/error/`: both folders are the containers' to
write. The host (perhaps root) writes what it read into its own reports, which the user reads and the
job's next instances can read: a folder there replaced by a link to a folder of the host must not
copy that folder's files into them.
"""

from __future__ import annotations

import os
from pathlib import Path

from bepbuild.jobs import reports
from bepbuild_runtime import layout

SECRET = "root-only secret"


def _host_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "host-folder"
    folder.mkdir()
    (folder / "passwords.csv").write_text(f"{SECRET}\n")
    (folder / "notes.txt").write_text(f"{SECRET}\n")
    return folder


def test_attempts_are_not_read_through_a_linked_folder(tmp_path: Path) -> None:
    job, host = tmp_path / "job", _host_folder(tmp_path)
    attempts = job / layout.LOG_ATTEMPTS_DIR
    attempts.parent.mkdir(parents=True)
    attempts.symlink_to(host)
    assert reports.processed_mini_batches(job) == 0
    assert SECRET not in (job / layout.LOG_PROCESSED_MINI_BATCHES).read_text()
    # the job_report folder itself a link (a non-root host's containers can replace it)
    attempts.unlink()
    (job / layout.LOG_JOB_REPORT_DIR).rename(tmp_path / "old-report")
    (job / layout.LOG_JOB_REPORT_DIR).symlink_to(tmp_path / "old-report")
    (tmp_path / "old-report" / "attempts").symlink_to(host)
    before = (tmp_path / "old-report" / "processed_mini-batches.csv").read_bytes()
    assert reports.processed_mini_batches(job) == 0
    assert (tmp_path / "old-report" / "processed_mini-batches.csv").read_bytes() == before  # not written through
    report = job / layout.LOG_JOB_REPORT_DIR
    assert report.is_dir() and not report.is_symlink()  # the link gave way to a folder of the host's
    assert SECRET not in (job / layout.LOG_PROCESSED_MINI_BATCHES).read_text()


def test_attempts_of_plain_folders_are_merged(tmp_path: Path) -> None:
    job = tmp_path / "job"
    attempts = job / layout.LOG_ATTEMPTS_DIR
    attempts.mkdir(parents=True)
    header = ",".join(layout.PROCESSED_COLUMNS) + "\n"
    (attempts / "instance-0.0.csv").write_text(header + "000000000,1,instance-0.0\n")
    (attempts / "instance-0.1.csv").write_text(header + "000000001,1,instance-0.1\n000000002,1,instance-0.1\n")
    (attempts / "instance-0.2.csv").symlink_to(attempts / "instance-0.0.csv")  # a link: not a log the runtime wrote
    assert reports.processed_mini_batches(job) == 3
    text = (job / layout.LOG_PROCESSED_MINI_BATCHES).read_text()
    assert text.count("000000000") == 1 and text.startswith(header)


def test_tracebacks_are_not_read_through_a_linked_folder(tmp_path: Path) -> None:
    job, host = tmp_path / "job", _host_folder(tmp_path)
    errors = job / layout.LOG_USER_ERROR
    errors.mkdir(parents=True)
    (errors / "instance-0").symlink_to(host)  # an instance's folder
    job_doc = {"name": "j", "status": "Failed", "error": "boom"}
    reports.result(job, job_doc)
    assert SECRET not in (job / layout.LOG_ERROR).read_text()
    os.unlink(errors / "instance-0")
    errors.rmdir()
    errors.symlink_to(host)  # the whole error folder
    reports.result(job, job_doc)
    assert SECRET not in (job / layout.LOG_ERROR).read_text()
    # a real traceback is still quoted
    errors.unlink()
    (errors / "instance-0").mkdir(parents=True)
    (errors / "instance-0" / "instance-0.0.txt").write_text("Traceback: ValueError: bad input\n")
    reports.result(job, job_doc)
    assert "ValueError: bad input" in (job / layout.LOG_ERROR).read_text()
