#!/usr/bin/env python3
"""Packaging checks: the Helm chart, the manifests in kubernetes/ and the Dockerfile.

Run by .ci/run after test/packaging/install-tools.sh:
    check.py --helm HELM --machine-controller BINARY

- helm lint --strict, for the default values and each scenario in values/;
- every rendered object validated strictly: built-in kinds by kubernetes-validate, the
  ServiceMonitor against the few fields Prometheus Operator requires;
- the sidecar args of each rendering accepted by the machine-controller binary (a flag
  error exits 2; anything else means the flags parsed);
- kubernetes/: every document parses; built-in kinds (CRDs included) validated strictly,
  machine.sapcloud.io objects against the CRDs in kubernetes/crds (types, enums, required
  fields; a field the CRD does not declare is an error); the CRDs are what
  hack/generate-crds.py writes;
- kubernetes/deployment.yaml is the chart rendered by hack/render-manifests.sh;
- the Dockerfile's runtime stage: non-root numeric USER, WORKDIR /, exec-form ENTRYPOINT
  of the binary and no CMD.
"""

import argparse
import copy
import subprocess
import sys
from pathlib import Path

import dockerfile
import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "machine-controller-manager-provider-kubevirt"
SCENARIOS = Path(__file__).resolve().parent / "values"
MANIFESTS = ROOT / "kubernetes"
KUBERNETES_VERSION = "1.37.0"
SIDECAR = "machine-controller-manager-provider-kubevirt"
RELEASE = ["machine-controller-manager", "--namespace", "default"]

failures = []


def fail(where, message):
    failures.append(f"{where}: {message}")
    print(f"FAIL {where}: {message}", file=sys.stderr)


def run(command, **kwargs):
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


def documents(text, where):
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        fail(where, f"not YAML: {error}")
        return []


def name_of(obj):
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('name')}"


# --- machine.sapcloud.io objects against the CRDs ---------------------------------------


def structural_to_jsonschema(schema):
    """An openAPIV3Schema as JSON Schema for linting samples: a field not declared is an
    error even where the CRD preserves unknown fields for a newer MCM (a sample uses only
    what the CRD describes); free-form objects (no properties) take anything."""
    schema = copy.deepcopy(schema)

    def convert(node):
        if not isinstance(node, dict):
            return node
        if node.pop("x-kubernetes-int-or-string", False):
            node.pop("type", None)
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        for key in list(node):
            if key.startswith("x-kubernetes-"):
                node.pop(key)
        if node.get("nullable"):
            node.pop("nullable")
            if "type" in node:
                node["type"] = [node["type"], "null"]
        for key in ("properties", "patternProperties"):
            for child in (node.get(key) or {}).values():
                convert(child)
        if isinstance(node.get("items"), dict):
            convert(node["items"])
        if isinstance(node.get("additionalProperties"), dict):
            convert(node["additionalProperties"])
        for key in ("allOf", "anyOf", "oneOf"):
            for child in node.get(key) or []:
                convert(child)
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        return node

    return convert(schema)


def load_crds(where):
    crds = {}
    for path in sorted((MANIFESTS / "crds").glob("*.yaml")):
        for crd in documents(path.read_text(), path.name):
            if crd.get("kind") != "CustomResourceDefinition":
                fail(path.name, f"{name_of(crd)} is not a CustomResourceDefinition")
                continue
            spec = crd["spec"]
            for version in spec.get("versions", []):
                if not version.get("served"):
                    continue
                crds[(spec["group"], version["name"], spec["names"]["kind"])] = (
                    structural_to_jsonschema(version["schema"]["openAPIV3Schema"]),
                    spec.get("scope"),
                )
    if not crds:
        fail(where, "no CRDs found in kubernetes/crds")
    return crds


def validate_custom(obj, crds, where):
    group, _, version = obj.get("apiVersion", "").rpartition("/")
    key = (group, version, obj.get("kind"))
    if key not in crds:
        fail(where, f"{name_of(obj)}: no CRD serves {obj.get('apiVersion')} {obj.get('kind')}")
        return
    schema, scope = crds[key]
    if scope == "Namespaced" and not (obj.get("metadata") or {}).get("namespace"):
        fail(where, f"{name_of(obj)}: namespaced but no metadata.namespace")
    validator = jsonschema.Draft7Validator(schema)
    for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(p) for p in error.absolute_path) or "(root)"
        fail(where, f"{name_of(obj)}: {path}: {error.message}")


# --- built-in kinds ------------------------------------------------------------------------


def validate_builtin(obj, where):
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        fail(where, f"{name_of(obj)}: no schema for {obj.get('apiVersion')} {obj.get('kind')}")
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(p) for p in error.path) or "(root)"
        fail(where, f"{name_of(obj)}: {path}: {error.message}")


def validate_service_monitor(obj, where):
    """monitoring.coreos.com is not built in: the fields Prometheus Operator requires."""
    spec = obj.get("spec") or {}
    if not (spec.get("selector") or {}).get("matchLabels"):
        fail(where, f"{name_of(obj)}: spec.selector.matchLabels is empty")
    endpoints = spec.get("endpoints") or []
    if not endpoints or not all(e.get("port") for e in endpoints):
        fail(where, f"{name_of(obj)}: every spec.endpoints[] needs a port name")


# --- the chart -------------------------------------------------------------------------------


def helm_template(helm, extra, where):
    rendered = run([helm, "template", *RELEASE, str(CHART), *extra])
    if rendered.returncode != 0:
        fail(where, f"helm template failed: {rendered.stderr.strip()}")
        return None
    return rendered.stdout


def sidecar_args(objects):
    for obj in objects:
        if obj.get("kind") != "Deployment":
            continue
        for container in obj["spec"]["template"]["spec"]["containers"]:
            if container["name"] == SIDECAR:
                return container.get("args", [])
    return None


def check_flags(binary, args, where):
    """The binary validates flags before it connects: exit 2 is a flag error. The in-cluster
    control kubeconfig then fails at once outside a Pod, so this does not wait."""
    result = run([binary, *args], timeout=60, env={"PATH": "/usr/bin:/bin"})
    if result.returncode == 2:
        fail(where, f"the sidecar rejects the chart's args: {result.stderr.strip()}")
    elif "error:" not in result.stderr:
        fail(where, f"unexpected exit {result.returncode}: {result.stderr.strip()}")


def check_chart(helm, binary):
    scenarios = [("default values", [])] + [
        (path.name, ["--values", str(path)]) for path in sorted(SCENARIOS.glob("*.yaml"))
    ]
    for where, extra in scenarios:
        lint = run([helm, "lint", "--strict", str(CHART), *extra])
        if lint.returncode != 0:
            fail(where, f"helm lint --strict: {lint.stdout.strip()} {lint.stderr.strip()}")
        rendered = helm_template(helm, extra, where)
        if rendered is None:
            continue
        objects = documents(rendered, where)
        for obj in objects:
            if obj.get("apiVersion") == "monitoring.coreos.com/v1":
                validate_service_monitor(obj, where)
            else:
                validate_builtin(obj, where)
        args = sidecar_args(objects)
        if args is None:
            fail(where, f"no {SIDECAR} container rendered")
        else:
            check_flags(binary, args, where)
        print(f"checked chart, {where}: {len(objects)} objects")


# --- kubernetes/ ------------------------------------------------------------------------------


def check_manifests(helm):
    generated = run([sys.executable, str(ROOT / "hack" / "generate-crds.py"), "--check"])
    if generated.returncode != 0:
        fail("kubernetes/crds", generated.stderr.strip())
    crds = load_crds("kubernetes/crds")
    count = 0
    for path in sorted(MANIFESTS.rglob("*.yaml")):
        where = str(path.relative_to(ROOT))
        for obj in documents(path.read_text(), where):
            count += 1
            if obj.get("apiVersion", "").startswith("machine.sapcloud.io/"):
                validate_custom(obj, crds, where)
            else:
                validate_builtin(obj, where)
    print(f"checked kubernetes/: {count} objects, {len(crds)} served CRD versions")

    rendered = run(["bash", str(ROOT / "hack" / "render-manifests.sh"), "-"], env={"HELM": helm, "PATH": "/usr/bin:/bin"})
    if rendered.returncode != 0:
        fail("kubernetes/deployment.yaml", f"hack/render-manifests.sh failed: {rendered.stderr.strip()}")
    elif (MANIFESTS / "deployment.yaml").read_text() != rendered.stdout:
        fail("kubernetes/deployment.yaml", "differs from the chart: run hack/render-manifests.sh")


# --- Dockerfile --------------------------------------------------------------------------------


def check_dockerfile():
    where = "Dockerfile"
    try:
        commands = dockerfile.parse_file(str(ROOT / "Dockerfile"))
    except dockerfile.GoParseError as error:
        fail(where, f"does not parse: {error}")
        return
    stages = []
    for command in commands:
        if command.cmd == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(command)
    if len(stages) < 2:
        fail(where, "not a multi-stage build")
        return
    runtime = stages[-1]
    users = [c.value[0] for c in runtime if c.cmd == "USER"]
    if not users or users[-1].split(":")[0] in ("0", "root") or not users[-1].split(":")[0].isdigit():
        fail(where, f"the runtime stage must end as a numeric non-root USER, has {users}")
    entrypoints = [c for c in runtime if c.cmd == "ENTRYPOINT"]
    if not entrypoints or not entrypoints[-1].json or list(entrypoints[-1].value) != ["/machine-controller"]:
        fail(where, 'the runtime ENTRYPOINT must be ["/machine-controller"] (Gardener passes args only)')
    workdirs = [c.value[0] for c in runtime if c.cmd == "WORKDIR"]
    if workdirs[-1:] != ["/"]:
        # distroless nonroot works in /home/nonroot; the Go samples run ./machine-controller.
        fail(where, f"the runtime stage must work in / (has {workdirs or 'the base image default'})")
    if any(c.cmd == "CMD" for c in runtime):
        fail(where, "a CMD would be replaced by Gardener's args; leave it out")
    copied = [c.value[-1] for c in runtime if c.cmd == "COPY" and any(f.startswith("--from=") for f in c.flags)]
    if "/machine-controller" not in copied:
        fail(where, "the runtime stage does not copy /machine-controller from the build stage")
    builds = [c.value[0] for stage in stages[:-1] for c in stage if c.cmd == "RUN" and "cargo build" in c.value[0]]
    if not any("--locked" in b and "-p machine-controller" in b for b in builds):
        fail(where, "the build stage must run cargo build --locked -p machine-controller")
    print(f"checked Dockerfile: {len(stages)} stages, runtime user {users[-1] if users else None}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--helm", required=True)
    parser.add_argument("--machine-controller", required=True)
    options = parser.parse_args()
    check_chart(options.helm, options.machine_controller)
    check_manifests(options.helm)
    check_dockerfile()
    if failures:
        print(f"{len(failures)} packaging check(s) failed", file=sys.stderr)
        return 1
    print("packaging checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
