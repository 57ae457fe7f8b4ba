//! Listening for revocations: every change to what is revoked sends a
//! notification at commit (see `BUMP_VERSION`), which a gateway receives on a
//! connection of its own, outside the pool, within milliseconds.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio_postgres::AsyncMessage;

use super::Reach;

/// The channel the notifications go out on.
const CHANNEL: &str = "si_revocations";
/// How long to wait before connecting again after the connection failed.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// Forwards each notification's time to `changed` until it is closed,
/// reconnecting after a failure. While disconnected, the gateway's polling still
/// picks changes up; after reconnecting, one is reported at once so that nothing
/// committed meanwhile waits for the poll.
pub(super) async fn listen(reach: Reach, place: String, changed: UnboundedSender<i64>) {
    let mut failing = false;
    while !changed.is_closed() {
        let outcome = tokio::select! {
            () = changed.closed() => return,
            outcome = listen_once(&reach, &changed, &mut failing) => outcome,
        };
        match outcome {
            Ok(()) => return,
            Err(e) => {
                if !failing {
                    tracing::warn!(place = %place, error = %e, "revocation notifications lost; polling until they are back");
                    failing = true;
                }
            }
        }
        tokio::select! {
            () = changed.closed() => return,
            () = tokio::time::sleep(RECONNECT_AFTER) => {}
        }
    }
}

/// One connection's worth of listening: `Ok` once `changed` is closed, `Err`
/// when the connection fails. Once listening after a failure, says so, clears
/// `failing` and reports a change at once.
async fn listen_once(
    reach: &Reach,
    changed: &UnboundedSender<i64>,
    failing: &mut bool,
) -> Result<(), String> {
    let (client, mut connection) = reach
        .config
        .connect(reach.tls.clone())
        .await
        .map_err(|e| e.to_string())?;
    // The connection does its work only while polled: LISTEN is answered through
    // it too.
    let (listening, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(note))) if note.channel() == CHANNEL => {
                    let _ = listening.send(note.payload().parse::<i64>().unwrap_or(0));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return e.to_string(),
                None => return "the connection closed".to_owned(),
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(|e| e.to_string())?;
    if std::mem::take(failing) {
        tracing::info!("revocation notifications are back");
        let _ = changed.send(0);
    }
    loop {
        tokio::select! {
            () = changed.closed() => {
                driver.abort();
                return Ok(());
            }
            note = notifications.recv() => match note {
                Some(at_ms) => {
                    let _ = changed.send(at_ms);
                }
                None => {
                    return Err(driver.await.unwrap_or_else(|e| e.to_string()));
                }
            },
        }
    }
}
