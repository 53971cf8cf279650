#!/usr/bin/env python3
"""Writes the machine.sapcloud.io/v1alpha1 CRDs into kubernetes/crds/ (or checks them).

    generate-crds.py           write kubernetes/crds/*.yaml
    generate-crds.py --check   exit 1 when a committed file differs from what this writes

The schemas follow MCM's API types (field names, types, subresources, printer columns,
short names) so MCM and this provider run against them unchanged. MCM owns that API: spec
and status keep unknown fields, so a newer MCM writing a field not listed here loses
nothing. The MachineSpec schema is defined once and shared by Machine and the templates of
MachineSet and MachineDeployment. Needs PyYAML.
"""

import sys
from pathlib import Path

import yaml

GROUP = "machine.sapcloud.io"
VERSION = "v1alpha1"
OUT = Path(__file__).resolve().parents[1] / "kubernetes" / "crds"


def string(description=None, **extra):
    node = {"type": "string", **extra}
    if description:
        node["description"] = description
    return node


def int32(description=None):
    node = {"type": "integer", "format": "int32"}
    if description:
        node["description"] = description
    return node


def time(description=None):
    return string(description, format="date-time")


def obj(properties, description=None, required=None, open_=False):
    node = {"type": "object"}
    if description:
        node["description"] = description
    node["properties"] = properties
    if required:
        node["required"] = required
    if open_:
        node["x-kubernetes-preserve-unknown-fields"] = True
    return node


def array(items, description=None):
    node = {"type": "array", "items": items}
    if description:
        node["description"] = description
    return node


def free_object(description):
    return {"type": "object", "description": description, "x-kubernetes-preserve-unknown-fields": True}


def string_map(description):
    return {"type": "object", "description": description, "additionalProperties": {"type": "string"}}


CLASS_REFERENCE = obj(
    {
        "apiGroup": string("API group of the class, machine.sapcloud.io"),
        "kind": string("kind of the class, MachineClass"),
        "name": string("name of the class in the machine's namespace"),
    },
    "the MachineClass the machine is made from",
)

SECRET_REFERENCE = {
    **obj(
        {"name": string(), "namespace": string()},
        None,
    ),
    "x-kubernetes-map-type": "atomic",
}

TAINT = obj(
    {
        "key": string(),
        "value": string(),
        "effect": string(enum=["NoSchedule", "PreferNoSchedule", "NoExecute"]),
        "timeAdded": time(),
    },
    required=["key", "effect"],
)

NODE_TEMPLATE = obj(
    {
        "metadata": {
            **obj(
                {
                    "labels": string_map("labels the Node gets"),
                    "annotations": string_map("annotations the Node gets"),
                },
                "labels and annotations synced to the Node",
                open_=True,
            ),
        },
        "spec": obj(
            {
                "taints": array(TAINT, "taints synced to the Node"),
                "unschedulable": {"type": "boolean"},
                "providerID": string(),
                "podCIDR": string(),
                "podCIDRs": array(string()),
            },
            "the part of a NodeSpec synced to the Node",
            open_=True,
        ),
    },
    "what the machine's Node is given",
)

# MCM's MachineSpec with its inline MachineConfiguration; timeouts are Go durations.
MACHINE_SPEC = obj(
    {
        "class": CLASS_REFERENCE,
        "providerID": string("the VM's ID at the provider, kubevirt://<machine>"),
        "nodeTemplate": NODE_TEMPLATE,
        "creationTimeout": string("overrides --machine-creation-timeout"),
        "drainTimeout": string("overrides --machine-drain-timeout"),
        "healthTimeout": string("overrides --machine-health-timeout"),
        "inPlaceUpdateTimeout": string("overrides --machine-inplace-update-timeout"),
        "machinePreserveTimeout": string("overrides --machine-preserve-timeout"),
        "disableHealthTimeout": {"type": "boolean", "description": "never fail the machine for health"},
        "maxEvictRetries": int32("overrides --machine-max-evict-retries"),
        "nodeConditions": string("overrides --node-conditions, comma-separated"),
    },
    "desired state of a machine",
    open_=True,
)

LAST_OPERATION = obj(
    {
        "description": string(),
        "errorCode": string("the provider's machine code when the operation failed"),
        "lastUpdateTime": time(),
        "state": string("Processing, Successful or Failed"),
        "type": string("Create, HealthCheck, Delete, ..."),
    },
    "the last operation on the object",
)

MACHINE_STATUS = obj(
    {
        "addresses": array(obj({"address": string(), "type": string()}, required=["address", "type"])),
        "conditions": array(
            obj(
                {
                    "type": string(),
                    "status": string(),
                    "lastHeartbeatTime": time(),
                    "lastTransitionTime": time(),
                    "reason": string(),
                    "message": string(),
                },
                required=["type", "status"],
            ),
            "the Node's conditions, as last seen",
        ),
        "currentStatus": obj(
            {
                "phase": string("Pending, Available, Running, Terminating, Unknown, Failed, CrashLoopBackOff, ..."),
                "timeoutActive": {"type": "boolean"},
                "lastUpdateTime": time(),
                "preserveExpiryTime": time(),
            }
        ),
        "lastOperation": LAST_OPERATION,
        "lastKnownState": string("provider state kept between operations"),
    },
    "observed state of a machine",
    open_=True,
)

LABEL_SELECTOR = {
    **obj(
        {
            "matchLabels": string_map("labels the selected machines carry"),
            "matchExpressions": {
                **array(
                    obj(
                        {
                            "key": string(),
                            "operator": string(enum=["In", "NotIn", "Exists", "DoesNotExist"]),
                            "values": array(string()),
                        },
                        required=["key", "operator"],
                    )
                ),
                "x-kubernetes-list-type": "atomic",
            },
        },
        "which machines belong to the set",
    ),
    "x-kubernetes-map-type": "atomic",
}

MACHINE_TEMPLATE = obj(
    {
        "metadata": free_object("labels and annotations of the machines made from the template"),
        "spec": MACHINE_SPEC,
    },
    "the machines to make",
)

FAILED_MACHINES = array(free_object("a failed machine: name, providerID, lastOperation, owner"))

REPLICAS_STATUS = {
    "replicas": int32(),
    "readyReplicas": int32(),
    "availableReplicas": int32(),
    "observedGeneration": {"type": "integer", "format": "int64"},
    "failedMachines": FAILED_MACHINES,
}


def top_level(kind, spec=None, status=None, extra=None, description=None, required=None):
    properties = {
        "apiVersion": string(),
        "kind": string(),
        "metadata": {"type": "object"},
    }
    if spec:
        properties["spec"] = spec
    if status:
        properties["status"] = status
    properties.update(extra or {})
    schema = {"type": "object", "description": description or kind, "properties": properties}
    if required:
        schema["required"] = required
    return schema


def column(name, type_, path, description=None, priority=None):
    node = {"name": name, "type": type_, "jsonPath": path}
    if description:
        node["description"] = description
    if priority is not None:
        node["priority"] = priority
    return node


AGE = column("Age", "date", ".metadata.creationTimestamp")
DESIRED = column("Desired", "integer", ".spec.replicas", "machines wanted")
READY = column("Ready", "integer", ".status.readyReplicas", "machines ready")
SCALE = {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}


def crd(kind, plural, short, schema, columns=None, subresources=None):
    version = {"name": VERSION, "served": True, "storage": True}
    if subresources:
        version["subresources"] = subresources
    if columns:
        version["additionalPrinterColumns"] = columns
    version["schema"] = {"openAPIV3Schema": schema}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
            },
            "scope": "Namespaced",
            "versions": [version],
        },
    }


def definitions():
    machine = crd(
        "Machine",
        "machines",
        "mc",
        top_level("Machine", MACHINE_SPEC, MACHINE_STATUS, description="a worker machine of the cluster, backed by a VM"),
        [
            column("Status", "string", ".status.currentStatus.phase", "the machine's phase"),
            AGE,
            column("Node", "string", ".metadata.labels.node", "the Node backing the machine"),
            column("ProviderID", "string", ".spec.providerID", "the VM's provider ID", priority=1),
        ],
        {"status": {}},
    )
    machine_class = crd(
        "MachineClass",
        "machineclasses",
        "mcc",
        top_level(
            "MachineClass",
            extra={
                "providerSpec": free_object("the provider's spec, here a KubeVirtProviderSpec"),
                "secretRef": {**SECRET_REFERENCE, "description": "the Secret with userData (and, for older classes, credentials)"},
                "credentialsSecretRef": {**SECRET_REFERENCE, "description": "the Secret with the provider cluster's kubeconfig"},
                "provider": string("the provider name, KubeVirt"),
                "nodeTemplate": obj(
                    {
                        "capacity": string_map("resources of a Node of this class, for the autoscaler"),
                        "virtualCapacity": string_map("extended resources of a Node of this class"),
                        "instanceType": string(),
                        "region": string(),
                        "zone": string(),
                        "architecture": string(),
                    },
                    "what a Node of this class looks like, for the cluster-autoscaler's scale from zero",
                    required=["capacity", "instanceType", "region", "zone"],
                    open_=True,
                ),
            },
            description="how machines are made: a provider spec and its Secrets; no spec, the fields sit at the top",
            required=["providerSpec"],
        ),
    )
    machine_set = crd(
        "MachineSet",
        "machinesets",
        "mcs",
        top_level(
            "MachineSet",
            obj(
                {
                    "replicas": int32(),
                    "minReadySeconds": int32(),
                    "selector": LABEL_SELECTOR,
                    "machineClass": CLASS_REFERENCE,
                    "template": MACHINE_TEMPLATE,
                    "autoPreserveFailedMachineMax": int32(),
                },
                "desired state of a set of machines",
                open_=True,
            ),
            obj(
                {
                    **REPLICAS_STATUS,
                    "fullyLabeledReplicas": int32(),
                    "lastOperation": LAST_OPERATION,
                    "machineSetCondition": array(free_object("a condition of the set")),
                },
                "observed state of a set of machines",
                open_=True,
            ),
            description="a number of identical machines",
        ),
        [DESIRED, column("Current", "integer", ".status.replicas", "machines made"), READY, AGE],
        {"status": {}, "scale": SCALE},
    )
    machine_deployment = crd(
        "MachineDeployment",
        "machinedeployments",
        "mcd",
        top_level(
            "MachineDeployment",
            obj(
                {
                    "replicas": int32(),
                    "selector": LABEL_SELECTOR,
                    "template": MACHINE_TEMPLATE,
                    "strategy": obj(
                        {
                            "type": string("RollingUpdate, Recreate or InPlaceUpdate"),
                            "rollingUpdate": obj(
                                {
                                    "maxSurge": {"x-kubernetes-int-or-string": True},
                                    "maxUnavailable": {"x-kubernetes-int-or-string": True},
                                },
                                open_=True,
                            ),
                            "inPlaceUpdate": free_object("settings of in-place updates"),
                        },
                        "how machines are replaced",
                    ),
                    "minReadySeconds": int32(),
                    "revisionHistoryLimit": int32(),
                    "paused": {"type": "boolean"},
                    "rollbackTo": obj({"revision": {"type": "integer", "format": "int64"}}),
                    "progressDeadlineSeconds": int32(),
                    "autoPreserveFailedMachineMax": int32(),
                },
                "desired state of a rolling set of machines",
                required=["template"],
                open_=True,
            ),
            obj(
                {
                    **REPLICAS_STATUS,
                    "updatedReplicas": int32(),
                    "unavailableReplicas": int32(),
                    "collisionCount": int32(),
                    "conditions": array(free_object("a condition of the deployment")),
                },
                "observed state of a rolling set of machines",
                open_=True,
            ),
            description="machines rolled out and scaled like a Deployment's Pods",
        ),
        [
            READY,
            DESIRED,
            column("Up-to-date", "integer", ".status.updatedReplicas", "machines of the current template"),
            column("Available", "integer", ".status.availableReplicas", "machines available"),
            AGE,
        ],
        {"status": {}, "scale": SCALE},
    )
    return [machine, machine_class, machine_set, machine_deployment]


HEADER = "# Generated by hack/generate-crds.py; do not edit.\n"


class PlainDumper(yaml.SafeDumper):
    """Writes shared pieces (MACHINE_SPEC, ...) out in full: no YAML anchors or aliases."""

    def ignore_aliases(self, data):
        return True


def render(definition):
    return HEADER + yaml.dump(definition, Dumper=PlainDumper, sort_keys=False, width=100)


def main():
    check = sys.argv[1:] == ["--check"]
    stale = []
    for definition in definitions():
        path = OUT / f"{definition['metadata']['name']}.yaml"
        text = render(definition)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"stale CRDs, run hack/generate-crds.py: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
