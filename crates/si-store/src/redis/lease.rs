//! One gateway's share of one rate-limit key: the unused tokens of the allowance
//! it leased from Redis, and Redis's last "none until". Bookkeeping only, no I/O,
//! so its promise (never admit more than was leased, never hold more than one
//! lease) is property-tested.

use std::time::Duration;

use tokio::time::Instant;

/// Tokens leased longer ago than this are dropped unused: Redis counted them
/// as spent when it leased them, and a gateway that went quiet must not spend
/// them much later on top of what the limit allows then.
pub(crate) const LEASE_LIFETIME: Duration = Duration::from_secs(60);

/// How many tokens a gateway leases at once for a limit of `per_minute`: 2.5% of
/// it, at least one.
pub(crate) fn lease_size(per_minute: u32) -> u32 {
    (per_minute / 40).max(1)
}

/// What Redis answered to a lease request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Grant {
    /// This many tokens (never more than asked for).
    Tokens(u32),
    /// None until then.
    NotUntil(Instant),
}

/// What taking one token came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Take {
    /// Admitted from the lease; `refill`: the lease runs low, so this caller
    /// starts the one background refill.
    Admitted {
        /// Start a refill.
        refill: bool,
    },
    /// Redis said no token frees until then: refused without asking again.
    Refused {
        /// When to ask again.
        until: Instant,
    },
    /// Nothing leased: ask Redis before answering.
    Empty,
}

/// The lease of one key.
#[derive(Debug, Default)]
pub(crate) struct Lease {
    tokens: u32,
    leased_at: Option<Instant>,
    not_until: Option<Instant>,
    refilling: bool,
}

impl Lease {
    /// Takes one token for a request, from a lease of at most `size`.
    pub(crate) fn take(&mut self, now: Instant, size: u32) -> Take {
        self.drop_stale(now);
        if self.tokens > 0 {
            self.tokens -= 1;
            let refill = !self.refilling && self.wanted(now, size) > 0;
            self.refilling |= refill;
            return Take::Admitted { refill };
        }
        match self.not_until {
            Some(until) if until > now => Take::Refused { until },
            _ => Take::Empty,
        }
    }

    /// How many tokens to ask for now: enough to fill the lease to `size` once it
    /// is half spent, unless Redis said to wait. Asked under the key's one-fetch
    /// lock, so nothing adds tokens before the answer is received and the lease
    /// never holds more than `size`.
    pub(crate) fn wanted(&mut self, now: Instant, size: u32) -> u32 {
        self.drop_stale(now);
        let waiting = self.not_until.is_some_and(|until| until > now);
        if waiting || self.tokens > size / 2 {
            0
        } else {
            size.saturating_sub(self.tokens)
        }
    }

    /// Adds what Redis answered, keeping at most `size`: should two fetches for
    /// one key ever overlap (its entry forgotten and made again meanwhile), the
    /// surplus is given up, so the lease never exceeds its bound.
    pub(crate) fn receive(&mut self, now: Instant, grant: Grant, size: u32) {
        match grant {
            Grant::Tokens(0) => {}
            Grant::Tokens(tokens) => {
                self.tokens = self.tokens.saturating_add(tokens).min(size);
                self.leased_at = Some(now);
                self.not_until = None;
            }
            Grant::NotUntil(until) => self.not_until = Some(until),
        }
    }

    /// The background refill is over, answered or not.
    pub(crate) fn refilled(&mut self) {
        self.refilling = false;
    }

    /// Nothing worth keeping: no usable tokens, no wait to remember, no refill
    /// in flight. Such entries are the first forgotten when memory runs short.
    pub(crate) fn is_idle(&mut self, now: Instant) -> bool {
        self.drop_stale(now);
        self.tokens == 0 && !self.refilling && self.not_until.is_none_or(|until| until <= now)
    }

    fn drop_stale(&mut self, now: Instant) {
        if self
            .leased_at
            .is_some_and(|at| now.saturating_duration_since(at) > LEASE_LIFETIME)
        {
            self.tokens = 0;
            self.leased_at = None;
        }
    }

    #[cfg(test)]
    fn tokens(&self) -> u32 {
        self.tokens
    }
}

#[cfg(test)]
mod tests;
