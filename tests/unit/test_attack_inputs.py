"""http(s) archive inputs whose members cannot be unpacked as they are named: one line, no job left.

A member that is a file where another member needs a folder (`a` then `a/b`), a folder where a file
goes, or a name longer than the filesystem takes, failed inside extraction with a bare OSError:
`internal error: NotADirectoryError ...` (exit 1), whether tarfile's data filter or bepbuild's own
extraction wrote the members.
"""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest
from hostile_names import ECHO
from test_hostile import http_server, jobs_left  # noqa: F401 - the loopback HTTP server fixture
from test_jobs_process import ENDPOINT, Cli, register

from bepbuild.jobs import inputs


def _tar(members: list[tuple[str, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
            else:
                info.size = len(data)
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members:
            z.writestr(name, data)
    return buf.getvalue()


ARCHIVES = {
    "file-then-folder.tar": _tar([("a", b"x"), ("a/b", b"y")]),
    "folder-then-file.tar": _tar([("a", None), ("a", b"x")]),
    "file-then-folder.zip": _zip([("a", b"x"), ("a/b", b"y")]),
    "folder-then-file.zip": _zip([("a/", b""), ("a", b"x")]),
    "long-name.zip": _zip([("x" * 300, b"x")]),
    "long-name.tar": _tar([("x" * 300, b"x")]),
}


@pytest.mark.parametrize("data_filter", [True, False], ids=["tarfile-filter", "own-extraction"])
def test_archives_that_cannot_be_unpacked_are_one_line(
    http_server: tuple[str, dict[str, tuple[bytes, bool]]],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch, data_filter: bool,
) -> None:
    if not data_filter:  # as on Python 3.11.2, whose tarfile has no filters
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    register(ECHO)
    url, routes = http_server
    cli = Cli()
    for name, body in ARCHIVES.items():
        routes[f"/{name}"] = (body, True)
        res = cli("batch-endpoint", "invoke", "--name", ENDPOINT, "--backend", "process", "--input",
                  f"{url}/{name}", "--input-type", "uri_folder", code=2)
        assert "cannot unpack the archive" in res.stderr and name in res.stderr, res.stderr
    assert jobs_left() == []


def test_the_unpack_error_names_the_member(
    http_server: tuple[str, dict[str, tuple[bytes, bool]]], tmp_path: object,  # noqa: F811
) -> None:
    url, routes = http_server
    routes["/a.tar"] = (ARCHIVES["file-then-folder.tar"], True)
    spec = inputs.InputSpec("x", "uri_folder", root=None, url=f"{url}/a.tar")  # type: ignore[arg-type]
    from bepbuild.errors import UserError

    with pytest.raises(UserError) as info:
        inputs.download(spec, tmp_path / "inputs")  # type: ignore[operator]
    assert "a/b" in info.value.line() and "\n" not in info.value.line()
