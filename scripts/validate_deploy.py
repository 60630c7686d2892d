"""Checks clickpath's deployment files without Docker or a cluster (run through scripts/validate-deploy.sh).

Every problem is collected and printed at the end, one per line, and the exit status is 1 if there was any.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BIN = Path(os.environ.get("VALIDATE_DEPLOY_BIN", ""))
CLICKPATH_BIN = os.environ.get("CLICKPATH_BIN", "")

problems: list[str] = []
checked: list[str] = []


def problem(where: str, what: str) -> None:
    problems.append(f"{where}: {what}")


def rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def tool(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else name


# ---- facts from the code ---------------------------------------------------------------------------


def stage_names() -> list[str]:
    """The stages `clickpath run` knows, read from StageName::as_str in crates/stages/src/topology.rs."""
    text = (ROOT / "crates/stages/src/topology.rs").read_text()
    names = re.findall(r'StageName::\w+\s*=>\s*"([a-z_]+)"', text)
    if not names:
        problem("crates/stages/src/topology.rs", "no StageName => \"name\" arms found (parser out of date?)")
    return sorted(set(names))


def metric_names() -> set[str]:
    """Exposed metric names registered in crates/runtime/src/metrics.rs, with the suffixes Prometheus sees."""
    text = (ROOT / "crates/runtime/src/metrics.rs").read_text()
    names: set[str] = set()
    # r.register("name", "help", family) and r.register_with_unit("name", "help", Unit::X, family)
    for m in re.finditer(r'register(_with_unit)?\(\s*"([a-z_]+)",\s*"[^"]*",\s*(Unit::(\w+),\s*)?(\w+)\.clone\(\)', text):
        base, unit, field = m.group(2), m.group(4), m.group(5)
        if unit:
            base = f"{base}_{ {'Seconds': 'seconds', 'Bytes': 'bytes', 'Ratio': 'ratio'}.get(unit, unit.lower())}"
        kind = re.search(rf"pub {field}: Family<[^,]+,\s*(\w+)", text)
        kind = kind.group(1) if kind else ""
        if kind == "Counter":
            names.add(base + "_total")
        elif kind == "Histogram":
            names.update({base + "_bucket", base + "_sum", base + "_count"})
        else:
            names.add(base)
    if not names:
        problem("crates/runtime/src/metrics.rs", "no registered metrics found (parser out of date?)")
    return names


def default_shutdown_grace_ms() -> int:
    text = (ROOT / "config/default.toml").read_text()
    m = re.search(r"^shutdown_grace_ms\s*=\s*(\d+)", text, re.M)
    return int(m.group(1)) if m else 30000


# ---- parsing ---------------------------------------------------------------------------------------


def load_yaml_all(path: Path) -> list:
    try:
        return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as e:
        problem(rel(path), f"not valid YAML: {e}")
        return []


def parse_everything() -> None:
    files = sorted(
        [p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml", ".json")]
        + [p for p in (ROOT / "examples").rglob("*") if p.suffix in (".yaml", ".yml", ".json")]
        + sorted((ROOT / "schemas").glob("*.avsc"))
        + [ROOT / "schemas/registry.json"]
    )
    for p in files:
        if p.suffix in (".json", ".avsc"):
            try:
                json.loads(p.read_text())
            except json.JSONDecodeError as e:
                problem(rel(p), f"not valid JSON: {e}")
        else:
            load_yaml_all(p)
    checked.append(f"{len(files)} YAML/JSON files parse")


def run(cmd: list[str], where: str) -> bool:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        problem(where, f"could not run {cmd[0]}: {e}")
        return False
    if out.returncode != 0:
        text = (out.stdout + out.stderr).strip()
        for line in text.splitlines()[-25:]:
            problem(where, line)
        return False
    return True


# ---- compose ---------------------------------------------------------------------------------------


def check_compose(stages: list[str]) -> None:
    path = DEPLOY / "compose.yaml"
    where = rel(path)
    if not path.exists():
        problem(where, "missing")
        return
    if run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)], where):
        checked.append("compose.yaml matches the Compose specification schema")
    docs = load_yaml_all(path)
    if not docs:
        return
    services = docs[0].get("services", {})
    built = {s.get("image") for s in services.values() if s.get("build")}
    for name, svc in services.items():
        image = svc.get("image")
        if not image:
            problem(where, f"service {name}: no image")
            continue
        build = svc.get("build")
        if build:
            ctx = (path.parent / build.get("context", ".")).resolve()
            dockerfile = ctx / build.get("dockerfile", "Dockerfile")
            if not dockerfile.exists():
                problem(where, f"service {name}: dockerfile {dockerfile} does not exist")
        elif image.startswith("clickpath") and image not in built:
            problem(where, f"service {name}: image {image} is not built by any service")
        elif ":" not in image or image.endswith(":latest") and not image.startswith("clickpath"):
            problem(where, f"service {name}: third-party image {image} must be pinned to a version tag")
        for vol in svc.get("volumes", []) or []:
            src = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source", "")
            if src.startswith("."):
                if not (path.parent / src).exists():
                    problem(where, f"service {name}: mounted path {src} does not exist")
        cmd = svc.get("command")
        if image.startswith("clickpath") and isinstance(cmd, list) and cmd:
            if cmd[0] == "run" and (len(cmd) != 2 or cmd[1] not in stages + ["all"]):
                problem(where, f"service {name}: `clickpath {' '.join(cmd)}` names no stage")
            elif cmd[0] not in ("run", "topics", "generate", "replay", "demo", "train", "validate"):
                problem(where, f"service {name}: `clickpath {cmd[0]}` is not a clickpath command")
    running = {tuple(s.get("command") or []) for s in services.values()}
    for stage in stages:
        if ("run", stage) not in running and ("run", "all") not in running:
            problem(where, f"no service runs stage {stage} (`clickpath run {stage}`)")
    for needed in ("kafka", "prometheus", "grafana"):
        if needed not in services:
            problem(where, f"no {needed} service")
    kafka = services.get("kafka", {})
    if not str(kafka.get("image", "")).startswith("apache/kafka:"):
        problem(where, "kafka service must use the apache/kafka image")
    if "controller" not in str(kafka.get("environment", {}).get("KAFKA_PROCESS_ROLES", "")):
        problem(where, "kafka service is not a KRaft controller (KAFKA_PROCESS_ROLES)")
    grace = default_shutdown_grace_ms()
    for stage in stages:
        svc = services.get(stage, {})
        env = svc.get("environment", {}) or {}
        grace_ms = int(env.get("CLICKPATH__RUNTIME__SHUTDOWN_GRACE_MS", grace))
        period = svc.get("stop_grace_period", "10s")
        secs = int(re.sub(r"s$", "", str(period))) if re.fullmatch(r"\d+s?", str(period)) else 0
        if secs * 1000 <= grace_ms:
            problem(where, f"service {stage}: stop_grace_period {period} is not above shutdown_grace_ms {grace_ms}")
    checked.append(f"compose.yaml runs every stage ({', '.join(stages)}), kafka (KRaft), prometheus, grafana")


# ---- kubernetes ------------------------------------------------------------------------------------


def check_kustomization(folder: Path) -> list[tuple[Path, dict]]:
    """Checks that `folder`'s kustomization lists every YAML file beside it and nothing missing; returns the
    objects of its resources, those of the folders it includes too."""
    where = rel(folder / "kustomization.yaml")
    kust = load_yaml_all(folder / "kustomization.yaml")
    if not kust:
        problem(where, "missing or empty")
        return []
    listed = kust[0].get("resources", [])
    files = [p for p in sorted(folder.glob("*.yaml")) if p.name != "kustomization.yaml"]
    for p in files:
        if p.name not in listed:
            problem(where, f"{p.name} is not listed in resources")
    objects = []
    for name in listed:
        target = (folder / name).resolve()
        if not target.exists():
            problem(where, f"lists {name}, which does not exist")
        elif target.is_dir():
            objects.extend(check_kustomization(target))
        else:
            objects.extend((target, d) for d in load_yaml_all(target))
    return objects


def check_workload(p: Path, d: dict, args: list[str], grace_ms: int, token_file: str | None, pdbs: list) -> None:
    """One clickpath StatefulSet: probes, resources, grace, static membership, the token Secret, a PDB."""
    where = f"{rel(p)} {d['kind']}/{d['metadata']['name']}"
    pod = d["spec"]["template"]["spec"]
    tgp = pod.get("terminationGracePeriodSeconds", 30)
    if tgp * 1000 <= grace_ms:
        problem(where, f"terminationGracePeriodSeconds {tgp} is not above runtime.shutdown_grace_ms {grace_ms}")
    containers = pod.get("containers", [])
    if len(containers) != 1:
        problem(where, "expected one container")
        return
    c = containers[0]
    if c.get("args") != args:
        problem(where, f"args {c.get('args')} are not {args}")
    ports = {pt.get("name"): pt.get("containerPort") for pt in c.get("ports", [])}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = (c.get(probe) or {}).get("httpGet") or {}
        if get.get("path") != path:
            problem(where, f"{probe} must GET {path}")
        if get.get("port") not in ports and get.get("port") not in ports.values():
            problem(where, f"{probe} port {get.get('port')} is not a container port")
    res = c.get("resources") or {}
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in (res.get(part) or {}):
                problem(where, f"resources.{part}.{r} missing")
    env = {e["name"]: e for e in c.get("env", [])}
    gid = env.get("CLICKPATH__KAFKA__CONSUMER_PROPERTIES__GROUP.INSTANCE.ID")
    if not gid or "$(POD_NAME)" not in gid.get("value", ""):
        problem(where, "static membership: CLICKPATH__KAFKA__CONSUMER_PROPERTIES__GROUP.INSTANCE.ID=$(POD_NAME) missing")
    pod_name = (env.get("POD_NAME") or {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
    if pod_name != "metadata.name":
        problem(where, "POD_NAME must come from fieldRef metadata.name")
    if token_file:
        secrets = {v["name"]: v["secret"].get("secretName") for v in pod.get("volumes", []) if v.get("secret")}
        mounted = any(
            vm.get("name") in secrets and token_file.startswith(vm.get("mountPath", "").rstrip("/") + "/")
            for vm in c.get("volumeMounts", [])
        )
        if not mounted:
            problem(where, f"no Secret volume is mounted where http.bearer_token_file ({token_file}) points")
    labels = d["spec"]["template"]["metadata"]["labels"]
    if not any(
        all(labels.get(k) == v for k, v in pdb["spec"]["selector"].get("matchLabels", {}).items()) for pdb in pdbs
    ):
        problem(where, "no PodDisruptionBudget selects these pods")


def workloads_of(objects: list[tuple[Path, dict]]) -> tuple[dict, list]:
    """The Deployments/StatefulSets of `objects` by component label, and the PodDisruptionBudgets."""
    workloads, pdbs = {}, []
    for p, d in objects:
        kind = d.get("kind")
        if kind in ("Deployment", "StatefulSet"):
            workloads[d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")] = (p, d)
        elif kind == "PodDisruptionBudget":
            pdbs.append(d)
    return workloads, pdbs


def check_k8s(stages: list[str]) -> None:
    """deploy/k8s: the per-stage kustomization (one StatefulSet per stage) and deploy/k8s/chained (one
    StatefulSet running `run all`), both over deploy/k8s/base (namespace, ConfigMap, topic Job)."""
    k8s = DEPLOY / "k8s"
    base, chained = k8s / "base", k8s / "chained"
    resources = [
        p for folder in (base, k8s, chained) for p in sorted(folder.glob("*.yaml")) if p.name != "kustomization.yaml"
    ]
    if run([tool("kubernetes-validate"), "--strict", "--quiet", *map(str, resources)], rel(k8s)):
        checked.append(f"{len(resources)} Kubernetes files match the Kubernetes OpenAPI schemas (strict)")
    per_stage = check_kustomization(k8s)
    whole = check_kustomization(chained)
    check_kustomization(base)
    checked.append("deploy/k8s, deploy/k8s/chained and deploy/k8s/base list exactly their files")

    config_toml = None
    for p, d in per_stage:
        if d.get("kind") == "ConfigMap" and "clickpath.toml" in d.get("data", {}):
            config_toml = d["data"]["clickpath.toml"]
    configmap = rel(base / "configmap.yaml")
    grace_ms = default_shutdown_grace_ms()
    if config_toml is None:
        problem(rel(k8s), "no ConfigMap with clickpath.toml")
    else:
        m = re.search(r"^shutdown_grace_ms\s*=\s*(\d+)", config_toml, re.M)
        grace_ms = int(m.group(1)) if m else grace_ms
        check_config_toml(config_toml, configmap)
        if re.search(r'^mode\s*=\s*"per-stage"', config_toml, re.M):
            problem(configmap, 'topology mode "per-stage" would make deploy/k8s/chained run every stage apart')

    token_file = None
    if config_toml is not None:
        m = re.search(r'^bearer_token_file\s*=\s*"([^"]*)"', config_toml, re.M)
        token_file = m.group(1) if m and m.group(1) else None
    if token_file is None:
        problem(configmap, "http.bearer_token_file is not set: /metrics and /v1/* would be open")

    workloads, pdbs = workloads_of(per_stage)
    for stage in stages:
        if stage not in workloads:
            problem(rel(k8s), f"no Deployment/StatefulSet for stage {stage}")
            continue
        p, d = workloads[stage]
        check_workload(p, d, ["run", stage], grace_ms, token_file, pdbs)
    workloads, pdbs = workloads_of(whole)
    if set(workloads) != {"pipeline"}:
        problem(rel(chained), f"expected one workload, component pipeline; found {sorted(workloads)}")
    if "pipeline" in workloads:
        p, d = workloads["pipeline"]
        check_workload(p, d, ["run", "all"], grace_ms, token_file, pdbs)
    checked.append(
        f"every stage (deploy/k8s) and the chained pipeline (deploy/k8s/chained) have a workload with /healthz "
        f"and /readyz probes, resources, a PDB, termination grace above {grace_ms} ms, static membership and the "
        f"bearer-token Secret mounted"
    )


def check_config_toml(text: str, where: str) -> None:
    """Runs `clickpath validate` on the ConfigMap's TOML when a binary is at hand."""
    if not CLICKPATH_BIN:
        checked.append("ConfigMap TOML NOT checked with `clickpath validate` (no binary built)")
        return
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(text)
        name = f.name
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKPATH__")}
        out = subprocess.run([CLICKPATH_BIN, "validate", name], capture_output=True, text=True, env=env)
        if out.returncode != 0:
            problem(where, f"`clickpath validate` rejects clickpath.toml: {(out.stdout + out.stderr).strip()}")
        else:
            checked.append("ConfigMap TOML passes `clickpath validate`")
    finally:
        os.unlink(name)


# ---- prometheus and grafana -----------------------------------------------------------------------


def check_prometheus(stages: list[str]) -> None:
    for p in sorted((DEPLOY / "prometheus").glob("*.yml")):
        docs = load_yaml_all(p)
        if not docs:
            continue
        cfg = docs[0]
        jobs = cfg.get("scrape_configs") or []
        if not jobs:
            problem(rel(p), "no scrape_configs")
        names = [j.get("job_name") for j in jobs]
        if len(names) != len(set(names)) or None in names:
            problem(rel(p), "every scrape config needs a unique job_name")
        for j in jobs:
            if not (j.get("static_configs") or j.get("kubernetes_sd_configs")):
                problem(rel(p), f"job {j.get('job_name')}: no targets")
            for sc in j.get("static_configs") or []:
                for t in sc.get("targets", []):
                    if not re.fullmatch(r"[\w.-]+:\d+", t):
                        problem(rel(p), f"job {j.get('job_name')}: target {t} is not host:port")
        if p.name == "prometheus-kubernetes.yml":
            # deploy/k8s requires the bearer token on /metrics.
            for j in jobs:
                auth = j.get("authorization") or {}
                if not (auth.get("credentials_file") or auth.get("credentials")):
                    problem(rel(p), f"job {j.get('job_name')}: no authorization (deploy/k8s sets a bearer token)")
        if p.name == "prometheus.yml":
            targets = {t.split(":")[0] for j in jobs for sc in j.get("static_configs") or [] for t in sc["targets"]}
            for stage in stages:
                if stage not in targets:
                    problem(rel(p), f"stage {stage} is not scraped")
    checked.append("Prometheus configs have jobs with targets; every compose stage is scraped")


def check_grafana(metrics: set[str]) -> None:
    for p in sorted((DEPLOY / "grafana").rglob("*.json")):
        try:
            dash = json.loads(p.read_text())
        except json.JSONDecodeError:
            continue  # reported by parse_everything
        for key in ("title", "uid", "panels", "schemaVersion"):
            if key not in dash:
                problem(rel(p), f"dashboard has no {key}")
        ids = [pn.get("id") for pn in dash.get("panels", [])]
        if len(ids) != len(set(ids)):
            problem(rel(p), "panel ids are not unique")
        used: set[str] = set()
        for pn in dash.get("panels", []):
            for t in pn.get("targets", []):
                expr = t.get("expr", "")
                for name in re.findall(r"\b(clickpath_[a-z_]+)\b", expr):
                    used.add(name)
                    if name not in metrics:
                        problem(rel(p), f"panel {pn.get('title')!r} queries {name}, which metrics.rs does not register")
                if expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}"):
                    problem(rel(p), f"panel {pn.get('title')!r}: unbalanced brackets in {expr}")
        bases = {re.sub(r"_(bucket|sum|count)$", "", m) for m in metrics}
        charted = {re.sub(r"_(bucket|sum|count)$", "", m) for m in used}
        for missing in sorted(bases - charted):
            problem(rel(p), f"metric {missing} is registered but not charted")
    checked.append(f"Grafana dashboards query only the {len(metrics)} series names registered in metrics.rs")


# ---- dockerfiles -----------------------------------------------------------------------------------


def check_dockerfiles() -> None:
    docker = DEPLOY / "docker"
    files = sorted(p for p in docker.glob("Dockerfile*") if not p.name.endswith(".dockerignore"))
    if run([tool("hadolint"), "--config", str(docker / "hadolint.yaml"), *map(str, files)], rel(docker)):
        checked.append(f"{len(files)} Dockerfiles pass hadolint")
    for p in files:
        text = p.read_text()
        for src in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
            if not (ROOT / src).exists():
                problem(rel(p), f"COPY {src}: no such path in the repository")
        if not re.search(r"^USER (?!root|0\b)", text, re.M):
            problem(rel(p), "no non-root USER")
        if "HEALTHCHECK" not in text:
            problem(rel(p), "no HEALTHCHECK")
        if len(re.findall(r"^FROM ", text, re.M)) < 2:
            problem(rel(p), "not a multi-stage build")
        if not (p.parent / f"{p.name}.dockerignore").exists():
            problem(rel(p), f"no {p.name}.dockerignore beside it (the context is the whole repository)")
    checked.append("Dockerfiles: multi-stage, non-root, HEALTHCHECK, COPY sources exist")


# ---- the HTTP API ------------------------------------------------------------------------------------


def check_openapi() -> None:
    """docs/openapi.yaml is a valid OpenAPI 3 document and describes every route the code serves."""
    path = ROOT / "docs/openapi.yaml"
    where = rel(path)
    if not path.exists():
        problem(where, "missing")
        return
    try:
        from openapi_spec_validator import validate
    except ImportError:
        problem(where, "openapi-spec-validator is not installed (scripts/validate-deploy.sh installs it)")
        return
    docs = load_yaml_all(path)
    if not docs:
        return
    spec = docs[0]
    try:
        validate(spec)
    except Exception as e:  # the validator raises one of several exception types
        problem(where, f"not a valid OpenAPI document: {str(e).splitlines()[0]}")
        return
    documented = set(spec.get("paths", {}))
    served = set()
    for src in ("crates/runtime/src/http.rs", "crates/runtime/src/http_query.rs"):
        served |= set(re.findall(r'\.route\(\s*"([^"]+)"', (ROOT / src).read_text()))
    if not served:
        problem(where, "no .route(\"...\") found in crates/runtime/src/http*.rs (parser out of date?)")
    for route in sorted(served - documented):
        problem(where, f"route {route} is served but not documented")
    for route in sorted(documented - served):
        problem(where, f"path {route} is documented but not served")
    open_paths = set(re.findall(r'"(/[a-z]+)"', re.search(
        r"OPEN_PATHS[^=]*=\s*&\[([^\]]*)\]", (ROOT / "crates/runtime/src/http.rs").read_text()).group(1)))
    for route, item in spec.get("paths", {}).items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            if route in open_paths:
                if op.get("security") != []:
                    problem(where, f"{method.upper()} {route} is served without a token: say `security: []`")
            elif "401" not in op["responses"]:
                problem(where, f"{method.upper()} {route} needs the bearer token when one is set: document 401")
    checked.append(f"docs/openapi.yaml is valid OpenAPI {spec.get('openapi')} and documents every served route "
                   f"({', '.join(sorted(served))})")


def main() -> int:
    stages = stage_names()
    metrics = metric_names()
    parse_everything()
    check_compose(stages)
    check_k8s(stages)
    check_prometheus(stages)
    check_grafana(metrics)
    check_dockerfiles()
    check_openapi()
    for c in checked:
        print(f"ok: {c}")
    if problems:
        print(f"\n{len(problems)} problem(s) in the deployment files:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print("validate-deploy: all deployment files check out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
