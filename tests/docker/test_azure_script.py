"""Azure's MNIST deploy-and-run.sh shape, run as a script: `az ml` replaced by `bepbuild`, the sample
URI by the bundled folder, and an endpoint name with a random mixed-case suffix."""

from __future__ import annotations

import os
import random
import shutil
import string
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
BEPBUILD = Path(sys.executable).with_name("bepbuild")

pytestmark = pytest.mark.docker


def mixed_case_suffix(rng: random.Random) -> str:
    """Five characters of [a-zA-Z0-9] with at least one upper- and one lower-case letter."""
    while True:
        s = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(5))
        if any(c.isupper() for c in s) and any(c.islower() for c in s):
            return s


def test_deploy_and_run_script_with_a_mixed_case_endpoint_name(tmp_path: Path) -> None:
    work = tmp_path / "mnist"
    shutil.copytree(REPO / "examples" / "mnist", work, ignore=shutil.ignore_patterns("train"))
    suffix = mixed_case_suffix(random.Random())
    env = {**os.environ, "BEPBUILD": str(BEPBUILD), "ENDPOINT_SUFIX": suffix}
    proc = subprocess.run(["bash", "deploy-and-run.sh"], cwd=work, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"suffix {suffix}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    out = proc.stdout
    endpoint = f"mnist-batch-{suffix}"
    assert "did not exist" not in proc.stderr  # no second endpoint made behind the user's back
    assert out.count("Job completed") == 5 and "Status: Completed" in out and "Execution Summary" in out
    assert f'"Name": "{endpoint}"' in out and '"deployment_name": "mnist-keras-dpl"' in out
    # The download of the overrides job: every sample file scored once, read as Azure's examples read it.
    pred = pd.read_csv(work / "named-outputs" / "score" / "predictions.csv", header=None,
                       names=["file", "class", "probability"], sep=" ")
    labels = pd.read_csv(work / "sample-labels.csv")
    assert sorted(pred["file"]) == sorted(labels["file"])
    assert (pred.merge(labels, on="file").eval("`class` == label")).mean() > 0.9
    # The named output file of the second invoke, under the local stand-in of the datastore path.
    home = Path(os.environ["BEPBUILD_HOME"])
    written = list((home / "datastores" / "workspaceblobstore" / endpoint).glob("predictions_*.csv"))
    assert len(written) == 1 and len(written[0].read_text().splitlines()) == len(labels)
    # Deleted at the end, whatever case is used; the jobs stay.
    listed = subprocess.run([str(BEPBUILD), "batch-endpoint", "list", "--query", "[].name", "-o", "tsv"],
                            capture_output=True, text=True, check=True).stdout
    assert endpoint.lower() not in listed.lower()
    jobs = subprocess.run([str(BEPBUILD), "job", "list", "--endpoint-name", endpoint.upper(), "--query", "[].status",
                           "-o", "tsv"], capture_output=True, text=True, check=True).stdout.split()
    assert jobs == ["Completed"] * 5
