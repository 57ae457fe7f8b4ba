//! The backends, their health, and which replica takes the next request.

use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use http::{HeaderValue, Uri};
use secrecy::{ExposeSecret, SecretString};
use si_core::{BackendConfig, BackendLimits};

use crate::capacity::{Capacity, PassiveHealth};

use crate::{LlamaClient, RouterError};

/// What the last `/health` poll said about a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthState {
    /// Not polled yet; routable, so a restart of the gateway does not wait for a poll.
    Unknown,
    /// `200 {"status":"ok"}`.
    Ok,
    /// `503 Loading model`: up, not yet serving.
    Loading,
    /// Refused, timed out, or answered something else.
    Down,
}

impl HealthState {
    /// `unknown`, `ok`, `loading` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Unknown => "unknown",
            HealthState::Ok => "ok",
            HealthState::Loading => "loading",
            HealthState::Down => "down",
        }
    }

    /// Whether requests may be sent.
    pub fn is_routable(self) -> bool {
        matches!(self, HealthState::Unknown | HealthState::Ok)
    }

    fn to_u8(self) -> u8 {
        match self {
            HealthState::Unknown => 0,
            HealthState::Ok => 1,
            HealthState::Loading => 2,
            HealthState::Down => 3,
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            1 => HealthState::Ok,
            2 => HealthState::Loading,
            3 => HealthState::Down,
            _ => HealthState::Unknown,
        }
    }
}

/// One llama-server: where it is, how to authenticate, and its last known health.
pub struct Backend {
    /// Unique name from configuration.
    pub name: String,
    /// The model it serves.
    pub model: String,
    /// Base URL, for display.
    pub url: String,
    /// Where its key comes from (for messages; never the key).
    pub key_source: String,
    pub(crate) chat_uri: Uri,
    pub(crate) health_uri: Uri,
    pub(crate) props_uri: Uri,
    /// Replaced when the key is rotated, hence the lock (read once per request).
    authorization: RwLock<Option<HeaderValue>>,
    state: AtomicU8,
    /// Microseconds the last health poll took.
    last_probe_micros: AtomicU64,
    /// Whether it accepts image parts.
    pub vision: bool,
    /// Capacity and timeouts from configuration.
    pub limits: BackendLimits,
    pub(crate) capacity: Capacity,
    pub(crate) passive: PassiveHealth,
    /// Its own client, for its own connect timeout.
    pub(crate) client: LlamaClient,
}

impl Backend {
    fn new(config: &BackendConfig) -> Result<Self, RouterError> {
        let url = config.url.to_string();
        let uri = |path: &str| {
            format!("{url}{path}")
                .parse::<Uri>()
                .map_err(|e| RouterError::Failed {
                    backend: config.name.clone(),
                    message: format!("invalid URL: {e}"),
                })
        };
        let key_source = config.api_key_ref.to_string();
        let authorization = bearer(config.api_key.as_ref(), &config.name, &key_source)?;
        Ok(Backend {
            name: config.name.clone(),
            model: config.model.clone(),
            chat_uri: uri("/v1/chat/completions")?,
            health_uri: uri("/health")?,
            props_uri: uri("/props")?,
            url,
            key_source,
            authorization: RwLock::new(authorization),
            state: AtomicU8::new(HealthState::Unknown.to_u8()),
            last_probe_micros: AtomicU64::new(0),
            vision: config.vision,
            capacity: Capacity::new(&config.limits),
            limits: config.limits.clone(),
            passive: PassiveHealth::default(),
            client: LlamaClient::new(config.limits.connect_timeout),
        })
    }

    /// The last known health.
    pub fn state(&self) -> HealthState {
        HealthState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Records a poll result; returns the previous state.
    pub fn set_state(&self, state: HealthState, probe_micros: u64) -> HealthState {
        self.last_probe_micros
            .store(probe_micros, Ordering::Relaxed);
        HealthState::from_u8(self.state.swap(state.to_u8(), Ordering::Relaxed))
    }

    /// How long the last health poll took, in microseconds (0 before the first).
    pub fn last_probe_micros(&self) -> u64 {
        self.last_probe_micros.load(Ordering::Relaxed)
    }

    /// Whether requests may be sent: its health poll says so and passive health
    /// checks have not taken it out of rotation.
    pub fn is_routable(&self) -> bool {
        self.state().is_routable() && !self.passive.is_ejected()
    }

    /// Whether passive health checks took it out of rotation.
    pub fn is_ejected(&self) -> bool {
        self.passive.is_ejected()
    }

    /// Requests being answered by it now.
    pub fn in_flight(&self) -> usize {
        self.capacity.in_flight()
    }

    /// Slots the gateway uses on it (from configuration, or the server's `/props`).
    pub fn slots(&self) -> usize {
        self.capacity.size()
    }

    /// Requests waiting for one of its slots.
    pub fn waiting(&self) -> usize {
        self.capacity.waiting()
    }

    /// Its state for people: the health poll's, or `ejected`.
    pub fn state_label(&self) -> &'static str {
        if self.is_ejected() {
            "ejected"
        } else {
            self.state().as_str()
        }
    }

    /// Whether the gateway has an API key for it.
    pub fn has_key(&self) -> bool {
        self.authorization().is_some()
    }

    /// The `Authorization` header to send, if the gateway has a key.
    pub(crate) fn authorization(&self) -> Option<HeaderValue> {
        self.authorization
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Switches to `key` (a rotation); returns whether it differs from the key in use.
    pub fn set_key(&self, key: Option<&SecretString>) -> Result<bool, RouterError> {
        let next = bearer(key, &self.name, &self.key_source)?;
        let mut current = self
            .authorization
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let changed = *current != next;
        *current = next;
        Ok(changed)
    }
}

/// `Bearer <key>`, marked sensitive so it is never printed.
fn bearer(
    key: Option<&SecretString>,
    backend: &str,
    key_source: &str,
) -> Result<Option<HeaderValue>, RouterError> {
    let Some(key) = key else { return Ok(None) };
    let mut value =
        HeaderValue::try_from(format!("Bearer {}", key.expose_secret())).map_err(|_| {
            RouterError::UnusableKey {
                backend: backend.to_owned(),
                key_source: key_source.to_owned(),
            }
        })?;
    value.set_sensitive(true);
    Ok(Some(value))
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.name)
            .field("model", &self.model)
            .field("url", &self.url)
            .field("key", &if self.has_key() { "[REDACTED]" } else { "none" })
            .field("state", &self.state())
            .finish()
    }
}

/// All backends, with a round-robin cursor per model for replica choice.
#[derive(Debug)]
pub struct BackendPool {
    backends: Vec<Arc<Backend>>,
    /// Held while deciding an ejection, so two replicas failing at once cannot
    /// both conclude that the other will carry the traffic.
    ejecting: std::sync::Mutex<()>,
    /// One cursor per model: a shared one would let two interleaved agents starve a
    /// replica (every other turn always landing on the same one).
    cursors: Vec<(String, AtomicUsize)>,
}

impl BackendPool {
    /// Builds the pool; fails only if a key cannot be sent as a header.
    pub fn new(configs: &[BackendConfig]) -> Result<Self, RouterError> {
        let mut pool = BackendPool {
            backends: configs
                .iter()
                .map(|c| Backend::new(c).map(Arc::new))
                .collect::<Result<_, _>>()?,
            cursors: Vec::new(),
            ejecting: std::sync::Mutex::new(()),
        };
        pool.cursors = pool
            .models()
            .map(|m| (m.to_owned(), AtomicUsize::new(0)))
            .collect();
        Ok(pool)
    }

    /// Every backend, in configuration order.
    pub fn all(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// Each model id once, in configuration order.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.backends
            .iter()
            .enumerate()
            .filter(|(i, b)| !self.backends[..*i].iter().any(|o| o.model == b.model))
            .map(|(_, b)| b.model.as_str())
    }

    /// The routable backend of `model` with the fewest requests in flight, skipping
    /// `exclude` (replicas already tried); ties go to the replicas in turn.
    pub fn pick(&self, model: &str, exclude: &[String]) -> Result<Arc<Backend>, RouterError> {
        let eligible = |b: &&Arc<Backend>| b.model == model && !exclude.contains(&b.name);
        let mut candidates: Vec<&Arc<Backend>> = self
            .backends
            .iter()
            .filter(eligible)
            .filter(|b| b.is_routable())
            .collect();
        if candidates.is_empty() {
            // Every healthy replica is ejected: rather than refuse, try them
            // (Envoy's panic mode); passive ejection must never take a model down.
            candidates = self
                .backends
                .iter()
                .filter(eligible)
                .filter(|b| b.state().is_routable())
                .collect();
        }
        if candidates.is_empty() {
            return Err(RouterError::NoHealthyBackend {
                model: model.to_owned(),
                states: self
                    .backends
                    .iter()
                    .filter(|b| b.model == model)
                    .map(|b| (b.name.clone(), b.state_label().to_owned()))
                    .collect(),
            });
        }
        let turn = self
            .cursors
            .iter()
            .find(|(m, _)| m == model)
            .map_or(0, |(_, cursor)| cursor.fetch_add(1, Ordering::Relaxed));
        let start = turn % candidates.len();
        let chosen = (0..candidates.len())
            .map(|i| candidates[(start + i) % candidates.len()])
            .min_by_key(|b| b.in_flight())
            .unwrap_or(candidates[start]);
        Ok(Arc::clone(chosen))
    }

    /// Whether `model` takes image parts (its replicas agree; configuration checks).
    pub fn accepts_images(&self, model: &str) -> bool {
        self.backends.iter().any(|b| b.model == model && b.vision)
    }

    /// Counts a failure of `backend`, ejecting it when the policy says so and
    /// another replica of its model is still in rotation; returns the period.
    pub(crate) fn backend_failed(
        &self,
        backend: &Backend,
        policy: &si_core::FailoverConfig,
    ) -> Option<std::time::Duration> {
        let _deciding = self.ejecting.lock().unwrap_or_else(|e| e.into_inner());
        let other_in_rotation = self
            .backends
            .iter()
            .any(|b| b.model == backend.model && b.name != backend.name && b.is_routable());
        backend
            .passive
            .failed(other_in_rotation, policy, std::time::Instant::now())
    }
}

#[cfg(test)]
mod tests;
