//! The failed-login throttle in Redis: the policy of
//! [`crate::memory::LoginThrottle`], in atomic scripts, so failures spread over
//! several gateways count against one budget. Keys (hashes, expiring with their
//! window or lockout): `{prefix}:lt:pair:{address}:{user}`,
//! `{prefix}:lt:addr:{address}` and `{prefix}:lt:user:{user}`, each name hashed.

use std::sync::LazyLock;
use std::time::Duration;

use ::redis::{Script, ScriptInvocation};
use si_auth::store::{Admitted, FailedLogin, LoginAttempts, LoginRefusal};
use si_core::config::RedisFailure;

use super::{RedisConnection, Unanswered, hashed};
use crate::memory::{LoginThrottle, ThrottlePolicy};

/// How long a login step may wait for Redis: logins are rare and already take
/// a password hash's time, but a hung Redis must not hang them.
const LOGIN_TIMEOUT: Duration = Duration::from_millis(500);

static BEGIN: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../scripts/redis/login_begin.lua")));
static FAILED: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../scripts/redis/login_failed.lua")));
static GIVE_BACK: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../scripts/redis/login_give_back.lua")));

/// Failed-login bookkeeping shared through Redis by every gateway with the same
/// Redis and prefix. While Redis does not answer, `store.redis_failure` decides:
/// this gateway's own bookkeeping, or refused logins.
#[derive(Debug)]
pub struct RedisLoginThrottle {
    connection: RedisConnection,
    policy: ThrottlePolicy,
    /// The same policy in this process, for `fail_open`.
    fallback: LoginThrottle,
}

/// The keys of one attempt.
struct AttemptKeys {
    pair: String,
    address: String,
    user: String,
    /// The address's field in the username's hash.
    address_field: String,
}

impl RedisLoginThrottle {
    /// A throttle with `policy`, kept over `connection`.
    pub fn new(connection: &RedisConnection, policy: ThrottlePolicy) -> Self {
        RedisLoginThrottle {
            connection: connection.clone(),
            fallback: LoginThrottle::new(policy.clone()),
            policy,
        }
    }

    fn keys(&self, user: &str, address: &str) -> AttemptKeys {
        let (user, address) = (hashed(user), hashed(address));
        AttemptKeys {
            pair: self.connection.key(&format!("lt:pair:{address}:{user}")),
            address: self.connection.key(&format!("lt:addr:{address}")),
            user: self.connection.key(&format!("lt:user:{user}")),
            address_field: format!("a:{address}"),
        }
    }

    /// `script` over the attempt's keys with the policy's limits and times.
    fn with_policy<'a>(&self, script: &'a Script, keys: &AttemptKeys) -> ScriptInvocation<'a> {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut invocation = script.key(&keys.pair);
        invocation
            .key(&keys.address)
            .key(&keys.user)
            .arg(self.policy.pair_failures)
            .arg(self.policy.address_failures)
            .arg(millis(self.policy.window).max(1))
            .arg(millis(self.policy.lockout).max(1));
        invocation
    }

    async fn run<T: ::redis::FromRedisValue>(
        &self,
        operation: &'static str,
        script: &ScriptInvocation<'_>,
    ) -> Result<T, Unanswered> {
        if !self.connection.is_up() {
            return Err(Unanswered);
        }
        self.connection.run(operation, LOGIN_TIMEOUT, script).await
    }

    async fn give_back(
        &self,
        user: &str,
        address: &str,
        succeeded: bool,
    ) -> Result<(), Unanswered> {
        let keys = self.keys(user, address);
        let mut script = GIVE_BACK.key(&keys.pair);
        script.key(&keys.address).arg(u8::from(succeeded));
        self.run::<i64>("login_give_back", &script).await.map(drop)
    }

    fn fail_open(&self) -> bool {
        self.connection.failure() == RedisFailure::FailOpen
    }
}

#[async_trait::async_trait]
impl LoginAttempts for RedisLoginThrottle {
    async fn begin(&self, user: &str, address: &str) -> Result<Admitted, LoginRefusal> {
        let keys = self.keys(user, address);
        let script = self.with_policy(&BEGIN, &keys);
        match self.run::<(u8, u64)>("login_begin", &script).await {
            Ok((1, failed)) => Ok(Admitted {
                delay: self
                    .policy
                    .delay_after(u32::try_from(failed).unwrap_or(u32::MAX)),
            }),
            Ok((_, locked_ms)) => Err(LoginRefusal::Locked(Duration::from_millis(locked_ms))),
            Err(Unanswered) if self.fail_open() => {
                LoginAttempts::begin(&self.fallback, user, address).await
            }
            Err(Unanswered) => Err(LoginRefusal::Unavailable),
        }
    }

    async fn failed(&self, user: &str, address: &str) -> FailedLogin {
        let keys = self.keys(user, address);
        let mut script = self.with_policy(&FAILED, &keys);
        script
            .arg(self.policy.distributed_addresses)
            .arg(&keys.address_field);
        match self.run::<u8>("login_failed", &script).await {
            Ok(distributed) => FailedLogin {
                distributed: distributed == 1,
            },
            Err(Unanswered) if self.fail_open() => {
                LoginAttempts::failed(&self.fallback, user, address).await
            }
            // Refused logins are not judged; one judged before the outage is lost.
            Err(Unanswered) => FailedLogin::default(),
        }
    }

    async fn succeeded(&self, user: &str, address: &str) {
        if self.give_back(user, address, true).await.is_err() && self.fail_open() {
            LoginAttempts::succeeded(&self.fallback, user, address).await;
        }
    }

    async fn void(&self, user: &str, address: &str) {
        if self.give_back(user, address, false).await.is_err() && self.fail_open() {
            LoginAttempts::void(&self.fallback, user, address).await;
        }
    }
}
