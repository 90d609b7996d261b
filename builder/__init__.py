"""bepbuild: Azure ML style batch endpoints on your own Docker engine."""

__version__ = "0.1.0"
