"""The CLI around the dashboard: `serve` (--list, --stop, one per home, the token), `batch-endpoint
show`'s scoring_uri from the server's state file, and `job show --web`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from test_jobs_process import ENDPOINT, Cli, make_inputs, register
from webkit import BEPBUILD, TOKEN, Server, wait_for

from bepbuild.web import state


@pytest.fixture
def cli() -> Cli:
    return Cli()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_scoring_uri_only_while_a_live_server_is_recorded(cli: Cli, bepbuild_home: Path) -> None:
    register()
    assert "scoring_uri" not in cli.json("batch-endpoint", "show", "--name", ENDPOINT)
    me = os.getpid()
    state.write(state.ServerInfo("127.0.0.1", 45678, me, TOKEN, state.process_start(me)))
    shown = cli.json("batch-endpoint", "show", "--name", ENDPOINT.upper())  # names ignore case
    assert shown["scoring_uri"] == f"http://127.0.0.1:45678/endpoints/{ENDPOINT}/jobs"
    assert [e["scoring_uri"] for e in cli.json("batch-endpoint", "list")] == [shown["scoring_uri"]]
    assert oct((bepbuild_home / "serve.json").stat().st_mode & 0o777) == "0o600"  # it holds the token
    # Stale: the process is gone, or the pid now belongs to another process (another start time).
    for info in (state.ServerInfo("127.0.0.1", 45678, dead_pid(), TOKEN),
                 state.ServerInfo("127.0.0.1", 45678, me, TOKEN, "1")):
        state.write(info)
        assert "scoring_uri" not in cli.json("batch-endpoint", "show", "--name", ENDPOINT)
    (bepbuild_home / "serve.json").write_text("{not json")
    assert "scoring_uri" not in cli.json("batch-endpoint", "show", "--name", ENDPOINT)


def test_serve_list_stop_and_one_server_per_home(bepbuild_home: Path) -> None:
    def bep(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BEPBUILD), *args], capture_output=True, text=True, timeout=60)

    assert json.loads(bep("serve", "--list").stdout) == []
    server = Server(bepbuild_home)
    try:
        listed = json.loads(bep("serve", "--list").stdout)
        assert listed == [{"url": server.page("/endpoints"), "base_url": server.base, "host": "127.0.0.1",
                           "port": server.info.port, "pid": server.proc.pid, "token": TOKEN, "backend": "process"}]
        second = bep("dashboard", "--port", "0")
        assert second.returncode == 2
        assert second.stderr.startswith("error: a bepbuild server already runs") and "--stop" in second.stderr
        assert len(second.stderr.splitlines()) == 1
        stopped = bep("serve", "--stop")
        assert stopped.returncode == 0 and f"pid {server.proc.pid}" in stopped.stderr
        assert server.proc.wait(10) == 0
    finally:
        server.stop()
    assert not (bepbuild_home / "serve.json").exists()
    assert "no server runs" in bep("serve", "--stop").stderr


@pytest.mark.parametrize("args", [["--token", "short"], ["--token", "with space 0123456789"],
                                  ["--backend", "kubernetes"], ["--host", "203.0.113.77"]])
def test_serve_refuses_bad_options_in_one_line(args: list[str], bepbuild_home: Path) -> None:
    res = subprocess.run([str(BEPBUILD), "serve", "--port", "0", *args], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res
    assert res.stderr.startswith("error: ") and len(res.stderr.splitlines()) == 1, res.stderr
    assert not (bepbuild_home / "serve.json").exists()


def test_serve_on_every_interface_says_the_token_is_still_needed(bepbuild_home: Path) -> None:
    env = {**os.environ, "BEPBUILD_HOME": str(bepbuild_home)}
    proc = subprocess.Popen([str(BEPBUILD), "serve", "--host", "0.0.0.0", "--port", "0", "--token", TOKEN],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()
        assert "every request still needs the token" in first and "0.0.0.0" in first
        info = wait_for(lambda: state.read(bepbuild_home), timeout=30, what="the server")
        assert info.base_url.startswith("http://127.0.0.1:")  # reached on loopback here
        assert httpx.get(f"{info.base_url}/endpoints").status_code == 401
        assert httpx.get(info.page("/endpoints")).status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stderr.close()


def test_serve_without_the_dashboard_extra_says_how_to_get_it(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn now raises ImportError
    res = cli("serve", "--port", "0", code=2)
    assert "pip install 'bepbuild[dashboard]'" in res.stderr and "uvicorn" in res.stderr


def test_job_show_web_starts_a_server_and_gives_the_job_page(cli: Cli, bepbuild_home: Path, tmp_path: Path) -> None:
    register()
    make_inputs(tmp_path / "in", 3)
    job = cli.invoke("--input", str(tmp_path / "in"), "--job-name", "web-job")
    res = cli("job", "show", "--name", "web-job", "--web")
    assert json.loads(res.stdout)["name"] == "web-job"
    url = next(line.split(": ", 1)[1] for line in res.stderr.splitlines() if line.startswith("job page"))
    assert f"job folder: {job['job_dir']}" in res.stderr
    info = state.read(bepbuild_home)
    assert info is not None and url == info.page("/jobs/web-job")
    page = httpx.get(url, timeout=30)
    assert page.status_code == 200 and "web-job" in page.text
    # A second --web uses the running server.
    again = cli("job", "show", "--name", "web-job", "--web")
    assert url in again.stderr and state.read(bepbuild_home).pid == info.pid
    cli("job", "show", "--name", "no-such-job", "--web", code=2)
