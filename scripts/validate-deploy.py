#!/usr/bin/env python3
"""Structural and cross-file checks of deploy/, run by scripts/validate-deploy.sh (which provides PyYAML and
kubernetes-validate). Usage: validate-deploy.py REPO_ROOT

Each check prints "ok: ..." or "FAIL: ..."; the exit status is 1 if any check failed. The checks that need outside
tools (promtool, hadolint, shellcheck, systemd-analyze, kubectl) live in the shell script.
"""
import fnmatch
import glob
import json
import os
import re
import shlex
import sys

import yaml

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".")
DEPLOY = os.path.join(ROOT, "deploy")
K8S = os.path.join(DEPLOY, "kubernetes")
failures = []
passes = 0


VERBOSE = os.environ.get("CALLBRIDGE_DEPLOY_VERBOSE") == "1"


def ok(message):
    global passes
    passes += 1
    if VERBOSE:
        print("ok:   " + message)


def fail(message):
    failures.append(message)
    print("FAIL: " + message)


def check(condition, message, detail=""):
    if condition:
        ok(message)
    else:
        fail(message + (" (" + detail + ")" if detail else ""))
    return condition


def rel(path):
    return os.path.relpath(path, ROOT)


def read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


# ---------------------------------------------------------------------------------------------------------------
# Metric names

METRIC = re.compile(r"\bcallbridge_[a-z][a-z0-9_]*")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def base_metric(name):
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def load_metric_list():
    names = []
    for line in read(os.path.join(DEPLOY, "metrics.txt")).splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line.split()[0])
    return names


def metrics_used_in(text):
    # Recording-rule or alert names never start with callbridge_ here, so every match is a metric.
    return {base_metric(name) for name in METRIC.findall(text)}


def swift_metric_names():
    """callbridge_* string literals in the Swift sources (metric labels are written out in full there): all of them,
    and those in the files that import a metrics API (others may use the prefix for other things, such as a TwiML
    parameter name)."""
    everywhere, in_metric_files = set(), set()
    for path in glob.glob(os.path.join(ROOT, "Sources", "**", "*.swift"), recursive=True):
        text = read(path)
        names = {l for l in re.findall(r'"([^"\\\n]*)"', text) if re.fullmatch(r"callbridge_[a-z][a-z0-9_]*", l)}
        everywhere |= names
        if re.search(r"^import (CoreMetrics|Metrics|Prometheus)\b", text, re.M):
            in_metric_files |= names
    return everywhere, in_metric_files


# ---------------------------------------------------------------------------------------------------------------
# Kubernetes manifests

def load_yaml_documents(path):
    with open(path, encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def check_kubernetes():
    kustomization_path = os.path.join(K8S, "kustomization.yaml")
    kustomization = load_yaml_documents(kustomization_path)[0]
    resources = kustomization.get("resources", [])
    missing = [name for name in resources if not os.path.isfile(os.path.join(K8S, name))]
    check(not missing, "kustomization.yaml: every listed resource exists", "missing: " + ", ".join(missing))
    on_disk = sorted(os.path.basename(p) for p in glob.glob(os.path.join(K8S, "*.yaml")))
    unlisted = [name for name in on_disk if name != "kustomization.yaml" and name not in resources]
    check(not unlisted, "kustomization.yaml: lists every manifest in deploy/kubernetes", "not listed: " + ", ".join(unlisted))

    objects = {}
    for name in resources:
        path = os.path.join(K8S, name)
        if not os.path.isfile(path):
            continue
        for doc in load_yaml_documents(path):
            objects[(doc.get("kind"), doc.get("metadata", {}).get("name"))] = doc

    kinds = {kind for kind, _ in objects}
    wanted = {"Deployment", "Service", "Ingress", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ConfigMap", "Secret"}
    check(wanted <= kinds, "kubernetes: Deployment, Service, Ingress, PDB, HPA, ConfigMap and Secret present",
          "missing: " + ", ".join(sorted(wanted - kinds)))

    def one(kind):
        matches = [doc for (k, _), doc in objects.items() if k == kind]
        return matches[0] if matches else None

    deployment, service, ingress = one("Deployment"), one("Service"), one("Ingress")
    pdb, hpa, configmap, secret = one("PodDisruptionBudget"), one("HorizontalPodAutoscaler"), one("ConfigMap"), one("Secret")
    if not all([deployment, service, ingress, pdb, hpa, configmap, secret]):
        return {}

    settings = configmap.get("data", {})
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"].get("labels", {})
    container = pod["spec"]["containers"][0]
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    http_port = ports.get("http")

    check(http_port is not None and str(http_port) == settings.get("CALLBRIDGE_PORT"),
          "deployment: container port `http` equals CALLBRIDGE_PORT in the ConfigMap",
          "%s vs %s" % (http_port, settings.get("CALLBRIDGE_PORT")))
    check(settings.get("CALLBRIDGE_HOST") == "0.0.0.0", "configmap: CALLBRIDGE_HOST listens on every interface")
    check(settings.get("CALLBRIDGE_PUBLIC_URL", "").startswith("https://"), "configmap: CALLBRIDGE_PUBLIC_URL is https")

    selector = deployment["spec"]["selector"]["matchLabels"]
    check(all(pod_labels.get(k) == v for k, v in selector.items()), "deployment: selector matches the pod labels")

    strategy = deployment["spec"].get("strategy", {})
    check(strategy.get("rollingUpdate", {}).get("maxUnavailable") == 0, "deployment: rolling update keeps maxUnavailable 0")
    check("replicas" not in deployment["spec"], "deployment: no replicas field (the HPA owns the count)")

    readiness = container.get("readinessProbe", {}).get("httpGet", {})
    liveness = container.get("livenessProbe", {}).get("httpGet", {})
    check(readiness.get("path") == "/readyz" and readiness.get("port") in ("http", http_port),
          "deployment: readiness probe is GET /readyz on the http port")
    check(liveness.get("path") == "/healthz" and liveness.get("port") in ("http", http_port),
          "deployment: liveness probe is GET /healthz on the http port")

    drain_timeout = int(settings.get("CALLBRIDGE_DRAIN_TIMEOUT", "300"))
    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    check(grace > drain_timeout, "deployment: terminationGracePeriodSeconds (%s) > CALLBRIDGE_DRAIN_TIMEOUT (%s)" % (grace, drain_timeout))

    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    check(pre_stop[:2] == ["/app/callbridge", "drain"] and "--wait" in pre_stop,
          "deployment: preStop runs `/app/callbridge drain ... --wait`", " ".join(pre_stop))

    annotations = pod["metadata"].get("annotations", {})
    check(annotations.get("prometheus.io/scrape") == "true" and annotations.get("prometheus.io/port") == str(http_port)
          and annotations.get("prometheus.io/path") == "/metrics",
          "deployment: Prometheus scrape annotations point at /metrics on the http port")

    pod_security = pod["spec"].get("securityContext", {})
    container_security = container.get("securityContext", {})
    check(pod_security.get("runAsNonRoot") is True and pod_security.get("runAsUser", 0) != 0,
          "deployment: runs as a non-root user")
    check(container_security.get("readOnlyRootFilesystem") is True
          and container_security.get("allowPrivilegeEscalation") is False
          and "ALL" in container_security.get("capabilities", {}).get("drop", []),
          "deployment: read-only root file system, no privilege escalation, all capabilities dropped")

    resources = container.get("resources", {})
    check(all(k in resources.get("requests", {}) for k in ("cpu", "memory")) and "memory" in resources.get("limits", {}),
          "deployment: CPU and memory requests and a memory limit are set")

    config_refs = [e["configMapRef"]["name"] for e in container.get("envFrom", []) if "configMapRef" in e]
    check(configmap["metadata"]["name"] in config_refs, "deployment: takes its environment from the ConfigMap")
    secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    refs = [(e["name"], e["valueFrom"]["secretKeyRef"]) for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
    bad_refs = [name for name, ref in refs if ref["name"] != secret["metadata"]["name"] or ref["key"] not in secret_keys]
    check(refs and not bad_refs, "deployment: secret references name keys of the Secret", ", ".join(bad_refs))
    check({"OPENAI_API_KEY", "TWILIO_AUTH_TOKEN"} <= secret_keys, "secret: OPENAI_API_KEY and TWILIO_AUTH_TOKEN keys")

    check(all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items()), "service: selector matches the pods")
    service_ports = {p.get("name"): p for p in service["spec"]["ports"]}
    check(service["spec"].get("type", "ClusterIP") == "ClusterIP" and service_ports.get("http", {}).get("port") == 80
          and service_ports["http"].get("targetPort") in ("http", http_port),
          "service: ClusterIP, port 80 to the pods' http port")

    backends = [p["backend"]["service"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    port_numbers = [p["port"] for p in service["spec"]["ports"]]
    check(backends and all(b["name"] == service["metadata"]["name"]
                           and (b["port"].get("name") in service_ports or b["port"].get("number") in port_numbers)
                           for b in backends),
          "ingress: backends are the Service and one of its ports")
    ingress_annotations = ingress["metadata"].get("annotations", {})
    for key in ("nginx.ingress.kubernetes.io/proxy-read-timeout", "nginx.ingress.kubernetes.io/proxy-send-timeout"):
        check(int(ingress_annotations.get(key, "0")) >= 3600, "ingress: %s is at least 3600 s" % key.split("/")[1])

    check(all(pod_labels.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items()), "pdb: selector matches the pods")
    target = hpa["spec"]["scaleTargetRef"]
    check(target["kind"] == "Deployment" and target["name"] == deployment["metadata"]["name"], "hpa: scales the Deployment")
    check(hpa["spec"].get("minReplicas", 1) >= 2, "hpa: at least 2 replicas")

    return {"settings": settings, "drain_timeout": drain_timeout, "port": http_port,
            "run_as_user": pod_security.get("runAsUser"), "pre_stop": pre_stop}


# ---------------------------------------------------------------------------------------------------------------
# Dockerfile

def dockerfile_instructions(text):
    """(instruction, arguments) pairs, with line continuations joined and comments dropped."""
    instructions, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        word, _, rest = current.partition(" ")
        instructions.append((word.upper(), rest.strip()))
        current = ""
    return instructions


def exec_form(arguments):
    arguments = arguments.strip()
    if arguments.startswith("["):
        return json.loads(arguments)
    return None


def dockerignore_includes(path, patterns):
    """Docker's rule: the last matching pattern wins; `!` re-includes. A directory pattern covers its contents."""
    included = True
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern[1:] if negate else pattern
        pattern = pattern.strip("/")
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            included = negate
    return included


def check_dockerfile(kube):
    path = os.path.join(DEPLOY, "Dockerfile")
    instructions = dockerfile_instructions(read(path))
    package = read(os.path.join(ROOT, "Package.swift"))

    ignore_path = os.path.join(ROOT, ".dockerignore")
    patterns = []
    if os.path.isfile(ignore_path):
        patterns = [l.strip() for l in read(ignore_path).splitlines() if l.strip() and not l.strip().startswith("#")]

    stages = []  # dicts: name, index, instructions
    for word, arguments in instructions:
        if word == "FROM":
            tokens = arguments.split()
            name = tokens[2] if len(tokens) >= 3 and tokens[1].upper() == "AS" else None
            stages.append({"name": name, "image": tokens[0], "index": len(stages), "instructions": []})
        elif stages:
            stages[-1]["instructions"].append((word, arguments))
    check(len(stages) >= 2, "Dockerfile: multi-stage (%d stages)" % len(stages))
    if len(stages) < 2:
        return
    build, final = stages[0], stages[-1]
    check(build["image"].startswith("swift:6.3"), "Dockerfile: build stage uses the Swift 6.3 image", build["image"])

    for stage in stages:
        label = stage["name"] or "stage %d" % stage["index"]
        text_of_stage = "\n".join(a for _, a in stage["instructions"])
        for word, arguments in stage["instructions"]:
            if word not in ("COPY", "ADD"):
                continue
            tokens = shlex.split(arguments)
            flags = [t for t in tokens if t.startswith("--")]
            paths = [t for t in tokens if not t.startswith("--")]
            form = exec_form(arguments)
            if form:
                paths = form
            sources = paths[:-1]
            origin = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            if origin is None:
                for source in sources:
                    matches = glob.glob(os.path.join(ROOT, source))
                    check(bool(matches), "Dockerfile %s: COPY source %s exists in the repository" % (label, source))
                    check(dockerignore_includes(source, patterns),
                          "Dockerfile %s: COPY source %s is in the build context (not excluded by .dockerignore)" % (label, source))
            else:
                earlier = [s for s in stages[: stage["index"]] if s["name"] == origin or str(s["index"]) == origin]
                if check(bool(earlier), "Dockerfile %s: COPY --from=%s names an earlier stage" % (label, origin)):
                    producer = "\n".join(a for _, a in earlier[0]["instructions"])
                    for source in sources:
                        check(source in producer, "Dockerfile %s: %s is created in stage %s" % (label, source, origin))
        if "swift build" in text_of_stage:
            products = re.findall(r"--product\s+(\S+)", text_of_stage)
            declared = re.findall(r'\.executable\(\s*name:\s*"([^"]+)"', package)
            check(products and all(p in declared for p in products),
                  "Dockerfile %s: swift build --product %s is an executable product in Package.swift" % (label, ",".join(products)),
                  "declared: " + ", ".join(declared))
            check("-c release" in text_of_stage and "--static-swift-stdlib" in text_of_stage,
                  "Dockerfile %s: release build with the static Swift standard library" % label)
            # Targets with resources get a <package>_<target>.resources bundle next to the binary.
            package_name = re.search(r'Package\(\s*name:\s*"([^"]+)"', package).group(1)
            bundles = []
            parts = re.split(r"\.(target|executableTarget|testTarget)\(", package)
            for kind, chunk in zip(parts[1::2], parts[2::2]):
                target = re.match(r'\s*name:\s*"([^"]+)"', chunk)
                if kind != "testTarget" and target and "resources:" in chunk:
                    bundles.append("%s_%s.resources" % (package_name, target.group(1)))
            check(bool(bundles), "Package.swift: found the targets that carry resources")
            for bundle in bundles:
                check(bundle in text_of_stage, "Dockerfile %s: copies the resources bundle %s" % (label, bundle))
            check("ARG CALLBRIDGE_TARGET_CPU" in read(path) and "CALLBRIDGE_TARGET_CPU" in package,
                  "Dockerfile: CALLBRIDGE_TARGET_CPU build argument, read by Package.swift")

    final_words = [w for w, _ in final["instructions"]]
    copies = [shlex.split(a) for w, a in final["instructions"] if w == "COPY"]
    destinations = [c[-1].rstrip("/") for c in copies]

    def copied(target_path):
        return any(target_path == d or target_path.startswith(d + "/") for d in destinations)

    entrypoint = next((exec_form(a) for w, a in final["instructions"] if w == "ENTRYPOINT"), None)
    check(entrypoint == ["/app/callbridge"], "Dockerfile: ENTRYPOINT is [\"/app/callbridge\"]", str(entrypoint))
    check(entrypoint and copied(entrypoint[0]), "Dockerfile: the ENTRYPOINT binary is copied into the runtime stage")
    command = next((exec_form(a) for w, a in final["instructions"] if w == "CMD"), None)
    check(command == ["run"], "Dockerfile: CMD is [\"run\"]", str(command))
    user = next((a for w, a in final["instructions"] if w == "USER"), "")
    uid = user.split(":")[0]
    check(uid.isdigit() and uid != "0", "Dockerfile: runtime stage runs as a numeric non-root user (%s)" % user)
    if kube.get("run_as_user") is not None and uid.isdigit():
        check(int(uid) == kube["run_as_user"], "Dockerfile USER matches the Deployment's runAsUser")
    exposed = [a for w, a in final["instructions"] if w == "EXPOSE"]
    check(exposed and str(kube.get("port", 8080)) in exposed[0].split(), "Dockerfile: EXPOSE matches the container port")
    health = next((a for w, a in final["instructions"] if w == "HEALTHCHECK"), "")
    health_cmd = exec_form(health.split("CMD", 1)[1]) if "CMD" in health else None
    check(health_cmd and copied(health_cmd[0]), "Dockerfile: HEALTHCHECK runs a file copied into the runtime stage")
    if kube.get("pre_stop"):
        check(copied(kube["pre_stop"][0]), "Deployment preStop command exists in the image (%s)" % kube["pre_stop"][0])
    check("ca-certificates" in "\n".join(a for _, a in final["instructions"]), "Dockerfile: runtime stage installs ca-certificates")
    check("HEALTHCHECK" in final_words and "EXPOSE" in final_words, "Dockerfile: runtime stage has HEALTHCHECK and EXPOSE")


# ---------------------------------------------------------------------------------------------------------------
# systemd unit and environment example

def check_systemd(kube):
    unit = read(os.path.join(DEPLOY, "callbridge.service"))
    values = {}
    for line in unit.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), value.strip())
    check(values.get("EnvironmentFile") == "/etc/callbridge/callbridge.env", "systemd: EnvironmentFile=/etc/callbridge/callbridge.env")
    check(values.get("ExecStart", "").startswith("/opt/callbridge/callbridge run"), "systemd: ExecStart runs /opt/callbridge/callbridge run")
    check(values.get("KillSignal") == "SIGTERM" and values.get("Restart") == "on-failure", "systemd: KillSignal=SIGTERM, Restart=on-failure")
    check(values.get("DynamicUser") == "yes" or values.get("User", "root") != "root", "systemd: runs as a dedicated user")
    env = {}
    for line in read(os.path.join(DEPLOY, "callbridge.env.example")).splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    drain = int(env.get("CALLBRIDGE_DRAIN_TIMEOUT", "300"))
    stop = values.get("TimeoutStopSec", "90")
    seconds = int(re.sub(r"s$", "", stop)) if re.fullmatch(r"\d+s?", stop) else 0
    check(seconds > drain, "systemd: TimeoutStopSec (%s) > CALLBRIDGE_DRAIN_TIMEOUT in the env example (%d)" % (stop, drain))
    return env


def check_environment_names(kube, env):
    """Every variable the deploy files set must be one the program reads (a misspelt one is silently ignored)."""
    sources = "\n".join(read(p) for p in glob.glob(os.path.join(ROOT, "Sources", "**", "*.swift"), recursive=True))
    names = set(kube.get("settings", {})) | set(env)
    unknown = sorted(n for n in names if not re.search(r"\b%s\b" % re.escape(n), sources))
    check(not unknown, "configmap and env example: every variable is read by Sources/", "unknown: " + ", ".join(unknown))


# ---------------------------------------------------------------------------------------------------------------
# Grafana dashboard and Prometheus rules

def check_dashboard():
    path = os.path.join(DEPLOY, "grafana", "callbridge-dashboard.json")
    dashboard = json.loads(read(path))
    variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
    source = variables.get("datasource", {})
    check(source.get("type") == "datasource" and source.get("query") == "prometheus",
          "dashboard: ${datasource} is a Prometheus data source variable")
    panels = dashboard.get("panels", [])
    ids = [p.get("id") for p in panels]
    check(len(ids) == len(set(ids)) and None not in ids, "dashboard: panel ids are unique")
    wrong_source, empty, expressions = [], [], []
    for panel in panels:
        if panel.get("type") == "row":
            continue
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            wrong_source.append(panel.get("title"))
        targets = panel.get("targets", [])
        if not targets or not all(t.get("expr") for t in targets):
            empty.append(panel.get("title"))
        for t in targets:
            if t.get("datasource", {}).get("uid", "${datasource}") != "${datasource}":
                wrong_source.append(panel.get("title"))
            expressions.append((panel.get("title"), t.get("expr", "")))
    check(not wrong_source, "dashboard: every panel queries ${datasource}", ", ".join(map(str, wrong_source)))
    check(not empty, "dashboard: every panel has queries", ", ".join(map(str, empty)))
    for v in variables.values():
        query = v.get("query")
        if isinstance(query, dict) and query.get("query"):
            expressions.append(("variable " + v["name"], query["query"]))
    # Panels must not overlap on the 24-column grid.
    cells, overlaps = {}, []
    for panel in panels:
        g = panel.get("gridPos", {})
        if g.get("x", 0) + g.get("w", 0) > 24:
            overlaps.append("%s is wider than the grid" % panel.get("title"))
        for x in range(g.get("x", 0), g.get("x", 0) + g.get("w", 0)):
            for y in range(g.get("y", 0), g.get("y", 0) + g.get("h", 0)):
                if (x, y) in cells:
                    overlaps.append("%s / %s" % (cells[(x, y)], panel.get("title")))
                cells[(x, y)] = panel.get("title")
    check(not overlaps, "dashboard: panels fit the grid without overlapping", "; ".join(sorted(set(overlaps))[:3]))
    titles = " | ".join(p.get("title", "") for p in panels).lower()
    for needed in ("active calls", "end reason", "refused", "draining", "resync", "late frames", "underruns",
                   "barge-in latency", "turn latency", "first-audio latency", "false alarm", "watchdog",
                   "upstream errors", "bad messages", "audio seconds"):
        check(needed in titles, "dashboard: has a panel for %s" % needed)
    return expressions


def check_rules():
    path = os.path.join(DEPLOY, "prometheus", "callbridge-rules.yaml")
    document = load_yaml_documents(path)[0]
    groups = document.get("groups", [])
    check(bool(groups), "rules: a `groups:` list")
    alerts = {}
    problems = []
    for group in groups:
        if not group.get("name") or not group.get("rules"):
            problems.append("group without name or rules")
        for rule in group.get("rules", []):
            if "alert" not in rule:
                continue
            name = rule["alert"]
            alerts[name] = rule
            if not rule.get("expr"):
                problems.append(name + ": no expr")
            if rule.get("labels", {}).get("severity") not in ("info", "warning", "critical"):
                problems.append(name + ": severity label")
            annotations = rule.get("annotations", {})
            if not annotations.get("summary") or not annotations.get("description"):
                problems.append(name + ": summary and description annotations")
    check(not problems, "rules: every alert has expr, severity, summary and description", "; ".join(problems))
    check(len(alerts) == len(set(alerts)), "rules: alert names are unique")
    return alerts


def duration_seconds(text):
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smh])", text))


def main():
    kube = check_kubernetes()
    check_dockerfile(kube)
    env = check_systemd(kube)
    check_environment_names(kube, env)
    expressions = check_dashboard()
    alerts = check_rules()

    drain = alerts.get("CallbridgeDrainTooLong")
    if drain and kube:
        check(duration_seconds(drain.get("for", "0s")) > kube["drain_timeout"],
              "rules: CallbridgeDrainTooLong waits longer than CALLBRIDGE_DRAIN_TIMEOUT")

    listed = load_metric_list()
    listed_set = set(listed)
    check(len(listed) == len(listed_set), "metrics.txt: no name listed twice")
    used = set()
    for _, expression in expressions:
        used |= metrics_used_in(expression)
    for rule in alerts.values():
        used |= metrics_used_in(rule["expr"])
    unknown = sorted(used - listed_set)
    check(not unknown, "dashboard and rules use only metrics listed in deploy/metrics.txt", "not listed: " + ", ".join(unknown))
    unused = sorted(listed_set - used)
    check(not unused, "every metric in deploy/metrics.txt is on the dashboard or in a rule", "unused: " + ", ".join(unused))

    defined, defined_in_metric_files = swift_metric_names()
    if defined:
        missing = sorted(listed_set - defined)
        check(not missing, "every metric in deploy/metrics.txt is defined in Sources/ (%d names found there)" % len(defined),
              "deploy/metrics.txt names metrics that no Swift source defines: %s. Rename them in deploy/ or add them "
              "to the bridge" % ", ".join(missing))
        extra = sorted(defined_in_metric_files - listed_set)
        if extra:
            print("note: Sources/ defines metrics that deploy/ does not use: " + ", ".join(extra))
    else:
        print("note: no callbridge_* metric names in Sources/ yet; checked against deploy/metrics.txt only")

    # The expressions, for the shell script's promtool parse check.
    out = os.environ.get("CALLBRIDGE_DASHBOARD_EXPRESSIONS")
    if out:
        with open(out, "w", encoding="utf-8") as handle:
            json.dump(expressions, handle)

    print("validate-deploy.py: %d passed, %d failed" % (passes, len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
