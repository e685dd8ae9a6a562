//! Compact summaries of the watched objects: only what the wait decision needs, so thousands of
//! jobs in flight cost kilobytes, not whole Pod specs and Kubescape documents.

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::DynamicObject;
use vexxy_kubescape::{Completion, ProfileStatus, keys};

/// The label deploy puts on the sandbox Deployment and its pods.
pub const JOB_ID_LABEL: &str = "vexxy.io/job-id";

#[derive(Debug, Clone, PartialEq)]
pub struct OwnerSummary {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerSummary {
    pub name: String,
    pub image: String,
    pub restarts: u32,
    /// When the current (or last) run of the container started.
    pub started_at: Option<DateTime<Utc>>,
    pub running: bool,
    /// `state.waiting` reason and message.
    pub waiting: Option<(String, String)>,
    /// Exit code and reason of the previous run (`lastState.terminated`).
    pub last_exit: Option<(i32, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodSummary {
    pub name: String,
    pub namespace: String,
    pub owner: Option<OwnerSummary>,
    pub created_at: Option<DateTime<Utc>>,
    pub deleting: bool,
    pub phase: String,
    /// `PodScheduled=False` with reason `Unschedulable`: its message and since when.
    pub unschedulable: Option<(String, Option<DateTime<Utc>>)>,
    pub containers: Vec<ContainerSummary>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentSummary {
    pub deleting: bool,
}

/// When this process first held an object version: a position in one order shared by all
/// watches and reads (so a profile and a VEX can be compared), the local time, and whether the
/// version came from a list or a GET rather than from a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub seq: u64,
    /// Delivered by a (re)list or found by a GET rather than as a watch event: the write happened
    /// at some unknown time before, so its order against other writes is unknown.
    pub listed: bool,
    /// This process's clock when the version arrived (never compared with cluster clocks).
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProfileSummary {
    /// `kubescape.io/status`; any value kept (an unknown one as `Other`).
    pub status: Option<ProfileStatus>,
    /// `kubescape.io/completion`.
    pub completion: Option<Completion>,
    pub resource_version: Option<String>,
    pub received: Receipt,
    /// Receipt of the first version that showed `completed` + `complete`, kept across later
    /// versions that still do.
    pub completed_received: Option<Receipt>,
    /// The storage watch delivered the object's creation (an ADDED event) and has not been
    /// re-opened since, so it delivered every version from then on. A re-open makes it false for
    /// good: versions may have come and gone while no watch was open. See
    /// [`ProfileSummary::history_known`] for what else the learning history needs.
    pub history_from_creation: bool,
    /// Local receive time of the last version with status `ready` (a learning-time save, which
    /// the operator has kubevuln scan), kept across later versions.
    pub last_ready_received: Option<DateTime<Utc>>,
}

impl ProfileSummary {
    pub fn completed_complete(&self) -> bool {
        self.status == Some(ProfileStatus::Completed)
            && self.completion == Some(Completion::Complete)
    }

    /// Every version since the object's creation reached this table, in order: the watch
    /// delivered the creation and the version held now (a version only a GET found may have
    /// overtaken versions the watch has not delivered yet, a `ready` one among them), and has
    /// not been re-opened in between. `last_ready_received` is then the whole learning history.
    pub fn history_known(&self) -> bool {
        self.history_from_creation && !self.received.listed
    }

    /// This process saw every version since creation and none was `ready`: kubevuln (which
    /// scans only `ready` and `completed` profiles) cannot have scanned it while it learnt.
    pub fn never_ready_since_creation(&self) -> bool {
        self.history_known() && self.last_ready_received.is_none()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VexSummary {
    pub resource_version: Option<String>,
    pub received: Receipt,
}

/// A summary of a storage object (profile or VEX), as the storage watch and the per-job GETs
/// keep it.
pub trait StorageSummary: Clone {
    fn received(&self) -> Receipt;
    fn resource_version(&self) -> Option<&str>;
    /// A new version (or the same one seen again) keeps what the versions held before it
    /// established.
    fn carry(previous: &Self, next: &mut Self);
    /// The storage watch was (re)opened: versions written while none was open were missed.
    fn watch_reopened(&mut self) {}
}

/// Whether `next` is the version `previous` holds, delivered by the watch after a GET found it
/// first: it then takes the watch's receipt, in the order the watch gives, as if the GET had not
/// been made.
fn delivered_after_a_get(previous: Receipt, next: Receipt, same_version: bool) -> bool {
    same_version && previous.listed && !next.listed
}

fn same_version(previous: Option<&str>, next: Option<&str>) -> bool {
    previous.is_some() && previous == next
}

impl StorageSummary for ProfileSummary {
    fn received(&self) -> Receipt {
        self.received
    }

    fn resource_version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }

    /// A new profile version keeps what the versions before it already established: its receipt
    /// when it is in fact the same version (seen again by a GET), the moment completion was first
    /// seen, the last `ready` version, and whether the watch saw the creation.
    fn carry(previous: &Self, next: &mut Self) {
        let same = same_version(
            previous.resource_version.as_deref(),
            next.resource_version.as_deref(),
        );
        let late = delivered_after_a_get(previous.received, next.received, same);
        if same {
            if !late {
                next.received = previous.received;
            }
            next.last_ready_received = previous.last_ready_received;
        } else if next.last_ready_received.is_none() {
            next.last_ready_received = previous.last_ready_received;
        }
        next.history_from_creation |= previous.history_from_creation;
        if next.completed_received.is_some()
            && let Some(first) = previous.completed_received
            && !(late && first == previous.received)
        {
            next.completed_received = Some(first);
        }
    }

    fn watch_reopened(&mut self) {
        self.history_from_creation = false;
    }
}

impl StorageSummary for VexSummary {
    fn received(&self) -> Receipt {
        self.received
    }

    fn resource_version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }

    /// The same VEX version seen again (by a GET) keeps the receipt of its first sighting.
    fn carry(previous: &Self, next: &mut Self) {
        let same = same_version(
            previous.resource_version.as_deref(),
            next.resource_version.as_deref(),
        );
        if same && !delivered_after_a_get(previous.received, next.received, same) {
            next.received = previous.received;
        }
    }
}

pub fn time(t: &Time) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)
}

/// The pod's job id and summary; pods without the job label are not vexxy's.
pub fn pod(pod: &Pod) -> Option<(String, PodSummary)> {
    let job_id = pod.metadata.labels.as_ref()?.get(JOB_ID_LABEL)?.clone();
    let status = pod.status.as_ref();
    let unschedulable = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })
        .map(|c| {
            (
                c.message.clone().unwrap_or_default(),
                c.last_transition_time.as_ref().and_then(time),
            )
        });
    let containers = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(container)
        .collect();
    let summary = PodSummary {
        name: pod.metadata.name.clone().unwrap_or_default(),
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        owner: pod
            .metadata
            .owner_references
            .as_ref()
            .and_then(|o| o.first())
            .map(|o| OwnerSummary {
                api_version: o.api_version.clone(),
                kind: o.kind.clone(),
                name: o.name.clone(),
            }),
        created_at: pod.metadata.creation_timestamp.as_ref().and_then(time),
        deleting: pod.metadata.deletion_timestamp.is_some(),
        phase: status.and_then(|s| s.phase.clone()).unwrap_or_default(),
        unschedulable,
        containers,
    };
    Some((job_id, summary))
}

fn container(status: &ContainerStatus) -> ContainerSummary {
    let state = status.state.as_ref();
    let running = state.and_then(|s| s.running.as_ref());
    let terminated = state.and_then(|s| s.terminated.as_ref());
    let started_at = running
        .and_then(|r| r.started_at.as_ref())
        .or_else(|| terminated.and_then(|t| t.started_at.as_ref()))
        .and_then(time);
    ContainerSummary {
        name: status.name.clone(),
        image: status.image.clone(),
        restarts: status.restart_count.max(0) as u32,
        started_at,
        running: running.is_some(),
        waiting: state.and_then(|s| s.waiting.as_ref()).map(|w| {
            (
                w.reason.clone().unwrap_or_default(),
                w.message.clone().unwrap_or_default(),
            )
        }),
        last_exit: status
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| (t.exit_code, t.reason.clone().unwrap_or_default())),
    }
}

pub fn deployment(deployment: &Deployment) -> Option<(String, DeploymentSummary)> {
    Some((
        deployment.metadata.name.clone()?,
        DeploymentSummary {
            deleting: deployment.metadata.deletion_timestamp.is_some(),
        },
    ))
}

/// A ContainerProfile in `namespace` (the storage group only watches cluster-wide, so the
/// namespace filter is ours), as received now; `created_under_watch` for an ADDED watch event.
pub fn profile(
    object: &DynamicObject,
    namespace: &str,
    received: Receipt,
    created_under_watch: bool,
) -> Option<(String, ProfileSummary)> {
    if object.metadata.namespace.as_deref() != Some(namespace) {
        return None;
    }
    let annotation = |key: &str| {
        object
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .cloned()
    };
    let mut summary = ProfileSummary {
        status: annotation(keys::STATUS).map(|value| ProfileStatus::parse(&value)),
        completion: annotation(keys::COMPLETION).map(|value| Completion::parse(&value)),
        resource_version: object.metadata.resource_version.clone(),
        received,
        completed_received: None,
        history_from_creation: created_under_watch,
        last_ready_received: None,
    };
    summary.completed_received = summary.completed_complete().then_some(received);
    // A learning-time save (`ready`), which kubevuln's ScanCP scans like a completed one.
    summary.last_ready_received =
        (summary.status == Some(ProfileStatus::Learning)).then_some(received.at);
    Some((object.metadata.name.clone()?, summary))
}

/// A VEX document in `namespace` (kubevuln's namespace), as received now.
pub fn vex(
    object: &DynamicObject,
    namespace: &str,
    received: Receipt,
) -> Option<(String, VexSummary)> {
    if object.metadata.namespace.as_deref() != Some(namespace) {
        return None;
    }
    Some((
        object.metadata.name.clone()?,
        VexSummary {
            resource_version: object.metadata.resource_version.clone(),
            received,
        },
    ))
}
