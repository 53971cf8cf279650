#!/usr/bin/env python3
"""Wraps one schema of KubeVirt's validations_generated.go into a CRD for kopium.

usage: extract.py <validations_generated.go> <schema key> <group> <version> <kind> <plural> [--spec-of KEY]

KubeVirt keeps each CRD's OpenAPI schema as a YAML string in a Go map. This reads the
string for <schema key> and prints a minimal apiextensions.k8s.io/v1 CRD around it.
With --spec-of, the schema is built from the `spec` of another key's schema instead
(CDI's DataVolumeSpec is taken from KubeVirt's datavolumetemplatespec).
"""
import re
import sys

import yaml


def schemas(go_source):
    found = {}
    for match in re.finditer(r'^\t"([a-z]+)": `(.*?)`,$', go_source, re.S | re.M):
        found[match.group(1)] = yaml.safe_load(match.group(2))["openAPIV3Schema"]
    return found


def main(argv):
    path, key, group, version, kind, plural = argv[1:7]
    with open(path, encoding="utf-8") as handle:
        all_schemas = schemas(handle.read())
    schema = all_schemas[key]
    if len(argv) > 7 and argv[7] == "--spec-of":
        spec = all_schemas[argv[8]]["properties"]["spec"]
        schema = {
            "type": "object",
            "properties": {"spec": spec, "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
        }
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": kind + "List"},
            "scope": "Namespaced",
            "versions": [{"name": version, "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}],
        },
    }
    yaml.safe_dump(crd, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv)
