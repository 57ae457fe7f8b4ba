//! Watching the database several gateways share: whether it answers (for
//! `/healthz`, and logged when it stops and when it is back) and how its
//! connection pool is used (for the metrics). Requests that need it fail on their
//! own with 503 while it is down; this only reports.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use si_store::postgres::PostgresAccounts;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Gateway;

/// How often the database is asked whether it answers.
const PING_EVERY: Duration = Duration::from_secs(1);
/// A ping that takes longer than this counts as no answer.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The shared database and what was last seen of it.
#[derive(Debug)]
pub(crate) struct SharedStore {
    database: Arc<PostgresAccounts>,
    up: AtomicBool,
}

impl SharedStore {
    pub(crate) fn new(database: Arc<PostgresAccounts>) -> Self {
        SharedStore {
            database,
            // It answered at start, or the gateway would not have opened.
            up: AtomicBool::new(true),
        }
    }

    /// Whether it answered when last asked.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
}

/// Pings the shared database every second until `stop`, if there is one.
pub(crate) fn spawn(gateway: &Gateway, stop: CancellationToken) -> Option<JoinHandle<()>> {
    gateway.inner.shared.as_ref()?;
    let gateway = gateway.clone();
    Some(tokio::spawn(async move {
        let Some(shared) = gateway.inner.shared.as_ref() else {
            return;
        };
        loop {
            let answered = matches!(
                tokio::time::timeout(PING_TIMEOUT, shared.database.ping()).await,
                Ok(Ok(()))
            );
            let was = shared.up.swap(answered, Ordering::Relaxed);
            if was != answered {
                let place = shared.database.place();
                if answered {
                    tracing::info!(place, "the shared database answers again");
                } else {
                    tracing::error!(
                        place,
                        "the shared database does not answer; requests that need it get 503"
                    );
                }
            }
            crate::metrics::store::shared_database(answered, &shared.database.pool_status());
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(PING_EVERY) => {}
            }
        }
    }))
}
