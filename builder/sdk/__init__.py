"""The Python SDK surface: `bepbuild.MLClient` runs azure-ai-ml v2 code for batch endpoints locally.

Needs the `sdk` extra (azure-ai-ml): `pip install 'bepbuild[sdk]'`.
"""

from __future__ import annotations

try:
    import azure.ai.ml  # noqa: F401
except ImportError as e:  # one line saying what to install, not a traceback deep in the SDK
    raise ImportError(f"bepbuild.MLClient needs the azure-ai-ml package: pip install 'bepbuild[sdk]' ({e})") from None

from .client import MLClient

__all__ = ["MLClient"]
