"""`bepbuild serve`: the dashboard (endpoints, jobs, live job pages, outputs) and Azure's REST invoke.

The web stack (Starlette, uvicorn) is the optional `dashboard` extra: only `app`, `routes_*` and
`server` import it. `state` (where a running server listens) and the job-folder readers are plain
Python, so the CLI can tell a scoring URI without the extra installed.
"""
