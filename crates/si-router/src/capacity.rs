//! What a backend can take right now: its slots, the queue in front of them, and
//! whether passive health checks have taken it out of rotation.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use si_core::{BackendLimits, FailoverConfig};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Slots (requests at once) and a bounded queue in front of them.
#[derive(Debug)]
pub(crate) struct Capacity {
    slots: Arc<Semaphore>,
    /// Slots the semaphore was sized for.
    size: AtomicUsize,
    in_flight: Arc<AtomicUsize>,
    waiting: AtomicUsize,
    queue_depth: usize,
    queue_timeout: Duration,
}

/// One request's slot on a backend, held until its answer is fully passed on (or
/// abandoned), so the count of requests in flight is exact.
#[derive(Debug)]
pub struct InFlight {
    _permit: OwnedSemaphorePermit,
    in_flight: Arc<AtomicUsize>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One place in the queue, given back when dropped.
struct Waiter<'a>(&'a AtomicUsize);

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a request got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoSlot {
    /// The queue is full.
    QueueFull,
    /// It waited the whole queue timeout.
    TimedOut,
}

impl Capacity {
    pub(crate) fn new(limits: &BackendLimits) -> Self {
        Capacity {
            slots: Arc::new(Semaphore::new(limits.max_in_flight as usize)),
            size: AtomicUsize::new(limits.max_in_flight as usize),
            in_flight: Arc::new(AtomicUsize::new(0)),
            waiting: AtomicUsize::new(0),
            queue_depth: limits.queue_depth as usize,
            queue_timeout: limits.queue_timeout,
        }
    }

    /// Requests being answered now (the replica choice prefers the fewest).
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Slots it has.
    pub(crate) fn size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    /// Changes the number of slots (the server reported its own). Shrinking takes
    /// effect as busy slots are released.
    pub(crate) fn resize(&self, slots: usize) {
        let current = self.size.swap(slots, Ordering::AcqRel);
        if slots > current {
            self.slots.add_permits(slots - current);
        } else if slots < current {
            let wanted = current - slots;
            let forgotten = self.slots.forget_permits(wanted);
            if forgotten < wanted {
                // Busy now: take the rest when they come back.
                let slots = self.slots.clone();
                tokio::spawn(async move {
                    if let Ok(permits) = slots.acquire_many_owned((wanted - forgotten) as u32).await
                    {
                        permits.forget();
                    }
                });
            }
        }
    }

    /// Requests waiting for a slot.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// A slot now, or after waiting in the queue; refused at once when the queue
    /// is full, so memory stays flat however hard the gateway is pushed.
    pub(crate) async fn admit(&self) -> Result<InFlight, NoSlot> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // Counted out on every path, including a caller that gives up.
                let waiter = Waiter(&self.waiting);
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue_depth {
                    return Err(NoSlot::QueueFull);
                }
                let waited =
                    tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned())
                        .await;
                drop(waiter);
                match waited {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_)) | Err(_) => return Err(NoSlot::TimedOut),
                }
            }
        };
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(InFlight {
            _permit: permit,
            in_flight: self.in_flight.clone(),
        })
    }
}

#[derive(Debug, Default)]
struct Ejection {
    until: Option<Instant>,
    /// Ejections so far, for the growing back-off; forgotten after a long good run.
    count: u32,
    last_end: Option<Instant>,
}

/// Passive health: consecutive failures take a backend out for a while.
#[derive(Debug, Default)]
pub(crate) struct PassiveHealth {
    failures: AtomicU32,
    ejection: Mutex<Ejection>,
    /// Fingerprints of the different requests among the current run of failures:
    /// one request failing again and again says more about the request than the
    /// server, so it counts once.
    failed_requests: Mutex<Vec<u64>>,
    /// A health check after a failure is running.
    checking: AtomicBool,
}

/// Most request fingerprints remembered per run of failures.
const FAILED_REQUESTS_KEPT: usize = 16;

impl PassiveHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, Ejection> {
        self.ejection.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether it is out of rotation: from an ejection until a good `/health` poll
    /// after the ejection period.
    pub(crate) fn is_ejected(&self) -> bool {
        self.lock().until.is_some()
    }

    pub(crate) fn succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) > 0 {
            self.forget_failures();
        }
    }

    fn forget_failures(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.failed_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Whether a failure of the request with `fingerprint` is the first of it in the
    /// current run of failures (and so counts).
    pub(crate) fn is_new_failure(&self, fingerprint: u64) -> bool {
        let mut seen = self
            .failed_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if seen.contains(&fingerprint) {
            return false;
        }
        if seen.len() == FAILED_REQUESTS_KEPT {
            seen.remove(0);
        }
        seen.push(fingerprint);
        true
    }

    /// Claims the one health check after a failure; `false` while one runs.
    pub(crate) fn start_check(&self) -> bool {
        !self.checking.swap(true, Ordering::AcqRel)
    }

    /// The health check after a failure is over.
    pub(crate) fn check_done(&self) {
        self.checking.store(false, Ordering::Release);
    }

    /// Counts a failure; ejects when the count reaches the threshold and `may_eject`
    /// (another replica is there to take the traffic). Returns the ejection period.
    pub(crate) fn failed(
        &self,
        may_eject: bool,
        policy: &FailoverConfig,
        now: Instant,
    ) -> Option<Duration> {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < policy.eject_after_failures || !may_eject {
            return None;
        }
        let mut ejection = self.lock();
        if ejection.until.is_some() {
            return None;
        }
        // A long good run since the last ejection starts the back-off over.
        if ejection
            .last_end
            .is_some_and(|end| now.duration_since(end) > policy.eject_max)
        {
            ejection.count = 0;
        }
        let period = policy
            .eject_base
            .saturating_mul(1 << ejection.count.min(16))
            .min(policy.eject_max);
        ejection.count += 1;
        ejection.until = Some(now + period);
        self.forget_failures();
        Some(period)
    }

    /// A good `/health` poll: re-admits a backend whose ejection period is over.
    /// Returns whether it did.
    pub(crate) fn probe_succeeded(&self, now: Instant) -> bool {
        let mut ejection = self.lock();
        match ejection.until {
            Some(until) if now >= until => {
                ejection.until = None;
                ejection.last_end = Some(now);
                self.forget_failures();
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests;
