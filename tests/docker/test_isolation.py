"""Isolation by default: what a scoring script can see and do from inside its container.

A scoring script inspects its own environment from inside run() and returns the facts as a row;
while it waits, `docker inspect` of the running instance container checks the same from outside.
Every check is listed in docs/reliability.md with how to relax it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from jobkit import DOCKER, bep, invoke, job_containers, make_inputs, wait_final, wait_for

from bepbuild_runtime import layout

pytestmark = pytest.mark.docker

# The host's environment must not leak into containers (only what the deployment sets).
HOST_SECRET = "BEPBUILD_ISOLATION_HOST_SECRET"

INSPECT = """
import errno, json, os, socket, time

def _try_write(folder):
    path = os.path.join(folder, ".isolation-probe")
    try:
        with open(path, "w") as f:
            f.write("x")
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    os.unlink(path)
    return "written"

def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        return "missing: " + errno.errorcode.get(e.errno, str(e.errno))

def _status():
    out = {}
    for line in _read("/proc/self/status").splitlines():
        key, _, value = line.partition(":")
        if key in ("CapEff", "CapPrm", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"):
            out[key] = value.strip()
    return out

def run(mini_batch):
    inputs = os.path.dirname(mini_batch[0])
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(inputs, "go")) and time.time() < deadline:
        time.sleep(0.1)  # the test inspects the running container meanwhile
    model_dir = os.environ["AZUREML_MODEL_DIR"]
    facts = {
        "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups(),
        "status": _status(),
        "interfaces": sorted(line.split(":")[0].strip() for line in _read("/proc/net/dev").splitlines()[2:]),
        "if_nameindex": sorted(name for _, name in socket.if_nameindex()),
        "writes": {
            "/": _try_write("/"), "/etc": _try_write("/etc"), "/opt/bepbuild": _try_write("/opt/bepbuild"),
            "model": _try_write(model_dir), "model_folder": _try_write(os.path.join(model_dir, "model")),
            "code": _try_write(os.environ["BEPBUILD_CODE_DIR"]), "venv": _try_write("/opt/bepbuild/venv"),
            "input": _try_write(inputs), "tmp": _try_write("/tmp"),
            "output": _try_write(os.environ["AZUREML_BI_OUTPUT_PATH"]),
        },
        "docker_sock": [p for p in ("/var/run/docker.sock", "/run/docker.sock") if os.path.exists(p)],
        "pids_max": _read("/sys/fs/cgroup/pids/pids.max") if os.path.exists("/sys/fs/cgroup/pids")
                    else _read("/sys/fs/cgroup/pids.max"),
        "memory_limit": _read("/sys/fs/cgroup/memory/memory.limit_in_bytes")
                        if os.path.exists("/sys/fs/cgroup/memory") else _read("/sys/fs/cgroup/memory.max"),
        "cpu": [_read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")]
               if os.path.exists("/sys/fs/cgroup/cpu") else _read("/sys/fs/cgroup/cpu.max").split(),
        "pid1": _read("/proc/1/cmdline").replace("\\0", " "),
        "processes": sum(1 for n in os.listdir("/proc") if n.isdigit()),
        "host_secret": os.environ.get("@SECRET@"),
        "omp_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    return [json.dumps(facts)]
""".replace("@SECRET@", HOST_SECRET)


def test_scoring_container_is_isolated(deploy, jobs: list[str], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    bep("compute", "create", "-n", "limited", "--max-instances", "1", "--cpus", "1", "--memory", "512m",
        "-o", "none")
    dep = deploy(INSPECT, mini_batch_size=1, timeout=180, compute="azureml:limited")
    inputs = make_inputs(tmp_path / "in", ["probe.txt"])
    monkeypatch.setenv(HOST_SECRET, "must-not-leak")
    queued = invoke(dep, inputs, "--no-wait", jobs=jobs)
    name, job_dir = queued["name"], Path(queued["job_dir"])
    # from outside: the running instance container
    cid = wait_for(lambda: job_containers(name, "instance-0"), "the instance container", timeout=60)[0]
    wait_for(lambda: list((job_dir / layout.RUNNING_DIR).glob("*/*.json")), "run() to start", timeout=60)
    attrs = json.loads(subprocess.run([DOCKER, "inspect", cid], check=True, capture_output=True, text=True).stdout)[0]
    (inputs / "go").write_text("")
    job = wait_final(job_dir, timeout=180)
    assert job["status"] == "Completed", job
    facts = json.loads(Path(job["output_file"]).read_text().splitlines()[0])

    problems: list[str] = []

    def check(ok: Any, what: str) -> None:
        if not ok:
            problems.append(what)

    host = attrs["HostConfig"]
    check(host["NetworkMode"] == "none", f"network mode {host['NetworkMode']}")
    check(host["ReadonlyRootfs"] is True, "root filesystem writable")
    check(host["CapDrop"] and "ALL" in host["CapDrop"], f"capabilities not dropped: {host['CapDrop']}")
    check(not host.get("CapAdd"), f"capabilities added: {host.get('CapAdd')}")
    check("no-new-privileges" in (host.get("SecurityOpt") or []), f"security options {host.get('SecurityOpt')}")
    check(host["Privileged"] is False, "privileged")
    check(host["PidsLimit"] == 4096, f"pids limit {host['PidsLimit']}")
    check(host["Memory"] == 512 * 1024**2, f"memory limit {host['Memory']}")
    check(host["NanoCpus"] == 10**9, f"cpus {host['NanoCpus']}")
    check(host.get("PidMode", "") in ("", "private"), f"pid mode {host.get('PidMode')}")
    check(host.get("IpcMode") in ("private", "shareable", "none"), f"ipc mode {host.get('IpcMode')}")
    check(not host.get("Devices"), f"devices {host.get('Devices')}")
    user = attrs["Config"]["User"]
    check(user and not user.startswith("0"), f"runs as {user!r}")
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    check(mounts[layout.CONTAINER_INPUT_DIR]["RW"] is False, "inputs mounted writable")
    check(set(mounts) == {layout.CONTAINER_JOB_DIR, layout.CONTAINER_INPUT_DIR, layout.CONTAINER_OUTPUT_DIR},
          f"mounts {sorted(mounts)}")
    check(not any("docker.sock" in m["Source"] for m in attrs["Mounts"]), "the engine socket is mounted")
    check(not any(e.startswith(HOST_SECRET) for e in attrs["Config"]["Env"]), "host environment copied")

    # from inside: what run() saw
    check(facts["uid"] != 0 and facts["euid"] != 0 and facts["gid"] != 0, f"uid/gid {facts['uid']}/{facts['gid']}")
    status = facts["status"]
    for cap in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        check(int(status.get(cap, "1"), 16) == 0, f"{cap} = {status.get(cap)}")
    check(status.get("NoNewPrivs") == "1", f"NoNewPrivs = {status.get('NoNewPrivs')}")
    check(status.get("Seccomp") == "2", f"Seccomp = {status.get('Seccomp')} (2 = filtering)")
    check(facts["interfaces"] == ["lo"], f"network interfaces {facts['interfaces']}")
    check(facts["if_nameindex"] == ["lo"], f"if_nameindex {facts['if_nameindex']}")
    writes = facts["writes"]
    for place in ("/", "/etc", "/opt/bepbuild", "model", "model_folder", "code", "venv", "input"):
        check(writes[place] in ("EROFS", "EACCES", "EPERM"), f"writing to {place}: {writes[place]}")
    check(writes["tmp"] == "written" and writes["output"] == "written", f"scratch and output writes: {writes}")
    check(facts["docker_sock"] == [], f"engine socket visible: {facts['docker_sock']}")
    check(facts["pids_max"] == "4096", f"pids.max {facts['pids_max']}")
    check(facts["memory_limit"] == str(512 * 1024**2), f"memory limit {facts['memory_limit']}")
    quota, period = (int(x) for x in facts["cpu"][:2])
    check(quota == period, f"cpu quota {quota}/{period}")
    check("bepbuild_runtime" in facts["pid1"], f"pid 1 is {facts['pid1']!r} (own pid namespace)")
    check(facts["processes"] < 10, f"{facts['processes']} processes visible")
    check(facts["host_secret"] is None, "a host environment variable reached run()")
    check(facts["omp_threads"] == "1", f"OMP_NUM_THREADS {facts['omp_threads']} with --cpus 1")
    assert not problems, "\n".join(problems)
    assert not job_containers(name, all_=True)
