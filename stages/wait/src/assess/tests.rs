use super::*;
use crate::summary::{OwnerSummary, Receipt};

/// Received as a watch event at this position (at `seq` seconds after the sandbox's creation).
fn live(seq: u64) -> Receipt {
    Receipt {
        seq,
        listed: false,
        at: at(seq as i64),
    }
}

/// Received in a (re)list at this position.
fn listed(seq: u64) -> Receipt {
    Receipt {
        seq,
        listed: true,
        at: at(seq as i64),
    }
}

fn sandbox() -> SandboxRef {
    SandboxRef {
        namespace: "vexxy-sandbox".into(),
        deployment: "vexxy-job1".into(),
        container: "app".into(),
        created_at: "2026-01-01T00:00:00Z".parse().unwrap(),
    }
}

fn at(seconds: i64) -> DateTime<Utc> {
    sandbox().created_at + ChronoDuration::seconds(seconds)
}

fn pod(waiting: Option<(&str, &str)>, restarts: u32) -> PodSummary {
    PodSummary {
        name: "vexxy-job1-abc-xyz".into(),
        namespace: "vexxy-sandbox".into(),
        owner: Some(OwnerSummary {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "vexxy-job1-abc".into(),
        }),
        created_at: Some(at(1)),
        deleting: false,
        phase: "Running".into(),
        unschedulable: None,
        containers: vec![ContainerSummary {
            name: "app".into(),
            image: "docker.io/library/nginx@sha256:00".into(),
            restarts,
            started_at: Some(at(2)),
            running: waiting.is_none(),
            waiting: waiting.map(|(r, m)| (r.to_string(), m.to_string())),
            last_exit: Some((1, "Error".into())),
        }],
    }
}

/// A profile that had a `ready` (learning-time) version, received live at 8 s when its history
/// is known (rule B: a learning-time VEX is possible).
fn profile_summary(status: &str, completion: &str, received: Receipt) -> ProfileSummary {
    let mut profile = ProfileSummary {
        status: Some(ProfileStatus::parse(status)),
        completion: Some(Completion::parse(completion)),
        resource_version: Some("1".into()),
        received,
        completed_received: None,
        history_from_creation: !received.listed,
        last_ready_received: Some(at(8)),
    };
    profile.completed_received = profile.completed_complete().then_some(received);
    profile
}

/// A completed profile this process saw from its creation and never `ready` (rule A: no
/// learning-time scan was possible).
fn never_ready_profile(completed: Receipt) -> ProfileSummary {
    ProfileSummary {
        last_ready_received: None,
        ..profile_summary("completed", "complete", completed)
    }
}

/// A snapshot whose profile version arrived live at position 10 and whose VEX (if any) arrived
/// live at position 5, i.e. from a learning-time scan; the VEX watch listed at position 0.
fn snapshot(pod: PodSummary, profile: Option<(&str, &str)>, vex_version: Option<&str>) -> Snapshot {
    Snapshot {
        deployments_synced: true,
        deployment: Some(DeploymentSummary { deleting: false }),
        pods_synced: true,
        target: target(&[pod], "app"),
        profiles_synced: true,
        profile: profile.map(|(s, c)| profile_summary(s, c, live(10))),
        vex_synced: true,
        vex: vex_version.map(|v| VexSummary {
            resource_version: Some(v.into()),
            received: live(5),
        }),
        vex_watch_began: Some(0),
        storage_read_failed: false,
        api_errors: vec![],
    }
}

/// The completed profile (first seen completed at `completed`) and the VEX version `vex`
/// received at `vex_received`.
fn completed_with_vex(completed: Receipt, vex: &str, vex_received: Receipt) -> Snapshot {
    let mut snapshot = snapshot(pod(None, 0), None, None);
    snapshot.profile = Some(profile_summary("completed", "complete", completed));
    snapshot.vex = Some(VexSummary {
        resource_version: Some(vex.into()),
        received: vex_received,
    });
    snapshot
}

fn step_at(snapshot: &Snapshot, memory: &mut JobMemory, seconds: i64) -> Step {
    assess(
        &config(),
        &sandbox(),
        at(1000),
        snapshot,
        memory,
        at(seconds),
    )
}

/// Settle 5 s; no learning-scan bound, so the tests of the receive-order check see it alone
/// (the bound has its own tests below).
fn config() -> WaitConfig {
    WaitConfig {
        vex_settle: std::time::Duration::from_secs(5),
        learning_scan_bound: std::time::Duration::ZERO,
        ..WaitConfig::default()
    }
}

fn bounded(seconds: u64) -> WaitConfig {
    WaitConfig {
        learning_scan_bound: std::time::Duration::from_secs(seconds),
        ..config()
    }
}

fn step_with(
    config: &WaitConfig,
    snapshot: &Snapshot,
    memory: &mut JobMemory,
    seconds: i64,
) -> Step {
    assess(config, &sandbox(), at(1000), snapshot, memory, at(seconds))
}

#[test]
fn slug_comes_from_the_owning_replicaset_and_container() {
    let target = target(&[pod(None, 0)], "app").unwrap();
    assert_eq!(
        target.instance_id,
        "apiVersion-apps/v1/namespace-vexxy-sandbox/kind-ReplicaSet/name-vexxy-job1-abc/containerName-app"
    );
    assert!(
        target.slug.starts_with("replicaset-vexxy-job1-abc-app-"),
        "{}",
        target.slug
    );
}

#[test]
fn completion_then_vex_write_finishes_with_the_completion_time_as_window_end() {
    let (config, mut memory, deadline) = (config(), JobMemory::default(), at(1000));
    let learning = snapshot(pod(None, 0), Some(("ready", "complete")), Some("7"));
    assert!(matches!(
        assess(
            &config,
            &sandbox(),
            deadline,
            &learning,
            &mut memory,
            at(10)
        ),
        Step::Wait { .. }
    ));
    let completed = snapshot(pod(None, 0), Some(("completed", "complete")), Some("7"));
    assert_eq!(
        assess(
            &config,
            &sandbox(),
            deadline,
            &completed,
            &mut memory,
            at(20)
        ),
        Step::Wait { until: at(25) }
    );
    let written = completed_with_vex(live(10), "8", live(11));
    let Step::Done(observation) =
        assess(&config, &sandbox(), deadline, &written, &mut memory, at(21))
    else {
        panic!()
    };
    assert!(!observation.partial);
    assert_eq!(
        (observation.window_start, observation.window_end),
        (at(2), at(20))
    );
    assert_eq!(observation.learning_status, "completed");
    assert_eq!(observation.replicaset, "vexxy-job1-abc");
}

#[test]
fn no_vex_write_finishes_after_the_settle_time() {
    let (config, mut memory) = (config(), JobMemory::default());
    let completed = snapshot(pod(None, 0), Some(("completed", "complete")), None);
    assert!(matches!(
        assess(
            &config,
            &sandbox(),
            at(1000),
            &completed,
            &mut memory,
            at(20)
        ),
        Step::Wait { .. }
    ));
    assert!(matches!(
        assess(
            &config,
            &sandbox(),
            at(1000),
            &completed,
            &mut memory,
            at(25)
        ),
        Step::Done(_)
    ));
}

#[test]
fn pull_failures_wait_for_backoff_or_the_grace() {
    let config = config();
    let mut memory = JobMemory::default();
    let err = snapshot(pod(Some(("ErrImagePull", "not found")), 0), None, None);
    assert!(matches!(
        assess(&config, &sandbox(), at(1000), &err, &mut memory, at(3)),
        Step::Wait { .. }
    ));
    let Step::Fail {
        reason, message, ..
    } = assess(&config, &sandbox(), at(1000), &err, &mut memory, at(40))
    else {
        panic!()
    };
    assert_eq!(reason, FailureReason::ImagePullFailed);
    assert!(
        message.contains("nginx@sha256:00") && message.contains("pull secrets"),
        "{message}"
    );
    let backoff = snapshot(pod(Some(("ImagePullBackOff", "")), 0), None, None);
    let step = assess(
        &config,
        &sandbox(),
        at(1000),
        &backoff,
        &mut JobMemory::default(),
        at(3),
    );
    assert!(matches!(
        step,
        Step::Fail {
            reason: FailureReason::ImagePullFailed,
            ..
        }
    ));
}

#[test]
fn crashloop_fails_after_the_configured_restarts() {
    let config = WaitConfig {
        crashloop_restarts: 2,
        ..config()
    };
    let once = snapshot(pod(Some(("CrashLoopBackOff", "")), 1), None, None);
    assert!(matches!(
        assess(
            &config,
            &sandbox(),
            at(1000),
            &once,
            &mut JobMemory::default(),
            at(3)
        ),
        Step::Wait { .. }
    ));
    let twice = snapshot(pod(Some(("CrashLoopBackOff", "")), 2), None, None);
    let Step::Fail {
        reason, message, ..
    } = assess(
        &config,
        &sandbox(),
        at(1000),
        &twice,
        &mut JobMemory::default(),
        at(3),
    )
    else {
        panic!()
    };
    assert_eq!(reason, FailureReason::ContainerCrashLooping);
    assert!(
        message.contains("last exit code 1") && message.contains("`command`"),
        "{message}"
    );
}

#[test]
fn unschedulable_fails_with_the_scheduler_message() {
    let mut pending = pod(None, 0);
    pending.containers.clear();
    pending.unschedulable = Some((
        "0/1 nodes are available: 1 Insufficient cpu.".into(),
        Some(at(1)),
    ));
    let step = assess(
        &config(),
        &sandbox(),
        at(1000),
        &snapshot(pending, None, None),
        &mut JobMemory::default(),
        at(2),
    );
    let Step::Fail {
        reason, message, ..
    } = step
    else {
        panic!()
    };
    assert_eq!(reason, FailureReason::Unschedulable);
    assert!(message.contains("Insufficient cpu") && message.contains("SANDBOX_CPU_REQUEST"));
}

#[test]
fn missing_deployment_is_confirmed_once_and_a_seen_one_that_vanishes_fails() {
    let mut gone = snapshot(pod(None, 0), None, None);
    gone.deployment = None;
    let mut memory = JobMemory::default();
    assert_eq!(
        assess(&config(), &sandbox(), at(1000), &gone, &mut memory, at(3)),
        Step::Wait { until: at(8) }
    );
    assert_eq!(
        assess(&config(), &sandbox(), at(1000), &gone, &mut memory, at(8)),
        Step::ConfirmDeploymentGone
    );
    memory.deployment_confirmed = true;
    assert!(matches!(
        assess(&config(), &sandbox(), at(1000), &gone, &mut memory, at(3)),
        Step::Wait { .. }
    ));
    let mut memory = JobMemory::default();
    let present = snapshot(pod(None, 0), None, None);
    assess(
        &config(),
        &sandbox(),
        at(1000),
        &present,
        &mut memory,
        at(3),
    );
    let step = assess(&config(), &sandbox(), at(1000), &gone, &mut memory, at(4));
    assert!(matches!(
        step,
        Step::Fail {
            reason: FailureReason::SandboxDisappeared,
            ..
        }
    ));
}

#[test]
fn deadline_goes_on_partial_with_evidence_or_fails_with_the_state() {
    let learning = snapshot(pod(None, 0), Some(("ready", "complete")), Some("3"));
    let Step::Done(observation) = assess(
        &config(),
        &sandbox(),
        at(100),
        &learning,
        &mut JobMemory::default(),
        at(100),
    ) else {
        panic!()
    };
    assert!(observation.partial);
    assert_eq!(observation.learning_status, "ready");

    let strict = WaitConfig {
        on_timeout: OnTimeout::Fail,
        ..config()
    };
    let Step::Fail {
        reason, message, ..
    } = assess(
        &strict,
        &sandbox(),
        at(100),
        &learning,
        &mut JobMemory::default(),
        at(100),
    )
    else {
        panic!()
    };
    assert_eq!(reason, FailureReason::AnalysisTimeout);
    assert!(
        message.contains("status `ready`") && message.contains("node-agent"),
        "{message}"
    );

    let nothing = snapshot(pod(None, 0), None, None);
    let Step::Fail {
        reason, message, ..
    } = assess(
        &config(),
        &sandbox(),
        at(100),
        &nothing,
        &mut JobMemory::default(),
        at(100),
    )
    else {
        panic!()
    };
    assert_eq!(reason, FailureReason::AnalysisTimeout);
    assert!(message.contains("no ContainerProfile"), "{message}");
}

#[test]
fn a_partial_profile_is_waited_on_until_the_deadline() {
    // The container exited non-zero (restarts 1, last exit code 1): node-agent wrote the
    // profile `completed`/`partial`, and the restarted container may still complete it.
    let partial = snapshot(pod(None, 1), Some(("completed", "partial")), None);
    let mut memory = JobMemory::default();
    assert_eq!(
        step_at(&partial, &mut memory, 10),
        Step::Wait { until: at(1000) }
    );
    // It does: the job goes on with the complete profile like any other.
    let mut complete = completed_with_vex(live(20), "8", live(21));
    complete.target = target(&[pod(None, 1)], "app");
    let Step::Done(observation) = step_at(&complete, &mut memory, 30) else {
        panic!("the completed profile and the VEX written after it are final")
    };
    assert!(!observation.partial);
    assert_eq!(observation.learning_completion, "complete");
    assert_eq!(observation.container_restarts, 1);
}

#[test]
fn a_profile_still_partial_at_the_deadline_goes_on_partial_or_fails_saying_why() {
    let partial = snapshot(pod(None, 1), Some(("completed", "partial")), None);
    let Step::Done(observation) = step_at(&partial, &mut JobMemory::default(), 1000) else {
        panic!("VEXXY_ON_TIMEOUT=partial goes on with the evidence")
    };
    assert!(observation.partial);
    assert_eq!(observation.learning_completion, "partial");
    let strict = WaitConfig {
        on_timeout: OnTimeout::Fail,
        ..config()
    };
    let Step::Fail {
        reason, message, ..
    } = step_with(&strict, &partial, &mut JobMemory::default(), 1000)
    else {
        panic!("VEXXY_ON_TIMEOUT=fail fails")
    };
    assert_eq!(reason, FailureReason::AnalysisTimeout);
    for why in [
        "completion `partial`",
        "non-zero code (this one restarted 1 times, last exit code 1)",
        "node-agent restarts or drops events",
        "already running when node-agent started",
        "VEXXY_WAIT_GRACE",
    ] {
        assert!(message.contains(why), "{why:?} missing from: {message}");
    }
}

#[test]
fn failed_learning_ends_the_wait_at_once() {
    for status in ["failed", "too-large", "missing-runtime"] {
        let failed = snapshot(pod(None, 0), Some((status, "complete")), None);
        let Step::Done(observation) = step_at(&failed, &mut JobMemory::default(), 10) else {
            panic!("{status}: goes on partial at once")
        };
        assert!(observation.partial);
        let strict = WaitConfig {
            on_timeout: OnTimeout::Fail,
            ..config()
        };
        let Step::Fail {
            reason, message, ..
        } = step_with(&strict, &failed, &mut JobMemory::default(), 10)
        else {
            panic!("{status}: fails at once")
        };
        assert_eq!(reason, FailureReason::NoVexProduced);
        assert!(message.contains(&format!("status `{status}`")), "{message}");
    }
}

#[test]
fn a_failed_read_of_the_profile_and_vex_holds_a_conclusion_until_a_read_succeeds() {
    let mut memory = JobMemory::default();
    let mut unread = completed_with_vex(live(10), "8", live(11));
    unread.storage_read_failed = true;
    unread.api_errors = vec!["GET containerprofiles …: 500".into()];
    assert_eq!(
        step_at(&unread, &mut memory, 20),
        Step::Wait {
            until: at(20) + ChronoDuration::from_std(STORAGE_READ_RETRY).unwrap()
        }
    );
    let read = completed_with_vex(live(10), "8", live(11));
    assert!(matches!(step_at(&read, &mut memory, 22), Step::Done(o) if o.window_end == at(20)));
    // At the deadline the job goes on with what it holds.
    let mut memory = JobMemory::default();
    assert!(matches!(
        step_at(&unread, &mut memory, 1000),
        Step::Done(o) if !o.partial
    ));
    // With nothing held and the reads failing, the deadline says so.
    let mut blind = snapshot(pod(None, 0), None, None);
    blind.storage_read_failed = true;
    blind.api_errors = vec!["GET containerprofiles vexxy-sandbox/x failed: 503".into()];
    let Step::Fail {
        reason, message, ..
    } = step_at(&blind, &mut JobMemory::default(), 1000)
    else {
        panic!("nothing to go on with")
    };
    assert_eq!(reason, FailureReason::KubernetesUnavailable);
    assert!(message.contains("503"), "{message}");
}

#[test]
fn completion_and_the_vex_write_arriving_in_the_same_look_finish_at_once() {
    // A zero-delay Kubescape: the job first looks when both changes are already in the view.
    let both = completed_with_vex(live(10), "8", live(11));
    let Step::Done(observation) = step_at(&both, &mut JobMemory::default(), 20) else {
        panic!("the write after completion is proof; no settle")
    };
    assert!(!observation.partial);
    assert_eq!(observation.window_end, at(20));
}

#[test]
fn a_vex_received_before_completion_is_no_proof_even_in_the_same_burst() {
    // The VEX stream delivered first: it may be the learning-time scan, so the job settles.
    let mut memory = JobMemory::default();
    let reordered = completed_with_vex(live(10), "8", live(9));
    assert_eq!(
        step_at(&reordered, &mut memory, 20),
        Step::Wait { until: at(25) }
    );
    assert!(matches!(step_at(&reordered, &mut memory, 25), Step::Done(o) if !o.partial));
}

#[test]
fn a_vex_from_learning_time_then_a_rewrite_after_completion() {
    let mut memory = JobMemory::default();
    let learning = completed_with_vex(live(10), "7", live(5));
    assert_eq!(
        step_at(&learning, &mut memory, 20),
        Step::Wait { until: at(25) }
    );
    assert_eq!(
        step_at(&learning, &mut memory, 22),
        Step::Wait { until: at(25) }
    );
    let rewritten = completed_with_vex(live(10), "8", live(12));
    assert!(
        matches!(step_at(&rewritten, &mut memory, 23), Step::Done(o) if o.window_end == at(20))
    );
}

#[test]
fn only_a_learning_time_vex_settles() {
    let mut memory = JobMemory::default();
    let learning_only = completed_with_vex(live(10), "7", live(5));
    for second in [20, 21, 24] {
        assert_eq!(
            step_at(&learning_only, &mut memory, second),
            Step::Wait { until: at(25) }
        );
    }
    assert!(matches!(step_at(&learning_only, &mut memory, 25), Step::Done(o) if !o.partial));
}

#[test]
fn after_a_restart_listed_objects_are_no_proof_until_the_vex_watch_lists_again() {
    // A new wait process: both objects come from its first lists, in an unknown write order.
    let mut memory = JobMemory::default();
    let mut restarted = completed_with_vex(listed(3), "8", listed(4));
    restarted.vex_watch_began = Some(1);
    assert_eq!(
        step_at(&restarted, &mut memory, 20),
        Step::Wait { until: at(25) }
    );
    // A later VEX event is no proof either: the completion happened at some time before the
    // profile list, possibly after the VEX list's snapshot that this event follows.
    let mut later_event = completed_with_vex(listed(3), "9", live(9));
    later_event.vex_watch_began = Some(1);
    assert_eq!(
        step_at(&later_event, &mut memory, 21),
        Step::Wait { until: at(25) }
    );
    // Once the VEX watch has listed again after the completion was listed, its events are
    // writes made after the completion.
    let mut relisted = completed_with_vex(listed(3), "10", live(9));
    relisted.vex_watch_began = Some(5);
    assert!(matches!(step_at(&relisted, &mut memory, 22), Step::Done(_)));
    assert!(matches!(step_at(&restarted, &mut memory, 25), Step::Done(o) if !o.partial));
}

#[test]
fn a_redelivered_job_in_the_same_process_keeps_the_proof_of_the_view() {
    // The job's memory is new but the view's receipts are not: the proof stands.
    let both = completed_with_vex(live(10), "8", live(11));
    let mut first = JobMemory::default();
    assert!(matches!(step_at(&both, &mut first, 20), Step::Done(_)));
    let mut again = JobMemory::default();
    assert!(matches!(step_at(&both, &mut again, 40), Step::Done(o) if o.window_end == at(40)));
}

#[test]
fn a_vex_changed_during_a_watch_outage_is_no_proof_but_the_next_event_is() {
    // The VEX watch got 410 Gone and relisted at 14: the version written meanwhile came from
    // the list, at an unknown time, possibly before the completion.
    let mut memory = JobMemory::default();
    let mut relisted = completed_with_vex(live(10), "8", listed(15));
    relisted.vex_watch_began = Some(14);
    assert_eq!(
        step_at(&relisted, &mut memory, 20),
        Step::Wait { until: at(25) }
    );
    let mut resumed = completed_with_vex(live(10), "9", live(16));
    resumed.vex_watch_began = Some(14);
    assert!(matches!(step_at(&resumed, &mut memory, 21), Step::Done(_)));
}

#[test]
fn a_deleted_vex_is_no_proof() {
    let mut memory = JobMemory::default();
    let mut gone = completed_with_vex(live(10), "8", live(11));
    gone.vex = None;
    assert_eq!(
        step_at(&gone, &mut memory, 20),
        Step::Wait { until: at(25) }
    );
}

// Rule A: no learning-time scan was possible.

#[test]
fn rule_a_accepts_a_vex_received_live_before_the_completion_event() {
    // kubesim at zero delays writes profile and VEX back to back; the VEX stream delivered
    // first. With no `ready` version ever, that VEX can only be the scan of the completed
    // profile: no settle, no bound.
    let mut reordered = completed_with_vex(live(10), "8", live(9));
    reordered.profile = Some(never_ready_profile(live(10)));
    let mut memory = JobMemory::default();
    let Step::Done(observation) = step_with(&bounded(315), &reordered, &mut memory, 20) else {
        panic!("rule A needs no settle and no bound")
    };
    assert!(!observation.partial);
    assert_eq!(observation.window_end, at(20));
}

#[test]
fn rule_a_falls_back_to_the_settle_for_a_listed_vex() {
    // The VEX came from the VEX watch's relist at 4: written at an unknown time; it could be a
    // leftover the live history says nothing about, so the order check or the settle decides.
    let config = bounded(315);
    let mut memory = JobMemory::default();
    let mut listed_vex = completed_with_vex(live(10), "8", listed(4));
    listed_vex.profile = Some(never_ready_profile(live(10)));
    listed_vex.vex_watch_began = Some(3);
    assert_eq!(
        step_with(&config, &listed_vex, &mut memory, 20),
        Step::Wait { until: at(25) }
    );
    assert!(matches!(
        step_with(&config, &listed_vex, &mut memory, 25),
        Step::Done(o) if !o.partial
    ));
    // Before the settle, the next live VEX version decides at once.
    let mut memory = JobMemory::default();
    step_with(&config, &listed_vex, &mut memory, 20);
    let mut rewritten = listed_vex.clone();
    rewritten.vex = Some(VexSummary {
        resource_version: Some("9".into()),
        received: live(12),
    });
    assert!(matches!(
        step_with(&config, &rewritten, &mut memory, 21),
        Step::Done(_)
    ));
}

#[test]
fn rule_a_without_a_vex_settles() {
    let mut no_vex = completed_with_vex(live(10), "8", live(9));
    no_vex.profile = Some(never_ready_profile(live(10)));
    no_vex.vex = None;
    let mut memory = JobMemory::default();
    assert_eq!(
        step_with(&bounded(315), &no_vex, &mut memory, 20),
        Step::Wait { until: at(25) }
    );
}

// Rule B: a learning-time scan may still be running.

#[test]
fn an_unknown_history_after_a_relist_takes_rule_b_from_the_first_look_at_completion() {
    // The profile was never `ready` while watched, but a relist made its history unknown: a
    // `ready` version may have come and gone meanwhile.
    let config = bounded(30);
    let mut memory = JobMemory::default();
    let mut relisted = completed_with_vex(live(10), "8", live(11));
    relisted.profile = Some(ProfileSummary {
        history_from_creation: false,
        ..never_ready_profile(live(10))
    });
    assert_eq!(
        step_with(&config, &relisted, &mut memory, 20),
        Step::Wait { until: at(50) },
        "the write after completion is not enough: bound from the first look at completion"
    );
    assert_eq!(
        step_with(&config, &relisted, &mut memory, 49),
        Step::Wait { until: at(50) }
    );
    let Step::Done(observation) = step_with(&config, &relisted, &mut memory, 50) else {
        panic!("the bound passed")
    };
    assert_eq!(observation.window_end, at(20));
}

#[test]
fn a_ready_version_waits_for_the_bound_from_its_receive_time() {
    // `ready` received at 8 s; the completion first seen much later, at 100 s.
    let config = bounded(30);
    let written = completed_with_vex(live(90), "9", live(96));
    let mut memory = JobMemory::default();
    assert!(
        matches!(step_with(&config, &written, &mut memory, 100), Step::Done(o) if o.window_end == at(100)),
        "8 s + 30 s passed long before"
    );
    // A `ready` version received at 80 s: the same job waits until 110 s.
    let mut late_ready = written.clone();
    late_ready.profile.as_mut().unwrap().last_ready_received = Some(at(80));
    // The VEX received at 96 s may be that learning-time scan's: it is no proof. A version
    // received from 110 s on can only be the completed profile's scan.
    let mut memory = JobMemory::default();
    assert_eq!(
        step_with(&config, &late_ready, &mut memory, 100),
        Step::Wait { until: at(130) }
    );
    assert_eq!(
        step_with(&config, &late_ready, &mut memory, 110),
        Step::Wait { until: at(130) }
    );
    let mut final_scan = late_ready.clone();
    final_scan.vex = Some(VexSummary {
        resource_version: Some("10".into()),
        received: live(112),
    });
    assert!(matches!(
        step_with(&config, &final_scan, &mut memory, 112),
        Step::Done(o) if o.window_end == at(100)
    ));
    // Without such a version, the completed profile's scan is over 30 s after completion.
    let mut memory = JobMemory::default();
    step_with(&config, &late_ready, &mut memory, 100);
    assert!(matches!(
        step_with(&config, &late_ready, &mut memory, 130),
        Step::Done(o) if o.window_end == at(100)
    ));
}

#[test]
fn a_zero_bound_accepts_the_write_after_completion_at_once() {
    let mut memory = JobMemory::default();
    let written = completed_with_vex(live(10), "8", live(11));
    assert!(matches!(
        step_with(&bounded(0), &written, &mut memory, 20),
        Step::Done(o) if !o.partial
    ));
}

#[test]
fn a_learning_time_vex_written_after_completion_is_not_final_before_the_bound() {
    // The gap rule B closes: the operator started a scan of the `ready` profile (received at
    // 8 s) shortly before completion; kubevuln writes its VEX after the completion event.
    let config = bounded(315);
    let mut memory = JobMemory::default();
    let completed = completed_with_vex(live(10), "7", live(5));
    assert_eq!(
        step_with(&config, &completed, &mut memory, 12),
        Step::Wait { until: at(327) }
    );
    // Its write after completion does not end the wait, not even once the learning-time scans
    // are over (323 s): the completed profile's own scan, slower, may not have written yet.
    let learning_write = completed_with_vex(live(10), "8", live(14));
    for second in [14, 17, 100, 322, 323, 326] {
        assert_eq!(
            step_with(&config, &learning_write, &mut memory, second),
            Step::Wait { until: at(327) },
            "at {second} s the VEX held may be the learning-time scan's"
        );
    }
    assert!(matches!(
        step_with(&config, &learning_write, &mut memory, 327),
        Step::Done(o) if o.window_end == at(12) && !o.partial
    ));
    // A write received after every learning-time scan ended is the completed profile's scan.
    let mut memory = JobMemory::default();
    step_with(&config, &completed, &mut memory, 12);
    let final_write = completed_with_vex(live(10), "9", live(324));
    assert!(matches!(
        step_with(&config, &final_write, &mut memory, 324),
        Step::Done(o) if o.window_end == at(12) && !o.partial
    ));
}

#[test]
fn a_deadline_before_the_bound_is_an_unfinished_analysis() {
    // The VEX held may still be a learning-time scan's: never a complete result.
    let mut memory = JobMemory::default();
    let written = completed_with_vex(live(10), "8", live(11));
    let config = bounded(3_600);
    assert_eq!(
        step_with(&config, &written, &mut memory, 20),
        Step::Wait { until: at(1000) }
    );
    assert!(matches!(
        step_with(&config, &written, &mut memory, 1000),
        Step::Done(o) if o.partial && o.window_end == at(1000)
    ));
    let fail = WaitConfig {
        on_timeout: OnTimeout::Fail,
        ..bounded(3_600)
    };
    let mut memory = JobMemory::default();
    step_with(&fail, &written, &mut memory, 20);
    assert!(matches!(
        step_with(&fail, &written, &mut memory, 1000),
        Step::Fail {
            reason: FailureReason::AnalysisTimeout,
            ..
        }
    ));
}
