//! The server: shared state, startup, the test-control endpoints and the [`Handle`].

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Capabilities, Config, FailurePatterns, Faults, KubescapeConfig, Timings};
use crate::errors::ApiError;
use crate::faults::{Counters, FaultState};
use crate::rng;
use crate::store::Store;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "cannot listen on 127.0.0.1:{port}: {source} (pick another port or use 0 for a free one)"
    )]
    Bind { port: u16, source: std::io::Error },
    #[error("cannot set up the initial cluster objects: {0}")]
    Bootstrap(ApiError),
    #[error("cannot act as Kubescape for the real cluster: {0}")]
    Upstream(#[from] crate::upstream::UpstreamError),
    #[error("cannot serve HTTPS: {0}")]
    Tls(std::io::Error),
}

/// Why a control action failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the cluster objects for this change could not be written: {0}")]
    Store(#[from] ApiError),
    #[error("cannot write the kubeconfig to {path}: {source}")]
    Kubeconfig {
        path: String,
        source: std::io::Error,
    },
    #[error("kube-rs cannot use kubesim's kubeconfig: {0}")]
    Client(String),
}

pub struct App {
    pub store: Arc<Store>,
    pub addr: SocketAddr,
    /// Serving HTTPS: kubesim is a real cluster's aggregated storage API (see `upstream`).
    pub https: bool,
    /// The configuration, in a channel so that the controller loop and the emulator wake for a
    /// change without polling (an idle kubesim then sleeps, as an idle API server does).
    config: watch::Sender<Config>,
    faults: Mutex<FaultState>,
    counters: Mutex<Counters>,
    emulator: Mutex<crate::kubescape::EmulatorState>,
    /// The bytes of objects GETs served, reused while the object is unchanged.
    pub serialized: crate::serialized::SerializedObjects,
    /// Kubescape storage's per-kind request queues (429 when full, 413 over a kind's size).
    pub storage_queues: crate::storage_queue::StorageQueues,
    /// Becomes true when the server shuts down; long-running responses (watches) end then.
    pub shutdown: watch::Receiver<bool>,
}

impl App {
    /// A snapshot of the current configuration.
    pub fn config(&self) -> Config {
        self.config.borrow().clone()
    }

    pub fn update_config(&self, f: impl FnOnce(&mut Config)) {
        self.config.send_modify(f);
    }

    /// Wakes its holder after each configuration change (see `update_config`).
    pub fn config_changes(&self) -> watch::Receiver<Config> {
        self.config.subscribe()
    }

    pub fn kubescape_installed(&self) -> bool {
        self.config.borrow().kubescape.installed
    }

    pub fn count(&self, verb: &str, resource: &str) {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .inc(verb, resource);
    }

    pub fn counters(&self) -> Counters {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn reset_counters(&self) {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reset();
    }

    /// Counts a watch as open until the returned guard is dropped.
    pub fn open_watch(self: &Arc<Self>, resource: String) -> OpenWatch {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .watch_opened(&resource);
        OpenWatch {
            app: self.clone(),
            resource,
            fell_behind: false,
        }
    }

    /// Latency, then a fault drawn from the rules (if any fires).
    pub async fn inject_fault(&self, verb: &str, resource: &str) -> Option<ApiError> {
        let (latency, err) = {
            let mut f = self.faults.lock().unwrap_or_else(|p| p.into_inner());
            (f.config.latency_ms, f.draw(verb, resource))
        };
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        err
    }

    pub fn set_faults(&self, faults: Faults) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(faults.clone());
        self.update_config(|c| c.faults = faults);
    }

    pub fn faults_injected(&self) -> u64 {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .injected_total()
    }

    /// node-agent starts (Kubescape is installed): what runs now is pre-running, its profiles
    /// `partial`.
    pub fn start_node_agent(
        &self,
        containers: std::collections::HashSet<(String, String, String)>,
    ) {
        let mut state = self.emulator.lock().unwrap_or_else(|p| p.into_inner());
        state.preexisting = containers;
        state.node_agent_started = Some(chrono::Utc::now());
    }

    /// Whether node-agent takes this container run for one that was running before it started.
    pub fn pre_running(
        &self,
        pod_uid: &str,
        container: &str,
        run: &str,
        started_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> bool {
        self.emulator
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pre_running(pod_uid, container, run, started_at)
    }
}

/// Resolves once the shutdown flag is set (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// Starts kubesim servers.
pub struct Server;

impl Server {
    /// Binds 127.0.0.1:`config.port`, creates the initial cluster objects and starts the
    /// controllers and the Kubescape emulator.
    pub async fn start(config: Config) -> Result<Handle, StartError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port))
            .await
            .map_err(|source| StartError::Bind {
                port: config.port,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            port: config.port,
            source,
        })?;
        let seed = config.seed.unwrap_or_else(rng::clock_seed);
        let store = Arc::new(Store::new(
            config.watch_history,
            std::time::Duration::from_secs(config.watch_history_seconds),
            crate::kubescape::MAX_VEX_BYTES,
            seed,
        ));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let upstream = match &config.upstream_kubeconfig {
            Some(path) => Some(crate::upstream::client(Path::new(path)).await?),
            None => None,
        };
        let app = Arc::new(App {
            shutdown: shutdown_rx.clone(),
            store,
            addr,
            https: upstream.is_some(),
            faults: Mutex::new(FaultState::new(config.faults.clone(), seed ^ 0xfa17)),
            counters: Mutex::new(Counters::default()),
            emulator: Mutex::new(Default::default()),
            serialized: Default::default(),
            storage_queues: Default::default(),
            config: watch::channel(config.clone()).0,
        });
        crate::controllers::bootstrap(&app).map_err(StartError::Bootstrap)?;
        if config.kubescape.installed {
            crate::kubescape::install(&app).map_err(StartError::Bootstrap)?;
        }
        let mut tasks = Vec::new();
        match &upstream {
            // The real cluster's controllers, scheduler and kwok run its workloads; kubesim only
            // learns of them.
            Some(client) => {
                tasks.push(tokio::spawn(crate::upstream::follow_installation(
                    app.clone(),
                    client.clone(),
                    shutdown_rx.clone(),
                )));
                tasks.push(tokio::spawn(crate::upstream::mirror(
                    app.clone(),
                    client.clone(),
                    shutdown_rx.clone(),
                )));
            }
            None => tasks.push(tokio::spawn(crate::controller_loop::run(
                app.clone(),
                shutdown_rx.clone(),
            ))),
        }
        tasks.push(tokio::spawn(crate::kubescape::run(
            app.clone(),
            shutdown_rx.clone(),
        )));
        let router = router(app.clone());
        let mut srv_shutdown = shutdown_rx.clone();
        if upstream.is_some() {
            let (cert, key) = crate::upstream::self_signed_certificate()?;
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
                cert.into_bytes(),
                key.into_bytes(),
            )
            .await
            .map_err(StartError::Tls)?;
            let listener = listener.into_std().map_err(StartError::Tls)?;
            let server_handle = axum_server::Handle::new();
            let stopper = server_handle.clone();
            tasks.push(tokio::spawn(async move {
                stopped(&mut srv_shutdown).await;
                stopper.graceful_shutdown(Some(Duration::from_secs(2)));
            }));
            tasks.push(tokio::spawn(async move {
                let server = match axum_server::from_tcp_rustls(listener, tls) {
                    Ok(server) => server,
                    Err(e) => {
                        tracing::error!(error = %e, "kubesim HTTPS server cannot start");
                        return;
                    }
                };
                if let Err(e) = server
                    .handle(server_handle)
                    .serve(router.into_make_service())
                    .await
                {
                    tracing::error!(error = %e, "kubesim HTTPS server stopped");
                }
            }));
        } else {
            tasks.push(tokio::spawn(async move {
                let result = axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        stopped(&mut srv_shutdown).await;
                    })
                    .await;
                if let Err(e) = result {
                    tracing::error!(error = %e, "kubesim HTTP server stopped");
                }
            }));
        }
        let scheme = if app.https { "https" } else { "http" };
        tracing::info!(url = %format!("{scheme}://{addr}"), "kubesim listening");
        Ok(Handle {
            app,
            shutdown: shutdown_tx,
            tasks,
        })
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/kubesim/healthz", get(|| async { "ok" }))
        .route("/kubesim/config", get(control_config))
        .route(
            "/kubesim/counters",
            get(control_counters).delete(control_reset_counters),
        )
        .route("/kubesim/counters/reset", post(control_reset_counters))
        .route(
            "/kubesim/kubescape",
            get(control_get_kubescape).post(control_kubescape),
        )
        .route("/kubesim/timings", post(control_timings))
        .route(
            "/kubesim/faults",
            get(control_get_faults).post(control_faults),
        )
        .route("/kubesim/failures", post(control_failures))
        .fallback(api_fallback)
        .layer(DefaultBodyLimit::max(256 * 1024 * 1024))
        .with_state(app)
}

async fn api_fallback(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    crate::api::handle(app, method, uri, headers, body).await
}

fn ok_json(v: Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// Merges a JSON body into the current value of a config section, so partial bodies work.
fn merged<T: serde::Serialize + serde::de::DeserializeOwned>(
    current: &T,
    body: &Bytes,
) -> Result<T, ApiError> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let mut v = serde_json::to_value(current).map_err(|e| ApiError::internal(e.to_string()))?;
    json_patch::merge(&mut v, &patch);
    serde_json::from_value(v)
        .map_err(|e| ApiError::bad_request(format!("the body does not fit the configuration: {e}")))
}

async fn control_config(State(app): State<Arc<App>>) -> Response {
    ok_json(serde_json::to_value(app.config()).unwrap_or(Value::Null))
}

async fn control_counters(State(app): State<Arc<App>>) -> Response {
    ok_json(serde_json::to_value(app.counters()).unwrap_or(Value::Null))
}

async fn control_reset_counters(State(app): State<Arc<App>>) -> Response {
    app.reset_counters();
    ok_json(json!({"reset": true}))
}

async fn control_get_kubescape(State(app): State<Arc<App>>) -> Response {
    ok_json(serde_json::to_value(app.config().kubescape).unwrap_or(Value::Null))
}

/// Body: any part of [`KubescapeConfig`], e.g. `{"installed": false}` or
/// `{"capabilities": {"vex_generation": false}}`.
async fn control_kubescape(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let current = app.config().kubescape;
    let result = merged(&current, &body)
        .and_then(|new: KubescapeConfig| crate::kubescape::reconfigure(&app, new));
    match result {
        Ok(()) => ok_json(serde_json::to_value(app.config().kubescape).unwrap_or(Value::Null)),
        Err(e) => e.into_response(),
    }
}

async fn control_timings(State(app): State<Arc<App>>, body: Bytes) -> Response {
    match merged(&app.config().timings, &body) {
        Ok(t) => {
            app.update_config(|c| c.timings = t);
            ok_json(serde_json::to_value(app.config().timings).unwrap_or(Value::Null))
        }
        Err(e) => e.into_response(),
    }
}

async fn control_get_faults(State(app): State<Arc<App>>) -> Response {
    ok_json(json!({"config": app.config().faults, "injected": app.faults_injected()}))
}

/// Body: a full [`Faults`] (replaces the current one; `{}` clears all faults).
async fn control_faults(State(app): State<Arc<App>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(f) => {
            app.set_faults(f);
            ok_json(serde_json::to_value(app.config().faults).unwrap_or(Value::Null))
        }
        Err(e) => ApiError::bad_request(format!("the body is not a fault configuration: {e}"))
            .into_response(),
    }
}

async fn control_failures(State(app): State<Arc<App>>, body: Bytes) -> Response {
    match merged(&app.config().failures, &body) {
        Ok(f) => {
            app.update_config(|c| c.failures = f);
            ok_json(serde_json::to_value(app.config().failures).unwrap_or(Value::Null))
        }
        Err(e) => e.into_response(),
    }
}

/// A running kubesim. Dropping it without [`Handle::shutdown`] leaves the tasks running until
/// the runtime ends.
pub struct Handle {
    app: Arc<App>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Handle {
    /// `http://127.0.0.1:<port>` (`https://` as a real cluster's storage API).
    pub fn url(&self) -> String {
        let scheme = if self.app.https { "https" } else { "http" };
        format!("{scheme}://{}", self.app.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.app.addr
    }

    /// A kubeconfig with cluster, context and user `kubesim` (no auth).
    pub fn kubeconfig_yaml(&self) -> String {
        kubeconfig_yaml(&self.url())
    }

    /// kube-rs's configuration for this server, read from the same kubeconfig kubectl gets (so
    /// production's loading path is exercised); tests may tune it before building a client.
    pub async fn kube_config(&self) -> Result<kube::Config, ControlError> {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&self.kubeconfig_yaml())
            .map_err(|e| ControlError::Client(e.to_string()))?;
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(|e| ControlError::Client(e.to_string()))
    }

    /// A kube-rs client for this server (see [`Handle::kube_config`]).
    pub async fn client(&self) -> Result<kube::Client, ControlError> {
        kube::Client::try_from(self.kube_config().await?)
            .map_err(|e| ControlError::Client(e.to_string()))
    }

    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<(), ControlError> {
        write_kubeconfig(&self.url(), path.as_ref())
    }

    /// The object store (tests may read it directly; writes go through the same checks as the API).
    pub fn store(&self) -> Arc<Store> {
        self.app.store.clone()
    }

    pub fn config(&self) -> Config {
        self.app.config()
    }

    pub fn set_kubescape_installed(&self, installed: bool) -> Result<(), ControlError> {
        let mut k = self.app.config().kubescape;
        k.installed = installed;
        crate::kubescape::reconfigure(&self.app, k)?;
        Ok(())
    }

    /// Replaces the Kubescape configuration (installed, capabilities, generation, ...).
    pub fn set_kubescape(&self, kubescape: KubescapeConfig) -> Result<(), ControlError> {
        crate::kubescape::reconfigure(&self.app, kubescape)?;
        Ok(())
    }

    pub fn set_capabilities(&self, capabilities: Capabilities) -> Result<(), ControlError> {
        let mut k = self.app.config().kubescape;
        k.capabilities = capabilities;
        crate::kubescape::reconfigure(&self.app, k)?;
        Ok(())
    }

    pub fn set_timings(&self, timings: Timings) {
        self.app.update_config(|c| c.timings = timings);
    }

    pub fn set_failures(&self, failures: FailurePatterns) {
        self.app.update_config(|c| c.failures = failures);
    }

    pub fn set_faults(&self, faults: Faults) {
        self.app.set_faults(faults);
    }

    pub fn faults_injected(&self) -> u64 {
        self.app.faults_injected()
    }

    pub fn counters(&self) -> Counters {
        self.app.counters()
    }

    pub fn reset_counters(&self) {
        self.app.reset_counters();
    }

    /// Stops the HTTP server (open watches end), the controllers and the emulator.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            // The server waits for open connections; bounded so a stuck client cannot hang a test.
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

pub fn kubeconfig_yaml(url: &str) -> String {
    // As a real cluster's storage API kubesim serves a self-signed certificate.
    let tls = if url.starts_with("https://") {
        "\n    insecure-skip-tls-verify: true"
    } else {
        ""
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kubesim\n  cluster:\n    server: {url}{tls}\ncontexts:\n- name: kubesim\n  context:\n    cluster: kubesim\n    user: kubesim\n    namespace: default\ncurrent-context: kubesim\nusers:\n- name: kubesim\n  user: {{}}\npreferences: {{}}\n"
    )
}

pub fn write_kubeconfig(url: &str, path: &Path) -> Result<(), ControlError> {
    std::fs::write(path, kubeconfig_yaml(url)).map_err(|source| ControlError::Kubeconfig {
        path: path.display().to_string(),
        source,
    })
}

/// A watch being served, counted in [`Counters::open_watches`] until dropped.
pub struct OpenWatch {
    app: Arc<App>,
    resource: String,
    /// Set when the server ends the watch because the client fell behind the change feed.
    pub fell_behind: bool,
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.app
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .watch_closed(&self.resource, self.fell_behind);
    }
}
