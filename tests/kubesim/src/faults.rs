//! Fault injection and request counters.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::Faults;
use crate::errors::ApiError;
use crate::rng::Rng;

pub struct FaultState {
    pub config: Faults,
    rng: Rng,
    /// Failures injected per rule index.
    injected: Vec<u64>,
}

impl FaultState {
    pub fn new(config: Faults, seed: u64) -> Self {
        let injected = vec![0; config.rules.len()];
        FaultState {
            config,
            rng: Rng::new(seed),
            injected,
        }
    }

    pub fn replace(&mut self, config: Faults) {
        self.injected = vec![0; config.rules.len()];
        self.config = config;
    }

    /// The injected failure for this request, if a rule fires.
    pub fn draw(&mut self, verb: &str, resource: &str) -> Option<ApiError> {
        for (i, rule) in self.config.rules.iter().enumerate() {
            let verb_ok = rule.verb == "*" || rule.verb == verb;
            let res_ok = rule.resource == "*" || rule.resource == resource;
            if !verb_ok || !res_ok {
                continue;
            }
            if rule.max.is_some_and(|m| self.injected[i] >= m) {
                continue;
            }
            if self.rng.unit() >= rule.rate {
                continue;
            }
            self.injected[i] += 1;
            return Some(match rule.status {
                429 => ApiError::too_many_requests(self.config.retry_after_seconds),
                409 => {
                    let (plural, group) = resource.split_once('.').unwrap_or((resource, ""));
                    ApiError::conflict(group, plural, "injected-by-kubesim")
                }
                _ => ApiError::internal(format!(
                    "injected failure for {verb} {resource} (kubesim fault rule {i})"
                )),
            });
        }
        None
    }

    pub fn injected_total(&self) -> u64 {
        self.injected.iter().sum()
    }
}

/// Request counts per resource and verb, and the watches being served.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Counters {
    pub total: u64,
    /// resource (`pods`, `deployments.apps`, `pods/status`, `discovery`) -> verb -> count
    pub requests: BTreeMap<String, BTreeMap<String, u64>>,
    /// resource -> watches open now (resources with none are left out). A client that re-watches after its watch ended (timeout,
    /// bookmark-less expiry, closed for falling behind) makes a second `watch` request but never
    /// holds two watches: this and the peak tell "shared watches" from "a watch per object".
    pub open_watches: BTreeMap<String, u64>,
    /// resource -> the most watches open at once since the counters were reset.
    pub peak_open_watches: BTreeMap<String, u64>,
    /// resource -> watches the server ended because the client fell so far behind the change
    /// feed that events were lost (the client re-watches from its last resourceVersion).
    pub watches_closed_behind: BTreeMap<String, u64>,
}

impl Counters {
    pub fn inc(&mut self, verb: &str, resource: &str) {
        self.total += 1;
        *self
            .requests
            .entry(resource.to_string())
            .or_default()
            .entry(verb.to_string())
            .or_default() += 1;
    }

    pub fn watch_opened(&mut self, resource: &str) {
        let open = self.open_watches.entry(resource.to_string()).or_default();
        *open += 1;
        let open = *open;
        let peak = self
            .peak_open_watches
            .entry(resource.to_string())
            .or_default();
        *peak = (*peak).max(open);
    }

    pub fn watch_closed(&mut self, resource: &str, fell_behind: bool) {
        // Every close follows its open, so the entry exists; none is kept at zero.
        if let Some(open) = self.open_watches.get_mut(resource) {
            *open -= 1;
            if *open == 0 {
                self.open_watches.remove(resource);
            }
        }
        if fell_behind {
            *self
                .watches_closed_behind
                .entry(resource.to_string())
                .or_default() += 1;
        }
    }

    /// Zero counts; the watches still open stay counted (and are the new peak).
    pub fn reset(&mut self) {
        let open = std::mem::take(&mut self.open_watches);
        *self = Counters {
            peak_open_watches: open.clone(),
            open_watches: open,
            ..Counters::default()
        };
    }

    pub fn get(&self, verb: &str, resource: &str) -> u64 {
        self.requests
            .get(resource)
            .and_then(|m| m.get(verb))
            .copied()
            .unwrap_or(0)
    }
}
