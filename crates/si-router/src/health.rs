//! The background poll of every backend's `/health`.
//!
//! One task per backend, so a slow or hanging backend never delays the others' polls.
//! State changes are logged; the states feed replica choice and `/healthz`.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::LlamaClient;
use crate::pool::{Backend, BackendPool, HealthState};

/// Starts polling; the returned task ends once `shutdown` is cancelled.
pub fn spawn(
    pool: Arc<BackendPool>,
    client: LlamaClient,
    interval: Duration,
    timeout: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for backend in pool.all() {
            tasks.spawn(poll_forever(
                backend.clone(),
                client.clone(),
                interval,
                timeout,
                shutdown.clone(),
            ));
        }
        while tasks.join_next().await.is_some() {}
    })
}

async fn poll_forever(
    backend: Arc<Backend>,
    client: LlamaClient,
    interval: Duration,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        check(&backend, &client, timeout).await;
    }
}

/// Polls `backend`'s `/health` once and records what it says; returns the state.
async fn check(backend: &Backend, client: &LlamaClient, timeout: Duration) -> HealthState {
    let (state, took) = client.health(backend, timeout).await;
    let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    let previous = backend.set_state(state, micros);
    let came_up = state == HealthState::Ok && previous != HealthState::Ok;
    if came_up
        && backend.limits.slots_from_server
        && let Some(slots) = client.total_slots(backend, timeout).await
    {
        backend.capacity.resize(slots as usize);
        tracing::info!(backend = %backend.name, slots, "using the server's slot count");
    }
    if state == HealthState::Ok && backend.passive.probe_succeeded(std::time::Instant::now()) {
        tracing::info!(backend = %backend.name, "ejected backend re-admitted after a good health poll");
    }
    if previous != state {
        log_change(backend, previous, state);
    }
    state
}

/// After a failed request, asks `backend`'s `/health` at once instead of waiting for
/// the next poll (one check at a time per backend): a server that fails its check
/// leaves the pick now; one that passes was failed by the request, not by itself.
pub(crate) fn check_after_failure(backend: &Arc<Backend>, client: &LlamaClient, timeout: Duration) {
    if !backend.passive.start_check() {
        return;
    }
    /// Ends the check however its task ends.
    struct Checking(Arc<Backend>);
    impl Drop for Checking {
        fn drop(&mut self) {
            self.0.passive.check_done();
        }
    }
    let checking = Checking(backend.clone());
    let client = client.clone();
    tokio::spawn(async move {
        check(&checking.0, &client, timeout).await;
    });
}

/// `backend` refused a connection: nothing listens there, so it leaves the pick at
/// once, until its `/health` answers again.
pub(crate) fn refused(backend: &Backend) {
    let previous = backend.set_state(HealthState::Down, backend.last_probe_micros());
    if previous != HealthState::Down {
        log_change(backend, previous, HealthState::Down);
    }
}

fn log_change(backend: &Backend, previous: HealthState, state: HealthState) {
    crate::metrics::state_changed(&backend.name, state.as_str());
    let (name, url, from, to) = (
        &backend.name,
        &backend.url,
        previous.as_str(),
        state.as_str(),
    );
    if state == HealthState::Ok {
        tracing::info!(backend = %name, %url, from, to, "backend health changed");
    } else {
        tracing::warn!(backend = %name, %url, from, to, "backend health changed");
    }
}
