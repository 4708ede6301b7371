"""The one ownership rule of every AWS resource kprov creates (instances, security groups, key pairs,
the API load balancer and its target group), used alike by `ec2 create` and `ec2 destroy`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from provisioner.errors import CloudError

TAG_CLUSTER = "kprov:cluster"
TAG_MANAGED = "kprov:managed-by"
MANAGED_BY = "kprov"


def owns(tags: Mapping[str, str], cluster: str) -> bool:
    """A resource is the cluster's only if it carries `kprov:cluster=<cluster>` and `kprov:managed-by=kprov`.
    Anything else is never adopted, changed or deleted."""
    return tags.get(TAG_CLUSTER) == cluster and tags.get(TAG_MANAGED) == MANAGED_BY


def tag_map(tags: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """AWS's `[{"Key": ..., "Value": ...}]` as a mapping."""
    return {t["Key"]: t["Value"] for t in tags}


def tags_of(resource: Mapping[str, Any]) -> dict[str, str]:
    """An EC2 resource's `Tags` list as a mapping."""
    return tag_map(resource.get("Tags", []))


def not_owned(kind: str, what: str, tags: Mapping[str, str], cluster: str) -> CloudError:
    """The error for a same-named resource `create` found but does not own (destroy leaves those alone)."""
    found = ", ".join(f"{k}={tags[k]}" for k in (TAG_CLUSTER, TAG_MANAGED) if k in tags) or "no kprov tags"
    return CloudError(
        f"{kind} {what} exists but is not owned by cluster {cluster} ({found}); kprov will not modify it",
        hint=f"kprov adopts only resources tagged {TAG_CLUSTER}={cluster} and {TAG_MANAGED}={MANAGED_BY}: "
        "delete or rename that one, or use another cluster.name",
    )
