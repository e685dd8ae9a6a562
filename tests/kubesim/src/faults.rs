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

/// Request counts per resource and verb.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Counters {
    pub total: u64,
    /// resource (`pods`, `deployments.apps`, `pods/status`, `discovery`) -> verb -> count
    pub requests: BTreeMap<String, BTreeMap<String, u64>>,
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

    pub fn get(&self, verb: &str, resource: &str) -> u64 {
        self.requests
            .get(resource)
            .and_then(|m| m.get(verb))
            .copied()
            .unwrap_or(0)
    }
}
