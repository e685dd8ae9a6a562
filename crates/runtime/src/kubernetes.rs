//! What every stage that talks to the Kubernetes API shares (compiled with the `kubernetes`
//! feature): the client the environment names, and API failures as stage errors a user can act
//! on.
//!
//! The client: `K8S_IN_CLUSTER=true` uses the pod's service account, anything else the
//! kubeconfig (`KUBECONFIG` or `~/.kube/config`), as the previous service did.
//!
//! Overload, server errors and broken connections may pass, so they are `Transient` (the message
//! is redelivered with backoff). A refusal (401/403) usually means the service account needs more
//! rights, but it is `Transient` too: a kube-apiserver that is starting (after a crash, an
//! upgrade) answers 401/403 to every request until its authenticator and RBAC authorizer have
//! loaded ServiceAccounts, Roles and bindings — it listens before it is ready — and a quota that
//! is used up (403 `exceeded quota`) frees up as other sandboxes end. A refusal that persists
//! fails the job when the retries run out (`VEXXY_MAX_DELIVER`), with the message saying which
//! rights to grant. Any other rejection (4xx) is `Permanent`: the same request will be rejected
//! again.

use kube::{Client, Config};
use vexxy_events::FailureReason;

use crate::StageError;
use crate::config::{ConfigError, Env};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "K8S_IN_CLUSTER=true but the in-cluster configuration is unusable ({0}); run inside a pod with a service account, or set K8S_IN_CLUSTER=false and KUBECONFIG"
    )]
    InCluster(#[source] kube::config::InClusterError),
    #[error(
        "cannot read the kubeconfig ({0}); set KUBECONFIG to a readable kubeconfig file, or K8S_IN_CLUSTER=true inside a cluster"
    )]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// The connection settings of the cluster `env` names (`K8S_IN_CLUSTER`, `KUBECONFIG`).
pub async fn cluster_config(env: &Env<'_>) -> Result<Config, ClusterError> {
    if env.flag("K8S_IN_CLUSTER", false)? {
        Config::incluster().map_err(ClusterError::InCluster)
    } else {
        Config::from_kubeconfig(&kube::config::KubeConfigOptions::default())
            .await
            .map_err(ClusterError::Kubeconfig)
    }
}

/// A client for the cluster `env` names.
pub async fn client(env: &Env<'_>) -> Result<Client, ClusterError> {
    client_for(cluster_config(env).await?)
}

/// A client for `config`: kube's own stack (which retries 429, 503 and 504, honouring
/// Retry-After) with [`ReadRetry`] on top. Call it inside a Tokio runtime.
pub fn client_for(config: Config) -> Result<Client, ClusterError> {
    let builder = kube::client::ClientBuilder::try_from(config).map_err(ClusterError::Client)?;
    // A retry repeats the request on a clone of the service below it; kube's boxed stack is not
    // `Clone`, a buffer in front of it is (its worker task only hands the requests over; each
    // response is still awaited by its caller, so requests stay concurrent).
    Ok(builder
        .with_layer(&tower::buffer::BufferLayer::new(REQUESTS_QUEUED))
        .with_layer(&tower::retry::RetryLayer::new(ReadRetry::default()))
        .build())
}

/// Requests that may wait for the buffer's worker at once before a caller waits for room.
const REQUESTS_QUEUED: usize = 1024;

/// Retries a GET or DELETE in place when the API server answered 500 or 502, or the connection
/// was refused or broken, three times within about 1.3 s.
///
/// A stage's work per message is several requests (extract reads seven objects, then deletes
/// the sandbox); when one failed transiently, the whole message used to be redelivered, and a
/// few failing requests per delivery could use up every delivery of a job. These two methods
/// are idempotent (a repeated DELETE finds the object gone, which every caller accepts), so
/// repeating one request is safe where repeating a create or an update is not. What still
/// fails after these retries is classified by [`stage_error`] as before.
#[derive(Debug, Clone)]
pub struct ReadRetry {
    retries_left: u32,
    delay: std::time::Duration,
}

impl Default for ReadRetry {
    /// Three retries after 100, 300 and 900 ms.
    fn default() -> Self {
        ReadRetry {
            retries_left: 3,
            delay: std::time::Duration::from_millis(100),
        }
    }
}

type ApiRequest = http::Request<kube::client::Body>;

/// Whether a request failed because the connection was refused, reset or cut: what an API
/// server that is restarting or a load balancer switching answers, over within a moment. A
/// timeout is not (each would take kube's 30 s connect timeout again), nor is a failing
/// credential plugin or anything else that would fail the same way at once.
fn connection_broken(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        cause = error.source();
    }
    false
}

impl<B> tower::retry::Policy<ApiRequest, http::Response<B>, tower::BoxError> for ReadRetry {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _request: &mut ApiRequest,
        result: &mut Result<http::Response<B>, tower::BoxError>,
    ) -> Option<Self::Future> {
        // Only called for requests `clone_request` copied: GETs and DELETEs.
        let worth_another_try = match result {
            Ok(response) => matches!(
                response.status(),
                http::StatusCode::INTERNAL_SERVER_ERROR | http::StatusCode::BAD_GATEWAY
            ),
            Err(error) => connection_broken(error.as_ref()),
        };
        if !worth_another_try || self.retries_left == 0 {
            return None;
        }
        self.retries_left -= 1;
        let delay = self.delay;
        self.delay *= 3;
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, request: &ApiRequest) -> Option<ApiRequest> {
        if !matches!(*request.method(), http::Method::GET | http::Method::DELETE) {
            return None;
        }
        let mut copy = http::Request::builder()
            .method(request.method().clone())
            .uri(request.uri().clone())
            .version(request.version())
            .body(request.body().try_clone()?)
            .ok()?;
        *copy.headers_mut() = request.headers().clone();
        *copy.extensions_mut() = request.extensions().clone();
        Some(copy)
    }
}

/// What a stage tells the user to fix when the API refuses or rejects its requests; the rights
/// differ per stage, so each stage supplies its own text.
#[derive(Debug, Clone, Copy)]
pub struct ApiAdvice {
    /// Completes "if it persists …", e.g. "grant the deploy service account the rights listed
    /// in deploy/ (create and get on deployments …)".
    pub grant: &'static str,
    /// Completes "check …" for a rejected request, e.g. "the cluster's Kubernetes version and
    /// the Kubescape installation".
    pub on_rejection: &'static str,
}

/// `what` names the request, e.g. "POST deployments vexxy-sandbox/vexxy-job-1".
pub fn stage_error(what: &str, error: &kube::Error, advice: &ApiAdvice) -> StageError {
    let reason = FailureReason::KubernetesUnavailable;
    match error {
        kube::Error::Api(status) if is_refusal(status.code) => StageError::Transient {
            reason,
            message: format!(
                "{what} was refused by the Kubernetes API ({} {}: {}); it is retried (an API \
                 server refuses requests while it starts, and a used-up quota frees up), but if \
                 it persists {} and submit again",
                status.code, status.reason, status.message, advice.grant
            ),
        },
        kube::Error::Api(status) if is_transient_status(status.code) => StageError::Transient {
            reason,
            message: format!(
                "{what} failed with {} {} ({}); the API server is overloaded or failing, \
                 the request will be retried",
                status.code, status.reason, status.message
            ),
        },
        kube::Error::Api(status) => StageError::Permanent {
            reason,
            message: format!(
                "{what} was rejected by the Kubernetes API ({} {}: {}); check {}, then submit \
                 again",
                status.code, status.reason, status.message, advice.on_rejection
            ),
            retryable: true,
        },
        other => StageError::Transient {
            reason,
            message: format!(
                "{what} could not reach the Kubernetes API ({other}); check that the API server \
                 is reachable from this process (KUBECONFIG / K8S_IN_CLUSTER), the request will \
                 be retried"
            ),
        },
    }
}

/// 429 (throttled), 5xx, and 408/409 timeouts or races are worth another try.
pub fn is_transient_status(code: u16) -> bool {
    code == 429 || code == 408 || code == 409 || code >= 500
}

/// 401/403: not authenticated or not allowed (yet).
pub fn is_refusal(code: u16) -> bool {
    code == 401 || code == 403
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOY: ApiAdvice = ApiAdvice {
        grant: "grant the deploy service account the rights listed in deploy/",
        on_rejection: "the admission policies for the sandbox namespace",
    };

    fn api(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, "Forbidden")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn a_refusal_is_retried_and_says_which_rights_to_grant() {
        // What a restarting kube-apiserver answered on the real tier before its RBAC cache
        // had loaded the Role.
        let error = api(
            403,
            "deployments.apps is forbidden: User \"system:serviceaccount:vexxy:vexxy-deploy\" \
             cannot create resource \"deployments\" in API group \"apps\" in the namespace \
             \"vexxy-sandbox\": RBAC: role.rbac.authorization.k8s.io \"vexxy-deploy\" not found",
        );
        match stage_error("POST deployments vexxy-sandbox/vexxy-j", &error, &DEPLOY) {
            StageError::Transient { reason, message } => {
                assert_eq!(reason, FailureReason::KubernetesUnavailable);
                assert!(message.contains("403"), "{message}");
                assert!(message.contains("it is retried"), "{message}");
                assert!(message.contains("rights listed in deploy/"), "{message}");
            }
            other => panic!("a 403 must be retried: {other:?}"),
        }
        assert!(matches!(
            stage_error("GET x", &api(401, "Unauthorized"), &DEPLOY),
            StageError::Transient { .. }
        ));
    }

    /// A service answering each request with the next status of `statuses` (then 200), and
    /// counting the requests it saw.
    fn scripted(
        statuses: &[u16],
    ) -> (
        impl tower::Service<
            ApiRequest,
            Response = http::Response<String>,
            Error = tower::BoxError,
            Future = impl Send,
        > + Clone,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let statuses: std::sync::Arc<[u16]> = statuses.into();
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        let service = tower::service_fn(move |_request: ApiRequest| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let status = statuses.get(n).copied().unwrap_or(200);
            async move {
                Ok::<_, tower::BoxError>(
                    http::Response::builder()
                        .status(status)
                        .body(String::new())
                        .expect("response"),
                )
            }
        });
        (service, seen)
    }

    async fn send(method: http::Method, statuses: &[u16]) -> (u16, usize) {
        use tower::{Layer, ServiceExt};
        let (service, seen) = scripted(statuses);
        // The production policy's retries, without its waits.
        let policy = ReadRetry {
            delay: std::time::Duration::from_millis(1),
            ..ReadRetry::default()
        };
        let service = tower::retry::RetryLayer::new(policy).layer(service);
        let request = http::Request::builder()
            .method(method)
            .uri("https://api/apis/apps/v1/namespaces/n/deployments/d")
            .body(kube::client::Body::empty())
            .expect("request");
        let response = service.oneshot(request).await.expect("response");
        (
            response.status().as_u16(),
            seen.load(std::sync::atomic::Ordering::SeqCst),
        )
    }

    #[tokio::test]
    async fn reads_and_deletes_are_retried_in_place_a_few_times() {
        assert_eq!(send(http::Method::GET, &[500, 502]).await, (200, 3));
        assert_eq!(send(http::Method::DELETE, &[500]).await, (200, 2));
        // Three retries, then the failure goes to the classifier.
        assert_eq!(send(http::Method::GET, &[500; 10]).await, (500, 4));
        // A rejection is final at once.
        assert_eq!(send(http::Method::GET, &[404]).await, (404, 1));
    }

    /// The client stages get really carries the layer: a GET that got two 500s succeeds, a
    /// POST that got one fails, and a refused connection is retried and then reported.
    #[tokio::test]
    async fn the_stage_client_retries_reads_against_a_real_server() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let gets = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = gets.clone();
        let app = axum::Router::new().route(
            "/api/v1/namespaces/n/configmaps/c",
            axum::routing::get(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        (http::StatusCode::INTERNAL_SERVER_ERROR, String::from("{}"))
                    } else {
                        (
                            http::StatusCode::OK,
                            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": "c", "namespace": "n"}})
                            .to_string(),
                        )
                    }
                }
            })
            .post(|| async { (http::StatusCode::INTERNAL_SERVER_ERROR, String::from("{}")) }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = client_for(Config::new(url.parse().expect("url"))).expect("client");
        let get = http::Request::get("/api/v1/namespaces/n/configmaps/c")
            .body(Vec::new())
            .expect("request");
        client
            .request_text(get)
            .await
            .expect("the third GET succeeds");
        assert_eq!(gets.load(Ordering::SeqCst), 3);
        let post = http::Request::post("/api/v1/namespaces/n/configmaps/c")
            .body(b"{}".to_vec())
            .expect("request");
        assert!(
            client.request_text(post).await.is_err(),
            "a POST is sent once"
        );

        // Nothing listens here any more: refused, retried, then the error.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", closed.local_addr().expect("addr"));
        drop(closed);
        let client = client_for(Config::new(url.parse().expect("url"))).expect("client");
        let started = std::time::Instant::now();
        let get = http::Request::get("/api/v1/namespaces/n/configmaps/c")
            .body(Vec::new())
            .expect("request");
        assert!(client.request_text(get).await.is_err());
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(1300),
            "three retries after 100, 300 and 900 ms: {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn only_a_refused_or_broken_connection_is_retried() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(connection_broken(&refused));
        let wrapped: tower::BoxError = Box::new(kube::Error::Service(Box::new(refused)));
        assert!(connection_broken(wrapped.as_ref()));
        let timeout = std::io::Error::from(std::io::ErrorKind::TimedOut);
        assert!(!connection_broken(&timeout));
        let other: tower::BoxError = "exec plugin failed".into();
        assert!(!connection_broken(other.as_ref()));
    }

    #[tokio::test]
    async fn creates_and_updates_are_never_repeated_in_place() {
        for method in [http::Method::POST, http::Method::PUT, http::Method::PATCH] {
            assert_eq!(send(method, &[500]).await, (500, 1));
        }
    }

    #[test]
    fn overload_is_retried_and_a_rejection_is_not() {
        for code in [408, 409, 429, 500, 503, 504] {
            assert!(
                matches!(
                    stage_error("GET x", &api(code, "busy"), &DEPLOY),
                    StageError::Transient { .. }
                ),
                "{code}"
            );
        }
        match stage_error("POST x", &api(422, "invalid"), &DEPLOY) {
            StageError::Permanent {
                message, retryable, ..
            } => {
                assert!(retryable);
                assert!(message.contains(DEPLOY.on_rejection), "{message}");
            }
            other => panic!("a 422 is not retried: {other:?}"),
        }
    }
}
