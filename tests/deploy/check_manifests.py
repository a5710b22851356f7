#!/usr/bin/env python3
"""Semantic checks of deploy/kubernetes that a schema validator cannot make.

Schema validation (kubernetes-validate) says each object is well-formed; this says the objects
fit together and keep the promises docs/deployment.md makes: the Deployment runs one replica
with Recreate, is locked down, probes /healthz and /readyz on the admin port, mounts the policy
ConfigMap, the CA Secret and the state PVC that the other manifests define, the Service and the
PodDisruptionBudget select its pods, and the policy in the ConfigMap is deploy/container/aigate.toml.

usage: check_manifests.py REPO_ROOT [RENDERED_KUSTOMIZE_OUTPUT]
Prints one line per problem; exit 1 if there are any.
"""

import sys
from pathlib import Path

import yaml

problems = []


def need(cond, msg):
    if not cond:
        problems.append(msg)
    return cond


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def main():
    repo = Path(sys.argv[1])
    kdir = repo / "deploy" / "kubernetes"
    kust = yaml.safe_load((kdir / "kustomization.yaml").read_text(encoding="utf-8"))
    resources = kust.get("resources", [])
    need(kust.get("kind") == "Kustomization", "kustomization.yaml: kind is not Kustomization")
    need("namespace" not in kust, "kustomization.yaml: names a namespace; the base must stay namespace-agnostic")
    need("ca-secret.template.yaml" not in resources,
         "kustomization.yaml: lists the CA Secret template; applying it would overwrite the real key")
    on_disk = sorted(p.name for p in kdir.glob("*.yaml")
                     if p.name not in ("kustomization.yaml", "ca-secret.template.yaml"))
    need(sorted(resources) == on_disk,
         f"kustomization.yaml resources {sorted(resources)} != manifests on disk {on_disk}")

    objs = {}
    for name in resources:
        path = kdir / name
        if not need(path.is_file(), f"kustomization.yaml: {name} does not exist"):
            continue
        for d in load_all(path):
            need("namespace" not in d.get("metadata", {}), f"{name}: {d['kind']} names a namespace")
            objs[(d["kind"], d["metadata"]["name"])] = d
    secret_docs = load_all(kdir / "ca-secret.template.yaml")
    secret = secret_docs[0] if secret_docs else {}

    # The CA Secret template: the right type, placeholders only.
    need(secret.get("kind") == "Secret" and secret.get("type") == "kubernetes.io/tls",
         "ca-secret.template.yaml: not a Secret of type kubernetes.io/tls")
    sdata = secret.get("stringData", {}) or {}
    need(set(sdata) == {"tls.crt", "tls.key"}, "ca-secret.template.yaml: stringData must hold exactly tls.crt and tls.key")
    need("data" not in secret, "ca-secret.template.yaml: base64 data found; the template must carry placeholders only")
    for k, v in sdata.items():
        need("REPLACE-ME" in v and "-----BEGIN" not in v.replace("(-----BEGIN", ""),
             f"ca-secret.template.yaml: {k} is not a placeholder")
    raw_template = (kdir / "ca-secret.template.yaml").read_text(encoding="utf-8")
    need("MII" not in raw_template, "ca-secret.template.yaml: looks like it contains DER/PEM key material")

    dep = objs.get(("Deployment", "aigate"))
    if not need(dep is not None, "no Deployment aigate"):
        return
    spec = dep["spec"]
    need(spec.get("replicas") == 1, "Deployment: replicas must be 1 (one writer per state directory)")
    need(spec.get("strategy", {}).get("type") == "Recreate", "Deployment: strategy must be Recreate")
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    sel = spec["selector"]["matchLabels"]
    need(all(labels.get(k) == v for k, v in sel.items()), "Deployment: selector does not match the pod labels")
    psc = pod.get("securityContext", {})
    need(psc.get("runAsNonRoot") is True, "pod: runAsNonRoot must be true")
    need(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "pod: seccompProfile RuntimeDefault")
    need(isinstance(psc.get("runAsUser"), int) and psc["runAsUser"] != 0, "pod: runAsUser must be a non-zero uid")
    need(psc.get("fsGroup") == psc.get("runAsGroup"), "pod: fsGroup should equal runAsGroup (state volume, CA files)")
    need(pod.get("automountServiceAccountToken") is False, "pod: automountServiceAccountToken should be false")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    need(grace > 30, f"pod: terminationGracePeriodSeconds {grace} must exceed drain_timeout (30s)")

    containers = pod["containers"]
    need(len(containers) == 1, "pod: expected one container")
    c = containers[0]
    csc = c.get("securityContext", {})
    need(csc.get("readOnlyRootFilesystem") is True, "container: readOnlyRootFilesystem must be true")
    need(csc.get("allowPrivilegeEscalation") is False, "container: allowPrivilegeEscalation must be false")
    need(csc.get("capabilities", {}).get("drop") == ["ALL"], "container: capabilities must drop ALL")
    need(not csc.get("capabilities", {}).get("add"), "container: adds capabilities")
    need(csc.get("seccompProfile", {}).get("type", "RuntimeDefault") == "RuntimeDefault", "container: seccompProfile")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    need(ports == {"proxy": 3128, "admin": 9180}, f"container: ports {ports} != proxy 3128, admin 9180")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        hg = c.get(probe, {}).get("httpGet", {})
        need(hg.get("path") == path and hg.get("port") in ("admin", 9180),
             f"container: {probe} must GET {path} on the admin port, is {hg}")
    res = c.get("resources", {})
    need(res.get("requests", {}).get("memory") and res.get("limits", {}).get("memory"),
         "container: memory request and limit")

    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    for m in mounts.values():
        need(m["name"] in vols, f"container: mount {m['mountPath']} names volume {m['name']} that is not defined")
        need("subPath" not in m, f"container: mount {m['mountPath']} uses subPath (no live updates)")

    # The policy: --config names a file in the mounted ConfigMap, which holds the container config.
    args = c.get("args", [])
    need(args[:1] == ["run"] and "--config" in args, f"container: args {args} do not run with --config")
    cfg_path = args[args.index("--config") + 1] if "--config" in args and args.index("--config") + 1 < len(args) else ""
    cfg_dir, _, cfg_key = cfg_path.rpartition("/")
    m = mounts.get(cfg_dir)
    if need(m is not None, f"container: no volume mounted at {cfg_dir} for --config {cfg_path}"):
        need(m.get("readOnly") is True, f"container: {cfg_dir} should be mounted readOnly")
        v = vols.get(m["name"], {})
        cm_name = v.get("configMap", {}).get("name")
        cm = objs.get(("ConfigMap", cm_name))
        if need(cm is not None, f"volume {m['name']}: ConfigMap {cm_name} is not among the resources"):
            data = cm.get("data", {})
            need(cfg_key in data, f"ConfigMap {cm_name}: no key {cfg_key}")
            container_toml = (repo / "deploy" / "container" / "aigate.toml").read_text(encoding="utf-8")
            need(data.get(cfg_key) == container_toml,
                 f"ConfigMap {cm_name}: {cfg_key} differs from deploy/container/aigate.toml "
                 "(regenerate: deploy/render-config.sh --profile container --configmap > deploy/kubernetes/configmap.yaml)")
            for line in ('listen = "0.0.0.0:3128"', 'listen = "0.0.0.0:9180"', 'state_dir = "/var/lib/aigate"',
                         'format = "json"', 'cert = "/etc/aigate/ca/tls.crt"', 'key = "/etc/aigate/ca/tls.key"'):
                need(line in data.get(cfg_key, "").splitlines(), f"ConfigMap {cm_name}: missing the line {line!r}")

    # The CA: the Secret the template describes, at /etc/aigate/ca, not world-readable.
    m = mounts.get("/etc/aigate/ca")
    if need(m is not None, "container: nothing mounted at /etc/aigate/ca"):
        need(m.get("readOnly") is True, "container: /etc/aigate/ca should be mounted readOnly")
        sv = vols.get(m["name"], {}).get("secret", {})
        need(sv.get("secretName") == secret.get("metadata", {}).get("name"),
             f"volume {m['name']}: secretName {sv.get('secretName')} != the template's Secret name")
        mode = sv.get("defaultMode", 0o644)
        need(mode & 0o007 == 0, f"volume {m['name']}: defaultMode {oct(mode)} lets others read the CA key")

    # The state: the PVC, read-write, at /var/lib/aigate.
    m = mounts.get("/var/lib/aigate")
    if need(m is not None, "container: nothing mounted at /var/lib/aigate"):
        need(not m.get("readOnly"), "container: /var/lib/aigate must be writable")
        claim = vols.get(m["name"], {}).get("persistentVolumeClaim", {}).get("claimName")
        pvc = objs.get(("PersistentVolumeClaim", claim))
        if need(pvc is not None, f"volume {m['name']}: PVC {claim} is not among the resources"):
            need(pvc["spec"].get("accessModes") == ["ReadWriteOnce"], f"PVC {claim}: accessModes should be [ReadWriteOnce]")

    svc = objs.get(("Service", "aigate"))
    if need(svc is not None, "no Service aigate"):
        need(all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()), "Service: selector does not match the pods")
        sports = {p["port"]: p.get("targetPort") for p in svc["spec"]["ports"]}
        need(sports == {3128: "proxy", 9180: "admin"}, f"Service: ports {sports} != 3128->proxy, 9180->admin")

    pdbs = [o for (k, _), o in objs.items() if k == "PodDisruptionBudget"]
    if need(len(pdbs) == 1, "expected one PodDisruptionBudget"):
        ml = pdbs[0]["spec"]["selector"]["matchLabels"]
        need(all(labels.get(k) == v for k, v in ml.items()), "PodDisruptionBudget: selector does not match the pods")
        need(pdbs[0]["spec"].get("minAvailable") not in (1, "100%"),
             "PodDisruptionBudget: minAvailable 1 with one replica blocks every node drain")

    # kustomize output (if rendered): same objects, image rewritten to a tagged reference.
    if len(sys.argv) > 2:
        rendered = load_all(sys.argv[2])
        kinds = sorted((d["kind"], d["metadata"]["name"]) for d in rendered)
        need(kinds == sorted(objs), f"kustomize output {kinds} != resources {sorted(objs)}")
        for d in rendered:
            if d["kind"] == "Deployment":
                image = d["spec"]["template"]["spec"]["containers"][0]["image"]
                need(":" in image.rsplit("/", 1)[-1], f"kustomize output: image {image} has no tag")


if __name__ == "__main__":
    main()
    for p in problems:
        print(f"  problem: {p}")
    sys.exit(1 if problems else 0)
