//! [`Gateway`]: everything one server instance runs with.

use std::sync::Arc;

use tokio::sync::Semaphore;

use secrecy::SecretString;
use si_auth::secret::{load_or_create_jwt_secret, user_db_path};
use si_auth::{AuthError, TokenIssuer, UserStore};
use si_core::Config;
use si_router::{Router, RouterError};

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
}

impl Gateway {
    /// Opens the data directory of `config`: its user database (created if absent) and
    /// its JWT secret (`config.auth.secret`, else `<data_dir>/jwt_secret`, generated on
    /// first use).
    pub fn open(config: Config) -> Result<Self, GatewayError> {
        let data_dir = &config.gateway.data_dir;
        let secret = match &config.auth.secret {
            Some(secret) => secret.clone(),
            None => load_or_create_jwt_secret(data_dir)?,
        };
        let users = UserStore::open(&user_db_path(data_dir))?;
        Gateway::new(config, users, &secret)
    }

    /// A gateway from parts, for embedding and tests. `config` is checked again, since
    /// code may have built or changed it after loading.
    pub fn new(
        config: Config,
        users: UserStore,
        jwt_secret: &SecretString,
    ) -> Result<Self, GatewayError> {
        config.check("configuration")?;
        let router = Router::new(&config)?;
        let tokens = TokenIssuer::new(&config.auth, jwt_secret);
        Ok(Gateway {
            inner: Arc::new(GatewayInner {
                config,
                router,
                tokens,
                users: Arc::new(users),
                login_slots: Arc::new(Semaphore::new(
                    std::thread::available_parallelism().map_or(2, |n| n.get()),
                )),
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

    /// Its user database.
    pub fn users(&self) -> &UserStore {
        &self.inner.users
    }
}
