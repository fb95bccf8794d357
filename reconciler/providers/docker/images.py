"""The images fleet builds (`build:` in fleet.yaml): found and removed by label.

A build is tagged with a hash of its context, so every edit of a build context
makes a new image. Each one carries `dev.fleet.project=<fleet>` and
`dev.fleet.kind=image`; reconcile decides which of them nothing uses any more
(and `fleet destroy` removes them all). Selection is by label, never by name: an
image a person made, even one named like fleet's, is not touched, and neither is
one committed from a fleet container (it carries kind host or agent).
"""

from __future__ import annotations

from reconciler.core import labels as L


def observe_images(api, fleet: str) -> tuple[str, ...]:
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


def remove_image(api, ref: str) -> str | None:
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
