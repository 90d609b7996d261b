"""bepbuild's container-side runtime: `python -m bepbuild_runtime` runs one instance of a batch job.

Stdlib only (pandas only when a run() returns a DataFrame), and never imports `bepbuild`:
this package is baked into every image. Modules:

- layout: the job-folder contract shared with the host (names, env vars, exit codes)
- queue: the mini-batch queue protocol (write, claim, complete, fail, requeue); the host uses it too
- progress: drain checks, progress counts, merge of results (re-exported by queue)
- output: Azure's append_row formatting and success counting of one run() return
- settings: the deployment settings in job.json, with Azure's defaults
- reports: per-worker node log lines and processed mini-batch CSV rows
- supervisor, worker: the instance's entrypoint process and its worker processes
- probe: `bepbuild test`'s one try of a deployment in its image (import, init(), run() on a few
  items, rows as the job writes them) and its environment checks (pip check, lock, Python, imports)
- mlflow_driver: the scoring script of MLflow deployments without one (mlflow, pandas, numpy and
  PIL are imported inside its init()/run(), from the deployment's environment)
"""
