"""Typed shapes of the manifests kubedbt renders.

Manifests are plain dicts, as `kubectl apply` would read them; TypedDicts give the top levels a
checked shape without converting to client models (that happens, if ever, at the I/O edge).
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from typing_extensions import NotRequired


class OwnerReference(TypedDict):
    """metadata.ownerReferences[] of a namespaced object."""

    apiVersion: str
    kind: str
    name: str
    uid: str
    controller: NotRequired[bool]
    blockOwnerDeletion: NotRequired[bool]


class ObjectMeta(TypedDict):
    """The metadata kubedbt sets on what it creates."""

    name: str
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str]
    ownerReferences: NotRequired[list[OwnerReference]]


class PodTemplate(TypedDict):
    """spec.template of a Job."""

    metadata: dict[str, Any]
    spec: dict[str, Any]


class JobSpec(TypedDict):
    """The fields of batch/v1 JobSpec that kubedbt sets."""

    backoffLimit: int
    ttlSecondsAfterFinished: int
    activeDeadlineSeconds: NotRequired[int]
    podFailurePolicy: dict[str, Any]
    template: PodTemplate


class JobManifest(TypedDict):
    """A batch/v1 Job."""

    apiVersion: Literal["batch/v1"]
    kind: Literal["Job"]
    metadata: ObjectMeta
    spec: JobSpec


class ConfigMapManifest(TypedDict):
    """A v1 ConfigMap."""

    apiVersion: Literal["v1"]
    kind: Literal["ConfigMap"]
    metadata: ObjectMeta
    data: dict[str, str]
    binaryData: NotRequired[dict[str, str]]


class SecretManifest(TypedDict):
    """A v1 Secret, its values as stringData (the API server encodes them)."""

    apiVersion: Literal["v1"]
    kind: Literal["Secret"]
    metadata: ObjectMeta
    type: Literal["Opaque"]
    immutable: bool
    stringData: dict[str, str]
