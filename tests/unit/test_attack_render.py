"""`render --output-dir` inside bepbuild's own contexts folder prunes no other deployment's context.

Contexts written before contexts carried a marker (`contexts/<endpoint>-<deployment>`) may be
rendered into without one. Any unmarked folder directly under `contexts/` passed for such a context:
`bepbuild render deployment.yml --output-dir $BEPBUILD_HOME/contexts/endpoints` then pruned every
deployment's build context (their code gone, process-backend jobs refused until each was deployed
again), and the unmarked legacy context of another deployment was pruned the same way.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_render import make_input, snapshot

from bepbuild import config, naming
from bepbuild.context_dir import CONTEXT_MARKER
from bepbuild.errors import UserError
from bepbuild.render import render


@pytest.fixture
def sources(tmp_path: Path) -> tuple[Path, Path]:
    code = tmp_path / "src" / "code"
    code.mkdir(parents=True)
    (code / "score.py").write_text("def init():\n    pass\n\n\ndef run(batch):\n    return batch\n")
    model = tmp_path / "src" / "model.bin"
    model.write_bytes(b"m")
    return code, model


def test_the_folder_of_every_deployments_contexts_is_not_a_context(sources: tuple[Path, Path]) -> None:
    other = naming.context_dir("other-ep", "other-dpl")  # another deployment's context, as deploy made it
    (other / "code").mkdir(parents=True)
    (other / "code" / "score.py").write_text("theirs\n")
    (other / CONTEXT_MARKER).write_text('{"deployment": "other-dpl", "endpoint": "other-ep"}\n')
    everything = config.home() / "contexts" / "endpoints"
    before = snapshot(everything)
    with pytest.raises(UserError, match="not a build context"):
        render(make_input("image", *sources), everything)
    assert snapshot(everything) == before


def test_another_deployments_legacy_context_is_not_this_ones(sources: tuple[Path, Path]) -> None:
    theirs = config.home() / "contexts" / "other-ep-other-dpl"
    (theirs / "code").mkdir(parents=True)
    (theirs / "code" / "score.py").write_text("theirs\n")
    before = snapshot(theirs)
    with pytest.raises(UserError, match="not a build context"):
        render(make_input("image", *sources), theirs)  # tiny-ep/tiny-dpl
    assert snapshot(theirs) == before
    # its own legacy context, in any case, is still taken over
    mine = config.home() / "contexts" / "Tiny-Ep-tiny-dpl"
    (mine / "code").mkdir(parents=True)
    (mine / "code" / "stale.py").write_text("x")
    render(make_input("image", *sources), mine)
    assert (mine / CONTEXT_MARKER).is_file() and not (mine / "code" / "stale.py").exists()
