"""The kinds of YAML file bepbuild reads (defined apart from the specs, which need pydantic, so that
the command line can name them without importing it)."""

KINDS = ("endpoint", "deployment", "model", "environment", "data", "compute", "conda")
