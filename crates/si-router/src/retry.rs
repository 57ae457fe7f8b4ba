//! The retry budget: retries in flight may be at most a share of the requests in
//! flight (Envoy's rule), so retrying cannot multiply the load on a sick model.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use si_core::FailoverConfig;

/// Requests and retries in flight.
#[derive(Debug, Default)]
pub(crate) struct RetryBudget {
    requests: Arc<AtomicUsize>,
    retries: Arc<AtomicUsize>,
}

/// Counts one request or retry while it lives.
pub(crate) struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl RetryBudget {
    pub(crate) fn request(&self) -> Active {
        self.requests.fetch_add(1, Ordering::AcqRel);
        Active(self.requests.clone())
    }

    /// A retry, if the budget allows one now.
    pub(crate) fn retry(&self, policy: &FailoverConfig) -> Option<Active> {
        let requests = self.requests.load(Ordering::Acquire);
        let allowed = (requests * policy.retry_budget_percent as usize / 100)
            .max(policy.min_concurrent_retries as usize);
        let before = self.retries.fetch_add(1, Ordering::AcqRel);
        if before >= allowed {
            self.retries.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Active(self.retries.clone()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn policy(percent: u32, min: u32) -> FailoverConfig {
        FailoverConfig {
            retry_budget_percent: percent,
            min_concurrent_retries: min,
            eject_after_failures: 3,
            eject_base: Duration::from_secs(5),
            eject_max: Duration::from_secs(60),
        }
    }

    proptest! {
        #[test]
        fn retries_never_exceed_the_budget(requests in 0usize..500, percent in 0u32..=100, min in 0u32..10) {
            let budget = RetryBudget::default();
            let _requests: Vec<Active> = (0..requests).map(|_| budget.request()).collect();
            let granted: Vec<Active> = (0..requests + 20).filter_map(|_| budget.retry(&policy(percent, min))).collect();
            let allowed = (requests * percent as usize / 100).max(min as usize);
            prop_assert_eq!(granted.len(), allowed.min(requests + 20));
        }
    }

    #[test]
    fn finished_retries_give_their_place_back() {
        let budget = RetryBudget::default();
        let policy = policy(20, 1);
        let first = budget.retry(&policy);
        assert!(first.is_some());
        assert!(budget.retry(&policy).is_none());
        drop(first);
        assert!(budget.retry(&policy).is_some());
    }
}
