//! [`RequestContext`]: what every part of a request's handling may know about it.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use http::HeaderMap;
use si_audit::AuditRecord;
use si_auth::Claims;

use crate::client_ip::client_ip;

/// One request: its id, who sent it from where, and since when. Built once, by
/// `routes::handle`, and handed to the handler.
#[derive(Debug)]
pub(crate) struct RequestContext {
    /// Sent back as `x-request-id`, and the id of the request's audit record (and
    /// of a workflow run's steps' records).
    pub id: String,
    /// The client's address (behind a trusted proxy, the one it reports).
    pub client: IpAddr,
    /// When the request arrived.
    pub started: Instant,
    /// Who is calling, once the bearer token was checked; `None` before, for
    /// endpoints without a token, and in insecure development mode.
    pub caller: Option<Claims>,
    /// What the handler learns for the audit record.
    pub notes: AuditNotes,
}

impl RequestContext {
    /// The context of a request with `headers` from `peer`.
    pub(crate) fn new(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> Self {
        RequestContext {
            id: request_id(peer.ip(), headers, trusted),
            client: client_ip(peer.ip(), headers, trusted),
            started: Instant::now(),
            caller: None,
            notes: AuditNotes::default(),
        }
    }
}

/// The request id a trusted proxy in front sent, if it is a sane one, else a new
/// one: 16 hex digits from the thread's CSPRNG (seeded from the operating system,
/// without a system call per request).
fn request_id(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> String {
    let from_proxy = trusted
        .iter()
        .any(|t| t.to_canonical() == peer.to_canonical());
    headers
        .get("x-request-id")
        .filter(|_| from_proxy)
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            (1..=64).contains(&id.len())
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
        .map_or_else(|| format!("{:016x}", rand::random::<u64>()), str::to_owned)
}

/// What a handler learns about its request for the record: who, which agent,
/// which backend answered, and the tokens of a whole answer.
#[derive(Clone, Debug, Default)]
pub(crate) struct AuditNotes(Arc<Mutex<Notes>>);

#[derive(Debug, Default)]
struct Notes {
    user: Option<String>,
    api_key: Option<String>,
    role: Option<String>,
    location: Option<String>,
    agent: Option<String>,
    model: Option<String>,
    backend: Option<String>,
    tokens: Option<(u64, u64)>,
}

impl AuditNotes {
    fn edit(&self, change: impl FnOnce(&mut Notes)) {
        change(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Who is calling.
    pub(crate) fn identify(&self, claims: &Claims) {
        self.identify_login(&claims.sub, claims.role.as_str(), &claims.loc);
    }

    /// The API key the request came with.
    pub(crate) fn via_key(&self, name: &str) {
        self.edit(|n| n.api_key = Some(name.to_owned()));
    }

    /// The API key the request came with, if any.
    pub(crate) fn api_key(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .api_key
            .clone()
    }

    /// Who logged in (there is no token yet).
    pub(crate) fn identify_login(&self, user: &str, role: &str, location: &str) {
        self.edit(|n| {
            n.user = Some(user.to_owned());
            n.role = Some(role.to_owned());
            n.location = Some(location.to_owned());
        });
    }

    /// Which agent the request named.
    pub(crate) fn agent(&self, agent: &str) {
        self.edit(|n| n.agent = Some(agent.to_owned()));
    }

    /// Which backend answered (or failed to).
    pub(crate) fn answered_by(&self, model: &str, backend: &str) {
        self.edit(|n| {
            n.model = Some(model.to_owned());
            n.backend = Some(backend.to_owned());
        });
    }

    /// The prompt and completion tokens of a whole answer.
    pub(crate) fn tokens(&self, prompt: u64, completion: u64) {
        self.edit(|n| n.tokens = Some((prompt, completion)));
    }

    pub(crate) fn agent_name(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .agent
            .clone()
    }

    /// Writes what was noted into `record`, over what it says.
    pub(crate) fn fill(&self, record: &mut AuditRecord) {
        let notes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let fields = [
            (&mut record.user, &notes.user),
            (&mut record.api_key, &notes.api_key),
            (&mut record.role, &notes.role),
            (&mut record.location, &notes.location),
            (&mut record.agent, &notes.agent),
            (&mut record.model, &notes.model),
            (&mut record.backend, &notes.backend),
        ];
        for (field, noted) in fields {
            if noted.is_some() {
                field.clone_from(noted);
            }
        }
        if let (None, Some((prompt, completion))) = (record.prompt_tokens, notes.tokens) {
            record.prompt_tokens = Some(prompt);
            record.completion_tokens = Some(completion);
        }
    }
}
