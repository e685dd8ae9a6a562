//! node-agent's ContainerProfile manager for one container run, as
//! `pkg/containerprofilemanager/v1` (node-agent `de4676bb`) does it:
//!
//! * `lifecycle.go` `addContainer`/`setContainerData`: a run starts `initializing`, completion
//!   `complete`, or `partial` for a container that was running before node-agent started
//!   (`PreRunningContainer`), with a new series id (a UUID) for every container, so a restarted
//!   container is a new series; `calculateSniffingTime`: the pod label
//!   `kubescape.io/max-sniffing-time`, else the configured maximum.
//! * `monitoring.go` `monitorContainer`: the update ticker's first tick, at `initialDelay`, sets
//!   status `ready` and saves; reaching the sniffing time sets `completed` and saves (forced);
//!   `lifecycle.go` `deleteContainer`: a container that stops before that saves once more
//!   (forced) with status `completed` if it exited 0, else `failed` (`GetTerminationExitCode`:
//!   the exit code of that container ID in the pod's status, -1 when the pod is gone).
//! * `saveContainerProfile`: each save is a new object `<slug>-<32 hex>` (`GetOneTimeSlug`) in
//!   the workload namespace, annotated with the series id, the previous and this report's
//!   timestamps (Go's `time.Time.String()`), status and completion; a save without new events and
//!   without a status change is skipped (`containerData.isEmpty`). The emulated container does
//!   everything it will ever do at its start, so only a run's first save carries data and the
//!   later ticks of the update period (`updateDataPeriod`, 10 m) have nothing to save.
//! * `handleSaveProfileError`: storage refusing a save because the profile is already
//!   `completed` (`ObjectCompletedError`) ends the run.
//!
//! Not modelled: the ≤5 % jitter on `initialDelay` and the default sniffing time, node-agent's
//! disk queue (saves reach storage at its next 5 s tick; here at once), dropped eBPF events and
//! node-agent restarts (both `partial`), the `too-large` status and splitting on 413.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::time::Instant;

use crate::catalogue::{self, ContainerInstance};
use crate::resources;
use crate::store::Store;

/// What storage answers a save for a profile that is already `completed`
/// (`pkg/registry/file/storage.go` `ObjectCompletedError`, as the API server wraps it).
pub const OBJECT_COMPLETED: &str = "object is completed";
/// Go's zero `time.Time` as `String()` prints it: the previous report of a run's first save.
pub const GO_ZERO_TIME: &str = "0001-01-01 00:00:00 +0000 UTC";

/// Go's `time.Time.String()` of a wall-clock reading `monotonic` after the process started:
/// `2026-12-07 06:20:00.123456789 +0000 UTC m=+12.000000001`.
pub fn go_time_string(t: DateTime<Utc>, monotonic: Duration) -> String {
    let mut s = t.format("%Y-%m-%d %H:%M:%S").to_string();
    let nanos = t.timestamp_subsec_nanos();
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        s.push('.');
        s.push_str(fraction.trim_end_matches('0'));
    }
    s.push_str(" +0000 UTC");
    s.push_str(&format!(
        " m=+{}.{:09}",
        monotonic.as_secs(),
        monotonic.subsec_nanos()
    ));
    s
}

/// The identity of one run of a container: its container ID, or (where the pod status carries
/// none) its restart count.
pub fn run_id(container_status: &Value) -> String {
    match container_status
        .get("containerID")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
    {
        Some(id) => id.to_string(),
        None => format!(
            "restart-{}",
            container_status
                .get("restartCount")
                .and_then(Value::as_i64)
                .unwrap_or(0)
        ),
    }
}

/// `GetTerminationExitCode`: the exit code of run `run` of the container in `container_status`
/// (its `lastState` for a restarting container, its `state` for one that stays terminated);
/// -1 when the status does not have it.
pub fn exit_code(container_status: Option<&Value>, run: &str) -> i64 {
    let Some(cs) = container_status else {
        return -1;
    };
    if cs.pointer("/state/running").is_some() && run_id(cs) == run {
        return -1;
    }
    for state in ["lastState", "state"] {
        let Some(terminated) = cs.get(state).and_then(|s| s.get("terminated")) else {
            continue;
        };
        let id = terminated
            .get("containerID")
            .and_then(Value::as_str)
            .unwrap_or("");
        // Without container IDs (a status that has none), the last exit is this run's.
        if id == run || (id.is_empty() && run.starts_with("restart-")) {
            return terminated
                .get("exitCode")
                .and_then(Value::as_i64)
                .unwrap_or(-1);
        }
    }
    -1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Recording, nothing saved yet.
    Initializing,
    /// Saved at least once, still learning.
    Ready,
    /// Learning is over for this run (sniffing time reached, container stopped, or storage
    /// refused a save): nothing more is saved.
    Ended,
}

/// One container run as node-agent follows it.
pub struct Run {
    pub instance: ContainerInstance,
    pub run_id: String,
    /// When the container started (as the emulator saw it running).
    pub t0: Instant,
    pub series_id: String,
    pub completion: &'static str,
    /// node-agent's `initialDelay`: the first tick of the update ticker.
    pub initial_delay: Duration,
    /// The maximum sniffing time of this container.
    pub sniffing: Duration,
    pub status: RunStatus,
    /// Events recorded and not saved yet (everything, until the first save).
    unreported: bool,
    /// This run's last save's report timestamp (Go format), the next save's previous one.
    previous_report: String,
}

impl Run {
    pub fn new(
        instance: ContainerInstance,
        run_id: String,
        t0: Instant,
        initial_delay: Duration,
        sniffing: Duration,
        pre_running: bool,
    ) -> Self {
        Run {
            instance,
            run_id,
            t0,
            series_id: uuid::Uuid::new_v4().to_string(),
            completion: if pre_running { "partial" } else { "complete" },
            initial_delay,
            sniffing,
            status: RunStatus::Initializing,
            unreported: true,
            previous_report: GO_ZERO_TIME.to_string(),
        }
    }

    /// When this run next does something by itself: its first save (only if learning outlasts
    /// it; a tie goes to the end of learning), else the end of learning.
    pub fn next_due(&self) -> Option<Instant> {
        match self.status {
            RunStatus::Ended => None,
            RunStatus::Initializing if self.initial_delay < self.sniffing => {
                Some(self.t0 + self.initial_delay)
            }
            _ => Some(self.t0 + self.sniffing),
        }
    }

    /// Does what is due at `now`: the end of learning (`completed`, forced save) or the first
    /// tick (`ready`).
    pub fn tick(&mut self, store: &Store, agent_started: Instant, now: Instant) {
        if self.status == RunStatus::Ended {
            return;
        }
        let elapsed = now.saturating_duration_since(self.t0);
        if elapsed >= self.sniffing {
            self.save(store, agent_started, "completed", true);
            self.status = RunStatus::Ended;
        } else if self.status == RunStatus::Initializing && elapsed >= self.initial_delay {
            self.status = RunStatus::Ready;
            self.save(store, agent_started, "ready", false);
        }
    }

    /// The container stopped (`deleteContainer`): a last, forced save unless learning was over.
    pub fn terminate(&mut self, store: &Store, agent_started: Instant, exit_code: i64) {
        if self.status == RunStatus::Ended {
            return;
        }
        let status = if exit_code == 0 {
            "completed"
        } else {
            "failed"
        };
        self.save(store, agent_started, status, true);
        self.status = RunStatus::Ended;
    }

    fn save(&mut self, store: &Store, agent_started: Instant, status: &str, force: bool) {
        if !self.unreported && !force {
            return;
        }
        let report = go_time_string(Utc::now(), agent_started.elapsed());
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let profile = catalogue::time_series_profile(
            &self.instance,
            &suffix,
            &catalogue::SeriesSave {
                status,
                completion: self.completion,
                series_id: &self.series_id,
                previous_report: &self.previous_report,
                report: &report,
                with_data: self.unreported,
            },
        );
        let ns = self.instance.workload_namespace.clone();
        match store.create(resources::kubescape("containerprofiles"), &ns, profile) {
            Ok(_) => {
                self.unreported = false;
                self.previous_report = report;
            }
            Err(e) if e.message.contains(OBJECT_COMPLETED) => {
                // `handleSaveProfileError`: the profile is complete already; stop recording.
                self.status = RunStatus::Ended;
            }
            Err(e) => {
                tracing::warn!(error = %e.message, slug = %self.instance.slug(), "emulated node-agent save failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_time_strings_look_like_go_s() {
        let t = DateTime::parse_from_rfc3339("2026-12-07T06:20:00.1234Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            go_time_string(t, Duration::from_millis(12_001)),
            "2026-12-07 06:20:00.1234 +0000 UTC m=+12.001000000"
        );
        let whole = DateTime::parse_from_rfc3339("2026-12-07T06:20:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            go_time_string(whole, Duration::ZERO),
            "2026-12-07 06:20:00 +0000 UTC m=+0.000000000"
        );
    }

    #[test]
    fn exit_codes_come_from_the_run_s_own_termination() {
        let restarted = json!({"containerID": "containerd://b", "restartCount": 1,
            "state": {"running": {}},
            "lastState": {"terminated": {"exitCode": 1, "containerID": "containerd://a"}}});
        assert_eq!(exit_code(Some(&restarted), "containerd://a"), 1);
        assert_eq!(exit_code(Some(&restarted), "containerd://b"), -1);
        let stopped = json!({"containerID": "containerd://a",
            "state": {"terminated": {"exitCode": 0, "containerID": "containerd://a"}}});
        assert_eq!(exit_code(Some(&stopped), "containerd://a"), 0);
        assert_eq!(exit_code(None, "containerd://a"), -1, "the pod is gone");
        let no_ids = json!({"restartCount": 1, "state": {"waiting": {}},
            "lastState": {"terminated": {"exitCode": 2}}});
        assert_eq!(exit_code(Some(&no_ids), &run_id(&json!({}))), 2);
    }

    #[test]
    fn learning_shorter_than_the_first_save_has_one_save_at_its_end() {
        let inst = catalogue_instance();
        let t0 = Instant::now();
        let short = Run::new(
            inst.clone(),
            "a".into(),
            t0,
            Duration::from_secs(120),
            Duration::from_secs(1),
            false,
        );
        assert_eq!(short.next_due(), Some(t0 + Duration::from_secs(1)));
        let tie = Run::new(
            inst.clone(),
            "a".into(),
            t0,
            Duration::from_secs(1),
            Duration::from_secs(1),
            false,
        );
        assert_eq!(tie.next_due(), Some(t0 + Duration::from_secs(1)));
        let long = Run::new(
            inst,
            "a".into(),
            t0,
            Duration::from_secs(2),
            Duration::from_secs(5),
            true,
        );
        assert_eq!(long.next_due(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(long.completion, "partial");
    }

    fn catalogue_instance() -> ContainerInstance {
        ContainerInstance {
            cluster: "c".into(),
            workload_namespace: "ns".into(),
            workload_kind: "Deployment".into(),
            workload_name: "web".into(),
            owner_api_version: "apps/v1".into(),
            owner_kind: "ReplicaSet".into(),
            owner_name: "web-5d78c9869d".into(),
            template_hash: "5d78c9869d".into(),
            pod_name: "web-5d78c9869d-abcde".into(),
            pod_uid: "uid".into(),
            container_name: "app".into(),
            image: "nginx@sha256:".to_string() + &"ab".repeat(32),
            image_digest: "sha256:".to_string() + &"ab".repeat(32),
            learning_period: "5s".into(),
            started_at: Utc::now(),
        }
    }
}
