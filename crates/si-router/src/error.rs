/// Why a chat request could not be routed or answered, with enough detail to say
/// whose fault it is: the caller's (bad request), the gateway's configuration (a
/// rejected key), or a backend's (down, loading, failing).
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The body is not JSON, or not a chat request.
    #[error("{0}")]
    InvalidRequest(String),
    /// `agent_type` or `model` names nothing we serve.
    #[error("unknown agent `{given}`; valid agents: {valid}; models: {models}", valid = .valid.join(", "), models = .models.join(", "))]
    UnknownAgent {
        /// What the request said.
        given: String,
        /// Agent names.
        valid: Vec<String>,
        /// Model ids that agents are served by.
        models: Vec<String>,
    },
    /// Neither `agent_type` nor `model` was given.
    #[error("the request names no agent: set `agent_type` (or `model`) to one of {valid}", valid = .valid.join(", "))]
    NoAgent {
        /// Agent names.
        valid: Vec<String>,
    },
    /// Every backend of the model is down or loading.
    #[error("no healthy backend for model `{model}` ({states})", states = describe(.states))]
    NoHealthyBackend {
        /// The model.
        model: String,
        /// Each backend of the model and its state.
        states: Vec<(String, String)>,
    },
    /// The backend could not be reached (refused, reset, connect timeout).
    #[error("backend `{backend}` is unreachable: {reason}")]
    Unreachable {
        /// The backend.
        backend: String,
        /// What the connection attempt said.
        reason: String,
        /// How far the request got.
        reach: Reach,
    },
    /// The request has image parts and the agent's model takes none.
    #[error(
        "agent `{agent}` cannot read images: its model `{model}` has no vision projector; \
         send text only, or ask an agent whose model takes images"
    )]
    ImagesNotAccepted {
        /// The agent asked for.
        agent: String,
        /// Its model.
        model: String,
    },
    /// The backend rejected the gateway's API key: a gateway misconfiguration.
    #[error("{}", key_rejected_message(.backend, .key_source, *.had_key))]
    KeyRejected {
        /// The backend.
        backend: String,
        /// Where the gateway's key comes from (`env::NAME`), never the key.
        key_source: String,
        /// Whether the gateway sent a key at all.
        had_key: bool,
    },
    /// The backend answered 503 (usually `Loading model`).
    #[error("backend `{backend}` is unavailable: {message}; retry shortly")]
    Unavailable {
        /// The backend.
        backend: String,
        /// Its message.
        message: String,
    },
    /// The backend refused the request as invalid (4xx other than 401): the caller's
    /// fault, passed back with the backend's own message.
    #[error("{message}")]
    Rejected {
        /// The backend.
        backend: String,
        /// The backend's status.
        status: u16,
        /// llama-server's error type, e.g. `exceed_context_size_error`.
        kind: String,
        /// The backend's message.
        message: String,
    },
    /// The backend failed (5xx other than 503, or a broken response).
    #[error("backend `{backend}` failed: {message}")]
    Failed {
        /// The backend.
        backend: String,
        /// What happened.
        message: String,
    },
    /// The backend did not answer in time.
    #[error("backend `{backend}` did not answer within {seconds} s (headers_timeout_ms)")]
    Timeout {
        /// The backend.
        backend: String,
        /// The limit that ran out.
        seconds: f64,
    },
    /// Every slot of the backend is busy and its queue is full, or the request
    /// waited the queue's whole timeout.
    #[error("backend `{backend}` is at capacity: {why}; retry in a few seconds")]
    Overloaded {
        /// The backend.
        backend: String,
        /// Queue full, or waited too long.
        why: &'static str,
    },
    /// The agent's model failed and its fallback agent is not the caller's to use.
    #[error(
        "agent `{agent}` cannot answer now and its fallback agent `{fallback}` is not one your role may use"
    )]
    FallbackForbidden {
        /// The agent asked for.
        agent: String,
        /// Its fallback.
        fallback: String,
    },
    /// The answer broke off or stalled after its headers.
    #[error("{message}")]
    CutShort {
        /// The backend.
        backend: String,
        /// Why.
        reason: crate::CutShort,
        /// What happened, naming the backend (never the answer's text).
        message: String,
    },
    /// A whole answer was larger than the gateway holds.
    #[error("backend `{backend}` sent an answer larger than {limit} bytes")]
    TooLarge {
        /// The backend.
        backend: String,
        /// The limit, bytes.
        limit: usize,
    },
    /// A backend's API key cannot be sent as an HTTP header.
    #[error(
        "the API key from {key_source} for backend `{backend}` contains characters not allowed in an HTTP header"
    )]
    UnusableKey {
        /// The backend.
        backend: String,
        /// Where the key comes from.
        key_source: String,
    },
}

fn key_rejected_message(backend: &str, key_source: &str, had_key: bool) -> String {
    if had_key {
        format!(
            "backend `{backend}` rejected the gateway's API key; check {key_source} in the \
             gateway's environment or .api_keys.env against the key that server was started with"
        )
    } else {
        format!(
            "backend `{backend}` requires an API key and the gateway has none: set {key_source} \
             in the gateway's environment or .api_keys.env (`si-cli keys generate`)"
        )
    }
}

/// How far a request got before its backend could not be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// The connection was refused: nothing listens there; the request was never sent.
    Refused,
    /// No connection was made (timed out, no route); the request was never sent.
    NotConnected,
    /// The connection broke after the request may have been sent.
    Dropped,
}

impl RouterError {
    /// The request never left the gateway (no connection was made), so sending it
    /// to another replica cannot run it twice.
    pub fn never_sent(&self) -> bool {
        matches!(
            self,
            RouterError::Unreachable {
                reach: Reach::Refused | Reach::NotConnected,
                ..
            }
        )
    }

    /// Worth another replica: nothing reached the client, and another server of the
    /// same model may well answer (refused or dropped connection, 5xx, loading).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RouterError::Unreachable { .. }
                | RouterError::Failed { .. }
                | RouterError::Unavailable { .. }
        )
    }

    /// The backend involved, if any (safe to log: a configured name).
    pub fn backend(&self) -> Option<&str> {
        match self {
            RouterError::Unreachable { backend, .. }
            | RouterError::KeyRejected { backend, .. }
            | RouterError::Unavailable { backend, .. }
            | RouterError::Rejected { backend, .. }
            | RouterError::Failed { backend, .. }
            | RouterError::Timeout { backend, .. }
            | RouterError::Overloaded { backend, .. }
            | RouterError::CutShort { backend, .. }
            | RouterError::TooLarge { backend, .. }
            | RouterError::UnusableKey { backend, .. } => Some(backend),
            RouterError::InvalidRequest(_)
            | RouterError::ImagesNotAccepted { .. }
            | RouterError::UnknownAgent { .. }
            | RouterError::NoAgent { .. }
            | RouterError::FallbackForbidden { .. }
            | RouterError::NoHealthyBackend { .. } => None,
        }
    }
}

fn describe(states: &[(String, String)]) -> String {
    states
        .iter()
        .map(|(name, state)| format!("{name}: {state}"))
        .collect::<Vec<_>>()
        .join(", ")
}
