"""`python -m bepbuild_runtime`: run one instance (a supervisor and its workers) on a job folder.

Options default to the environment the image or the process backend sets (names in layout):
BEPBUILD_JOB_DIR, BEPBUILD_INPUT_DIR, BEPBUILD_INSTANCE (default: the host name),
BEPBUILD_CODE_DIR, BEPBUILD_SCORING_SCRIPT; AZUREML_MODEL_DIR is passed to the script as is and
AZUREML_BI_OUTPUT_PATH defaults to <job>/outputs. Exit codes: layout.EXIT_*.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from . import layout
from .supervisor import Options
from .supervisor import main as run_instance


def parse_args(argv: list[str] | None = None) -> Options:
    """Options from the command line, falling back to the environment."""
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="python -m bepbuild_runtime",
        description="Score the mini-batches of a bepbuild job folder with this instance's workers.",
    )
    parser.add_argument("--job-dir", default=env(layout.ENV_JOB_DIR),
                        help=f"the job folder (default ${layout.ENV_JOB_DIR})")
    parser.add_argument("--input-dir", default=env(layout.ENV_INPUT_DIR),
                        help=f"folder the queue's item paths are relative to (default ${layout.ENV_INPUT_DIR})")
    parser.add_argument("--instance", default=env(layout.ENV_INSTANCE) or socket.gethostname(),
                        help=f"this instance's name (default ${layout.ENV_INSTANCE}, else the host name)")
    parser.add_argument("--code-dir", default=env(layout.ENV_CODE_DIR),
                        help=f"the scoring code folder (default ${layout.ENV_CODE_DIR}, else {layout.IMAGE_CODE_DIR})")
    parser.add_argument("--scoring-script", default=env(layout.ENV_SCORING_SCRIPT),
                        help=f"script path, relative to the code folder (default ${layout.ENV_SCORING_SCRIPT}; "
                             "job.json's scoring_script wins)")
    args = parser.parse_args(argv)
    if not args.job_dir:
        parser.error(f"no job folder: pass --job-dir or set {layout.ENV_JOB_DIR}")  # exits 2
    # The instance names folders (running/<instance>.<n>, logs/.../<instance>/): no separators.
    args.instance = args.instance.replace("/", "-")
    return Options(args.job_dir, args.input_dir, args.instance, args.code_dir, args.scoring_script)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    opts = parse_args(argv)
    if not os.environ.get(layout.ENV_OUTPUT_PATH):
        os.environ[layout.ENV_OUTPUT_PATH] = layout.path(os.path.abspath(opts.job_dir), layout.OUTPUTS_DIR)
    if os.path.isdir(opts.job_dir):
        try:  # summary_only scripts write here; the host normally created (or mounted) it already
            os.makedirs(os.environ[layout.ENV_OUTPUT_PATH], exist_ok=True)
        except OSError:
            pass
    return run_instance(opts)


if __name__ == "__main__":
    sys.exit(main())
