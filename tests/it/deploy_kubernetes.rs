//! What an operator runs on Kubernetes, checked as the cluster and its tools would check it:
//! housekeep starts in a pod that carries Kubernetes' service-link variables; every file of
//! `deploy/kubernetes` validates against the Kubernetes JSON schemas (the ServiceMonitor against
//! prometheus-operator's models of its CRD) and passes checkov with every skipped check
//! justified; the manifests keep what the README promises (probes, restricted security context,
//! Jobs that fail at once on exit 2, the image pinned to this version); every container's args
//! are real housekeep usage; the Dockerfile passes hadolint.
//!
//! The validators run offline, from `.venv` and `.venv/checkov`, where `scripts/test.sh` installs
//! them (`ensure_kubernetes_validators` in `scripts/lib.sh`); a missing one fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::{housekeep, run, stderr, stdout};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// An installed validator, or a failure saying how to get it.
fn tool(relative: &str) -> PathBuf {
    let path = root().join(relative);
    assert!(
        path.exists(),
        "{} is missing: scripts/test.sh installs it (ensure_kubernetes_validators in scripts/lib.sh)",
        path.display()
    );
    path
}

/// Every file of deploy/kubernetes, sorted; all of them are YAML manifests.
fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .expect("read deploy/kubernetes")
        .map(|e| e.expect("directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for f in &files {
        assert!(
            f.extension().is_some_and(|e| e == "yaml"),
            "{}: every file here is a manifest",
            f.display()
        );
    }
    files
}

// ---- Service-link variables ----

/// The variables the kubelet gives every pod of the namespace for a Service `name` with cluster
/// IP `ip` and ports (name, number, protocol), as its `envvars.FromServices` writes them.
fn kubelet_variables(name: &str, ip: &str, ports: &[(&str, u16, &str)]) -> Vec<(String, String)> {
    let s = name.to_uppercase().replace('-', "_");
    let host_port = |n: u16| {
        if ip.contains(':') {
            format!("[{ip}]:{n}")
        } else {
            format!("{ip}:{n}")
        }
    };
    let mut out = vec![
        (format!("{s}_SERVICE_HOST"), ip.to_string()),
        (format!("{s}_SERVICE_PORT"), ports[0].1.to_string()),
    ];
    for (port_name, n, _) in ports {
        if !port_name.is_empty() {
            out.push((
                format!(
                    "{s}_SERVICE_PORT_{}",
                    port_name.to_uppercase().replace('-', "_")
                ),
                n.to_string(),
            ));
        }
    }
    for (i, (_, n, protocol)) in ports.iter().enumerate() {
        let url = format!("{}://{}", protocol.to_lowercase(), host_port(*n));
        if i == 0 {
            out.push((format!("{s}_PORT"), url.clone()));
        }
        let prefix = format!("{s}_PORT_{n}_{protocol}");
        out.push((prefix.clone(), url));
        out.push((format!("{prefix}_PROTO"), protocol.to_lowercase()));
        out.push((format!("{prefix}_PORT"), n.to_string()));
        out.push((format!("{prefix}_ADDR"), ip.to_string()));
    }
    out
}

/// What a pod of a namespace with the Services `housekeep` and `housekeep-worker` is given.
fn service_link_environment() -> Vec<(String, String)> {
    let mut env = kubelet_variables("housekeep", "10.96.143.7", &[("http", 9718, "TCP")]);
    env.extend(kubelet_variables(
        "housekeep-worker",
        "fd00:10:96::1f4",
        &[("metrics", 9718, "TCP"), ("syslog", 9719, "UDP")],
    ));
    env.extend(kubelet_variables(
        "kubernetes",
        "10.96.0.1",
        &[("https", 443, "TCP")],
    ));
    assert!(env.iter().any(|(k, _)| k == "HOUSEKEEP_PORT_9718_TCP_ADDR"));
    assert!(
        env.iter()
            .any(|(k, _)| k == "HOUSEKEEP_WORKER_SERVICE_PORT_METRICS")
    );
    env
}

#[test]
fn a_pod_with_service_links_for_housekeep_services_starts() {
    let o = run(housekeep().arg("config").envs(service_link_environment()));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        !stdout(&o).contains("10.96.143.7"),
        "service links are not configuration:\n{}",
        stdout(&o)
    );
}

#[test]
fn a_misspelt_key_among_service_links_still_exits_2() {
    let o = run(housekeep()
        .arg("config")
        .envs(service_link_environment())
        .env("HOUSEKEEP_TASKS_EXPIRE_BACH_SIZE", "1"));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("HOUSEKEEP_TASKS_EXPIRE_BACH_SIZE"),
        "{}",
        stderr(&o)
    );
    // A service-link name with a value the kubelet never writes is not taken for one.
    let o = run(housekeep()
        .arg("config")
        .env("HOUSEKEEP_SERVICE_PORT", "http"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

// ---- Schemas ----

/// Validates each YAML file given after the Kubernetes versions: built-in kinds against the
/// Kubernetes JSON schemas of every version given (strict: unknown fields are errors),
/// monitoring.coreos.com kinds against prometheus-operator's models generated from its CRDs.
/// Those models ignore unknown fields, as the API server prunes them; they are made to refuse
/// them here, so that a misspelt field is an error as in kubernetes-validate's strict mode.
const VALIDATE: &str = r#"
import inspect, sys
import pydantic, yaml, kubernetes_validate
import cloudcoil.apimachinery as apimachinery
from cloudcoil.models.prometheus_operator import v1 as monitoring_v1

models = [c for m in (apimachinery, monitoring_v1) for c in vars(m).values()
          if inspect.isclass(c) and issubclass(c, pydantic.BaseModel) and c.__module__ == m.__name__]
for c in models:
    c.model_config["extra"] = "forbid"
for c in models:
    c.model_rebuild(force=True)

versions = sys.argv[1].split(",")
failed = 0
for path in sys.argv[2:]:
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    if not docs:
        failed += 1
        print(f"FAILED {path}: no Kubernetes object")
    for doc in docs:
        what = f"{path}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
        try:
            if doc.get("apiVersion", "").startswith("monitoring.coreos.com/"):
                getattr(monitoring_v1, doc["kind"]).model_validate(doc)
                print(f"ok {what} (prometheus-operator CRD)")
            else:
                for v in versions:
                    kubernetes_validate.validate(doc, v, strict=True)
                print(f"ok {what} (Kubernetes {', '.join(versions)})")
        except Exception as e:
            failed += 1
            where = getattr(e, "json_path", "")
            print(f"FAILED {what}: {where} {getattr(e, 'message', e)}".replace("\n", " "))
sys.exit(1 if failed else 0)
"#;

/// The oldest Kubernetes the manifests are for (Indexed Jobs' backoffLimitPerIndex, pod
/// failure policies with conditions) and the newest kubernetes-validate knows.
const KUBERNETES_VERSIONS: &str = "1.29,1.37";

fn validate(files: &[PathBuf]) -> std::process::Output {
    let mut cmd = Command::new(tool(".venv/bin/python"));
    cmd.arg("-c")
        .arg(VALIDATE)
        .arg(KUBERNETES_VERSIONS)
        .args(files);
    cmd.output().expect("run the schema validator")
}

/// Broken manifests the validator must refuse, so that a pass means something: a misspelt field
/// of a built-in kind, a misspelt field and a malformed value in a ServiceMonitor, an unknown kind.
const BROKEN: [(&str, &str); 4] = [
    (
        "broken-pdb.yaml",
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: x}\nspec: {maxUnavailabel: 1}\n",
    ),
    (
        "broken-servicemonitor-field.yaml",
        "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\n\
         spec: {selector: {}, endpoints: [{port: http, intervall: 30s}]}\n",
    ),
    (
        "broken-servicemonitor-value.yaml",
        "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\n\
         spec: {selector: {}, endpoints: [{port: http, interval: 30 seconds}]}\n",
    ),
    (
        "broken-kind.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: x}\n",
    ),
];

#[test]
fn every_manifest_validates_against_the_kubernetes_schemas_and_the_servicemonitor_crd() {
    let files = manifest_files();
    let dir = tempfile::tempdir().unwrap();
    let mut broken = Vec::new();
    for (name, text) in BROKEN {
        broken.push(dir.path().join(name));
        std::fs::write(broken.last().unwrap(), text).unwrap();
    }
    // One run for both (loading the models takes seconds).
    let o = validate(&[files.clone(), broken.clone()].concat());
    let out = stdout(&o);
    assert!(!o.status.success(), "{out}{}", stderr(&o));
    for f in &broken {
        assert!(
            out.contains(&format!("FAILED {}", f.display())),
            "the validator accepted {}:\n{out}",
            f.display()
        );
    }
    let failed: Vec<&str> = out
        .lines()
        .filter(|l| {
            l.starts_with("FAILED ") && !broken.iter().any(|b| l.contains(&*b.to_string_lossy()))
        })
        .collect();
    assert!(failed.is_empty(), "{}\n{}", failed.join("\n"), stderr(&o));
    for f in &files {
        assert!(
            out.contains(&format!("ok {}", f.display())),
            "{} was not validated:\n{out}",
            f.display()
        );
    }
    assert!(
        out.contains("ServiceMonitor housekeep (prometheus-operator CRD)"),
        "{out}"
    );
}

// ---- Security linter ----

#[test]
fn checkov_finds_nothing_and_every_skipped_check_says_why() {
    let dir = root().join("deploy/kubernetes");
    let o = Command::new(tool(".venv/checkov/bin/checkov"))
        .arg("-d")
        .arg(&dir)
        .args([
            "--framework",
            "kubernetes",
            "--skip-download",
            "--output",
            "json",
        ])
        .current_dir(root())
        .output()
        .expect("run checkov");
    let report: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("checkov's report: {e}\n{}{}", stdout(&o), stderr(&o)));
    let summary = &report["summary"];
    let failed: Vec<String> = report["results"]["failed_checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "{} {} ({}): {}",
                c["check_id"], c["resource"], c["file_path"], c["check_name"]
            )
        })
        .collect();
    assert_eq!(
        summary["failed"],
        0,
        "fix each finding or skip it with a reason in the manifest:\n{}",
        failed.join("\n")
    );
    assert_eq!(summary["parsing_errors"], 0, "{summary}");
    assert!(
        summary["passed"].as_u64() > Some(100),
        "checkov checked next to nothing: {summary}"
    );
    for c in report["results"]["skipped_checks"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let why = c["check_result"]["suppress_comment"]
            .as_str()
            .unwrap_or_default();
        assert!(
            why.len() > 20,
            "{} on {} is skipped without a reason",
            c["check_id"],
            c["resource"]
        );
    }
    assert!(o.status.success(), "{}", stderr(&o));
}

// ---- What the manifests promise ----

/// Every document of deploy/kubernetes as JSON, with the file it came from.
fn documents() -> Vec<(String, Value)> {
    let script = "import json, sys, yaml\n\
                  print(json.dumps([[p, d] for p in sys.argv[1:] for d in yaml.safe_load_all(open(p)) if d is not None]))";
    let o = Command::new(tool(".venv/bin/python"))
        .arg("-c")
        .arg(script)
        .args(manifest_files())
        .output()
        .expect("read the manifests");
    assert!(o.status.success(), "{}", stderr(&o));
    let docs: Vec<(String, Value)> = serde_json::from_slice(&o.stdout).expect("manifests as JSON");
    docs.into_iter()
        .map(|(p, d)| {
            (
                Path::new(&p)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                d,
            )
        })
        .collect()
}

fn kind<'a>(docs: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|(_, d)| d["kind"] == kind)
        .map(|(_, d)| d)
        .collect()
}

/// (what, Job spec) of every Job and every CronJob's job template.
fn job_specs(docs: &[(String, Value)]) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    for (file, d) in docs {
        match d["kind"].as_str() {
            Some("Job") => out.push((format!("{file}: Job {}", d["metadata"]["name"]), &d["spec"])),
            Some("CronJob") => out.push((
                format!("{file}: CronJob {}", d["metadata"]["name"]),
                &d["spec"]["jobTemplate"]["spec"],
            )),
            _ => {}
        }
    }
    out
}

/// (what, pod spec) of every pod template.
fn pod_specs(docs: &[(String, Value)]) -> Vec<(String, &Value)> {
    let mut out: Vec<(String, &Value)> = job_specs(docs)
        .into_iter()
        .map(|(w, j)| (w, &j["template"]["spec"]))
        .collect();
    for (file, d) in docs {
        if d["kind"] == "Deployment" {
            out.push((
                format!("{file}: Deployment {}", d["metadata"]["name"]),
                &d["spec"]["template"]["spec"],
            ));
        }
    }
    out
}

fn args(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

fn selects(selector: &Value, labels: &Value) -> bool {
    let wanted = selector.as_object().expect("matchLabels");
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels[k] == *v)
}

#[test]
fn every_pod_is_restricted_pinned_and_without_service_links() {
    let docs = documents();
    let image = format!(
        "registry.example.com/housekeep:{}",
        env!("CARGO_PKG_VERSION")
    );
    let pods = pod_specs(&docs);
    assert!(pods.len() >= 6, "{} pod templates", pods.len());
    for (what, pod) in pods {
        assert_eq!(pod["enableServiceLinks"], false, "{what}");
        assert_eq!(pod["automountServiceAccountToken"], false, "{what}");
        let sc = &pod["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{what}");
        assert!(
            sc["runAsUser"].as_u64() > Some(0),
            "{what}: a numeric non-root user"
        );
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{what}");
        let containers = pod["containers"].as_array().expect("containers");
        for c in containers {
            assert_eq!(
                c["image"],
                image.as_str(),
                "{what}: the image is pinned to this version"
            );
            assert!(
                c["command"].is_null(),
                "{what}: the image's entrypoint, no shell"
            );
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{what}"
            );
            for (limit, key) in [
                ("requests", "cpu"),
                ("requests", "memory"),
                ("limits", "memory"),
            ] {
                assert!(
                    c["resources"][limit][key].is_string(),
                    "{what}: resources.{limit}.{key}"
                );
            }
        }
    }
}

#[test]
fn jobs_fail_at_once_on_exit_2_and_are_bounded() {
    let docs = documents();
    let jobs = job_specs(&docs);
    assert!(jobs.len() >= 5, "{} Jobs and CronJobs", jobs.len());
    for (what, job) in &jobs {
        let fails_on_2 = job["podFailurePolicy"]["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| {
                r["action"] == "FailJob"
                    && r["onExitCodes"]["operator"] == "In"
                    && r["onExitCodes"]["values"]
                        .as_array()
                        .is_some_and(|v| v.contains(&2.into()))
            });
        assert!(
            fails_on_2,
            "{what}: podFailurePolicy fails the Job on exit code 2"
        );
        assert!(
            job["activeDeadlineSeconds"].as_u64() > Some(0),
            "{what}: activeDeadlineSeconds"
        );
        assert!(
            job["ttlSecondsAfterFinished"].as_u64() > Some(0),
            "{what}: ttlSecondsAfterFinished"
        );
        assert_eq!(
            job["template"]["spec"]["restartPolicy"], "Never",
            "{what}: needed by podFailurePolicy"
        );
    }
    for cron in kind(&docs, "CronJob") {
        assert_eq!(
            cron["spec"]["concurrencyPolicy"], "Forbid",
            "{}",
            cron["metadata"]["name"]
        );
    }

    // CronJobs list and delete orphans on the manifests' volume.
    let claims: Vec<&Value> = kind(&docs, "PersistentVolumeClaim")
        .into_iter()
        .map(|p| &p["metadata"]["name"])
        .collect();
    for command in ["list-orphans", "delete-orphans"] {
        let cron = kind(&docs, "CronJob")
            .into_iter()
            .find(|c| {
                args(&c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0])[0]
                    == command
            })
            .unwrap_or_else(|| panic!("a CronJob runs {command}"));
        let volumes = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"];
        let claim = volumes
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|v| v["persistentVolumeClaim"]["claimName"].as_str());
        assert!(
            claim.is_some_and(|c| claims.contains(&&Value::from(c))),
            "{command}: mounts a PVC of deploy/kubernetes"
        );
    }

    // The Indexed Job: pod I lists shard I of N into a manifest of its own.
    let indexed = kind(&docs, "Job")
        .into_iter()
        .find(|j| {
            j["spec"]["completionMode"] == "Indexed"
                && args(&j["spec"]["template"]["spec"]["containers"][0])[0] == "list-orphans"
        })
        .expect("an Indexed Job runs list-orphans");
    let n = indexed["spec"]["completions"]
        .as_u64()
        .expect("completions");
    let a = args(&indexed["spec"]["template"]["spec"]["containers"][0]);
    let value_of = |flag: &str| a.iter().position(|x| x == flag).map(|i| a[i + 1].clone());
    assert_eq!(
        value_of("--shard"),
        Some(format!("$(JOB_COMPLETION_INDEX)/{n}")),
        "{a:?}"
    );
    assert_eq!(
        value_of("--filename").as_deref(),
        Some("/manifests/orphans-$(JOB_COMPLETION_INDEX).csv"),
        "{a:?}"
    );
}

#[test]
fn the_worker_is_probed_scraped_and_kept_through_disruptions() {
    let docs = documents();
    let deployment = kind(&docs, "Deployment")[0];
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let c = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(args(c), ["worker"]);
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "http", "{probe}");
    }
    assert_eq!(c["ports"][0]["name"], "http");

    let service = kind(&docs, "Service")[0];
    assert!(
        selects(&service["spec"]["selector"], labels),
        "the Service selects the worker"
    );
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    let monitor = kind(&docs, "ServiceMonitor")[0];
    assert!(
        selects(
            &monitor["spec"]["selector"]["matchLabels"],
            &service["metadata"]["labels"]
        ),
        "the ServiceMonitor selects the Service"
    );
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    let pdb = kind(&docs, "PodDisruptionBudget")[0];
    assert!(
        selects(&pdb["spec"]["selector"]["matchLabels"], labels),
        "the PodDisruptionBudget covers the worker"
    );
    assert!(deployment["spec"]["replicas"].as_u64() > pdb["spec"]["maxUnavailable"].as_u64());
}

/// The ConfigMap's housekeep.toml, with the Secret example's variables, is a configuration
/// housekeep accepts, found where the pods look for it, and listens where the probes knock.
#[test]
fn the_configmap_and_secret_example_make_a_valid_configuration() {
    let docs = documents();
    let config_map = kind(&docs, "ConfigMap")[0];
    let secret = kind(&docs, "Secret")[0];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("housekeep.toml");
    std::fs::write(
        &path,
        config_map["data"]["housekeep.toml"]
            .as_str()
            .expect("housekeep.toml"),
    )
    .unwrap();
    let env: Vec<(String, String)> = secret["stringData"]
        .as_object()
        .expect("stringData")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string").to_string()))
        .collect();
    let o = run(housekeep()
        .arg("config")
        .env("HOUSEKEEP_CONFIG", &path)
        .envs(env));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("listen = \"0.0.0.0:9718\""), "{out}");
    assert!(
        !out.contains("CHANGE-ME"),
        "the password is redacted:\n{out}"
    );

    for (what, pod) in pod_specs(&docs) {
        let c = &pod["containers"][0];
        let config = c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == "HOUSEKEEP_CONFIG")
            .expect("HOUSEKEEP_CONFIG");
        let volume = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["configMap"]["name"] == config_map["metadata"]["name"]);
        let volume = volume.unwrap_or_else(|| panic!("{what}: mounts the ConfigMap"));
        let mount = c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["name"] == volume["name"])
            .expect("mounted");
        assert_eq!(
            config["value"].as_str(),
            Some(format!("{}/housekeep.toml", mount["mountPath"].as_str().unwrap()).as_str()),
            "{what}"
        );
        assert_eq!(
            c["envFrom"][0]["secretRef"]["name"], secret["metadata"]["name"],
            "{what}"
        );
    }
}

/// Each container's args are housekeep's own usage: with Kubernetes' $(JOB_COMPLETION_INDEX)
/// expanded, clap accepts every flag and value before `--help`.
#[test]
fn every_container_runs_real_housekeep_usage() {
    let docs = documents();
    for (what, pod) in pod_specs(&docs) {
        let a: Vec<String> = args(&pod["containers"][0])
            .iter()
            .map(|a| a.replace("$(JOB_COMPLETION_INDEX)", "0"))
            .collect();
        let o = run(housekeep().args(&a).arg("--help"));
        assert_eq!(
            o.status.code(),
            Some(0),
            "{what}: housekeep {}: {}",
            a.join(" "),
            stderr(&o)
        );
    }
}

// ---- The image ----

#[test]
fn the_dockerfile_passes_hadolint_and_builds_as_ci_without_root_or_shell() {
    let o = Command::new(tool(".venv/bin/hadolint"))
        .arg(root().join("Dockerfile"))
        .output()
        .expect("run hadolint");
    assert!(
        o.status.success(),
        "hadolint:\n{}{}",
        stdout(&o),
        stderr(&o)
    );

    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(
        text.contains("cargo build --release --locked"),
        "the same build as CI"
    );
    let last_from = text
        .lines()
        .rev()
        .find(|l| l.starts_with("FROM "))
        .expect("FROM");
    assert!(
        last_from.starts_with("FROM gcr.io/distroless/"),
        "no shell at run time: {last_from}"
    );
    assert!(
        text.lines().any(|l| l == "USER 65532:65532"),
        "a numeric non-root user"
    );
    assert!(
        text.lines()
            .any(|l| l == r#"ENTRYPOINT ["/usr/local/bin/housekeep"]"#),
        "the binary is the entrypoint"
    );

    // The compiler is at least the crate's rust-version.
    let version = |s: &str| -> Vec<u32> {
        s.split('.')
            .map(|p| p.parse().expect("version number"))
            .collect()
    };
    let image = text
        .lines()
        .find_map(|l| l.strip_prefix("ARG RUST_VERSION="))
        .expect("ARG RUST_VERSION");
    let manifest: toml::Table = std::fs::read_to_string(root().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let minimum = manifest["package"]["rust-version"]
        .as_str()
        .expect("rust-version");
    assert!(
        version(image) >= version(minimum),
        "rust {image} < rust-version {minimum}"
    );

    // The build context holds what the build copies, and nothing else.
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    let rules: Vec<&str> = ignore
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        rules.first(),
        Some(&"*"),
        "everything is left out but what is listed"
    );
    for line in text
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from="))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        for source in &words[1..words.len() - 1] {
            let source = source.trim_end_matches('/');
            assert!(
                rules
                    .iter()
                    .any(|r| r.trim_end_matches('/') == format!("!{source}")),
                "{source} is in the build context"
            );
        }
    }
}
