"""Invariant tests of the rendered Eddy Helm chart (scripts/check-k8s runs them).

    python test_rendered_chart.py --values VALUES [--values MORE]... RENDERED.yaml...
    python test_rendered_chart.py --self-test

RENDERED.yaml is `helm template` output; the --values files are the ones it was rendered with,
the chart's values.yaml first (merged in order, as Helm does), so the tests know which
components are enabled. kubeconform checks each resource against its schema; these tests check
what the schemas cannot: how the resources fit together.

  - Every StatefulSet (each Eddy component is one) has a readiness probe GET /ready and a
    liveness probe on every container, and its EDDY_STATE_DIR is a writable mount: the
    volumeClaimTemplate when the component's persistence is enabled (the default), a pod volume
    otherwise.
  - Every Deployment has a readiness and a liveness probe on every container.
  - Every workload (StatefulSet, Deployment, DaemonSet, Job, CronJob) has an init container
    running `eddy platform wait` (while waitForPlatform.enabled). The one exception is the
    provisioning Job: `eddy topics provision` runs the same wait itself before it does anything
    (eddy-cli shares the code), so a Job whose container runs `topics provision` passes
    without the init container.
  - The provisioning Job exists (while provisioning.enabled) and is a Helm hook on both
    pre-install and pre-upgrade.
  - Nothing runs as root: every container and init container of every pod has an effective
    runAsNonRoot true and runAsUser other than 0 (the container's securityContext, or the
    pod's), readOnlyRootFilesystem true (except, with liveUpdate.enabled, the containers that
    run eddy-dev-run, into which Tilt syncs binaries) and allowPrivilegeEscalation false; and
    the rest of
    the "restricted" Pod Security Standard: no privileged container, capabilities drop ALL,
    a RuntimeDefault or Localhost seccomp profile, no host namespaces or hostPath volumes.
  - Live update (development): with liveUpdate.enabled, every component's and the gateway's
    container runs its binary under /usr/local/bin/eddy-dev-run with a writable root file
    system; without it, no container runs eddy-dev-run.
  - Every component enabled in `components` has its StatefulSet (and a disabled one has none);
    the gateway has its Deployment when enabled; an enabled ingress renders an Ingress and an
    enabled serviceMonitor a ServiceMonitor.
  - References resolve: a StatefulSet's serviceName is a headless Service of the render; every
    Service selects the pods of some workload; Ingress backends and ServiceMonitor endpoints
    name Services and ports that exist; named probe ports are ports of their container.

Exit status 0 when every check passes, 1 otherwise; each failure names the resource.
--self-test runs the checks on small inline manifests, a correct one and broken variants, and
fails unless the correct one passes and each broken one fails with the expected message: it
proves that the checks can fail.
"""

import argparse
import copy
import sys

import yaml

WORKLOAD_KINDS = ("StatefulSet", "Deployment", "DaemonSet", "ReplicaSet", "Job", "CronJob")
COMPONENT_LABEL = "app.kubernetes.io/component"
HOOK_ANNOTATION = "helm.sh/hook"


# --- values ----------------------------------------------------------------------------------

def merge_values(base, override):
    """Helm's merge of a values file over another: maps recursively, null deletes a key."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def component_settings(values):
    """Each `components` entry merged over componentDefaults as the chart does it: keys the
    entry lacks come from the defaults, maps are merged one level deep."""
    defaults = values.get("componentDefaults") or {}
    out = {}
    for name, entry in (values.get("components") or {}).items():
        entry = entry or {}
        merged = copy.deepcopy(defaults)
        for key, value in entry.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = copy.deepcopy(value)
        out[name] = merged
    return out


def enabled(section, default=True):
    if not isinstance(section, dict):
        return default
    value = section.get("enabled", default)
    return bool(value)


# --- manifests -------------------------------------------------------------------------------

def describe(doc):
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind')} {meta.get('name')}"


def pod_spec(doc):
    """The pod spec of a Pod or of a workload's pod template, or None."""
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    if kind in WORKLOAD_KINDS:
        return ((spec.get("template") or {}).get("spec")) or {}
    return None


def pod_labels(doc):
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "Pod":
        return (doc.get("metadata") or {}).get("labels") or {}
    if kind == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    return (((spec.get("template") or {}).get("metadata")) or {}).get("labels") or {}


def containers(spec, init=True):
    """(kind of container, container) pairs of a pod spec."""
    out = [("container", c) for c in spec.get("containers") or []]
    if init:
        out += [("init container", c) for c in spec.get("initContainers") or []]
    return out


def argv(container):
    """The container's command and args as words (a shell string is split too)."""
    words = []
    for item in (container.get("command") or []) + (container.get("args") or []):
        words.extend(str(item).split())
    return words


def runs(container, *words):
    """True when the words follow each other in the container's command line."""
    line = argv(container)
    n = len(words)
    return any(tuple(line[i:i + n]) == words for i in range(len(line) - n + 1))


def env_value(container, name):
    for item in container.get("env") or []:
        if item.get("name") == name:
            return item
    return None


def hooks(doc):
    annotations = (doc.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(HOOK_ANNOTATION)
    if value is None:
        return None
    return {part.strip() for part in str(value).split(",") if part.strip()}


def is_provisioning_job(doc):
    if doc.get("kind") != "Job":
        return False
    spec = pod_spec(doc) or {}
    return any(runs(c, "topics", "provision") for _, c in containers(spec, init=False))


def component_of(doc):
    labels = (doc.get("metadata") or {}).get("labels") or {}
    return labels.get(COMPONENT_LABEL) or pod_labels(doc).get(COMPONENT_LABEL)


def selects(selector, labels):
    """Whether a label selector (a Service's map or a LabelSelector) selects labels."""
    if not selector:
        return False
    if "matchLabels" in selector or "matchExpressions" in selector:
        for key, value in (selector.get("matchLabels") or {}).items():
            if labels.get(key) != value:
                return False
        for expr in selector.get("matchExpressions") or []:
            key, op, vals = expr.get("key"), expr.get("operator"), expr.get("values") or []
            if op == "In" and labels.get(key) not in vals:
                return False
            if op == "NotIn" and labels.get(key) in vals:
                return False
            if op == "Exists" and key not in labels:
                return False
            if op == "DoesNotExist" and key in labels:
                return False
        return True
    return all(labels.get(key) == value for key, value in selector.items())


# --- checks ----------------------------------------------------------------------------------
# Each check takes (docs, values) and returns a list of failure messages.

def check_statefulset_probes(docs, values):
    failures = []
    for doc in docs:
        if doc.get("kind") != "StatefulSet":
            continue
        for _, c in containers(pod_spec(doc), init=False):
            where = f"{describe(doc)} container {c.get('name')}"
            readiness = c.get("readinessProbe")
            if not readiness:
                failures.append(f"{where}: no readiness probe")
            elif (readiness.get("httpGet") or {}).get("path") != "/ready":
                failures.append(f"{where}: the readiness probe is not GET /ready "
                                f"(it is {readiness})")
            if not c.get("livenessProbe"):
                failures.append(f"{where}: no liveness probe")
    return failures


def check_deployment_probes(docs, values):
    failures = []
    for doc in docs:
        if doc.get("kind") != "Deployment":
            continue
        for _, c in containers(pod_spec(doc), init=False):
            where = f"{describe(doc)} container {c.get('name')}"
            if not c.get("readinessProbe"):
                failures.append(f"{where}: no readiness probe")
            if not c.get("livenessProbe"):
                failures.append(f"{where}: no liveness probe")
    return failures


def check_named_probe_ports(docs, values):
    failures = []
    for doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        for what, c in containers(spec):
            names = {p.get("name") for p in c.get("ports") or [] if p.get("name")}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                action = (c.get(probe) or {}).get("httpGet") or (c.get(probe) or {}).get("tcpSocket")
                port = (action or {}).get("port")
                if isinstance(port, str) and port not in names:
                    failures.append(f"{describe(doc)} {what} {c.get('name')}: {probe} uses port "
                                    f"'{port}', which the container does not declare "
                                    f"(its ports: {sorted(names)})")
    return failures


def check_state_volume(docs, values):
    failures = []
    settings = component_settings(values)
    for doc in docs:
        if doc.get("kind") != "StatefulSet":
            continue
        spec = pod_spec(doc)
        claims = {(t.get("metadata") or {}).get("name")
                  for t in (doc.get("spec") or {}).get("volumeClaimTemplates") or []}
        pod_volumes = {v.get("name") for v in spec.get("volumes") or []}
        component = component_of(doc)
        persistence = (settings.get(component) or {}).get("persistence") or {}
        persistent = enabled(persistence)
        for _, c in containers(spec, init=False):
            where = f"{describe(doc)} container {c.get('name')}"
            item = env_value(c, "EDDY_STATE_DIR")
            if item is None:
                failures.append(f"{where}: no EDDY_STATE_DIR")
                continue
            state_dir = item.get("value")
            if not state_dir:
                failures.append(f"{where}: EDDY_STATE_DIR is not a literal path ({item})")
                continue
            mounts = [m for m in c.get("volumeMounts") or []
                      if m.get("mountPath", "").rstrip("/") == state_dir.rstrip("/")]
            if not mounts:
                failures.append(f"{where}: nothing is mounted at EDDY_STATE_DIR {state_dir} "
                                f"(the root filesystem is read-only)")
                continue
            mount = mounts[0]
            if mount.get("readOnly"):
                failures.append(f"{where}: EDDY_STATE_DIR {state_dir} is mounted read-only")
            if persistent:
                if not claims:
                    failures.append(f"{describe(doc)}: no volumeClaimTemplate although the "
                                    f"persistence of component '{component}' is enabled")
                elif mount.get("name") not in claims:
                    failures.append(f"{where}: EDDY_STATE_DIR {state_dir} is mounted from "
                                    f"'{mount.get('name')}', not from a volumeClaimTemplate "
                                    f"({sorted(claims)})")
            else:
                if mount.get("name") not in pod_volumes | claims:
                    failures.append(f"{where}: EDDY_STATE_DIR {state_dir} is mounted from "
                                    f"'{mount.get('name')}', which is no volume of the pod")
    return failures


def check_wait_init_container(docs, values):
    if not enabled(values.get("waitForPlatform")):
        return []
    failures = []
    for doc in docs:
        if doc.get("kind") not in WORKLOAD_KINDS:
            continue
        spec = pod_spec(doc)
        if any(runs(c, "platform", "wait") for c in spec.get("initContainers") or []):
            continue
        if is_provisioning_job(doc):
            continue  # `eddy topics provision` runs the same wait first.
        failures.append(f"{describe(doc)}: no init container runs `eddy platform wait` "
                        f"(init containers: "
                        f"{[argv(c) for c in spec.get('initContainers') or []]})")
    return failures


def check_provisioning_job(docs, values):
    jobs = [doc for doc in docs if is_provisioning_job(doc)]
    if not enabled(values.get("provisioning")):
        return [f"{describe(doc)}: a provisioning Job although provisioning.enabled is false"
                for doc in jobs]
    if not jobs:
        return ["no provisioning Job (a Job whose container runs `eddy topics provision`)"]
    failures = []
    for doc in jobs:
        phases = hooks(doc)
        if phases is None:
            failures.append(f"{describe(doc)}: not a Helm hook (no {HOOK_ANNOTATION} annotation)")
            continue
        for phase in ("pre-install", "pre-upgrade"):
            if phase not in phases:
                failures.append(f"{describe(doc)}: {HOOK_ANNOTATION} is "
                                f"'{','.join(sorted(phases))}', without {phase}")
    return failures


def check_not_root(docs, values):
    failures = []
    live_update = enabled(values.get("liveUpdate"), default=False)
    for doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        pod_ctx = spec.get("securityContext") or {}
        for what, c in containers(spec):
            where = f"{describe(doc)} {what} {c.get('name')}"
            ctx = c.get("securityContext") or {}

            def effective(key):
                return ctx[key] if key in ctx else pod_ctx.get(key)

            if effective("runAsNonRoot") is not True:
                failures.append(f"{where}: runAsNonRoot is not true")
            user = effective("runAsUser")
            if user is None:
                failures.append(f"{where}: no runAsUser (the image's user would decide)")
            elif user == 0:
                failures.append(f"{where}: runs as root (runAsUser 0)")
            if effective("runAsGroup") == 0:
                failures.append(f"{where}: runs with group root (runAsGroup 0)")
            live_updated = live_update and what == "container" and runs_under_dev_run(c)
            if ctx.get("readOnlyRootFilesystem") is not True and not live_updated:
                failures.append(f"{where}: readOnlyRootFilesystem is not true")
            if ctx.get("allowPrivilegeEscalation") is not False:
                failures.append(f"{where}: allowPrivilegeEscalation is not false")
    return failures


DEV_RUN = "/usr/local/bin/eddy-dev-run"


def runs_under_dev_run(container):
    line = argv(container)
    return bool(line) and line[0] == DEV_RUN


def check_live_update(docs, values):
    failures = []
    live_update = enabled(values.get("liveUpdate"), default=False)
    for doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        main_workload = doc.get("kind") in ("StatefulSet", "Deployment")
        for what, c in containers(spec):
            where = f"{describe(doc)} {what} {c.get('name')}"
            under = runs_under_dev_run(c)
            if under and not live_update:
                failures.append(f"{where}: runs eddy-dev-run, but liveUpdate is off")
            elif live_update and main_workload and what == "container" and not under:
                failures.append(f"{where}: liveUpdate is on, but it does not run under {DEV_RUN}")
            elif under and len(argv(c)) < 2:
                failures.append(f"{where}: eddy-dev-run without a binary to run")
            elif under and (c.get("securityContext") or {}).get("readOnlyRootFilesystem") is not False:
                failures.append(f"{where}: runs under eddy-dev-run with a read-only root file "
                                "system (Tilt cannot sync binaries into it)")
    return failures


def check_restricted_pod_security(docs, values):
    failures = []
    for doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        pod_ctx = spec.get("securityContext") or {}
        for field in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(field):
                failures.append(f"{describe(doc)}: {field} is true")
        for volume in spec.get("volumes") or []:
            if "hostPath" in volume:
                failures.append(f"{describe(doc)}: hostPath volume {volume.get('name')}")
        for what, c in containers(spec):
            where = f"{describe(doc)} {what} {c.get('name')}"
            ctx = c.get("securityContext") or {}
            if ctx.get("privileged"):
                failures.append(f"{where}: privileged")
            drop = (ctx.get("capabilities") or {}).get("drop") or []
            if "ALL" not in drop:
                failures.append(f"{where}: capabilities do not drop ALL")
            added = set((ctx.get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}
            if added:
                failures.append(f"{where}: adds capabilities {sorted(added)}")
            seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                failures.append(f"{where}: seccomp profile is {seccomp!r}, not RuntimeDefault "
                                f"or Localhost")
    return failures


def check_component_workloads(docs, values):
    failures = []
    by_component = {}
    for doc in docs:
        if doc.get("kind") in WORKLOAD_KINDS and not hooks(doc):
            by_component.setdefault(component_of(doc), []).append(doc)
    settings = component_settings(values)
    if not settings:
        failures.append("the values have no `components`")
    for name, c in settings.items():
        workloads = [d for d in by_component.get(name, []) if d.get("kind") == "StatefulSet"]
        if enabled(c) and not workloads:
            failures.append(f"component '{name}' is enabled but has no StatefulSet "
                            f"(labelled {COMPONENT_LABEL}: {name})")
        if not enabled(c) and by_component.get(name):
            failures.append(f"component '{name}' is disabled but has "
                            f"{[describe(d) for d in by_component[name]]}")
    for doc in docs:
        if doc.get("kind") == "StatefulSet" and component_of(doc) not in settings:
            failures.append(f"{describe(doc)}: component '{component_of(doc)}' is not in "
                            f"`components`")
    gateway = [d for d in by_component.get("gateway", []) if d.get("kind") == "Deployment"]
    if enabled(values.get("gateway"), default=False) and not gateway:
        failures.append("gateway.enabled is true but there is no gateway Deployment "
                        f"(labelled {COMPONENT_LABEL}: gateway)")
    if not enabled(values.get("gateway"), default=False) and gateway:
        failures.append("gateway.enabled is false but there is a gateway Deployment")
    for section, kind in (("ingress", "Ingress"), ("serviceMonitor", "ServiceMonitor")):
        present = [d for d in docs if d.get("kind") == kind]
        if enabled(values.get(section), default=False) and not present:
            failures.append(f"{section}.enabled is true but there is no {kind}")
        if not enabled(values.get(section), default=False) and present:
            failures.append(f"{section}.enabled is false but there is "
                            f"{[describe(d) for d in present]}")
    return failures


def check_references(docs, values):
    failures = []
    services = {(d.get("metadata") or {}).get("name"): d for d in docs if d.get("kind") == "Service"}
    workloads = [d for d in docs if d.get("kind") in WORKLOAD_KINDS + ("Pod",)]
    for doc in docs:
        if doc.get("kind") != "StatefulSet":
            continue
        name = (doc.get("spec") or {}).get("serviceName")
        service = services.get(name)
        if service is None:
            failures.append(f"{describe(doc)}: serviceName '{name}' is no Service of the chart")
        elif (service.get("spec") or {}).get("clusterIP") != "None":
            failures.append(f"{describe(doc)}: its serviceName '{name}' is not headless "
                            f"(clusterIP: None)")
    for name, service in services.items():
        selector = (service.get("spec") or {}).get("selector")
        if not selector:
            failures.append(f"Service {name}: no selector")
        elif not any(selects(selector, pod_labels(w)) for w in workloads):
            failures.append(f"Service {name}: its selector {selector} selects no pods of the chart")

    def service_port(service, port):
        ports = (service.get("spec") or {}).get("ports") or []
        return any(p.get("name") == port or p.get("port") == port for p in ports)

    for doc in docs:
        if doc.get("kind") != "Ingress":
            continue
        backends = []
        spec = doc.get("spec") or {}
        if spec.get("defaultBackend"):
            backends.append(spec["defaultBackend"])
        for rule in spec.get("rules") or []:
            for path in ((rule.get("http") or {}).get("paths")) or []:
                backends.append(path.get("backend") or {})
        for backend in backends:
            svc = backend.get("service") or {}
            port = svc.get("port") or {}
            port = port.get("name") or port.get("number")
            service = services.get(svc.get("name"))
            if service is None:
                failures.append(f"{describe(doc)}: backend Service '{svc.get('name')}' does not exist")
            elif not service_port(service, port):
                failures.append(f"{describe(doc)}: backend Service '{svc.get('name')}' has no port '{port}'")
    for doc in docs:
        if doc.get("kind") != "ServiceMonitor":
            continue
        spec = doc.get("spec") or {}
        matched = [s for s in services.values()
                   if selects(spec.get("selector") or {}, (s.get("metadata") or {}).get("labels") or {})]
        if not matched:
            failures.append(f"{describe(doc)}: its selector matches no Service of the chart")
        for endpoint in spec.get("endpoints") or []:
            port = endpoint.get("port")
            if port and matched and not any(service_port(s, port) for s in matched):
                failures.append(f"{describe(doc)}: no Service it selects has a port '{port}'")
    return failures


CHECKS = [
    ("StatefulSets: readiness GET /ready and liveness probes", check_statefulset_probes),
    ("Deployments: readiness and liveness probes", check_deployment_probes),
    ("named probe ports are container ports", check_named_probe_ports),
    ("StatefulSets: EDDY_STATE_DIR is the state volume", check_state_volume),
    ("workloads: init container runs `eddy platform wait`", check_wait_init_container),
    ("provisioning Job: pre-install and pre-upgrade hook", check_provisioning_job),
    ("containers: not root, read-only root, no privilege escalation", check_not_root),
    ("pods: restricted Pod Security Standard", check_restricted_pod_security),
    ("live update: eddy-dev-run exactly when liveUpdate is on", check_live_update),
    ("components, gateway, ingress, serviceMonitor have their resources", check_component_workloads),
    ("references: serviceName, Service selectors, Ingress and ServiceMonitor ports", check_references),
]


def run_checks(docs, values):
    """[(check name, [failure, ...]), ...]"""
    return [(name, check(docs, values)) for name, check in CHECKS]


def load_documents(texts):
    docs = []
    for text in texts:
        for doc in yaml.safe_load_all(text):
            if doc is None:
                continue
            if not isinstance(doc, dict) or not doc.get("kind"):
                raise ValueError(f"not a Kubernetes resource: {str(doc)[:200]}")
            if doc.get("kind") == "List":
                docs.extend(doc.get("items") or [])
            else:
                docs.append(doc)
    return docs


# --- self-test -------------------------------------------------------------------------------

SELF_TEST_VALUES = """
waitForPlatform: {enabled: true}
provisioning: {enabled: true}
componentDefaults:
  enabled: true
  persistence: {enabled: true, size: 1Gi}
components:
  admin: {}
  old-thing: {enabled: false}
gateway: {enabled: false}
ingress: {enabled: false}
serviceMonitor: {enabled: false}
"""

SELF_TEST_MANIFEST = """
apiVersion: v1
kind: Service
metadata: {name: eddy-admin-headless, labels: {app.kubernetes.io/component: admin}}
spec:
  clusterIP: None
  selector: {app.kubernetes.io/component: admin}
  ports: [{name: admin, port: 9090}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: eddy-admin, labels: {app.kubernetes.io/component: admin}}
spec:
  serviceName: eddy-admin-headless
  selector: {matchLabels: {app.kubernetes.io/component: admin}}
  template:
    metadata: {labels: {app.kubernetes.io/component: admin}}
    spec:
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        seccompProfile: {type: RuntimeDefault}
      initContainers:
        - name: wait
          image: eddy
          command: [/usr/local/bin/eddy, platform, wait]
          securityContext: &ctx
            readOnlyRootFilesystem: true
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
      containers:
        - name: admin
          image: eddy
          command: [/usr/local/bin/eddy-admin]
          env: [{name: EDDY_STATE_DIR, value: /var/lib/eddy/state}]
          ports: [{name: admin, containerPort: 9090}]
          readinessProbe: {httpGet: {path: /ready, port: admin}}
          livenessProbe: {httpGet: {path: /healthz, port: admin}}
          securityContext: *ctx
          volumeMounts: [{name: state, mountPath: /var/lib/eddy/state}]
  volumeClaimTemplates:
    - metadata: {name: state}
      spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: eddy-provision
  annotations: {helm.sh/hook: "pre-install,pre-upgrade"}
spec:
  template:
    spec:
      restartPolicy: Never
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: provision
          image: eddy
          command: [/usr/local/bin/eddy]
          args: [topics, provision]
          securityContext:
            readOnlyRootFilesystem: true
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
"""


def _sts(docs):
    return next(d for d in docs if d["kind"] == "StatefulSet")


def _main_container(docs):
    return _sts(docs)["spec"]["template"]["spec"]["containers"][0]


def _without_readiness(docs):
    del _main_container(docs)["readinessProbe"]


def _readiness_on_healthz(docs):
    _main_container(docs)["readinessProbe"]["httpGet"]["path"] = "/healthz"


def _without_liveness(docs):
    del _main_container(docs)["livenessProbe"]


def _state_elsewhere(docs):
    _main_container(docs)["volumeMounts"][0]["mountPath"] = "/data"


def _without_claims(docs):
    del _sts(docs)["spec"]["volumeClaimTemplates"]
    _sts(docs)["spec"]["template"]["spec"]["volumes"] = [{"name": "state", "emptyDir": {}}]


def _without_wait(docs):
    del _sts(docs)["spec"]["template"]["spec"]["initContainers"]


def _job_without_provision(docs):
    job = next(d for d in docs if d["kind"] == "Job")
    job["spec"]["template"]["spec"]["containers"][0]["args"] = ["topics", "check"]


def _hook_install_only(docs):
    job = next(d for d in docs if d["kind"] == "Job")
    job["metadata"]["annotations"]["helm.sh/hook"] = "pre-install"


def _root_user(docs):
    _main_container(docs)["securityContext"] = {**_main_container(docs)["securityContext"], "runAsUser": 0}


def _root_pod(docs):
    job = next(d for d in docs if d["kind"] == "Job")
    del job["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]


def _writable_root(docs):
    init = _sts(docs)["spec"]["template"]["spec"]["initContainers"][0]
    init["securityContext"] = {**init["securityContext"], "readOnlyRootFilesystem": False}


def _escalation(docs):
    _main_container(docs)["securityContext"] = {
        k: v for k, v in _main_container(docs)["securityContext"].items() if k != "allowPrivilegeEscalation"}


def _live_updated(docs, writable=True):
    main = _main_container(docs)
    main["command"] = [DEV_RUN] + main["command"]
    main["securityContext"] = {**main["securityContext"], "readOnlyRootFilesystem": not writable}


def _component_missing(docs):
    docs.remove(_sts(docs))


def _headless_service_missing(docs):
    docs.remove(next(d for d in docs if d["kind"] == "Service"))


def _probe_port_unknown(docs):
    _main_container(docs)["livenessProbe"]["httpGet"]["port"] = "http"


# (what is broken, how, text the failures must contain, values override)
SELF_TEST_CASES = [
    ("no readiness probe", _without_readiness, "no readiness probe", None),
    ("readiness on /healthz", _readiness_on_healthz, "not GET /ready", None),
    ("no liveness probe", _without_liveness, "no liveness probe", None),
    ("state dir not mounted", _state_elsewhere, "nothing is mounted at EDDY_STATE_DIR", None),
    ("persistence enabled, emptyDir", _without_claims, "no volumeClaimTemplate", None),
    ("persistence disabled, emptyDir", _without_claims, None,
     {"componentDefaults": {"persistence": {"enabled": False}}}),
    ("no wait init container", _without_wait, "`eddy platform wait`", None),
    ("waitForPlatform disabled", _without_wait, None, {"waitForPlatform": {"enabled": False}}),
    ("no provisioning Job", _job_without_provision, "no provisioning Job", None),
    ("hook without pre-upgrade", _hook_install_only, "without pre-upgrade", None),
    ("runAsUser 0", _root_user, "runs as root", None),
    ("runAsNonRoot unset", _root_pod, "runAsNonRoot is not true", None),
    ("writable root filesystem", _writable_root, "readOnlyRootFilesystem is not true", None),
    ("live update on, writable root", _live_updated, None, {"liveUpdate": {"enabled": True}}),
    ("live update off, eddy-dev-run", _live_updated, "liveUpdate is off", None),
    ("live update on, not under eddy-dev-run", lambda docs: None, "does not run under",
     {"liveUpdate": {"enabled": True}}),
    ("live update on, read-only root", lambda docs: _live_updated(docs, writable=False),
     "read-only root", {"liveUpdate": {"enabled": True}}),
    ("live update on, writable init container", _writable_root, "readOnlyRootFilesystem is not true",
     {"liveUpdate": {"enabled": True}}),
    ("privilege escalation", _escalation, "allowPrivilegeEscalation is not false", None),
    ("enabled component without workload", _component_missing, "'admin' is enabled but has no StatefulSet", None),
    ("gateway enabled, none rendered", lambda docs: None, "no gateway Deployment", {"gateway": {"enabled": True}}),
    ("headless Service missing", _headless_service_missing, "is no Service of the chart", None),
    ("probe on an undeclared port", _probe_port_unknown, "port 'http'", None),
]


def self_test():
    values = yaml.safe_load(SELF_TEST_VALUES)
    passed = failed = 0

    def outcome(ok, name, detail=""):
        nonlocal passed, failed
        if ok:
            passed += 1
            print(f"ok   {name}")
        else:
            failed += 1
            print(f"FAIL {name}{': ' + detail if detail else ''}")

    good = load_documents([SELF_TEST_MANIFEST])
    failures = [f for _, fs in run_checks(good, values) for f in fs]
    outcome(not failures, "a correct manifest passes", "; ".join(failures))
    for name, breaking, expected, override in SELF_TEST_CASES:
        docs = copy.deepcopy(good)
        breaking(docs)
        case_values = merge_values(values, override or {})
        failures = [f for _, fs in run_checks(docs, case_values) for f in fs]
        if expected is None:
            outcome(not failures, f"{name}: passes", "; ".join(failures))
        else:
            outcome(any(expected in f for f in failures), f"{name}: fails",
                    f"expected a failure containing {expected!r}, got {failures or 'none'}")
    print(f"self-test: {passed} passed, {failed} failed")
    return failed == 0


# --- main ------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--values", action="append", default=[], metavar="FILE",
                        help="a values file the chart was rendered with (repeat, in order)")
    parser.add_argument("--self-test", action="store_true",
                        help="check the checks against inline manifests")
    parser.add_argument("rendered", nargs="*", help="helm template output")
    args = parser.parse_args()

    if args.self_test:
        return 0 if self_test() else 1
    if not args.rendered or not args.values:
        parser.error("give the rendered YAML and at least one --values file (or --self-test)")

    values = {}
    for path in args.values:
        with open(path, encoding="utf-8") as f:
            values = merge_values(values, yaml.safe_load(f) or {})
    texts = []
    for path in args.rendered:
        with open(path, encoding="utf-8") as f:
            texts.append(f.read())
    docs = load_documents(texts)
    if not docs:
        print(f"FAIL no resources in {', '.join(args.rendered)}")
        return 1

    passed = failed = 0
    for name, failures in run_checks(docs, values):
        if failures:
            failed += 1
            print(f"FAIL {name}")
            for failure in failures:
                print(f"       {failure}")
        else:
            passed += 1
            print(f"ok   {name}")
    print(f"invariants: {passed} passed, {failed} failed ({len(docs)} resources)")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
