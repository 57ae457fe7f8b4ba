//! When each key was last used, without a database write per request: a request
//! only notes its key's use in memory, and a writer off the request path stores
//! what was noted, in one batch. A key is noted at most once per
//! [`RECORD_EVERY`], so the store sees at most one write per key per minute from
//! each gateway, however busy the key.

use std::collections::HashMap;
use std::sync::Mutex;

/// The finest a key's last use is kept to, in seconds: a key's use is noted again
/// only this long after it was last noted.
pub const RECORD_EVERY: i64 = 60;

/// Uses of keys noted by requests and not yet stored.
#[derive(Debug, Default)]
pub struct PendingUses {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Waiting for the writer: key name → when used (Unix seconds).
    pending: HashMap<String, i64>,
    /// When each key's use was last noted, so a busy key is noted once a minute.
    noted: HashMap<String, i64>,
}

impl PendingUses {
    /// Notes that the key `name` was used at `now` (Unix seconds), unless its use
    /// was noted less than [`RECORD_EVERY`] ago. True when this is news for the
    /// writer (it has something new to store).
    pub fn note(&self, name: &str, now: i64) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state
            .noted
            .get(name)
            .is_some_and(|at| now - *at < RECORD_EVERY)
        {
            return false;
        }
        state.noted.insert(name.to_owned(), now);
        state.pending.insert(name.to_owned(), now);
        true
    }

    /// Everything noted and not yet stored, by key name, for the writer; keys not
    /// used for [`RECORD_EVERY`] before `now` are forgotten (their next use is
    /// noted at once anyway).
    pub fn take(&self, now: i64) -> Vec<(String, i64)> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.noted.retain(|_, at| now - *at < RECORD_EVERY);
        let mut uses: Vec<_> = state.pending.drain().collect();
        uses.sort();
        uses
    }

    /// Puts back uses the writer could not store, to be tried again (a use noted
    /// meanwhile, being later, wins).
    pub fn give_back(&self, uses: Vec<(String, i64)>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (name, at) in uses {
            let pending = state.pending.entry(name).or_insert(at);
            *pending = (*pending).max(at);
        }
    }

    /// Whether uses wait to be stored.
    pub fn is_empty(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_busy_key_is_noted_once_a_minute() {
        let uses = PendingUses::default();
        assert!(uses.note("ehr", 1_000));
        assert!(!uses.note("ehr", 1_001));
        assert!(uses.note("webui", 1_001), "each key has its own minute");
        assert_eq!(
            uses.take(1_002),
            vec![("ehr".to_owned(), 1_000), ("webui".to_owned(), 1_001)]
        );
        assert!(uses.is_empty());
        assert!(!uses.note("ehr", 1_059), "still within the minute");
        assert!(uses.take(1_059).is_empty());
        assert!(uses.note("ehr", 1_060));
        assert_eq!(uses.take(1_061), vec![("ehr".to_owned(), 1_060)]);
    }

    #[test]
    fn uses_given_back_are_taken_again_and_the_latest_wins() {
        let uses = PendingUses::default();
        uses.note("ehr", 1_000);
        let failed = uses.take(1_000);
        uses.give_back(failed.clone());
        assert_eq!(uses.take(1_001), failed);
        uses.note("webui", 2_000);
        uses.give_back(vec![("webui".to_owned(), 1_500)]);
        assert_eq!(uses.take(2_001), vec![("webui".to_owned(), 2_000)]);
    }

    proptest! {
        /// However many requests, at most one use per key per minute reaches
        /// the store, and the last one noted is never older than a minute
        /// before the key's last request.
        #[test]
        fn at_most_one_write_per_key_per_minute(
            steps in proptest::collection::vec((0u8..3, 0i64..20), 1..300)
        ) {
            let uses = PendingUses::default();
            let mut now = 10_000;
            let mut written: HashMap<String, Vec<i64>> = HashMap::new();
            let mut last_request: HashMap<String, i64> = HashMap::new();
            for (key, step) in steps {
                now += step;
                let name = format!("key-{key}");
                uses.note(&name, now);
                last_request.insert(name, now);
                if step % 7 == 0 {
                    for (name, at) in uses.take(now) {
                        written.entry(name).or_default().push(at);
                    }
                }
            }
            for (name, at) in uses.take(now) {
                written.entry(name).or_default().push(at);
            }
            for (name, times) in &written {
                for pair in times.windows(2) {
                    prop_assert!(pair[1] - pair[0] >= RECORD_EVERY, "{name}: {times:?}");
                }
                let last = times.last().copied().unwrap_or_default();
                prop_assert!(last_request[name] - last < RECORD_EVERY);
            }
            prop_assert_eq!(written.len(), last_request.len());
        }
    }
}
