"""The images fleet builds (`build:` in fleet.yaml): found and removed by label.

A build is tagged with a hash of its context, so every edit of a build context
makes a new image. Each one carries `dev.fleet.project=<fleet>` and
`dev.fleet.kind=image`; reconcile decides which of them nothing uses any more
(and `fleet destroy` removes them all). Selection is by label, never by name: an
image a person made, even one named like fleet's, is not touched, and neither is
one committed from a fleet container (it carries kind host or agent).
"""

from __future__ import annotations

from typing import Any

from reconciler.core import labels as L
from reconciler.core.errors import ProviderError
from reconciler.core.model import ImageRef


def exists(api: Any, ref: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        api.inspect_image(ref)
    except ImageNotFound:
        return False
    return True


def build(api: Any, fleet: str, image: ImageRef, resource: str) -> None:
    """Build `image` from its `build:` context, tagged `image.ref` and labelled
    as the fleet's (kind image); the last lines of output say why it failed."""
    b = image.build
    if b is None:
        raise ProviderError(resource, f"image {image.ref} has no build: context to build from")
    log: list[str] = []
    try:
        for chunk in api.build(
            path=str(b.context), dockerfile=b.dockerfile, buildargs=dict(b.args), tag=image.ref,
            rm=True, forcerm=True, decode=True, labels={L.PROJECT: fleet, L.KIND: L.IMAGE_KIND},
        ):
            if "stream" in chunk:
                log.append(chunk["stream"])
            if "error" in chunk:
                tail = "".join(log[-5:]).strip().replace("\n", " | ")
                raise ProviderError(resource, f"build of {b.context} failed: {chunk['error'].strip()} (last output: {tail[-300:]})")
    except ProviderError:
        raise
    except Exception as exc:  # APIError, BuildError, connection errors
        raise ProviderError(resource, f"build of {b.context} failed: {str(exc).splitlines()[0][:200]}") from None


def pull(api: Any, image: ImageRef, resource: str, engine: str | None = None) -> None:
    """Pull `image.ref` from its registry (`engine`: the engine's name, for the error)."""
    from docker.errors import APIError

    try:
        repo, _, tag = image.ref.rpartition(":") if ":" in image.ref.split("/")[-1] else (image.ref, "", "latest")
        api.pull(repo or image.ref, tag=tag or "latest")
    except APIError as exc:
        reason = (exc.explanation or str(exc)).strip().splitlines()[0][:160]
        if engine is not None:
            raise ProviderError(
                resource,
                f"image {image.ref} is not on engine {engine} and could not be pulled there ({reason}); "
                f"load it there (docker save {image.ref} | docker -H {engine} load) or use build: in fleet.yaml",
            ) from None
        raise ProviderError(
            resource,
            f"image {image.ref} is not available locally and could not be pulled ({reason}); "
            "build it first (docker build -t ...) or use build: in fleet.yaml",
        ) from None


def observe_images(api: Any, fleet: str) -> tuple[str, ...]:
    """The fleet's built images: each tag, or the id of an image left untagged
    (its tag moved to a newer build of the same hash)."""
    refs: list[str] = []
    for img in api.images(filters={"label": L.project_filter(fleet)}):
        lab = img.get("Labels") or {}
        if lab.get(L.PROJECT) != fleet or lab.get(L.KIND, L.IMAGE_KIND) != L.IMAGE_KIND:
            continue
        tags = [t for t in (img.get("RepoTags") or []) if t and t != "<none>:<none>"]
        refs.extend(tags or [img["Id"]])
    return tuple(sorted(set(refs)))


def remove_image(api: Any, ref: str) -> str | None:
    """Remove one tag (the image goes with its last tag). An image gone already
    is fine; one still used by a container fleet does not know of is kept, with
    a note, and tried again on the next apply."""
    from docker.errors import APIError, ImageNotFound

    try:
        api.remove_image(ref)
    except ImageNotFound:
        return None
    except APIError as exc:
        if exc.status_code == 409:
            return f"kept image {ref}: still used by a container ({(exc.explanation or '').strip()[:160]})"
        raise
    return None
