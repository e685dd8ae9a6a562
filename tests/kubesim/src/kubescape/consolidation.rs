//! Kubescape storage's ContainerProfile consolidation, as kubescape/storage `b35788b6`
//! `pkg/registry/file/containerprofile_processor.go` does it:
//!
//! * `AfterCreate`: creating a profile that carries `kubescape.io/report-series-id` (node-agent's
//!   per-save object `<slug>-<suffix>`) records a time-series row for the key `<slug>`
//!   (`SplitProfileName`: the name up to its last `-`) and series: the suffix, report and
//!   previous report timestamps, status and completion, "has data".
//! * `PreSave` refuses such a create when the consolidated `<slug>` is already `completed` and
//!   either `complete` or the save is `partial` (`ObjectCompletedError`): see
//!   [`check_time_series_create`], which the store applies to every create.
//! * `ConsolidateTimeSeries`, every 30 s (`Interval`), for each key with new data:
//!   `mergeTimeSeriesData` merges each saved object into the consolidated profile
//!   (`mergeContainerProfileTS`: annotations and labels the profile lacks, except the
//!   per-save keys; spec lists appended, then deduplicated by `PreSave`'s deflate);
//!   `consolidateContinuousTimeSeries` chains rows whose previous report is the next row's
//!   report; `updateProfileStatus` sets status and completion from the chain
//!   (`SetLearningStatus`, `SetCompletedStatus`, `SetFailedStatus` in
//!   `pkg/apis/softwarecomposition/types.go`); the profile is saved when there was new data
//!   (an unchanged result is no write, like `GuaranteedUpdate`'s equality check); then the
//!   merged per-save objects are deleted. The consolidated profile therefore exists only from
//!   the first save on, and shows `ready`, `completed` (`complete` or `partial`) — never
//!   `initializing`.
//!
//! Not modelled: expired series (storage's `maxSniffingTimePerContainer` is unset in the chart,
//! so none expire), `too-large`, the ApplicationProfile/NetworkNeighborhood aggregation and the
//! user-managed (`ug-`) merge. One known difference: storage saves the consolidated profile with
//! `GuaranteedUpdate`, so watchers see its first version as MODIFIED; kubesim's store creates it,
//! so they see ADDED (see the README).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::change_feed::ObjectKey;
use crate::errors::ApiError;
use crate::resources;
use crate::store::{Propagation, Store, name_of, namespace_of};

use super::node_agent::{GO_ZERO_TIME, OBJECT_COMPLETED};

pub use vexxy_kubescape::keys::{COMPLETION, REPORT_SERIES_ID as SERIES_ID, STATUS};
use vexxy_kubescape::keys::{
    INSTANCE_ID, PREVIOUS_REPORT_TIMESTAMP, REPORT_TIMESTAMP, RESOURCE_SIZE,
};

const LEARNING: &str = "ready";
const COMPLETED: &str = "completed";
const FAILED: &str = "failed";
const FULL: &str = "complete";
const PARTIAL: &str = "partial";

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

/// A per-save object (node-agent's time series), not a consolidated profile.
pub fn is_time_series(profile: &Value) -> bool {
    annotation(profile, SERIES_ID).is_some_and(|s| !s.is_empty())
}

/// `SplitProfileName`: (name up to the last `-`, what follows it).
pub fn split_profile_name(name: &str) -> (&str, &str) {
    name.rsplit_once('-').unwrap_or((name, ""))
}

/// Storage's `PreSave` for a per-save ContainerProfile being created: refused when the
/// consolidated profile is `completed` and `complete`, or `completed` and the save is
/// `partial`. `existing` is the consolidated profile, if any.
pub fn check_time_series_create(profile: &Value, existing: Option<&Value>) -> Result<(), ApiError> {
    let Some(existing) = existing else {
        return Ok(());
    };
    if annotation(existing, STATUS) == Some(COMPLETED)
        && (annotation(existing, COMPLETION) == Some(FULL)
            || annotation(profile, COMPLETION) == Some(PARTIAL))
    {
        return Err(ApiError::internal(format!(
            "Internal error occurred: {OBJECT_COMPLETED}"
        )));
    }
    Ok(())
}

/// One row of storage's `time_series` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub suffix: String,
    pub report: String,
    pub previous: String,
    pub status: String,
    pub completion: String,
    pub has_data: bool,
}

fn is_zero_time(s: &str) -> bool {
    matches!(s, "" | GO_ZERO_TIME | "0001-01-01T00:00:00Z")
}

/// `consolidateContinuousTimeSeries`: `desc` is newest first; a row whose previous report is
/// the next (older) row's report absorbs it. Returns the chains, newest first.
pub fn consolidate_continuous(mut desc: Vec<Row>) -> Vec<Row> {
    if desc.is_empty() {
        return desc;
    }
    let mut out = Vec::new();
    let mut j = 0;
    for i in 0..desc.len() - 1 {
        if desc[j].previous == desc[i + 1].report {
            desc[j].previous = desc[i + 1].previous.clone();
        } else {
            out.push(desc[j].clone());
            j = i + 1;
        }
    }
    out.push(desc[j].clone());
    out
}

fn set(annotations: &mut Map<String, Value>, key: &str, value: &str) {
    annotations.insert(key.to_string(), json!(value));
}

fn get<'a>(annotations: &'a Map<String, Value>, key: &str) -> &'a str {
    annotations.get(key).and_then(Value::as_str).unwrap_or("")
}

fn completed_full(annotations: &Map<String, Value>) -> bool {
    get(annotations, STATUS) == COMPLETED && get(annotations, COMPLETION) == FULL
}

/// `SetCompletedStatus`: returns whether the profile is now `completed`/`complete`.
pub fn set_completed_status(annotations: &mut Map<String, Value>, row: &Row) -> bool {
    if completed_full(annotations) {
        return true;
    }
    set(annotations, STATUS, COMPLETED);
    set(annotations, COMPLETION, &row.completion);
    row.completion == FULL
}

/// `SetFailedStatus`: a failed series leaves the profile `completed`/`partial`.
pub fn set_failed_status(annotations: &mut Map<String, Value>) {
    if completed_full(annotations) {
        return;
    }
    set(annotations, STATUS, COMPLETED);
    set(annotations, COMPLETION, PARTIAL);
}

/// `SetLearningStatus`: `ready`, unless already `completed`; completion never downgraded from
/// `complete`.
pub fn set_learning_status(annotations: &mut Map<String, Value>, row: &Row) {
    if get(annotations, STATUS) == COMPLETED {
        return;
    }
    set(annotations, STATUS, LEARNING);
    if get(annotations, COMPLETION) != FULL {
        set(annotations, COMPLETION, &row.completion);
    }
}

/// `updateProfileStatus` (not expired): the chains of one series after this tick, and whether
/// the profile is now `completed`/`complete` (then every row of the key goes).
pub fn update_status(annotations: &mut Map<String, Value>, chains: Vec<Row>) -> (Vec<Row>, bool) {
    let Some(newest) = chains.first() else {
        return (chains, false);
    };
    if chains.len() != 1 || !is_zero_time(&newest.previous) {
        // Rows are missing from the series: still learning.
        set_learning_status(annotations, newest);
        return (chains, false);
    }
    match newest.status.as_str() {
        COMPLETED => {
            if set_completed_status(annotations, newest) {
                return (Vec::new(), true);
            }
            (Vec::new(), false)
        }
        FAILED => {
            set_failed_status(annotations);
            (Vec::new(), false)
        }
        _ => {
            set_learning_status(annotations, newest);
            (chains, false)
        }
    }
}

/// `mergeContainerProfileTS` + the deflate of `PreSave`: `ts` merged into `profile`.
pub fn merge(profile: &mut Value, ts: &Value) {
    const PER_SAVE: [&str; 5] = [
        COMPLETION,
        PREVIOUS_REPORT_TIMESTAMP,
        SERIES_ID,
        REPORT_TIMESTAMP,
        STATUS,
    ];
    for (field, skip) in [("annotations", &PER_SAVE[..]), ("labels", &[][..])] {
        let from = ts
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let into = object_at(profile, &["metadata", field]);
        for (k, v) in from {
            if !skip.contains(&k.as_str()) && !into.contains_key(&k) {
                into.insert(k, v);
            }
        }
    }
    let spec = object_at(profile, &["spec"]);
    for (k, v) in ts
        .get("spec")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        match (spec.get_mut(k), v) {
            (Some(Value::Array(into)), Value::Array(from)) => into.extend(from.iter().cloned()),
            (Some(Value::Object(into)), Value::Object(from)) => {
                for (fk, fv) in from {
                    into.entry(fk.clone()).or_insert_with(|| fv.clone());
                }
            }
            (Some(existing), Value::Null) if !existing.is_null() => {}
            _ => {
                spec.insert(k.clone(), v.clone());
            }
        }
    }
    // Deflate: string lists sorted and deduplicated (`DeflateSortString`), the others
    // deduplicated in order (`DeflateStringer`).
    for (k, v) in spec.iter_mut() {
        let Value::Array(items) = v else { continue };
        if matches!(k.as_str(), "architectures" | "capabilities" | "syscalls") {
            items.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            items.dedup();
        } else {
            let mut seen = HashSet::new();
            items.retain(|item| seen.insert(item.to_string()));
        }
    }
}

/// The object at `path` (created empty where missing or not an object).
fn object_at<'a>(value: &'a mut Value, path: &[&str]) -> &'a mut Map<String, Value> {
    let mut cur = value;
    for key in path {
        if !cur.get(*key).is_some_and(Value::is_object) {
            cur[*key] = json!({});
        }
        cur = cur.get_mut(*key).expect("just made an object");
    }
    cur.as_object_mut().expect("an object")
}

/// `PreSave` on the consolidated profile: its size annotation (the number of recorded items).
fn size_of(profile: &Value) -> usize {
    [
        "execs",
        "opens",
        "syscalls",
        "capabilities",
        "endpoints",
        "identifiedCallStacks",
        "ingress",
        "egress",
    ]
    .iter()
    .map(|k| {
        profile
            .pointer(&format!("/spec/{k}"))
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    })
    .sum()
}

/// Go's encoding/json writes map keys sorted.
fn sort_keys(obj: &mut Value, path: &str) {
    if let Some(map) = obj.pointer_mut(path).and_then(Value::as_object_mut) {
        let mut entries: Vec<(String, Value)> = std::mem::take(map).into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        map.extend(entries);
    }
}

/// Storage's time-series table and consolidation ticker.
#[derive(Default)]
pub struct Consolidator {
    /// (namespace, consolidated name) -> series id -> rows, oldest first.
    rows: BTreeMap<ObjectKey, BTreeMap<String, Vec<Row>>>,
    /// Keys with rows that have data.
    pending: BTreeSet<ObjectKey>,
    next_tick: Option<Instant>,
}

impl Consolidator {
    pub fn clear(&mut self) {
        *self = Consolidator::default();
    }

    /// `AfterCreate` for a created per-save object (idempotent: a row per suffix).
    pub fn record(&mut self, profile: &Value) {
        let Some(series) = annotation(profile, SERIES_ID).filter(|s| !s.is_empty()) else {
            return;
        };
        let (base, suffix) = split_profile_name(name_of(profile));
        let key = (namespace_of(profile).to_string(), base.to_string());
        let rows = self
            .rows
            .entry(key.clone())
            .or_default()
            .entry(series.to_string())
            .or_default();
        if rows.iter().any(|r| r.suffix == suffix) {
            return;
        }
        let field = |k: &str| annotation(profile, k).unwrap_or("").to_string();
        rows.push(Row {
            suffix: suffix.to_string(),
            report: field(REPORT_TIMESTAMP),
            previous: field(PREVIOUS_REPORT_TIMESTAMP),
            status: field(STATUS),
            completion: field(COMPLETION),
            has_data: true,
        });
        self.pending.insert(key);
    }

    /// Schedules the next consolidation tick if there is data and none is scheduled: ticks are
    /// every `period` from `epoch` (storage's loop), so a save waits up to one period.
    pub fn schedule(&mut self, epoch: Instant, period: Duration, now: Instant) {
        if self.pending.is_empty() || self.next_tick.is_some() {
            return;
        }
        let since = now.saturating_duration_since(epoch);
        let at = if period.is_zero() {
            now
        } else {
            let periods = since.as_nanos().div_ceil(period.as_nanos());
            epoch + period * u32::try_from(periods).unwrap_or(u32::MAX)
        };
        self.next_tick = Some(at);
    }

    pub fn next_tick(&self) -> Option<Instant> {
        self.next_tick
    }

    /// Runs the tick if it is due.
    pub fn advance(&mut self, store: &Store, now: Instant) {
        if self.next_tick.is_none_or(|t| t > now) {
            return;
        }
        self.next_tick = None;
        for key in std::mem::take(&mut self.pending) {
            self.consolidate(store, &key);
        }
    }

    /// `consolidateKeyTimeSeries` for one key.
    fn consolidate(&mut self, store: &Store, key: &ObjectKey) {
        let profiles = resources::kubescape("containerprofiles");
        let (ns, name) = key;
        let existing = store.get(profiles, ns, name).ok();
        let mut profile = existing.clone().unwrap_or_else(|| {
            json!({
                "apiVersion": profiles.api_version(),
                "kind": profiles.kind,
                "metadata": {"name": name, "namespace": ns, "annotations": {}, "labels": {}},
            })
        });
        let Some(series) = self.rows.get_mut(key) else {
            return;
        };
        let mut processed = Vec::new();
        let mut new_data = false;
        let mut completed_full = false;
        for rows in series.values_mut() {
            let mut desc: Vec<Row> = rows.iter().rev().cloned().collect();
            for row in desc.iter_mut().filter(|r| r.has_data) {
                let ts_name = format!("{name}-{}", row.suffix);
                if let Ok(ts) = store.get_shared(profiles, ns, &ts_name) {
                    merge(&mut profile, &ts);
                    new_data = true;
                    processed.push(ts_name);
                }
                row.has_data = false;
            }
            let chains = consolidate_continuous(desc);
            let annotations = object_at(&mut profile, &["metadata", "annotations"]);
            let (kept, full) = update_status(annotations, chains);
            *rows = kept.into_iter().rev().collect();
            if full {
                completed_full = true;
                break;
            }
        }
        if completed_full {
            // `DeleteTimeSeriesContainerEntries`: every row of the key goes.
            self.rows.remove(key);
        } else {
            series.retain(|_, rows| !rows.is_empty());
            if series.is_empty() {
                self.rows.remove(key);
            }
        }
        if annotation(&profile, INSTANCE_ID).is_none() {
            // Without an instance ID there is nothing to save (`updateProfile`).
            return;
        }
        if new_data {
            let size = size_of(&profile).to_string();
            object_at(&mut profile, &["metadata", "annotations"])
                .insert(RESOURCE_SIZE.into(), json!(size));
            sort_keys(&mut profile, "/metadata/annotations");
            sort_keys(&mut profile, "/metadata/labels");
            let saved = match existing {
                // Unchanged: no write, no new resourceVersion (`GuaranteedUpdate`).
                Some(_) => store.update_with(profiles, ns, name, false, |_| Ok(profile)),
                None => store.create(profiles, ns, profile),
            };
            if let Err(e) = saved {
                tracing::warn!(error = %e.message, name, "emulated storage consolidation failed");
                return;
            }
        }
        for ts_name in processed {
            let _ = store.delete(profiles, ns, &ts_name, Propagation::Cascade);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(suffix: &str, report: &str, previous: &str, status: &str, completion: &str) -> Row {
        Row {
            suffix: suffix.into(),
            report: report.into(),
            previous: previous.into(),
            status: status.into(),
            completion: completion.into(),
            has_data: true,
        }
    }

    fn annotations(status: &str, completion: &str) -> Map<String, Value> {
        let mut a = Map::new();
        if !status.is_empty() {
            set(&mut a, STATUS, status);
            set(&mut a, COMPLETION, completion);
        }
        a
    }

    #[test]
    fn continuous_rows_chain_into_one() {
        let desc = vec![
            row("c", "t3", "t2", "completed", "complete"),
            row("b", "t2", "t1", "ready", "complete"),
            row("a", "t1", GO_ZERO_TIME, "ready", "complete"),
        ];
        let chains = consolidate_continuous(desc);
        assert_eq!(chains.len(), 1);
        assert_eq!(chains[0].suffix, "c");
        assert_eq!(chains[0].previous, GO_ZERO_TIME);
        // A gap (t2 missing) leaves two chains: the profile stays learning.
        let gap = consolidate_continuous(vec![
            row("c", "t3", "t2", "completed", "complete"),
            row("a", "t1", GO_ZERO_TIME, "ready", "complete"),
        ]);
        assert_eq!(gap.len(), 2);
        let mut a = annotations("", "");
        let (kept, full) = update_status(&mut a, gap);
        assert_eq!((kept.len(), full), (2, false));
        assert_eq!(
            (get(&a, STATUS), get(&a, COMPLETION)),
            ("ready", "complete")
        );
    }

    #[test]
    fn a_failed_series_is_completed_partial_and_a_later_complete_one_completes_it() {
        let mut a = annotations("ready", "complete");
        let (kept, full) = update_status(
            &mut a,
            vec![row("b", "t2", GO_ZERO_TIME, "failed", "complete")],
        );
        assert!(kept.is_empty() && !full);
        assert_eq!(
            (get(&a, STATUS), get(&a, COMPLETION)),
            ("completed", "partial")
        );
        // The restarted container's learning-time save leaves it completed/partial ...
        let (kept, _) = update_status(
            &mut a,
            vec![row("c", "t3", GO_ZERO_TIME, "ready", "complete")],
        );
        assert_eq!(kept.len(), 1);
        assert_eq!(
            (get(&a, STATUS), get(&a, COMPLETION)),
            ("completed", "partial")
        );
        // ... and its end of learning makes it complete.
        let (kept, full) = update_status(
            &mut a,
            vec![row("d", "t4", GO_ZERO_TIME, "completed", "complete")],
        );
        assert!(kept.is_empty() && full);
        assert_eq!(
            (get(&a, STATUS), get(&a, COMPLETION)),
            ("completed", "complete")
        );
        // Nothing changes a completed/complete profile.
        set_failed_status(&mut a);
        assert_eq!(
            (get(&a, STATUS), get(&a, COMPLETION)),
            ("completed", "complete")
        );
    }

    #[test]
    fn a_pre_running_container_learns_partial_and_completes_partial() {
        let mut a = annotations("", "");
        update_status(
            &mut a,
            vec![row("a", "t1", GO_ZERO_TIME, "ready", "partial")],
        );
        assert_eq!((get(&a, STATUS), get(&a, COMPLETION)), ("ready", "partial"));
        let (_, full) = update_status(
            &mut a,
            vec![row("b", "t2", GO_ZERO_TIME, "completed", "partial")],
        );
        assert!(!full);
        assert_eq!(
            (get(&a, STATUS), get(&a, COMPLETION)),
            ("completed", "partial")
        );
    }

    #[test]
    fn storage_refuses_saves_for_a_completed_profile() {
        let consolidated = |status: &str, completion: &str| json!({"metadata": {"annotations": {STATUS: status, COMPLETION: completion}}});
        let save = |completion: &str| json!({"metadata": {"annotations": {SERIES_ID: "s", COMPLETION: completion}}});
        assert!(check_time_series_create(&save("complete"), None).is_ok());
        assert!(
            check_time_series_create(&save("complete"), Some(&consolidated("ready", "complete")))
                .is_ok()
        );
        assert!(
            check_time_series_create(
                &save("complete"),
                Some(&consolidated("completed", "partial"))
            )
            .is_ok(),
            "a complete save may amend a partial profile"
        );
        let refused = check_time_series_create(
            &save("partial"),
            Some(&consolidated("completed", "partial")),
        )
        .unwrap_err();
        assert_eq!(refused.code, 500);
        assert!(refused.message.contains(OBJECT_COMPLETED));
        assert!(
            check_time_series_create(
                &save("complete"),
                Some(&consolidated("completed", "complete"))
            )
            .is_err()
        );
    }

    #[test]
    fn merging_keeps_the_first_values_and_deduplicates_lists() {
        let mut profile =
            json!({"metadata": {"name": "p", "annotations": {STATUS: "ready"}, "labels": {}}});
        let ts = json!({"metadata": {"annotations": {STATUS: "completed", SERIES_ID: "s", INSTANCE_ID: "i"},
                                     "labels": {"l": "1"}},
                        "spec": {"architectures": ["amd64"], "execs": [{"path": "/bin/a"}],
                                 "syscalls": ["read", "close"], "capabilities": null, "imageID": "x"}});
        merge(&mut profile, &ts);
        merge(&mut profile, &ts);
        assert_eq!(
            profile["metadata"]["annotations"],
            json!({STATUS: "ready", INSTANCE_ID: "i"})
        );
        assert_eq!(profile["metadata"]["labels"], json!({"l": "1"}));
        assert_eq!(profile["spec"]["execs"], json!([{"path": "/bin/a"}]));
        assert_eq!(profile["spec"]["syscalls"], json!(["close", "read"]));
        assert_eq!(profile["spec"]["architectures"], json!(["amd64"]));
        assert_eq!(profile["spec"]["capabilities"], Value::Null);
        assert_eq!(size_of(&profile), 3);
        assert_eq!(
            split_profile_name("pod-web-nginx-2f07-68bd-0123abcd"),
            ("pod-web-nginx-2f07-68bd", "0123abcd")
        );
    }

    #[test]
    fn ticks_come_every_period_from_the_epoch() {
        let epoch = Instant::now();
        let mut c = Consolidator::default();
        c.schedule(epoch, Duration::from_millis(100), epoch);
        assert_eq!(c.next_tick(), None, "nothing to consolidate");
        c.record(&json!({"metadata": {"name": "p-0a", "namespace": "ns",
            "annotations": {SERIES_ID: "s", STATUS: "ready", COMPLETION: "complete"}}}));
        c.schedule(
            epoch,
            Duration::from_millis(100),
            epoch + Duration::from_millis(250),
        );
        assert_eq!(c.next_tick(), Some(epoch + Duration::from_millis(300)));
        let mut zero = Consolidator::default();
        zero.record(&json!({"metadata": {"name": "p-0a", "namespace": "ns",
            "annotations": {SERIES_ID: "s"}}}));
        let now = epoch + Duration::from_millis(7);
        zero.schedule(epoch, Duration::ZERO, now);
        assert_eq!(zero.next_tick(), Some(now));
    }
}
