//! Remembers, per cluster, when Kubescape was last seen ready. Only positive answers are kept:
//! a cluster that was broken a minute ago must be looked at again, not refused from memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct ReadyCache {
    ttl: Duration,
    ready_at: Mutex<HashMap<String, Instant>>,
}

impl ReadyCache {
    pub fn new(ttl: Duration) -> Self {
        ReadyCache {
            ttl,
            ready_at: Mutex::new(HashMap::new()),
        }
    }

    pub fn is_fresh(&self, cluster: &str) -> bool {
        let map = self
            .ready_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.get(cluster).is_some_and(|at| at.elapsed() < self.ttl)
    }

    pub fn remember_ready(&self, cluster: &str) {
        let mut map = self
            .ready_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.insert(cluster.to_string(), Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_answers_expire() {
        let cache = ReadyCache::new(Duration::ZERO);
        cache.remember_ready("https://a");
        assert!(!cache.is_fresh("https://a"));
        let cache = ReadyCache::new(Duration::from_secs(60));
        assert!(!cache.is_fresh("https://a"));
        cache.remember_ready("https://a");
        assert!(cache.is_fresh("https://a"));
        assert!(!cache.is_fresh("https://b"), "answers are per cluster");
    }
}
