"""bepbuild: Azure ML style batch endpoints on your own Docker engine."""

__version__ = "0.1.0"


def __getattr__(name: str):  # noqa: ANN202 - module attribute hook
    # bepbuild.MLClient is imported on first use: the CLI never pays for azure-ai-ml.
    if name == "MLClient":
        from .sdk import MLClient

        return MLClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
