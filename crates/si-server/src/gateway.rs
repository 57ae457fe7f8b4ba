//! [`Gateway`]: everything one server instance runs with.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use si_audit::AuditStore;
use si_auth::api_keys::ApiKeyList;
use si_auth::secret::load_or_create_jwt_secret;
use si_auth::store::{ApiKeyStore, LoginAttempts, RequestCounters, RevocationStore};
use si_auth::{Accounts, AuthError, JwtSecrets, RevocationList, TokenIssuer};
use si_core::Config;
use si_gpu::{GpuError, GpuInventory};
use si_router::{Router, RouterError};
use si_store::{StoreError, Stores};

/// Why a gateway could not be put together.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The user database or JWT secret could not be opened.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The backends could not be set up.
    #[error(transparent)]
    Router(#[from] RouterError),
    /// A configuration built in code is inconsistent.
    #[error(transparent)]
    Config(#[from] si_core::ConfigError),
    /// A store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The single sign-on settings cannot be used (e.g. `auth.oidc.ca_file`).
    #[error("auth.oidc: {0}")]
    Oidc(#[from] si_oidc::OidcError),
    /// `gpu.source = "nvml"` and NVML could not be opened.
    #[error(
        "gpu.source is \"nvml\" but {0}; install the NVIDIA driver or set gpu.source = \"auto\""
    )]
    Gpu(#[from] GpuError),
}

/// Configuration, router, token issuer and user database of one gateway.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<GatewayInner>,
}

#[derive(Debug)]
pub(crate) struct GatewayInner {
    pub(crate) config: Config,
    pub(crate) router: Router,
    pub(crate) tokens: TokenIssuer,
    /// Users and sessions.
    pub(crate) accounts: Accounts,
    /// Password checks allowed at once (one per CPU).
    pub(crate) login_slots: Arc<Semaphore>,
    /// What is revoked, checked on every request without the database.
    pub(crate) revocations: Arc<RevocationList>,
    /// Where revocations are kept.
    pub(crate) revocation_store: Arc<dyn RevocationStore>,
    /// Every API key's hash, checked on requests without the database.
    pub(crate) api_keys: ApiKeyList,
    /// Where API keys are kept.
    pub(crate) api_key_store: Arc<dyn ApiKeyStore>,
    /// Keys' uses not yet written to the store.
    pub(crate) key_uses: crate::key_use::KeyUses,
    /// Request rate limits.
    pub(crate) limits: Arc<dyn RequestCounters>,
    /// Failed-login slowing and lockout.
    pub(crate) throttle: Arc<dyn LoginAttempts>,
    /// The audit trail.
    pub(crate) audit: Arc<dyn AuditStore>,
    /// Set once shutdown began.
    pub(crate) draining: AtomicBool,
    /// Where GPU readings come from.
    pub(crate) gpus: Arc<dyn GpuInventory>,
    /// The database several gateways share, if any, and whether it answered
    /// when last asked.
    pub(crate) shared: Option<crate::store_monitor::SharedStore>,
    /// The Redis several gateways count in, if any.
    pub(crate) shared_counters: Option<si_store::redis::RedisHealth>,
    /// The hospital's OpenID provider, when single sign-on is configured.
    pub(crate) oidc: Option<si_oidc::Provider>,
    /// Provider tokens whose user has been checked against the user table (by
    /// token id, until they expire).
    pub(crate) oidc_checked: crate::handlers::oidc::CheckedTokens,
}

/// What a gateway is made of besides its configuration: its stores, its token
/// signing secrets and its GPU readings. [`Gateway::parts`] opens what the
/// configuration names; an embedder may replace any part before
/// [`Gateway::new`].
#[derive(Debug)]
pub struct GatewayParts {
    /// Users, sessions, revocations, the audit trail, counters.
    pub stores: Stores,
    /// The JWT signing secrets.
    pub jwt_secrets: JwtSecrets,
    /// Where GPU readings come from.
    pub gpus: Arc<dyn GpuInventory>,
}

impl Gateway {
    /// A gateway with everything `config` names: see [`Gateway::parts`].
    pub async fn open(config: Config) -> Result<Self, GatewayError> {
        let parts = Gateway::parts(&config).await?;
        Gateway::new(config, parts).await
    }

    /// Opens what `config` names: its stores (created if absent), its JWT secrets
    /// (`config.auth.secret` and `previous_secret`, else `<data_dir>/jwt_secret`,
    /// generated on first use, and `jwt_secret.previous`), and its GPU readings
    /// (`gpu.source`).
    pub async fn parts(config: &Config) -> Result<GatewayParts, GatewayError> {
        let jwt_secrets = match &config.auth.secret {
            Some(secret) => JwtSecrets {
                current: secret.clone(),
                previous: config.auth.previous_secret.clone(),
            },
            None => {
                if config.store.database_url.is_some() {
                    tracing::warn!(
                        "store.database_url is shared but JWT_SECRET is not set: this gateway \
                         signs with its own generated secret, so other gateways will refuse its \
                         tokens; give every gateway the same JWT_SECRET"
                    );
                }
                load_or_create_jwt_secret(&config.gateway.data_dir)?
            }
        };
        let (gpus, note) = si_gpu::inventory::open(&config.gpu)?;
        if let Some(note) = note {
            tracing::info!("{note}");
        }
        Ok(GatewayParts {
            stores: Stores::open(config).await?,
            jwt_secrets,
            gpus,
        })
    }

    /// A gateway from parts. `config` is checked again, since code may have built or
    /// changed it after loading.
    pub async fn new(config: Config, parts: GatewayParts) -> Result<Self, GatewayError> {
        config.check("configuration")?;
        // Record from the first request on (a no-op if the process has a recorder).
        let _ = crate::metrics::handle();
        let router = Router::new(&config)?;
        let tokens = TokenIssuer::new(&config.auth, &parts.jwt_secrets);
        let stores = parts.stores;
        let revocations = RevocationList::default();
        revocations.replace(stores.accounts.revocations.revoked().await?);
        let api_keys = ApiKeyList::default();
        api_keys.replace(stores.accounts.api_keys.keys().await?);
        let oidc = config
            .auth
            .oidc
            .as_ref()
            .map(|oidc| si_oidc::Provider::new(oidc, sign_in_state_key(&parts.jwt_secrets)))
            .transpose()?;
        Ok(Gateway {
            inner: Arc::new(GatewayInner {
                config,
                router,
                tokens,
                accounts: stores.accounts.accounts()?,
                login_slots: Arc::new(Semaphore::new(
                    std::thread::available_parallelism().map_or(2, |n| n.get()),
                )),
                revocations: Arc::new(revocations),
                revocation_store: stores.accounts.revocations,
                api_keys,
                api_key_store: stores.accounts.api_keys,
                key_uses: crate::key_use::KeyUses::default(),
                limits: stores.counters,
                throttle: stores.login_attempts,
                audit: stores.audit,
                draining: AtomicBool::new(false),
                gpus: parts.gpus,
                shared: stores
                    .accounts
                    .shared
                    .map(crate::store_monitor::SharedStore::new),
                shared_counters: stores.shared_counters,
                oidc,
                oidc_checked: Default::default(),
            }),
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Its router (agents, backends and their health).
    pub fn router(&self) -> &Router {
        &self.inner.router
    }

    /// Its token issuer.
    pub fn tokens(&self) -> &TokenIssuer {
        &self.inner.tokens
    }

    /// Whether it is shutting down (in-flight requests finishing, no new ones).
    pub fn is_draining(&self) -> bool {
        self.inner
            .draining
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Its users and sessions.
    pub fn accounts(&self) -> &Accounts {
        &self.inner.accounts
    }

    /// Where its GPU readings come from.
    pub fn gpu_inventory(&self) -> Arc<dyn GpuInventory> {
        self.inner.gpus.clone()
    }
}

/// The key that signs browsers' sign-ins in progress: derived from the JWT secret,
/// which every gateway of a platform shares, so a sign-in started on one may end
/// on another; derived, so that nothing signed with one can pass for the other.
fn sign_in_state_key(secrets: &JwtSecrets) -> secrecy::SecretString {
    use secrecy::ExposeSecret;
    let input = format!("si-oidc-sign-in-state\0{}", secrets.current.expose_secret());
    si_auth::accounts::token_hash(&input).into()
}

/// Samples the GPUs into the metrics every `interval`, on a blocking thread (NVML
/// calls into the driver), until `stop`. Logs when readings fail and when they
/// come back, not at every sample.
pub(crate) fn spawn_gpu_sampler(
    gateway: &Gateway,
    interval: Duration,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let gateway = gateway.clone();
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            let inventory = gateway.gpu_inventory();
            let source = inventory.source();
            match tokio::task::spawn_blocking(move || inventory.read()).await {
                Ok(Ok(readings)) => {
                    if failing {
                        tracing::info!(source, "GPU readings are back");
                        failing = false;
                    }
                    crate::metrics::gpu_gauges(&readings, source);
                }
                Ok(Err(e)) => {
                    if !failing {
                        tracing::warn!(source, error = %e, "GPU readings failed");
                        failing = true;
                    }
                }
                Err(e) => tracing::error!(error = %e, "GPU sampling task failed"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    })
}

/// The revocation list is read in full at least this often.
const FULL_RELOAD: Duration = Duration::from_secs(30);

/// Keeps the in-memory revocation list in step with the database, which
/// `si-cli users disable` and other gateways change: at once when the store
/// pushes a change, and, as the safety net, a cheap version check every
/// `interval`, with a full reload only when something was committed.
pub(crate) fn spawn_revocation_sync(
    gateway: &Gateway,
    interval: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let inner = gateway.inner.clone();
    tokio::spawn(async move {
        let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel();
        let pushed = inner.revocation_store.watch(changed);
        let mut last_seen = None;
        let mut last_full = std::time::Instant::now();
        loop {
            let mut pushed_at = None;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
                Some(at_ms) = changes.recv(), if pushed => {
                    // Several changes at once need one reload.
                    pushed_at = Some(at_ms);
                    while let Ok(at_ms) = changes.try_recv() {
                        pushed_at = pushed_at.max(Some(at_ms));
                    }
                }
            }
            // Our own commits may not change the version: read everything now and
            // then anyway, which also purges what has expired.
            let due = pushed_at.is_some() || last_full.elapsed() >= FULL_RELOAD;
            match reload(inner.revocation_store.as_ref(), last_seen, due).await {
                Ok((version, set)) => {
                    last_seen = Some(version);
                    if let Some(set) = set {
                        inner.revocations.replace(set);
                        // Keys are revoked (and made) through the same counter.
                        match inner.api_key_store.keys().await {
                            Ok(keys) => inner.api_keys.replace(keys),
                            Err(e) => {
                                // Not seen, so the next tick reads everything
                                // again: a key revoked meanwhile must not wait
                                // for the next full reload.
                                last_seen = None;
                                tracing::warn!(error = %e, "API key reload failed");
                            }
                        }
                        last_full = std::time::Instant::now();
                        if let Some(at_ms) = pushed_at.filter(|at| *at > 0) {
                            crate::metrics::store::revocation_applied(at_ms);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "revocation sync failed"),
            }
        }
    })
}

/// The store's version, and everything revoked if it changed since `last_seen`
/// or a full read is `due`.
async fn reload(
    store: &dyn RevocationStore,
    last_seen: Option<i64>,
    due: bool,
) -> Result<(i64, Option<si_auth::RevokedSet>), AuthError> {
    let version = store.version().await?;
    if last_seen == Some(version) && !due {
        return Ok((version, None));
    }
    Ok((version, Some(store.revoked().await?)))
}
