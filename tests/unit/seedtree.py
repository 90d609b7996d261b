"""A working copy of the seed YAML tree (tests/data/seed) with the files the YAMLs point at.

The seed deployments reference `model/` and `code/batch_driver.py`, which are not in the seed
folder: a copy gets a tiny model file and a minimal scoring script per deployment.
"""

from __future__ import annotations

import shutil
from pathlib import Path

SEED = Path(__file__).resolve().parents[1] / "data" / "seed"
DEPLOYMENTS = ("deployment-torch", "deployment-keras")

SCORING_SCRIPT = """\
import os


def init():
    global model_dir
    model_dir = os.environ.get("AZUREML_MODEL_DIR", "")


def run(mini_batch):
    return [os.path.basename(p) for p in mini_batch]
"""


def make_seed_tree(dst: Path) -> Path:
    """Copy the seed tree into `dst` and add model/ and code/batch_driver.py to each deployment."""
    shutil.copytree(SEED, dst, dirs_exist_ok=True)
    for name in DEPLOYMENTS:
        d = dst / name
        (d / "model").mkdir(exist_ok=True)
        (d / "model" / "model.pt").write_bytes(b"\x80\x02tiny-model\n")
        (d / "code").mkdir(exist_ok=True)
        (d / "code" / "batch_driver.py").write_text(SCORING_SCRIPT)
    return dst
