//! [`Gateway`]: everything one server instance runs with.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use si_auth::audit::{AUDIT_FILE, AuditLog};
use si_auth::secret::{load_or_create_jwt_secret, user_db_path};
use si_auth::throttle::LoginThrottle;
use si_auth::{AuthError, JwtSecrets, RevocationList, TokenIssuer, UserStore};
use si_core::Config;
use si_gpu::{GpuError, GpuInventory};
use si_router::{Router, RouterError};

use crate::limits::RateLimits;

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
    pub(crate) users: Arc<UserStore>,
    /// Password checks allowed at once (one per CPU).
    pub(crate) login_slots: Arc<Semaphore>,
    /// What is revoked, checked on every request without the database.
    pub(crate) revocations: Arc<RevocationList>,
    /// Request rate limits.
    pub(crate) limits: RateLimits,
    /// Failed-login slowing and lockout.
    pub(crate) throttle: Arc<LoginThrottle>,
    /// The audit trail.
    pub(crate) audit: Arc<AuditLog>,
    /// Set once shutdown began.
    pub(crate) draining: AtomicBool,
    /// Where GPU readings come from.
    pub(crate) gpus: RwLock<Arc<dyn GpuInventory>>,
}

impl Gateway {
    /// Opens the data directory of `config`: its user database (created if absent) and
    /// its JWT secrets (`config.auth.secret` and `previous_secret`, else
    /// `<data_dir>/jwt_secret`, generated on first use, and `jwt_secret.previous`).
    pub fn open(config: Config) -> Result<Self, GatewayError> {
        let data_dir = &config.gateway.data_dir;
        let secrets = match &config.auth.secret {
            Some(secret) => JwtSecrets {
                current: secret.clone(),
                previous: config.auth.previous_secret.clone(),
            },
            None => load_or_create_jwt_secret(data_dir)?,
        };
        let users = UserStore::open(&user_db_path(data_dir))?;
        Gateway::new(config, users, &secrets)
    }

    /// A gateway from parts, for embedding and tests. `config` is checked again, since
    /// code may have built or changed it after loading.
    pub fn new(
        config: Config,
        users: UserStore,
        jwt_secrets: &JwtSecrets,
    ) -> Result<Self, GatewayError> {
        config.check("configuration")?;
        // Record from the first request on (a no-op if the process has a recorder).
        let _ = crate::metrics::handle();
        let router = Router::new(&config)?;
        let tokens = TokenIssuer::new(&config.auth, jwt_secrets);
        let limits = RateLimits::new(&config.rate_limits);
        let audit = Arc::new(AuditLog::open(&config.gateway.data_dir.join(AUDIT_FILE))?);
        let revocations = RevocationList::default();
        revocations.replace(users.revoked_set()?);
        let (gpus, note) = si_gpu::inventory::open(&config.gpu)?;
        if let Some(note) = note {
            tracing::info!("{note}");
        }
        Ok(Gateway {
            inner: Arc::new(GatewayInner {
                config,
                router,
                tokens,
                users: Arc::new(users),
                login_slots: Arc::new(Semaphore::new(
                    std::thread::available_parallelism().map_or(2, |n| n.get()),
                )),
                revocations: Arc::new(revocations),
                limits,
                throttle: Arc::new(LoginThrottle::default()),
                audit,
                draining: AtomicBool::new(false),
                gpus: RwLock::new(gpus),
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

    /// Its user database.
    pub fn users(&self) -> &UserStore {
        &self.inner.users
    }

    /// Where its GPU readings come from (chosen by `gpu.source` at start).
    pub fn gpu_inventory(&self) -> Arc<dyn GpuInventory> {
        self.inner
            .gpus
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces where its GPU readings come from, e.g. with an embedder's own
    /// source; the next sample uses it.
    pub fn set_gpu_inventory(&self, inventory: Arc<dyn GpuInventory>) {
        *self.inner.gpus.write().unwrap_or_else(|e| e.into_inner()) = inventory;
    }
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
/// `si-cli users disable` and other processes change: a cheap version check every
/// `interval`, a full reload only when something was committed.
pub(crate) fn spawn_revocation_sync(
    gateway: &Gateway,
    interval: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let inner = gateway.inner.clone();
    tokio::spawn(async move {
        let mut last_seen = None;
        let mut last_full = std::time::Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            let users = inner.users.clone();
            // Our own commits do not change the data version: read everything now
            // and then anyway, which also purges what has expired.
            let due = last_full.elapsed() >= FULL_RELOAD;
            let reloaded = tokio::task::spawn_blocking(move || {
                let version = users.data_version()?;
                if last_seen == Some(version) && !due {
                    return Ok((version, None));
                }
                users.revoked_set().map(|set| (version, Some(set)))
            })
            .await;
            match reloaded {
                Ok(Ok((version, set))) => {
                    last_seen = Some(version);
                    if let Some(set) = set {
                        inner.revocations.replace(set);
                        last_full = std::time::Instant::now();
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "revocation sync failed"),
                Err(e) => tracing::warn!(error = %e, "revocation sync task failed"),
            }
        }
    })
}
