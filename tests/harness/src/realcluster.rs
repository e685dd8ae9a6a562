//! A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver (RBAC, service-account
//! tokens, front-proxy certificates for API aggregation, Pod Security admission),
//! kube-controller-manager, kube-scheduler and kwok with a few fake nodes, so pods are
//! scheduled by the real scheduler and "run" without a kubelet.
//!
//! The binaries are the ones `cargo xtask setup` builds from the Go module proxy
//! (`tests/gotools/`) and links into `.tools/bin`. Every instance has its own temporary
//! directory, certificates and free ports, and stops its processes when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::{ChildProcess, find_binary, free_port, wait_until};

/// The binaries of the real tier, by the name they are linked as in `.tools/bin` (and the
/// variable that may point at another copy).
pub const BINARIES: &[(&str, &str)] = &[
    ("VEXXY_ETCD", "etcd"),
    ("VEXXY_KUBE_APISERVER", "kube-apiserver"),
    ("VEXXY_KUBE_CONTROLLER_MANAGER", "kube-controller-manager"),
    ("VEXXY_KUBE_SCHEDULER", "kube-scheduler"),
    ("VEXXY_KWOK", "kwok"),
    ("VEXXY_KUBECTL", "kubectl"),
];

/// How many fake nodes kwok manages.
pub const NODES: usize = 3;
/// The annotation that hands a Node to kwok.
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";

/// How long the whole control plane may take to become ready (cold caches on a busy 2-core
/// machine take a few seconds; this bound only turns a hang into a clear failure).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the real tier cannot run here, or `None` when every binary is present.
pub fn missing_binaries() -> Option<String> {
    let missing: Vec<String> = BINARIES
        .iter()
        .filter_map(|(var, name)| find_binary(var, name).err().map(|e| format!("{e:#}")))
        .collect();
    (!missing.is_empty()).then(|| missing.join("; "))
}

/// Certificates and keys, written as PEM files into the cluster's directory.
struct Pki {
    ca_cert: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    admin_cert: PathBuf,
    admin_key: PathBuf,
    front_proxy_ca_cert: PathBuf,
    front_proxy_client_cert: PathBuf,
    front_proxy_client_key: PathBuf,
    /// The key that signs service-account tokens, and its public half that verifies them
    /// (kube-apiserver reads only PKCS#1/SEC1 private keys as public keys, not PKCS#8).
    service_account_key: PathBuf,
    service_account_public_key: PathBuf,
}

/// A certificate authority: its certificate and the key that signs with it.
struct Authority {
    cert: Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> anyhow::Result<Authority> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(Authority { cert, key })
}

fn leaf(
    issuer: &Authority,
    common_name: &str,
    organization: Option<&str>,
    sans: &[SanType],
    usage: ExtendedKeyUsagePurpose,
) -> anyhow::Result<(String, String)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    if let Some(organization) = organization {
        params
            .distinguished_name
            .push(DnType::OrganizationName, organization);
    }
    params.subject_alt_names = sans.to_vec();
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer.cert, &issuer.key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl Pki {
    fn write(dir: &Path) -> anyhow::Result<Self> {
        let write = |name: &str, pem: &str| -> anyhow::Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, pem)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(path)
        };
        let issuer = ca("vexxy-test-ca")?;
        let localhost_ip = std::net::IpAddr::from([127, 0, 0, 1]);
        let service_ip = std::net::IpAddr::from([10, 0, 0, 1]);
        let mut sans = vec![
            SanType::IpAddress(localhost_ip),
            SanType::IpAddress(service_ip),
        ];
        for name in [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
        ] {
            sans.push(SanType::DnsName(name.try_into()?));
        }
        let (serving, serving_key) = leaf(
            &issuer,
            "kube-apiserver",
            None,
            &sans,
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let (admin, admin_key) = leaf(
            &issuer,
            "admin",
            Some("system:masters"),
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let front_proxy = ca("vexxy-test-front-proxy-ca")?;
        let (front_proxy_client, front_proxy_client_key) = leaf(
            &front_proxy,
            "front-proxy-client",
            None,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let service_account = KeyPair::generate()?;
        Ok(Pki {
            ca_cert: write("ca.crt", &issuer.cert.pem())?,
            serving_cert: write("apiserver.crt", &serving)?,
            serving_key: write("apiserver.key", &serving_key)?,
            admin_cert: write("admin.crt", &admin)?,
            admin_key: write("admin.key", &admin_key)?,
            front_proxy_ca_cert: write("front-proxy-ca.crt", &front_proxy.cert.pem())?,
            front_proxy_client_cert: write("front-proxy-client.crt", &front_proxy_client)?,
            front_proxy_client_key: write("front-proxy-client.key", &front_proxy_client_key)?,
            service_account_key: write("service-account.key", &service_account.serialize_pem())?,
            service_account_public_key: write(
                "service-account.pub",
                &service_account.public_key_pem(),
            )?,
        })
    }
}

/// Pod lifecycles other than "runs": the vexxy jobs (label `vexxy.io/job-id`) whose pods kwok
/// takes through another Stage instead.
#[derive(Debug, Clone, Default)]
pub struct KwokLifecycles {
    /// Pods that stay Pending with their container waiting in `ImagePullBackOff`, as a kubelet
    /// reports an image it cannot pull.
    pub image_pull_backoff_jobs: Vec<String>,
    /// Pods that run, but whose container keeps exiting with code 1: waiting in
    /// `CrashLoopBackOff` after 3 restarts, as a kubelet reports a container that fails at start.
    pub crash_loop_jobs: Vec<String>,
}

/// The pod label deploy puts the job id in.
const JOB_ID_LABEL: &str = "vexxy.io/job-id";
/// Where the running stage's selector takes exclusions.
const RUNNING_EXCLUSIONS_MARKER: &str = "    # vexxy: exclusions of the running stage (jobs another lifecycle takes; see realcluster.rs)\n";

/// `'a', 'b'`: a jq selector's value list.
fn quoted_list(jobs: &[String]) -> String {
    jobs.iter()
        .map(|job| format!("'{job}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A Stage taking Pending pods of `jobs` (none of their containers reported yet) to the
/// status `status_template` (kwok's Go template, indented for the `statusTemplate: |` block).
fn job_pod_stage(name: &str, jobs: &[String], status_template: &str) -> String {
    format!(
        "---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: {name}
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: DoesNotExist
    - key: '.status.phase'
      operator: In
      values: ['Pending']
    - key: '.status.containerStatuses'
      operator: DoesNotExist
    - key: '.metadata.labels[\"{JOB_ID_LABEL}\"]'
      operator: In
      values: [{jobs}]
  next:
    statusTemplate: |
{status_template}",
        jobs = quoted_list(jobs)
    )
}

const IMAGE_PULL_BACKOFF_STATUS: &str = "      phase: Pending
      hostIP: {{ NodeIP | Quote }}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        imageID: \"\"
        ready: false
        started: false
        restartCount: 0
        state:
          waiting:
            reason: ImagePullBackOff
            message: {{ printf \"Back-off pulling image %q\" .image | Quote }}
      {{ end }}
";

const CRASH_LOOP_STATUS: &str = "      phase: Running
      startTime: {{ Now | Quote }}
      hostIP: {{ NodeIP | Quote }}
      podIP: {{ PodIP | Quote }}
      conditions:
      - type: Ready
        status: \"False\"
        reason: ContainersNotReady
        lastTransitionTime: {{ Now | Quote }}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        imageID: {{ .image | Quote }}
        ready: false
        started: false
        restartCount: 3
        state:
          waiting:
            reason: CrashLoopBackOff
            message: {{ printf \"back-off 40s restarting failed container=%s\" .name | Quote }}
        lastState:
          terminated:
            exitCode: 1
            reason: Error
            startedAt: {{ Now | Quote }}
            finishedAt: {{ Now | Quote }}
      {{ end }}
";

impl KwokLifecycles {
    /// kwok's Stage documents: ours, with the running stage leaving these jobs' pods to the
    /// stages that fail them.
    fn stages(&self) -> String {
        let special: Vec<String> = self
            .image_pull_backoff_jobs
            .iter()
            .chain(&self.crash_loop_jobs)
            .cloned()
            .collect();
        if special.is_empty() {
            return KWOK_STAGES.replace(RUNNING_EXCLUSIONS_MARKER, "");
        }
        let exclusion = format!(
            "    - key: '.metadata.labels[\"{JOB_ID_LABEL}\"]'\n      operator: NotIn\n      values: [{}]\n",
            quoted_list(&special)
        );
        let mut stages = KWOK_STAGES.replace(RUNNING_EXCLUSIONS_MARKER, &exclusion);
        if !self.image_pull_backoff_jobs.is_empty() {
            stages.push_str(&job_pod_stage(
                "vexxy-pod-image-pull-backoff",
                &self.image_pull_backoff_jobs,
                IMAGE_PULL_BACKOFF_STATUS,
            ));
        }
        if !self.crash_loop_jobs.is_empty() {
            stages.push_str(&job_pod_stage(
                "vexxy-pod-crash-loop-backoff",
                &self.crash_loop_jobs,
                CRASH_LOOP_STATUS,
            ));
        }
        stages
    }
}

/// What the API server audits: the requests of vexxy's stages (their ServiceAccounts live in
/// the `vexxy` namespace), at metadata level; nothing else. A watch is logged when it starts
/// (`ResponseStarted`) and ends; every other request once, when it completes.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  userGroups: [\"system:serviceaccounts:vexxy\"]
- level: None
";

/// The APIService of Kubescape's storage (kubesim's, on the real tier).
pub const STORAGE_APISERVICE: &str = "v1beta1.spdx.softwarecomposition.kubescape.io";

/// The components of the control plane a test can kill and start again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Etcd,
    ApiServer,
}

/// A running control plane. Dropping it kills every process it started.
pub struct RealCluster {
    // Field order is drop order: clients of the API server first, etcd last.
    kwok: ChildProcess,
    scheduler: ChildProcess,
    controller_manager: ChildProcess,
    apiserver: ChildProcess,
    etcd: ChildProcess,
    /// How etcd and the API server were started, to start them again after a kill.
    etcd_launch: Launch,
    apiserver_launch: Launch,
    etcd_client_port: u16,
    apiserver_port: u16,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    ca_cert: PathBuf,
    dir: tempfile::TempDir,
}

impl RealCluster {
    /// Starts the whole control plane and waits until it schedules pods onto ready kwok nodes.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&KwokLifecycles::default())
    }

    /// [`RealCluster::start`], with some jobs' pods taken through other lifecycles.
    pub fn start_with(lifecycles: &KwokLifecycles) -> anyhow::Result<Self> {
        if let Some(missing) = missing_binaries() {
            bail!(
                "the real control plane's binaries are missing ({missing}); `cargo xtask setup` \
                 builds them when Go is installed"
            );
        }
        let binary = |name: &str| -> anyhow::Result<PathBuf> {
            let (var, _) = BINARIES
                .iter()
                .find(|(_, n)| *n == name)
                .expect("every binary used here is listed in BINARIES");
            find_binary(var, name)
        };
        let dir = tempfile::Builder::new()
            .prefix("vexxy-realcluster-")
            .tempdir()
            .context("cannot create the cluster's temporary directory")?;
        let pki = Pki::write(dir.path())?;
        let log = |name: &str| dir.path().join(format!("{name}.log"));

        let (etcd_client, etcd_peer) = (free_port(), free_port());
        let etcd_launch = Launch {
            name: "etcd",
            binary: binary("etcd")?,
            args: vec![
                format!("--data-dir={}", dir.path().join("etcd").display()),
                "--name=default".to_string(),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer}"),
                // Metrics would otherwise bind a fixed default port shared by parallel tests.
                format!("--listen-metrics-urls=http://127.0.0.1:{}", free_port()),
                "--unsafe-no-fsync".to_string(),
                "--log-level=warn".to_string(),
            ],
            log: log("etcd"),
        };
        let etcd = etcd_launch.spawn()?;

        let apiserver_port = free_port();
        let audit_policy = dir.path().join("audit-policy.yaml");
        std::fs::write(&audit_policy, AUDIT_POLICY)?;
        let audit_log = dir.path().join("audit.log");
        let apiserver_launch = Launch {
            name: "kube-apiserver",
            binary: binary("kube-apiserver")?,
            args: vec![
                format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
                "--bind-address=127.0.0.1".to_string(),
                "--advertise-address=127.0.0.1".to_string(),
                format!("--secure-port={apiserver_port}"),
                "--endpoint-reconciler-type=none".to_string(),
                "--allow-privileged=true".to_string(),
                "--authorization-mode=Node,RBAC".to_string(),
                "--service-cluster-ip-range=10.0.0.0/24".to_string(),
                "--service-account-issuer=https://kubernetes.default.svc".to_string(),
                path_flag("--tls-cert-file", &pki.serving_cert),
                path_flag("--tls-private-key-file", &pki.serving_key),
                path_flag("--client-ca-file", &pki.ca_cert),
                path_flag(
                    "--service-account-key-file",
                    &pki.service_account_public_key,
                ),
                path_flag(
                    "--service-account-signing-key-file",
                    &pki.service_account_key,
                ),
                path_flag("--requestheader-client-ca-file", &pki.front_proxy_ca_cert),
                "--requestheader-allowed-names=front-proxy-client".to_string(),
                "--requestheader-username-headers=X-Remote-User".to_string(),
                "--requestheader-group-headers=X-Remote-Group".to_string(),
                "--requestheader-extra-headers-prefix=X-Remote-Extra-".to_string(),
                path_flag("--proxy-client-cert-file", &pki.front_proxy_client_cert),
                path_flag("--proxy-client-key-file", &pki.front_proxy_client_key),
                // No --enable-aggregator-routing: its endpoint resolver refuses ExternalName
                // Services, and an ExternalName Service pointing at 127.0.0.1 is how an
                // aggregated API (Kubescape's storage) is reached here without kube-proxy.
                format!(
                    "--cert-dir={}",
                    dir.path().join("apiserver-certs").display()
                ),
                // Every request of a vexxy stage, for the benchmarks' request counts.
                path_flag("--audit-policy-file", &audit_policy),
                path_flag("--audit-log-path", &audit_log),
                "--audit-log-format=json".to_string(),
            ],
            log: log("kube-apiserver"),
        };
        let mut apiserver = apiserver_launch.spawn()?;

        let kubeconfig = dir.path().join("kubeconfig");
        write_kubeconfig(&kubeconfig, apiserver_port, &pki)?;
        let kubectl = binary("kubectl")?;
        // The controller manager, the scheduler and kwok exit when the API server does not
        // answer at their start: start them once it is ready.
        let started = Instant::now();
        if !wait_apiserver_ready(&mut apiserver, &kubectl, &kubeconfig, START_TIMEOUT) {
            bail!(
                "kube-apiserver did not become ready within {START_TIMEOUT:?}; the end of its log ({}):\n{}\n--- etcd:\n{}",
                apiserver.log_path().display(),
                crate::stack::log_tail(apiserver.log_path(), 20),
                crate::stack::log_tail(&log("etcd"), 10),
            );
        }

        let mut controller_manager = Command::new(binary("kube-controller-manager")?);
        controller_manager
            .arg(path_flag("--kubeconfig", &kubeconfig))
            .arg(path_flag("--authentication-kubeconfig", &kubeconfig))
            .arg(path_flag("--authorization-kubeconfig", &kubeconfig))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={}", free_port()))
            .arg("--leader-elect=false")
            .arg(path_flag("--root-ca-file", &pki.ca_cert))
            .arg(path_flag(
                "--service-account-private-key-file",
                &pki.service_account_key,
            ))
            .arg("--use-service-account-credentials=true")
            // No cloud, no node IPAM: kwok hands out pod IPs.
            .arg("--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller");
        let controller_manager = ChildProcess::spawn(
            "kube-controller-manager",
            controller_manager,
            &log("kube-controller-manager"),
        )?;

        let mut scheduler = Command::new(binary("kube-scheduler")?);
        scheduler
            .arg(path_flag("--kubeconfig", &kubeconfig))
            .arg(path_flag("--authentication-kubeconfig", &kubeconfig))
            .arg(path_flag("--authorization-kubeconfig", &kubeconfig))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={}", free_port()))
            .arg("--leader-elect=false");
        let scheduler = ChildProcess::spawn("kube-scheduler", scheduler, &log("kube-scheduler"))?;

        let stages = dir.path().join("kwok-stages.yaml");
        std::fs::write(&stages, lifecycles.stages()).context("cannot write kwok's stages")?;
        let mut kwok = Command::new(binary("kwok")?);
        kwok.arg(path_flag("--kubeconfig", &kubeconfig))
            .arg(path_flag("--config", &stages))
            .arg("--manage-all-nodes=false")
            .arg(format!(
                "--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake"
            ))
            .arg(format!("--server-address=127.0.0.1:{}", free_port()))
            .arg("--cidr=10.244.0.0/16")
            .arg("--node-ip=127.0.0.1");
        let kwok = ChildProcess::spawn("kwok", kwok, &log("kwok"))?;

        let mut cluster = RealCluster {
            kwok,
            scheduler,
            controller_manager,
            apiserver,
            etcd,
            etcd_launch,
            apiserver_launch,
            etcd_client_port: etcd_client,
            apiserver_port,
            kubeconfig,
            kubectl,
            ca_cert: pki.ca_cert.clone(),
            dir,
        };
        cluster.wait_ready(started)?;
        Ok(cluster)
    }

    /// Nodes registered and Ready, and the default ServiceAccount made.
    fn wait_ready(&mut self, started: Instant) -> anyhow::Result<()> {
        let nodes: String = (0..NODES).map(node_manifest).collect();
        self.kubectl_stdin(&["apply", "-f", "-"], &nodes)?;
        let nodes_ready = wait_until(START_TIMEOUT.saturating_sub(started.elapsed()), || {
            self.kubectl(&[
                "wait",
                "--for=condition=Ready",
                "node",
                "--all",
                "--timeout=2s",
            ])
            .is_ok_and(|output| output.status.success())
        });
        ensure!(
            nodes_ready,
            "kwok's nodes never became Ready: {}",
            self.tails()
        );
        // The default ServiceAccount is what every namespace's pods run as: the controller
        // manager creates it, and pods are refused until it exists.
        let default_sa = wait_until(START_TIMEOUT.saturating_sub(started.elapsed()), || {
            self.kubectl(&["get", "serviceaccount", "default", "-n", "default"])
                .is_ok_and(|output| output.status.success())
        });
        ensure!(
            default_sa,
            "the controller manager never created the default ServiceAccount: {}",
            self.tails()
        );
        Ok(())
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.apiserver_port)
    }

    /// A kubeconfig with cluster-admin rights (client certificate in `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The CA that signed the API server's serving certificate.
    pub fn ca_cert(&self) -> &Path {
        &self.ca_cert
    }

    /// Waits until the aggregator reports the APIService `name` Available (its backend
    /// registered and answers), e.g. [`STORAGE_APISERVICE`] once kubesim serves Kubescape's
    /// storage.
    pub fn wait_api_service_available(&self, name: &str, timeout: Duration) -> anyhow::Result<()> {
        let available = wait_until(timeout, || {
            self.kubectl(&[
                "wait",
                "--for=condition=Available",
                &format!("apiservice/{name}"),
                "--timeout=2s",
            ])
            .is_ok_and(|output| output.status.success())
        });
        ensure!(
            available,
            "the APIService {name} did not become Available within {timeout:?}: {}",
            self.kubectl(&["get", "apiservice", name, "-o", "yaml"])
                .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
                .unwrap_or_default()
        );
        Ok(())
    }

    /// The API server's audit log: one JSON event per line for every request a ServiceAccount
    /// of the `vexxy` namespace made (stages `ResponseStarted` for watches and
    /// `ResponseComplete`), metadata only. Kept across a restart of the API server.
    pub fn audit_log(&self) -> PathBuf {
        self.dir.path().join("audit.log")
    }

    /// The cluster's temporary directory (logs, certificates, kubeconfig).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs the real kubectl against this cluster as admin.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new(&self.kubectl)
            .arg(path_flag("--kubeconfig", &self.kubeconfig))
            .args(args)
            .output()
            .with_context(|| format!("cannot run kubectl {args:?}"))
    }

    /// kubectl with `input` on stdin; fails with kubectl's message when it fails.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> anyhow::Result<String> {
        use std::io::Write;
        let mut child = Command::new(&self.kubectl)
            .arg(path_flag("--kubeconfig", &self.kubeconfig))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run kubectl {args:?}"))?;
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(input.as_bytes())
            .context("cannot write to kubectl's stdin")?;
        let output = child.wait_with_output().context("kubectl did not finish")?;
        ensure!(
            output.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// kubectl that must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.kubectl(args)?;
        ensure!(
            output.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The last lines of every component's log, for failure messages.
    pub fn tails(&self) -> String {
        [
            &self.etcd,
            &self.apiserver,
            &self.controller_manager,
            &self.scheduler,
            &self.kwok,
        ]
        .iter()
        .map(|process| {
            let logs = process.logs();
            let tail: Vec<&str> = logs.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!(
                "\n--- {} ({}):\n{}",
                process.name(),
                process.log_path().display(),
                tail.join("\n")
            )
        })
        .collect()
    }

    /// Which components have exited (a control plane missing a piece is broken).
    pub fn exited(&mut self) -> Vec<String> {
        [
            &mut self.etcd,
            &mut self.apiserver,
            &mut self.controller_manager,
            &mut self.scheduler,
            &mut self.kwok,
        ]
        .into_iter()
        .filter_map(|process| (!process.is_running()).then(|| process.name().to_string()))
        .collect()
    }

    /// `kill -9` of etcd or the API server (no chance to flush or close connections); returns
    /// once its port no longer accepts connections. [`RealCluster::start_again`] brings it back.
    pub fn kill(&mut self, component: Component) -> anyhow::Result<()> {
        let (process, port) = match component {
            Component::Etcd => (&mut self.etcd, self.etcd_client_port),
            Component::ApiServer => (&mut self.apiserver, self.apiserver_port),
        };
        process.kill()?;
        ensure!(
            wait_until(Duration::from_secs(15), || !crate::port_is_open(port)),
            "{} still accepts connections on port {port} after kill -9",
            process.name()
        );
        Ok(())
    }

    /// Starts a killed etcd or API server again with the same flags, port, data and
    /// certificates; returns once the API server answers `/readyz` (which checks etcd too).
    pub fn start_again(&mut self, component: Component) -> anyhow::Result<()> {
        let (process, launch) = match component {
            Component::Etcd => (&mut self.etcd, &self.etcd_launch),
            Component::ApiServer => (&mut self.apiserver, &self.apiserver_launch),
        };
        ensure!(
            !process.is_running(),
            "{} is still running; kill it first",
            launch.name
        );
        *process = launch.spawn()?;
        let timeout = START_TIMEOUT;
        if !wait_apiserver_ready(
            &mut self.apiserver,
            &self.kubectl,
            &self.kubeconfig,
            timeout,
        ) {
            bail!(
                "the API server was not ready within {timeout:?} of starting {} again: {}",
                launch.name,
                self.tails()
            );
        }
        Ok(())
    }

    /// Stops every component, clients of the API server first.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let grace = Duration::from_secs(10);
        let mut problems = Vec::new();
        for process in [
            &mut self.kwok,
            &mut self.scheduler,
            &mut self.controller_manager,
            &mut self.apiserver,
            &mut self.etcd,
        ] {
            if let Err(error) = process.terminate(grace) {
                problems.push(format!("{error:#}"));
            }
        }
        ensure!(problems.is_empty(), "{}", problems.join("; "));
        Ok(())
    }
}

/// How one component of the control plane is started: binary, flags and log file (a restart
/// appends to the same log).
struct Launch {
    name: &'static str,
    binary: PathBuf,
    args: Vec<String>,
    log: PathBuf,
}

impl Launch {
    fn spawn(&self) -> anyhow::Result<ChildProcess> {
        let mut command = Command::new(&self.binary);
        command.args(&self.args);
        ChildProcess::spawn(self.name, command, &self.log)
    }
}

/// Polls the API server's `/readyz` with kubectl until it answers, the process exits or
/// `timeout` passes; true when ready.
fn wait_apiserver_ready(
    apiserver: &mut ChildProcess,
    kubectl: &Path,
    kubeconfig: &Path,
    timeout: Duration,
) -> bool {
    let ready = wait_until(timeout, || {
        !apiserver.is_running()
            || Command::new(kubectl)
                .arg(path_flag("--kubeconfig", kubeconfig))
                .args(["get", "--raw", "/readyz"])
                .output()
                .is_ok_and(|output| output.status.success())
    });
    ready && apiserver.is_running()
}

fn path_flag(flag: &str, path: &Path) -> String {
    format!("{flag}={}", path.display())
}

fn write_kubeconfig(path: &Path, port: u16, pki: &Pki) -> anyhow::Result<()> {
    let config = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: real
  cluster:
    server: https://127.0.0.1:{port}
    certificate-authority: {ca}
users:
- name: admin
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: real
  context:
    cluster: real
    user: admin
    namespace: default
current-context: real
",
        ca = pki.ca_cert.display(),
        cert = pki.admin_cert.display(),
        key = pki.admin_key.display(),
    );
    std::fs::write(path, config).with_context(|| format!("cannot write {}", path.display()))
}

fn node_manifest(index: usize) -> String {
    format!(
        "---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-{index}
  annotations:
    {KWOK_NODE_ANNOTATION}: fake
    node.alpha.kubernetes.io/ttl: \"0\"
  labels:
    kubernetes.io/hostname: kwok-node-{index}
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
spec: {{}}
status:
  allocatable: {{cpu: \"32\", memory: 256Gi, ephemeral-storage: 1Ti, pods: \"110\"}}
  capacity: {{cpu: \"32\", memory: 256Gi, ephemeral-storage: 1Ti, pods: \"110\"}}
  nodeInfo:
    kubeletVersion: kwok-v0.8.0
    operatingSystem: linux
    architecture: amd64
"
    )
}

/// kwok's lifecycle for our fake nodes and pods (kwok's Stage API): a node becomes Ready; a
/// scheduled pod runs (its containers running, restart count 0); a Job's pod completes; a pod
/// being deleted goes away. Written for vexxy's tests: the scenarios that need other lifecycles
/// (image pull failures, crash loops) add their own stages.
const KWOK_STAGES: &str = include_str!("../kwok-stages.yaml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_stage_leaves_failing_jobs_to_their_own_stage() {
        assert!(KWOK_STAGES.contains(RUNNING_EXCLUSIONS_MARKER));
        let plain = KwokLifecycles::default().stages();
        assert!(!plain.contains("vexxy: exclusions"));
        let failing = KwokLifecycles {
            image_pull_backoff_jobs: vec!["job-a".into()],
            ..KwokLifecycles::default()
        }
        .stages();
        assert!(failing.contains("operator: NotIn\n      values: ['job-a']"));
        assert!(failing.contains("name: vexxy-pod-image-pull-backoff"));
        assert!(failing.contains("reason: ImagePullBackOff"));
        assert!(failing.contains("{{ range .spec.containers }}"));
        assert!(!failing.contains("CrashLoopBackOff"));
        let both = KwokLifecycles {
            image_pull_backoff_jobs: vec!["job-a".into()],
            crash_loop_jobs: vec!["job-b".into(), "job-c".into()],
        }
        .stages();
        assert!(both.contains("operator: NotIn\n      values: ['job-a', 'job-b', 'job-c']"));
        assert!(both.contains("name: vexxy-pod-crash-loop-backoff"));
        assert!(both.contains("operator: In\n      values: ['job-b', 'job-c']"));
        assert!(both.contains("reason: CrashLoopBackOff"));
        assert!(both.contains("restartCount: 3"));
    }

    #[test]
    fn the_stages_parse_as_yaml_documents_of_kind_stage() {
        let documents: Vec<&str> = KWOK_STAGES
            .split("\n---")
            .filter(|d| !d.trim().is_empty())
            .collect();
        assert!(
            documents.len() >= 4,
            "node, pod run, job completion, delete"
        );
        for document in documents {
            assert!(
                document.contains("kind: Stage"),
                "every document is a kwok Stage: {document}"
            );
        }
    }
}
