//! The wait decision for one job, as a plain function of what the watches show, what this job
//! remembers from earlier looks, and the time. No I/O: the handler feeds it and acts on the step.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use vexxy_events::FailureReason;
use vexxy_events::pipeline::{Observation, SandboxRef};
use vexxy_kubescape::names::{ContainerType, InstanceOwner, instance_id, slug_for};
use vexxy_kubescape::{Completion, ProfileStatus};

use crate::config::{OnTimeout, WaitConfig};
use crate::summary::{ContainerSummary, DeploymentSummary, PodSummary, ProfileSummary, VexSummary};

/// How long the watch may lag behind deploy's create before one GET settles whether the
/// Deployment exists.
pub const DEPLOYMENT_APPEAR_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How soon a job reads its profile and VEX again when a read failed and what it holds would
/// let it conclude.
pub const STORAGE_READ_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// The job's pod and container as Kubescape names them.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub pod: PodSummary,
    pub container: ContainerSummary,
    pub owner_name: String,
    pub instance_id: String,
    pub slug: String,
}

/// What the watches and the job's own reads show for one job right now.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub deployments_synced: bool,
    pub deployment: Option<DeploymentSummary>,
    pub pods_synced: bool,
    pub target: Option<Target>,
    /// The storage watches have opened (they are hints; the job's reads are the truth, and
    /// `storage_read_failed` says whether this look's failed).
    pub profiles_synced: bool,
    pub profile: Option<ProfileSummary>,
    pub vex_synced: bool,
    pub vex: Option<VexSummary>,
    /// Receipt position at which the current VEX watch began.
    pub vex_watch_began: Option<u64>,
    /// This look's GET of the job's profile or VEX failed: what is held may be out of date.
    pub storage_read_failed: bool,
    /// Last error of each watch that is failing and of this look's reads, for messages.
    pub api_errors: Vec<String>,
}

/// What this job learnt from earlier looks (lost on restart; everything else comes from the
/// ticket and the cluster).
#[derive(Debug, Clone, Default)]
pub struct JobMemory {
    /// When this handler first looked at the job.
    pub first_look: Option<DateTime<Utc>>,
    pub deployment_seen: bool,
    /// An API GET found the Deployment although the watch had not delivered it yet.
    pub deployment_confirmed: bool,
    pub pull_error_since: Option<DateTime<Utc>>,
    pub last_target: Option<Target>,
    /// When this job first saw the profile completed: the window's end and the settle start.
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing decided: wait for a change, or until this time.
    Wait {
        until: DateTime<Utc>,
    },
    /// The watch shows no Deployment and never did: ask the API once before calling it gone.
    ConfirmDeploymentGone,
    Done(Box<Observation>),
    Fail {
        reason: FailureReason,
        message: String,
        retryable: bool,
    },
}

/// The moment this job gives up: analysis window + grace after deploy created the sandbox.
pub fn deadline(config: &WaitConfig, sandbox: &SandboxRef, window_seconds: u64) -> DateTime<Utc> {
    let window = ChronoDuration::seconds(window_seconds.min(i64::MAX as u64 / 2) as i64);
    let grace = ChronoDuration::from_std(config.grace).unwrap_or(ChronoDuration::MAX);
    sandbox
        .created_at
        .checked_add_signed(window + grace)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The pod Kubescape profiles for this job: a live pod (newest first) with the sandbox container.
pub fn target(pods: &[PodSummary], container: &str) -> Option<Target> {
    let mut candidates: Vec<&PodSummary> = pods.iter().collect();
    candidates.sort_by_key(|p| (!p.deleting, p.created_at));
    let pod = candidates.pop()?;
    let status = pod
        .containers
        .iter()
        .find(|c| c.name == container)
        .cloned()
        .unwrap_or_else(|| ContainerSummary {
            name: container.to_string(),
            ..ContainerSummary::default()
        });
    let (api_version, kind, owner_name) = match &pod.owner {
        Some(owner) => (
            owner.api_version.as_str(),
            owner.kind.as_str(),
            owner.name.as_str(),
        ),
        None => ("v1", "Pod", pod.name.as_str()),
    };
    let owner = InstanceOwner {
        api_version,
        namespace: &pod.namespace,
        kind,
        name: owner_name,
    };
    Some(Target {
        instance_id: instance_id(&owner, ContainerType::Container, container),
        slug: slug_for(&owner, ContainerType::Container, container),
        owner_name: owner_name.to_string(),
        pod: pod.clone(),
        container: status,
    })
}

fn after(t: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    t.checked_add_signed(ChronoDuration::from_std(d).unwrap_or(ChronoDuration::MAX))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

pub fn assess(
    config: &WaitConfig,
    sandbox: &SandboxRef,
    deadline: DateTime<Utc>,
    snapshot: &Snapshot,
    memory: &mut JobMemory,
    now: DateTime<Utc>,
) -> Step {
    let mut wake = deadline;

    if snapshot.deployments_synced {
        match &snapshot.deployment {
            Some(deployment) if deployment.deleting => {
                return sandbox_gone(sandbox, "is being deleted");
            }
            Some(_) => memory.deployment_seen = true,
            None if memory.deployment_seen => return sandbox_gone(sandbox, "was deleted"),
            None if !memory.deployment_confirmed => {
                // Deploy created it before handing on; the watch normally shows it within
                // milliseconds, so ask the API only if it stays unseen.
                let ask_at = after(
                    *memory.first_look.get_or_insert(now),
                    DEPLOYMENT_APPEAR_WAIT,
                );
                if now >= ask_at {
                    return Step::ConfirmDeploymentGone;
                }
                wake = wake.min(ask_at);
            }
            None => {}
        }
    }

    if let Some(target) = &snapshot.target {
        memory.last_target = Some(target.clone());
        if let Some((message, since)) = &target.pod.unschedulable {
            let fail_at = after(since.unwrap_or(now).min(now), config.unschedulable_grace);
            if now >= fail_at {
                return unschedulable(sandbox, target, message);
            }
            wake = wake.min(fail_at);
        }
        match target
            .container
            .waiting
            .as_ref()
            .map(|(reason, message)| (reason.as_str(), message.as_str()))
        {
            Some((
                reason @ ("ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull"),
                message,
            )) => {
                return pull_failed(target, reason, message);
            }
            Some(("ErrImagePull", message)) => {
                let since = *memory.pull_error_since.get_or_insert(now);
                let fail_at = after(since, config.image_pull_grace);
                if now >= fail_at {
                    return pull_failed(target, "ErrImagePull", message);
                }
                wake = wake.min(fail_at);
            }
            Some(("CrashLoopBackOff", _))
                if target.container.restarts >= config.crashloop_restarts =>
            {
                return crash_looping(target);
            }
            _ => memory.pull_error_since = None,
        }
    }

    // Conclusions from the profile and VEX need this look's read of them; a failed read is
    // retried before the deadline, and at the deadline the job goes on with what it holds.
    let storage_unread = snapshot.storage_read_failed && now < deadline;
    let retry_read = after(now, STORAGE_READ_RETRY);
    if let (Some(target), Some(profile)) = (memory.last_target.clone(), &snapshot.profile) {
        if profile.completed_complete() {
            let completed_at = *memory.completed_at.get_or_insert(now);
            let final_at = evidence_final_at(config, profile, snapshot, completed_at);
            if now >= final_at {
                if storage_unread {
                    return Step::Wait {
                        until: wake.min(retry_read),
                    };
                }
                return Step::Done(Box::new(observation(
                    sandbox,
                    &target,
                    Some(profile),
                    completed_at,
                    false,
                )));
            }
            if now >= deadline {
                // The VEX held is not shown final (a learning-time scan may have written it):
                // like any unfinished analysis, partial or `analysis_timeout` per
                // VEXXY_ON_TIMEOUT, never a complete result.
                return on_deadline(config, sandbox, snapshot, memory, now);
            }
            return Step::Wait {
                until: wake.min(final_at),
            };
        }
        // `completed` with completion `partial` is not final: a container that exited non-zero
        // restarts and its profile can still become `completed`/`complete`; the deadline
        // decides (see `on_deadline`).
        if profile
            .status
            .as_ref()
            .is_some_and(ProfileStatus::learning_failed)
        {
            if storage_unread {
                return Step::Wait {
                    until: wake.min(retry_read),
                };
            }
            return learning_failed(config, sandbox, &target, profile, now);
        }
    }

    if now >= deadline {
        return on_deadline(config, sandbox, snapshot, memory, now);
    }
    Step::Wait { until: wake }
}

/// From when the VEX held for a completed profile is final, given what the watches and this
/// look's reads show now (a later VEX or profile event re-evaluates; `completed_at` is when this
/// job first saw the completion).
///
/// kubevuln's ScanCP scans only `ready` (learning-time) and `completed` profiles, and the
/// operator, which triggers it, learns of profile versions through the same watch API as this
/// process. So what may be held depends on the profile's learning history:
/// * **Rule A — no learning-time scan was possible**: the storage watch delivered the profile's
///   creation and every version since (no re-open in between; the version held is not one only
///   a GET found) and no version was `ready` (a window shorter than node-agent's first save).
///   Every VEX under the slug is then a scan of the completed profile: a version received as a
///   watch event is final at once, in whatever order the VEX and profile streams delivered. A
///   VEX known only from a GET falls back to [`vex_written_after_completion`] or the settle
///   time.
/// * **Rule B — a learning-time scan may still be running** (a `ready` version was seen, or the
///   history is unknown after a re-opened watch, a restart or a version only a GET found): a
///   scan of a `ready` profile that started
///   before completion can write after it, and nothing on the VEX says which profile version it
///   was built from. So on top of the write after completion (or the settle time), wait until
///   such a scan must have ended: `VEXXY_LEARNING_SCAN_BOUND` after the last `ready` version
///   was received, or, with an unknown history, after this job first saw the completion (every
///   `ready` version was written before that). A write received before that bound ran out may
///   itself be a learning-time scan's, so it counts only if received after it; otherwise the
///   job waits the bound from its first look at completion, by when the completed profile's
///   own scan has ended as well.
fn evidence_final_at(
    config: &WaitConfig,
    profile: &ProfileSummary,
    snapshot: &Snapshot,
    completed_at: DateTime<Utc>,
) -> DateTime<Utc> {
    let vex = snapshot.vex.as_ref();
    let written_after = || vex_written_after_completion(profile, vex, snapshot.vex_watch_began);
    let written_or_settled = |written: bool| {
        if written {
            completed_at
        } else {
            after(completed_at, config.vex_settle)
        }
    };
    if profile.never_ready_since_creation() {
        let received_live = vex.is_some_and(|v| !v.received.listed);
        return written_or_settled(received_live || written_after());
    }
    let learning_scans_from = match profile.last_ready_received {
        Some(ready) if profile.history_known() => ready,
        _ => completed_at,
    };
    let learning_scans_end = after(learning_scans_from, config.learning_scan_bound);
    // A write after completion may still be a learning-time scan's, and the completed
    // profile's own scan may not have written yet. Only a VEX version received once every
    // learning-time scan has ended is the completed profile's scan; without one, wait until
    // that scan has ended too (it starts after completion and is bounded the same way), so the
    // VEX held then is its result, or one it found unchanged.
    let completed_scan_seen = written_after()
        && vex.is_some_and(|v| !v.received.listed && v.received.at >= learning_scans_end);
    let scans_over = if completed_scan_seen {
        learning_scans_end
    } else {
        after(completed_at, config.learning_scan_bound)
    };
    written_or_settled(written_after()).max(scans_over)
}

/// Whether the watch events prove that the VEX held now was written after the profile completed
/// (kubevuln's scan of the completed profile), so there is no need to sit out the settle time.
///
/// Proof is receive order within this process: the VEX version arrived as a watch event after
/// the profile version that first showed completion. Anything less certain is no proof and the
/// job settles instead, because a VEX from a learning-time scan (kubevuln writes one per profile
/// update while learning) would hide what the container loaded later. This check alone cannot
/// tell a learning-time scan that *finishes* after completion from the scan of the completed
/// profile; [`evidence_final_at`] adds `VEXXY_LEARNING_SCAN_BOUND` for that (rule B) and skips
/// this check when no learning-time scan was possible (rule A). No proof here:
/// * a VEX version received before completion, even in the same burst: two watch streams do
///   not order against each other, so it may be the learning-time scan;
/// * a VEX version only a GET found (process start, a write while the watch re-opened, a read
///   ahead of the watch): written at an unknown time before the read;
/// * a completion itself learnt from a GET (it happened at an unknown time before that read):
///   only a VEX watch (re)opened after it streams writes known to be later.
///
/// The residual risk is a VEX stream lagging its profile stream by more than the gap between a
/// learning-time write and completion (minutes with Kubescape's defaults). Comparing
/// resourceVersions would not remove it: they are opaque and the two kinds need not share an
/// order. Comparing kubevuln's `spec.last_updated` would need a GET per job and trust two clocks.
fn vex_written_after_completion(
    profile: &ProfileSummary,
    vex: Option<&VexSummary>,
    vex_watch_began: Option<u64>,
) -> bool {
    let (Some(completed), Some(vex)) = (profile.completed_received, vex) else {
        return false;
    };
    if vex.received.listed || vex.received.seq <= completed.seq {
        return false;
    }
    !completed.listed || vex_watch_began.is_some_and(|began| began > completed.seq)
}

fn observation(
    sandbox: &SandboxRef,
    target: &Target,
    profile: Option<&ProfileSummary>,
    window_end: DateTime<Utc>,
    partial: bool,
) -> Observation {
    let annotation = |value: Option<&str>| value.unwrap_or("none").to_string();
    Observation {
        pod: target.pod.name.clone(),
        replicaset: target.owner_name.clone(),
        instance_slug: target.slug.clone(),
        instance_id: target.instance_id.clone(),
        learning_status: annotation(profile.and_then(|p| Some(p.status.as_ref()?.as_str()))),
        learning_completion: annotation(
            profile.and_then(|p| Some(p.completion.as_ref()?.as_str())),
        ),
        window_start: target
            .container
            .started_at
            .or(target.pod.created_at)
            .unwrap_or(sandbox.created_at),
        window_end,
        container_restarts: target.container.restarts,
        partial,
    }
}

/// Learning failed (`failed`, `too-large`, `missing-runtime`): kubevuln will not write a
/// relevancy VEX for the profile, and it will not recover.
fn learning_failed(
    config: &WaitConfig,
    sandbox: &SandboxRef,
    target: &Target,
    profile: &ProfileSummary,
    now: DateTime<Utc>,
) -> Step {
    if config.on_timeout == OnTimeout::Partial {
        return Step::Done(Box::new(observation(
            sandbox,
            target,
            Some(profile),
            now,
            true,
        )));
    }
    let status = profile.status.as_ref().map_or("", ProfileStatus::as_str);
    Step::Fail {
        reason: FailureReason::NoVexProduced,
        message: format!(
            "Kubescape's ContainerProfile {}/{} for pod {} ended with status `{status}`, so kubevuln writes no relevancy VEX for it (`too-large`: the profile exceeded the storage size limit; `missing-runtime`: node-agent could not reach the container runtime; `failed`: see node-agent's logs). Fix the cause in the Kubescape installation, then submit the job again. (VEXXY_ON_TIMEOUT=partial would go on with the results marked partial.)",
            sandbox.namespace, target.slug, target.pod.name
        ),
        retryable: true,
    }
}

/// The profile is `completed` with a completion other than `complete`.
fn partial_profile(profile: &ProfileSummary) -> bool {
    profile.status == Some(ProfileStatus::Completed) && !profile.completed_complete()
}

/// Why a profile that stayed `completed`/`partial` until the deadline is partial, in words.
fn partial_profile_explained(sandbox: &SandboxRef, target: &Target) -> String {
    let container = &target.container;
    let restarts = match &container.last_exit {
        Some((code, _)) if *code != 0 => format!(
            " (this one restarted {} times, last exit code {code})",
            container.restarts
        ),
        _ if container.restarts > 0 => {
            format!(" (this one restarted {} times)", container.restarts)
        }
        _ => String::new(),
    };
    format!(
        "Kubescape's ContainerProfile {}/{} for pod {} stayed `completed` with completion `partial` until the deadline: node-agent saw the container only part of its life, and kubevuln writes no relevancy VEX for partial profiles. That happens when the container exits with a non-zero code{restarts} (the restarted container can still complete the profile, but did not before the deadline), when node-agent restarts or drops events under load, or when the container was already running when node-agent started. Check the container's exit code and node-agent's logs and restarts, make sure node-agent is ready before the sandbox starts, or raise the analysis window or VEXXY_WAIT_GRACE so a restarted container can finish learning; then submit the job again",
        sandbox.namespace, target.slug, target.pod.name
    )
}

fn on_deadline(
    config: &WaitConfig,
    sandbox: &SandboxRef,
    snapshot: &Snapshot,
    memory: &JobMemory,
    now: DateTime<Utc>,
) -> Step {
    if let Some(target) = &memory.last_target {
        let evidence = snapshot.profile.is_some() || snapshot.vex.is_some();
        if evidence && config.on_timeout == OnTimeout::Partial {
            return Step::Done(Box::new(observation(
                sandbox,
                target,
                snapshot.profile.as_ref(),
                now,
                true,
            )));
        }
        if snapshot.profile.as_ref().is_some_and(partial_profile) {
            return Step::Fail {
                reason: FailureReason::AnalysisTimeout,
                message: format!(
                    "{}. (VEXXY_ON_TIMEOUT=partial would go on with the results marked partial.)",
                    partial_profile_explained(sandbox, target)
                ),
                retryable: true,
            };
        }
    }
    let blind = !(snapshot.deployments_synced
        && snapshot.pods_synced
        && snapshot.profiles_synced
        && snapshot.vex_synced)
        || snapshot.storage_read_failed;
    if blind && !snapshot.api_errors.is_empty() {
        return Step::Fail {
            reason: FailureReason::KubernetesUnavailable,
            message: format!(
                "the analysis deadline passed while the Kubernetes API could not be watched or read ({}). Check that the API server is reachable, that vexxy's service account may get/list/watch pods and deployments in {} and get containerprofiles there and openvulnerabilityexchangecontainers in the Kubescape namespace (and watch both cluster-wide), and that Kubescape's storage APIService is available; then submit the job again",
                snapshot.api_errors.join("; "),
                sandbox.namespace
            ),
            retryable: true,
        };
    }
    Step::Fail {
        reason: FailureReason::AnalysisTimeout,
        message: format!(
            "Kubescape did not finish analysing sandbox {}/{} before the deadline ({}): {}. Check that Kubescape's node-agent is running on the node of the pod, that the sandbox started after node-agent was ready, and that the learning period (pod label kubescape.io/max-sniffing-time, node-agent maxLearningPeriod) fits the analysis window; or raise VEXXY_WAIT_GRACE{}",
            sandbox.namespace,
            sandbox.deployment,
            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            describe(sandbox, snapshot, memory),
            if config.on_timeout == OnTimeout::Fail {
                ", or set VEXXY_ON_TIMEOUT=partial to go on with partial results"
            } else {
                ""
            }
        ),
        retryable: true,
    }
}

/// Where Kubescape got to, in words, for the timeout message.
fn describe(sandbox: &SandboxRef, snapshot: &Snapshot, memory: &JobMemory) -> String {
    let Some(target) = &memory.last_target else {
        return format!(
            "no pod of the job ever appeared in {} (check the Deployment's events)",
            sandbox.namespace
        );
    };
    let container = &target.container;
    let pod_state = if container.running {
        format!(
            "container {} of pod {} is running ({} restarts)",
            container.name, target.pod.name, container.restarts
        )
    } else if let Some((reason, message)) = &container.waiting {
        format!(
            "container {} of pod {} is waiting: {reason} {message}",
            container.name, target.pod.name
        )
    } else {
        format!(
            "pod {} is {}",
            target.pod.name,
            if target.pod.phase.is_empty() {
                "pending"
            } else {
                &target.pod.phase
            }
        )
    };
    let profile_state = match &snapshot.profile {
        None => format!(
            "no ContainerProfile {}/{} exists, so node-agent has not recorded this container",
            sandbox.namespace, target.slug
        ),
        Some(profile) => format!(
            "ContainerProfile {}/{} has status `{}` and completion `{}` (learning not finished)",
            sandbox.namespace,
            target.slug,
            profile
                .status
                .as_ref()
                .map_or("none", ProfileStatus::as_str),
            profile
                .completion
                .as_ref()
                .map_or("none", Completion::as_str)
        ),
    };
    let vex_state = if snapshot.vex.is_some() {
        "a VEX from an earlier scan exists"
    } else {
        "no VEX exists"
    };
    format!("{pod_state}; {profile_state}; {vex_state}")
}

fn sandbox_gone(sandbox: &SandboxRef, what: &str) -> Step {
    Step::Fail {
        reason: FailureReason::SandboxDisappeared,
        message: format!(
            "the sandbox Deployment {}/{} {what} while Kubescape was still analysing it, so no complete evidence exists. Find out who deletes vexxy sandboxes (a namespace cleanup, another controller, K8S_JOB_TTL_SECONDS shorter than the analysis) and submit the job again",
            sandbox.namespace, sandbox.deployment
        ),
        retryable: true,
    }
}

fn unschedulable(sandbox: &SandboxRef, target: &Target, message: &str) -> Step {
    Step::Fail {
        reason: FailureReason::Unschedulable,
        message: format!(
            "pod {}/{} cannot be scheduled: {message}. Lower SANDBOX_CPU_REQUEST / SANDBOX_MEMORY_REQUEST, or add node capacity in the cluster, then submit the job again",
            sandbox.namespace, target.pod.name
        ),
        retryable: true,
    }
}

fn pull_failed(target: &Target, reason: &str, message: &str) -> Step {
    let image = if target.container.image.is_empty() {
        "the image"
    } else {
        &target.container.image
    };
    Step::Fail {
        reason: FailureReason::ImagePullFailed,
        message: format!(
            "the cluster cannot pull {image} for pod {} ({reason}: {message}). Check that the digest exists in the registry and that the sandbox namespace has pull secrets for a private registry, then submit the job again",
            target.pod.name
        ),
        retryable: true,
    }
}

fn crash_looping(target: &Target) -> Step {
    let container = &target.container;
    let last_exit = match &container.last_exit {
        Some((code, reason)) if reason.is_empty() => format!("last exit code {code}"),
        Some((code, reason)) => format!("last exit code {code} ({reason})"),
        None => "last exit code unknown".to_string(),
    };
    Step::Fail {
        reason: FailureReason::ContainerCrashLooping,
        message: format!(
            "container {} of pod {} keeps crashing (CrashLoopBackOff after {} restarts, {last_exit}), so there is nothing to observe. Check the request's `command`, `args` and `environment`, and that the image runs without a TTY or interactive input",
            container.name, target.pod.name, container.restarts
        ),
        retryable: false,
    }
}

#[cfg(test)]
mod tests;
