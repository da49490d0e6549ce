//! Throttles on the account endpoints, against password guessing and sign-up floods.
//!
//! - Failed logins are counted per account (the email tried, whether or not it exists) and per
//!   client address. Past a few free failures, each further attempt must wait a delay that
//!   doubles with every failure, up to [`MAX_DELAY_MS`]; an attempt that comes sooner is refused
//!   with 429 and `Retry-After` before any password is hashed, so a flood costs the server
//!   nothing. An attempt counts as a failure from the moment it is let through (so a burst of
//!   concurrent guesses cannot all pass the check before the first one fails); a success takes
//!   its own count back and forgets the account's failures, but not the address's earlier
//!   ones: an attacker cannot reset their address by logging into an account of their own.
//! - Sign-ups are counted per client address in a one-hour window.
//!
//! The counts live in this replica's memory: with N replicas behind a balancer an attacker
//! gets up to N times the free attempts. They are forgotten after [`FORGET_AFTER_MS`] without
//! a failure, and the table is bounded by [`MAX_ENTRIES`].

use std::{collections::HashMap, net::IpAddr, sync::Mutex};

/// Failures of one account before a delay applies.
pub const FREE_ACCOUNT_FAILURES: u32 = 5;
/// Failures from one client address before a delay applies (several users may share one).
pub const FREE_ADDRESS_FAILURES: u32 = 20;
/// The first delay; each later failure doubles it.
const FIRST_DELAY_MS: i64 = 1_000;
/// The longest delay.
pub const MAX_DELAY_MS: i64 = 15 * 60 * 1000;
/// Failures are forgotten this long after the last one.
const FORGET_AFTER_MS: i64 = 60 * 60 * 1000;
/// The sign-up window.
const SIGNUP_WINDOW_MS: i64 = 60 * 60 * 1000;
/// Entries kept before old ones are dropped.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Count {
    count: u32,
    /// The last failure, or the start of the sign-up window.
    at_ms: i64,
}

/// What a throttle says about an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Refused: retry in this many seconds (at least 1).
    Wait {
        retry_after_secs: u64,
        per: Per,
    },
}

/// Which count refused an attempt, for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    Account,
    Address,
}

#[derive(Debug)]
pub struct AuthThrottle {
    failures: Mutex<HashMap<Key, Count>>,
    signups: Mutex<HashMap<IpAddr, Count>>,
    signups_per_hour: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Address(IpAddr),
}

/// How long after its `count`-th failure a key must wait, given `free` free failures.
fn delay_ms(count: u32, free: u32) -> i64 {
    if count < free {
        return 0;
    }
    let doublings = (count - free).min(30);
    FIRST_DELAY_MS.saturating_mul(1_i64 << doublings).min(MAX_DELAY_MS)
}

fn wait(until_ms: i64, now_ms: i64, per: Per) -> Verdict {
    let retry_after_secs = u64::try_from((until_ms - now_ms + 999) / 1000).unwrap_or(1).max(1);
    Verdict::Wait { retry_after_secs, per }
}

fn bound<K: Clone + Eq + std::hash::Hash>(map: &mut HashMap<K, Count>, now_ms: i64, keep_ms: i64) {
    if map.len() >= MAX_ENTRIES {
        map.retain(|_, count| now_ms - count.at_ms < keep_ms);
    }
    if map.len() >= MAX_ENTRIES {
        // Still full of live entries: a flood of distinct keys. Forget rather than grow.
        map.clear();
    }
}

impl AuthThrottle {
    pub fn new(signups_per_hour: u32) -> AuthThrottle {
        AuthThrottle { failures: Mutex::default(), signups: Mutex::default(), signups_per_hour }
    }

    fn key_verdict(failures: &HashMap<Key, Count>, key: &Key, free: u32, per: Per, now_ms: i64) -> Verdict {
        match failures.get(key) {
            Some(count) if now_ms - count.at_ms < FORGET_AFTER_MS => {
                let until = count.at_ms + delay_ms(count.count, free);
                if now_ms < until { wait(until, now_ms, per) } else { Verdict::Allowed }
            }
            _ => Verdict::Allowed,
        }
    }

    /// Whether a login for `email` from `address` may be tried now; if so, it is counted as a
    /// failure until [`AuthThrottle::login_succeeded`] says otherwise.
    pub fn begin_login(&self, email: &str, address: Option<IpAddr>, now_ms: i64) -> Verdict {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let account_key = Key::Account(email.to_owned());
        let account = Self::key_verdict(&failures, &account_key, FREE_ACCOUNT_FAILURES, Per::Account, now_ms);
        if account != Verdict::Allowed {
            return account;
        }
        if let Some(address) = address {
            let verdict =
                Self::key_verdict(&failures, &Key::Address(address), FREE_ADDRESS_FAILURES, Per::Address, now_ms);
            if verdict != Verdict::Allowed {
                return verdict;
            }
        }
        bound(&mut failures, now_ms, FORGET_AFTER_MS);
        for key in std::iter::once(account_key).chain(address.map(Key::Address)) {
            let count = failures.entry(key).or_insert(Count { count: 0, at_ms: now_ms });
            if now_ms - count.at_ms >= FORGET_AFTER_MS {
                count.count = 0;
            }
            count.count = count.count.saturating_add(1);
            count.at_ms = now_ms;
        }
        Verdict::Allowed
    }

    /// A login let through by [`AuthThrottle::begin_login`] succeeded: the account's failures
    /// are forgotten, and the address's count of this attempt is taken back.
    pub fn login_succeeded(&self, email: &str, address: Option<IpAddr>) {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        failures.remove(&Key::Account(email.to_owned()));
        if let Some(address) = address
            && let Some(count) = failures.get_mut(&Key::Address(address))
        {
            count.count = count.count.saturating_sub(1);
        }
    }

    /// Counts a sign-up attempt from `address`, or refuses it when the address had
    /// `signups_per_hour` in the current window.
    pub fn signup(&self, address: Option<IpAddr>, now_ms: i64) -> Verdict {
        let Some(address) = address else { return Verdict::Allowed };
        let mut signups = self.signups.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        bound(&mut signups, now_ms, SIGNUP_WINDOW_MS);
        let window = signups.entry(address).or_insert(Count { count: 0, at_ms: now_ms });
        if now_ms - window.at_ms >= SIGNUP_WINDOW_MS {
            *window = Count { count: 0, at_ms: now_ms };
        }
        if window.count >= self.signups_per_hour {
            return wait(window.at_ms + SIGNUP_WINDOW_MS, now_ms, Per::Address);
        }
        window.count += 1;
        Verdict::Allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMAIL: &str = "ada@example.com";

    fn retry_after(verdict: Verdict) -> u64 {
        match verdict {
            Verdict::Wait { retry_after_secs, .. } => retry_after_secs,
            Verdict::Allowed => 0,
        }
    }

    #[test]
    fn account_failures_get_growing_delays_and_a_success_forgets_them() {
        let throttle = AuthThrottle::new(10);
        let mut now = 1_000_000;
        for _ in 0..FREE_ACCOUNT_FAILURES {
            assert_eq!(throttle.begin_login(EMAIL, None, now), Verdict::Allowed);
        }
        let mut delays = Vec::new();
        for _ in 0..5 {
            let verdict = throttle.begin_login(EMAIL, None, now);
            assert!(matches!(verdict, Verdict::Wait { per: Per::Account, .. }), "{verdict:?}");
            delays.push(retry_after(verdict));
            now += i64::try_from(retry_after(verdict)).unwrap() * 1000;
            assert_eq!(throttle.begin_login(EMAIL, None, now), Verdict::Allowed);
        }
        assert_eq!(delays, [1, 2, 4, 8, 16]);
        assert_eq!(throttle.begin_login("other@example.com", None, now), Verdict::Allowed, "per account");
        assert!(matches!(throttle.begin_login(EMAIL, None, now), Verdict::Wait { .. }));
        throttle.login_succeeded(EMAIL, None);
        assert_eq!(throttle.begin_login(EMAIL, None, now), Verdict::Allowed);
    }

    #[test]
    fn delays_are_capped_and_forgotten() {
        assert_eq!(delay_ms(FREE_ACCOUNT_FAILURES - 1, FREE_ACCOUNT_FAILURES), 0);
        assert_eq!(delay_ms(FREE_ACCOUNT_FAILURES, FREE_ACCOUNT_FAILURES), 1_000);
        assert_eq!(delay_ms(u32::MAX, FREE_ACCOUNT_FAILURES), MAX_DELAY_MS);
        let throttle = AuthThrottle::new(10);
        let mut now = 0;
        for _ in 0..40 {
            if let Verdict::Wait { retry_after_secs, .. } = throttle.begin_login(EMAIL, None, now) {
                now += i64::try_from(retry_after_secs).unwrap() * 1000;
                assert_eq!(throttle.begin_login(EMAIL, None, now), Verdict::Allowed);
            }
        }
        assert_eq!(retry_after(throttle.begin_login(EMAIL, None, now)), (MAX_DELAY_MS / 1000) as u64);
        assert_eq!(throttle.begin_login(EMAIL, None, now + FORGET_AFTER_MS), Verdict::Allowed);
    }

    #[test]
    fn an_address_is_throttled_across_accounts_and_a_success_does_not_reset_it() {
        let throttle = AuthThrottle::new(10);
        let address: IpAddr = "192.0.2.9".parse().unwrap();
        for n in 0..FREE_ADDRESS_FAILURES {
            // The attacker's own account, logged into between guesses, takes back only itself.
            assert_eq!(throttle.begin_login("mine@example.com", Some(address), 0), Verdict::Allowed);
            throttle.login_succeeded("mine@example.com", Some(address));
            assert_eq!(throttle.begin_login(&format!("user{n}@example.com"), Some(address), 0), Verdict::Allowed);
        }
        let verdict = throttle.begin_login("fresh@example.com", Some(address), 0);
        assert!(matches!(verdict, Verdict::Wait { per: Per::Address, .. }), "{verdict:?}");
        assert_eq!(throttle.begin_login("fresh@example.com", Some("192.0.2.10".parse().unwrap()), 0), Verdict::Allowed);
    }

    #[test]
    fn signups_are_limited_per_address_and_hour() {
        let throttle = AuthThrottle::new(3);
        let address: IpAddr = "192.0.2.9".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(throttle.signup(Some(address), 0), Verdict::Allowed);
        }
        assert_eq!(retry_after(throttle.signup(Some(address), 1_000)), 3_599);
        assert_eq!(throttle.signup(Some("192.0.2.10".parse().unwrap()), 1_000), Verdict::Allowed);
        assert_eq!(throttle.signup(Some(address), SIGNUP_WINDOW_MS), Verdict::Allowed);
    }
}
