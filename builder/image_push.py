"""Pushing a deployment's image to a registry, and what the push uploaded.

A registry keeps each layer once: the images of deployments of one environment share its image's
layers (base and environment), so after the first of them only each deployment's own layers
(runtime, model, code) are uploaded. The result says how many layers went up and how many bytes.
"""

from __future__ import annotations

import docker.errors

from .errors import BuildError
from .images import LineSink, engine, engine_calls, first_line, tag_part


def push(tag: str, registry: str, *, repo_tag: str | None = None, on_line: LineSink | None = None) -> dict:
    """Tag image `tag` as ``registry:repo_tag`` (default: `tag`'s own tag) and push it.

    `registry` is ``HOST[:PORT]/REPO[/...]``. Returns ``{"image": ref, "digest": "sha256:...",
    "layers_pushed": n, "layers_existing": m, "bytes_pushed": b}``: the registry keeps a layer once,
    so images of one environment upload its layers once; `bytes_pushed` counts the bytes of the
    layers this push uploaded (their tar streams, as the engine reports its progress, before gzip).
    """
    target_tag = repo_tag or tag_part(tag)
    ref = f"{registry}:{target_tag}"
    digest = None
    states: dict[str, str] = {}  # layer (short DiffID, as the engine names it) -> its last status
    sent: dict[str, int] = {}  # layer -> bytes of it uploaded so far
    with engine_calls(f"push {ref}"):
        try:
            engine().api.tag(tag, registry, tag=target_tag)
            for chunk in engine().api.push(registry, tag=target_tag, stream=True, decode=True):
                if "error" in chunk:
                    detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                    raise BuildError(f"push failed: {first_line(detail)}", source=ref)
                digest = (chunk.get("aux") or {}).get("Digest", digest)
                if chunk.get("id") and chunk.get("status"):
                    states[chunk["id"]] = chunk["status"]
                    progress = chunk.get("progressDetail") or {}
                    if chunk["status"] == "Pushing":
                        sent[chunk["id"]] = max(sent.get(chunk["id"], 0), int(progress.get("current") or 0))
                if on_line is not None and "status" in chunk and not chunk.get("progressDetail"):
                    on_line(": ".join(str(p) for p in (chunk.get("id"), chunk["status"]) if p))
        except docker.errors.ImageNotFound as e:
            raise BuildError("push failed: no such local image", source=tag) from e
        except docker.errors.APIError as e:
            raise BuildError(f"push failed: {first_line(e)}", source=ref) from e
    if digest is None:
        raise BuildError("push finished without a digest from the registry", source=ref)
    pushed = [layer for layer, state in states.items() if state == "Pushed"]
    existing = [layer for layer, state in states.items()
                if state == "Layer already exists" or state.startswith("Mounted from")]
    return {"image": ref, "digest": digest, "layers_pushed": len(pushed), "layers_existing": len(existing),
            "bytes_pushed": sum(sent.get(layer, 0) for layer in pushed)}
