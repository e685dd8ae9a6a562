//! Removes vexxy sandboxes nobody owns any more: Deployments labelled
//! `app.kubernetes.io/managed-by=vexxy` in the sandbox namespace, older than the job TTL, whose
//! job is finished or unknown in the `vexxy-jobs` KV bucket. Catches sandboxes left behind when
//! a job failed before extract, or extract crashed between reading and deleting.
//!
//! Its work follows what can have leaked, not the clock: a sandbox can only be removed once it is
//! older than the TTL, and leaks come from jobs that failed or from an earlier extract process.
//! So it sweeps (one labelled LIST, plus a KV read per old sandbox):
//! * at start, for what an earlier process or a stopped stack left;
//! * when a sandbox that existed before this process started (spared then as too young)
//!   reaches the TTL;
//! * a TTL after a job failed (`vexxy.analysis.failed`, seen on a core NATS subscription):
//!   that job's sandbox is old enough by then, and failures in a burst share one sweep;
//! * at the latest every `VEXXY_JANITOR_INTERVAL` (default: the TTL), for what the above
//!   cannot see (another replica that crashed and did not come back, a missed event).
//!
//! A healthy stack therefore sends no periodic LIST more often than once per TTL.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::kv;
use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, ListParams};
use vexxy_runtime::status::{self, StatusError};

use crate::cluster::delete_sandbox;

pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=vexxy";
pub const JOB_ID_LABEL: &str = "vexxy.io/job-id";

#[derive(Debug, Clone)]
pub struct JanitorConfig {
    pub namespace: String,
    pub interval: Duration,
    pub ttl: Duration,
}

/// What one sweep did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sweep {
    pub deleted: Vec<String>,
    pub spared: Vec<String>,
    /// Creation time of the oldest sandbox spared for being younger than the TTL.
    pub oldest_young: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum JanitorError {
    #[error("listing sandbox Deployments in {namespace} failed: {source}")]
    List {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading job {job_id} from the vexxy-jobs KV bucket failed: {message}")]
    Status { job_id: String, message: String },
}

/// Runs sweeps forever (see the module documentation for when); errors are logged and the next
/// sweep tries again. The KV bucket is opened at each sweep: it may not exist yet when the stage
/// starts.
pub async fn run(client: Client, jetstream: jetstream::Context, config: JanitorConfig) {
    let started = Utc::now();
    let mut failures = match jetstream
        .client()
        .subscribe(vexxy_events::subjects::FAILED)
        .await
    {
        Ok(failures) => Some(failures),
        Err(e) => {
            tracing::warn!(error = %e, interval = ?config.interval, "janitor cannot subscribe to failed analyses; it sweeps every VEXXY_JANITOR_INTERVAL only");
            None
        }
    };
    let after_failure = config.ttl + SWEEP_MARGIN;
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            failure = next_failure(&mut failures) => {
                if failure.is_none() {
                    tracing::warn!("janitor's subscription to failed analyses ended; it sweeps every VEXXY_JANITOR_INTERVAL only");
                    failures = None;
                }
                next = next.min(tokio::time::Instant::now() + after_failure);
                continue;
            }
        }
        next = tokio::time::Instant::now() + config.interval;
        let jobs = match jetstream
            .get_key_value(vexxy_events::subjects::STATUS_BUCKET)
            .await
        {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(error = %e, "janitor cannot open the vexxy-jobs KV bucket; skipping this sweep");
                continue;
            }
        };
        match sweep(&client, &jobs, &config, Utc::now()).await {
            Ok(sweep) => {
                if !sweep.deleted.is_empty() {
                    tracing::info!(
                        deleted = sweep.deleted.len(),
                        spared = sweep.spared.len(),
                        "janitor sweep"
                    );
                }
                if let Some(due) = sweep
                    .oldest_young
                    .filter(|created| *created < started)
                    .and_then(|created| due_after(created, config.ttl))
                {
                    next = next.min(due);
                }
            }
            Err(e) => tracing::warn!(error = %e, "janitor sweep failed; retrying next interval"),
        }
    }
}

/// Past the TTL by this much before sweeping: creation times have whole seconds and "older than
/// the TTL" is strict.
const SWEEP_MARGIN: Duration = Duration::from_secs(2);

async fn next_failure(failures: &mut Option<async_nats::Subscriber>) -> Option<()> {
    use futures::StreamExt as _;
    match failures {
        Some(failures) => failures.next().await.map(|_| ()),
        None => std::future::pending().await,
    }
}

/// When a sandbox created at `created` is older than `ttl`.
fn due_after(created: DateTime<Utc>, ttl: Duration) -> Option<tokio::time::Instant> {
    let due = created + chrono::Duration::from_std(ttl + SWEEP_MARGIN).ok()?;
    let wait = (due - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    Some(tokio::time::Instant::now() + wait)
}

/// One pass over the sandbox namespace at time `now`.
pub async fn sweep(
    client: &Client,
    jobs: &kv::Store,
    config: &JanitorConfig,
    now: DateTime<Utc>,
) -> Result<Sweep, JanitorError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), &config.namespace);
    let list = api
        .list(&ListParams::default().labels(MANAGED_BY_SELECTOR))
        .await
        .map_err(|source| JanitorError::List {
            namespace: config.namespace.clone(),
            source,
        })?;
    let ttl = chrono::Duration::from_std(config.ttl).unwrap_or(chrono::Duration::MAX);
    let mut sweep = Sweep::default();
    for deployment in list.items {
        let meta = &deployment.metadata;
        let Some(name) = meta.name.clone() else {
            continue;
        };
        // Client-side check as well: a server that ignores label selectors must not make the
        // janitor delete someone else's Deployment.
        if meta
            .labels
            .as_ref()
            .and_then(|l| l.get("app.kubernetes.io/managed-by"))
            .map(String::as_str)
            != Some("vexxy")
        {
            continue;
        }
        let created = meta
            .creation_timestamp
            .as_ref()
            .and_then(|t| DateTime::<Utc>::from_timestamp(t.0.as_second(), 0));
        let old = created.is_some_and(|c| now.signed_duration_since(c) > ttl);
        if !old {
            if let Some(created) = created {
                sweep.oldest_young = Some(sweep.oldest_young.map_or(created, |o| o.min(created)));
            }
            sweep.spared.push(name);
            continue;
        }
        let job_id = meta
            .labels
            .as_ref()
            .and_then(|l| l.get(JOB_ID_LABEL))
            .cloned();
        let live = match &job_id {
            Some(job_id) => job_is_live(jobs, job_id).await?,
            None => false,
        };
        if live {
            sweep.spared.push(name);
            continue;
        }
        match delete_sandbox(client, &config.namespace, &name).await {
            Ok(()) => {
                tracing::info!(
                    namespace = %config.namespace, deployment = %name, job_id = job_id.as_deref().unwrap_or("<none>"),
                    created = ?created, "janitor deleted an orphaned sandbox (older than K8S_JOB_TTL_SECONDS, job not running)"
                );
                sweep.deleted.push(name);
            }
            Err(e) => {
                tracing::warn!(deployment = %name, error = %e, "janitor could not delete a sandbox")
            }
        }
    }
    Ok(sweep)
}

/// Live = the KV record exists and is not final. A record vexxy cannot parse counts as live:
/// never delete a sandbox on a guess.
async fn job_is_live(jobs: &kv::Store, job_id: &str) -> Result<bool, JanitorError> {
    match status::read(jobs, job_id).await {
        Ok(None) => Ok(false),
        Ok(Some((status, _revision))) => Ok(!status.state.is_final()),
        Err(e @ StatusError::Corrupt { .. }) => {
            tracing::warn!(job_id, error = %e, "unreadable job status; sparing its sandbox");
            Ok(true)
        }
        Err(e) => Err(JanitorError::Status {
            job_id: job_id.to_string(),
            message: e.to_string(),
        }),
    }
}
