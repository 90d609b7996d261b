"""Fault paths that need no engine: claims given back on a full disk, and a host that died after
publishing its merge (the real-engine faults are in tests/docker/test_faults.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from test_jobs_process import Cli, lines, make_inputs, register

from bepbuild.jobs import runner
from bepbuild.store import Store
from bepbuild_runtime import layout, queue


def test_release_claims_gives_batches_back_untouched(tmp_path: Path) -> None:
    job = tmp_path / "job"
    queue.write_queue(job, [f"f{i}" for i in range(3)], 1)
    claimer = queue.Claimer(job, "i.0")
    first, second = claimer.claim(), claimer.claim()
    assert first and second
    queue.complete(job, "i.0", first, "f0 row\n", 1)
    # a finished batch whose claim is still there (killed between done and unlink), a temp file
    claim_copy = queue.worker_dir(job, "i.0") + f"/{first['id']}.json"
    Path(claim_copy).write_text(json.dumps(first))
    Path(queue.worker_dir(job, "i.0"), layout.TMP_PREFIX + "x.csv").write_text("half")
    released = queue.release_claims(job, "i.0")
    assert released == [second["id"]]
    pending = sorted(p.name for p in (job / layout.PENDING_DIR).iterdir())
    assert pending == [f"{second['id']}.json", "000000002.json"]
    back = json.loads((job / layout.PENDING_DIR / f"{second['id']}.json").read_text())
    assert back == second and back["attempt"] == 0  # the try was not counted
    assert os.listdir(queue.worker_dir(job, "i.0")) == []


def _host_died_after_publishing(job: dict, other_content: bool = False) -> Path:
    """Rewind a Completed job to the moment after the merge published its output and before the
    host recorded it: Finalizing, not merged, the dead host's temp file still linked to the output."""
    job_dir, out = Path(job["job_dir"]), Path(job["output_file"])
    dead_pid = 2**22 + 12345  # above pid_max's default: no such process
    tmp = out.parent / f".{out.name}.merging-{dead_pid}"
    if other_content:
        out.write_text("someone else's file\n")
    os.link(out, tmp)
    doc = runner.read_job(job_dir)
    doc.update(status="Finalizing", merged=False, merging_pid=dead_pid, error=None)
    runner.write_job(job_dir, doc)
    store = Store.open()
    try:
        store.update_job(job["name"], status="Finalizing")
    finally:
        store.close()
    return tmp


def test_resume_after_the_host_died_between_publish_and_record(tmp_path: Path) -> None:
    register(mini_batch_size=2)
    names = make_inputs(tmp_path / "in", 7)
    cli = Cli()
    job = cli.invoke("--input", str(tmp_path / "in"), "--job-name", "published")
    before = Path(job["output_file"]).read_bytes()
    tmp = _host_died_after_publishing(job)
    again = cli.json("job", "resume", "--name", "published", "-q")
    assert again["status"] == "Completed", again
    assert Path(job["output_file"]).read_bytes() == before  # kept, not merged twice
    assert sorted(n.split()[0] for n in lines(job["output_file"])) == names
    assert not tmp.exists()


def test_resume_never_adopts_an_output_it_did_not_write(tmp_path: Path) -> None:
    register(mini_batch_size=2)
    make_inputs(tmp_path / "in", 5)
    cli = Cli()
    job = cli.invoke("--input", str(tmp_path / "in"), "--job-name", "clobbered")
    _host_died_after_publishing(job, other_content=True)
    res = cli("job", "resume", "--name", "clobbered", "-q", "-o", "json", code=1)
    failed = json.loads(res.stdout)
    assert failed["status"] == "Failed" and "output file exists" in failed["error"]
    assert Path(job["output_file"]).read_text() == "someone else's file\n"
