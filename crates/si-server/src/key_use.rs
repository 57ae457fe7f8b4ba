//! What a request made with an API key passes besides every request's checks:
//! the key's own rate limit, and noting that the key was used. The note stays in
//! memory; [`spawn_use_writer`] stores the notes off the request path, in
//! batches, at most once a minute per key (see [`si_auth::api_keys::last_used`]).

use std::time::Duration;

use si_auth::api_keys::ApiKey;
use si_auth::api_keys::last_used::PendingUses;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Gateway;
use crate::error::ApiError;

/// How long the writer waits after news before writing, so that uses noted
/// together are written together.
const GATHER: Duration = Duration::from_secs(1);
/// How long the writer waits before trying a failed write again.
const RETRY: Duration = Duration::from_secs(10);

/// Uses of keys waiting to be written, and the writer's doorbell.
#[derive(Debug, Default)]
pub(crate) struct KeyUses {
    pending: PendingUses,
    news: Notify,
}

/// Notes that `key` was used, and counts the request against the key's own
/// quota, if it has one.
pub(crate) async fn admit(gateway: &Gateway, key: &ApiKey) -> Result<(), ApiError> {
    let uses = &gateway.inner.key_uses;
    if uses.pending.note(&key.name, si_auth::users::unix_now()) {
        uses.news.notify_one();
    }
    if let Some(per_minute) = key.rate_limit {
        gateway
            .inner
            .limits
            .check_api_key(&key.name, per_minute)
            .await?;
    }
    Ok(())
}

/// Writes the uses requests note, a moment after the first news, until
/// `shutdown`; then writes what is left.
pub(crate) fn spawn_use_writer(gateway: &Gateway, shutdown: CancellationToken) -> JoinHandle<()> {
    let gateway = gateway.clone();
    tokio::spawn(async move {
        let uses = &gateway.inner.key_uses;
        let mut failed = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = uses.news.notified() => {}
                () = tokio::time::sleep(RETRY), if failed => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(GATHER) => {}
            }
            failed = !write(&gateway).await;
        }
        write(&gateway).await;
    })
}

/// Writes what is pending; false (the uses kept for the next try) if the store
/// refused.
async fn write(gateway: &Gateway) -> bool {
    let uses = &gateway.inner.key_uses.pending;
    let batch = uses.take(si_auth::users::unix_now());
    if batch.is_empty() {
        return true;
    }
    match gateway.inner.api_key_store.record_uses(&batch).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(keys = batch.len(), error = %e, "API keys' last use not recorded; retrying");
            uses.give_back(batch);
            false
        }
    }
}
