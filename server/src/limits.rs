//! Rate limits and quotas: requests per minute (GCRA) and plans; the monthly tokens are
//! reserved in the database by `http::run`.
//!
//! The per-minute limiter runs in-process by default. With `ANIATE_REDIS_URL` it runs in Redis
//! (one atomic Lua script), so the limit holds across replicas. If Redis becomes unreachable
//! the server **fails open** to its in-process limiter: requests keep being served, each replica
//! limits on its own, and the log and `/metrics` (`aniate_rate_limiter_redis_up 0`) say so.
//! It reconnects by itself.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::db::{Db, DbResult, Plan};

/// GCRA in Redis: the key holds the "theoretical arrival time" in microseconds (Redis' own
/// clock, so replicas need not agree on time). Returns `{1, 0}` when allowed, `{0, wait_us}`
/// when limited.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local ahead = tat - now
if ahead > window - interval then
  return {0, ahead - (window - interval)}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.floor((new_tat - now) / 1000) + 1000)
return {1, 0}
";

/// How long a Redis call may take before the local limiter decides instead.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// What the limiter decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Over the limit; retry after this many seconds.
    Limited {
        retry_after_secs: u64,
    },
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// GCRA parameters for `per_minute` requests a minute, bursts up to `per_minute`.
fn gcra(per_minute: u32) -> (i64, i64) {
    let window = 60_000_000i64;
    let interval = window / i64::from(per_minute.max(1));
    (interval, window)
}

/// The in-process GCRA limiter.
#[derive(Debug, Default)]
struct LocalLimiter {
    tats: Mutex<HashMap<i64, i64>>,
}

impl LocalLimiter {
    fn check(&self, user_id: i64, per_minute: u32) -> Decision {
        let (interval, window) = gcra(per_minute);
        let now = now_us();
        let mut tats = self.tats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if tats.len() > 10_000 {
            tats.retain(|_, tat| *tat > now);
        }
        let tat = tats.get(&user_id).copied().unwrap_or(now).max(now);
        let ahead = tat - now;
        if ahead > window - interval {
            let wait = ahead - (window - interval);
            return Decision::Limited { retry_after_secs: (wait as u64).div_ceil(1_000_000).max(1) };
        }
        tats.insert(user_id, tat + interval);
        Decision::Allowed
    }
}

#[derive(Debug)]
pub struct Limiter {
    local: LocalLimiter,
    redis: Option<RedisLimiter>,
    /// `ANIATE_RATE_LIMIT_PER_MIN`: replaces the default plan's per-minute limit.
    default_plan_override: Option<u32>,
    plans: Mutex<(Option<Instant>, HashMap<String, Plan>)>,
    /// See [`Limiter::overlap_reservation`].
    overlap: Mutex<Overlap>,
}

#[derive(Debug, Default)]
struct Overlap {
    /// Users whose monthly quota or cost limit refused a run lately, and when.
    refused: HashMap<i64, Instant>,
    /// Users with a run whose reservation and provider call overlap now.
    in_flight: std::collections::HashSet<i64>,
}

/// A run's leave to reserve while it calls the provider; see [`Limiter::overlap_reservation`].
#[derive(Debug)]
pub struct OverlapGuard<'a> {
    limiter: &'a Limiter,
    user_id: i64,
}

impl Drop for OverlapGuard<'_> {
    fn drop(&mut self) {
        let mut overlap = self.limiter.overlap.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        overlap.in_flight.remove(&self.user_id);
    }
}

/// How long after a refusal a user's runs reserve before they call the provider.
pub const REFUSAL_MEMORY: std::time::Duration = std::time::Duration::from_secs(60);

struct RedisLimiter {
    url: String,
    prefix: String,
    manager: tokio::sync::RwLock<Option<redis::aio::ConnectionManager>>,
    script: redis::Script,
    up: AtomicBool,
    last_warning: AtomicI64,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter").field("up", &self.up.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

/// The plan everyone starts on.
pub const DEFAULT_PLAN: &str = "free";

/// How long plan lookups are reused before asking the database again.
const CACHE_TTL: Duration = Duration::from_secs(10);

impl Limiter {
    /// A limiter; with `redis_url`, shared through Redis (connected in the background, so a
    /// Redis that is down at start does not stop the server).
    pub fn new(redis_url: Option<String>, prefix: &str, default_plan_override: Option<u32>) -> Limiter {
        let redis = redis_url.map(|url| RedisLimiter {
            url,
            prefix: prefix.to_owned(),
            manager: tokio::sync::RwLock::new(None),
            script: redis::Script::new(GCRA_SCRIPT),
            up: AtomicBool::new(false),
            last_warning: AtomicI64::new(0),
        });
        Limiter {
            local: LocalLimiter::default(),
            redis,
            default_plan_override,
            plans: Mutex::new((None, HashMap::new())),
            overlap: Mutex::default(),
        }
    }

    /// Whether a run of this user may call the provider while its monthly reservation is being
    /// made, rather than after: yes, holding the returned guard, unless a reservation of theirs
    /// was refused on this replica in the last [`REFUSAL_MEMORY`] or another of their runs is
    /// overlapping right now. A refused reservation cancels the provider call before anything
    /// reaches the client, so a user over their quota costs the provider at most one cancelled
    /// request per replica and [`REFUSAL_MEMORY`], however many runs they send at once.
    pub fn overlap_reservation(&self, user_id: i64) -> Option<OverlapGuard<'_>> {
        let mut overlap = self.overlap.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let recently_refused = overlap.refused.get(&user_id).is_some_and(|at| at.elapsed() < REFUSAL_MEMORY);
        (!recently_refused && overlap.in_flight.insert(user_id)).then(|| OverlapGuard { limiter: self, user_id })
    }

    /// Notes that a reservation of this user was refused (and forgets refusals that are old).
    pub fn note_refusal(&self, user_id: i64) {
        let mut overlap = self.overlap.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        overlap.refused.retain(|_, at| now.duration_since(*at) < REFUSAL_MEMORY);
        overlap.refused.insert(user_id, now);
    }

    pub fn uses_redis(&self) -> bool {
        self.redis.is_some()
    }

    /// Whether Redis answered the last call (always false without Redis).
    pub fn redis_up(&self) -> bool {
        self.redis.as_ref().is_some_and(|redis| redis.up.load(Ordering::Relaxed))
    }

    /// Connects to Redis now if configured; later failures reconnect on their own.
    pub async fn connect(&self) {
        if let Some(redis) = &self.redis {
            redis.ensure_connected().await;
        }
    }

    /// The effective plan of a user (with the per-minute override applied to the default plan).
    pub async fn plan(&self, db: &Db, name: &str) -> DbResult<Plan> {
        let cached = {
            let plans = self.plans.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match plans.0 {
                Some(at) if at.elapsed() < CACHE_TTL => plans.1.get(name).cloned(),
                _ => None,
            }
        };
        let mut plan = match cached {
            Some(plan) => plan,
            None => {
                let all = db.plans().await?;
                let mut plans = self.plans.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                *plans = (Some(Instant::now()), all.into_iter().map(|plan| (plan.name.clone(), plan)).collect());
                match plans.1.get(name).or_else(|| plans.1.get(DEFAULT_PLAN)) {
                    Some(plan) => plan.clone(),
                    None => Plan {
                        name: name.to_owned(),
                        requests_per_minute: 20,
                        tokens_per_month: 500_000,
                        max_stored_bytes: crate::db::DEFAULT_MAX_STORED_BYTES,
                        max_stored_files: crate::db::DEFAULT_MAX_STORED_FILES,
                        allowed_models: None,
                        cost_micro_usd_per_month: None,
                    },
                }
            }
        };
        if plan.name == DEFAULT_PLAN
            && let Some(per_minute) = self.default_plan_override
        {
            plan.requests_per_minute = per_minute;
        }
        Ok(plan)
    }

    /// The per-minute check.
    pub async fn check_rate(&self, user_id: i64, per_minute: u32, metrics: &crate::metrics::Metrics) -> Decision {
        if let Some(redis) = &self.redis {
            match redis.check(user_id, per_minute).await {
                Ok(decision) => {
                    metrics.redis_up.set(1);
                    return decision;
                }
                Err(err) => {
                    metrics.redis_up.set(0);
                    metrics.redis_fallbacks.inc();
                    redis.warn(&err);
                }
            }
        }
        self.local.check(user_id, per_minute)
    }
}

impl RedisLimiter {
    async fn ensure_connected(&self) -> Option<redis::aio::ConnectionManager> {
        if let Some(manager) = self.manager.read().await.as_ref() {
            return Some(manager.clone());
        }
        let mut slot = self.manager.write().await;
        if let Some(manager) = slot.as_ref() {
            return Some(manager.clone());
        }
        let client = match redis::Client::open(self.url.as_str()) {
            Ok(client) => client,
            Err(err) => {
                self.warn(&err.to_string());
                return None;
            }
        };
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT)
            .set_number_of_retries(1);
        match tokio::time::timeout(REDIS_TIMEOUT * 4, redis::aio::ConnectionManager::new_with_config(client, config))
            .await
        {
            Ok(Ok(manager)) => {
                tracing::info!("rate limits are shared through Redis");
                self.up.store(true, Ordering::Relaxed);
                *slot = Some(manager.clone());
                Some(manager)
            }
            Ok(Err(err)) => {
                self.warn(&err.to_string());
                None
            }
            Err(_) => {
                self.warn("connection timed out");
                None
            }
        }
    }

    async fn check(&self, user_id: i64, per_minute: u32) -> Result<Decision, String> {
        let Some(mut manager) = self.ensure_connected().await else {
            return Err("not connected".to_owned());
        };
        let (interval, window) = gcra(per_minute);
        let mut invocation = self.script.key(format!("{}:rl:{user_id}", self.prefix));
        invocation.arg(interval).arg(window);
        let call = invocation.invoke_async::<(i64, i64)>(&mut manager);
        let result = match tokio::time::timeout(REDIS_TIMEOUT, call).await {
            Ok(Ok(result)) => result,
            Ok(Err(err)) => {
                self.up.store(false, Ordering::Relaxed);
                return Err(err.to_string());
            }
            Err(_) => {
                self.up.store(false, Ordering::Relaxed);
                return Err("timed out".to_owned());
            }
        };
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!("Redis is back; rate limits are shared again");
        }
        Ok(match result {
            (1, _) => Decision::Allowed,
            (_, wait_us) => Decision::Limited { retry_after_secs: (wait_us.max(0) as u64).div_ceil(1_000_000).max(1) },
        })
    }

    /// Logs a Redis failure at most every 30 seconds.
    fn warn(&self, cause: &str) {
        let now = now_us() / 1_000_000;
        let last = self.last_warning.load(Ordering::Relaxed);
        if now - last >= 30
            && self.last_warning.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(cause, "Redis is unreachable; failing open to this replica's own rate limiter");
        }
    }
}

/// The first instant of this month and of the next, UTC, in Unix milliseconds.
pub fn month_bounds(now_ms: i64) -> (i64, i64) {
    let now = time::OffsetDateTime::from_unix_timestamp(now_ms / 1000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let start = now.replace_day(1).ok().map(|d| d.replace_time(time::Time::MIDNIGHT)).unwrap_or(now);
    let (year, month) = if start.month() == time::Month::December {
        (start.year() + 1, time::Month::January)
    } else {
        (start.year(), start.month().next())
    };
    let next = time::Date::from_calendar_date(year, month, 1)
        .map(|date| date.with_time(time::Time::MIDNIGHT).assume_utc())
        .unwrap_or(start);
    ((start.unix_timestamp() * 1000), (next.unix_timestamp() * 1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_a_minutes_burst_then_spaces_requests() {
        let limiter = LocalLimiter::default();
        for _ in 0..3 {
            assert_eq!(limiter.check(1, 3), Decision::Allowed);
        }
        match limiter.check(1, 3) {
            Decision::Limited { retry_after_secs } => {
                assert!((19..=20).contains(&retry_after_secs), "{retry_after_secs}")
            }
            Decision::Allowed => panic!("a fourth request within the minute"),
        }
        assert_eq!(limiter.check(2, 3), Decision::Allowed, "users are limited separately");
    }

    #[test]
    fn one_run_of_a_user_overlaps_at_a_time_and_none_after_a_refusal() {
        let limiter = Limiter::new(None, "test", None);
        let first = limiter.overlap_reservation(1).expect("the first run overlaps");
        assert!(limiter.overlap_reservation(1).is_none(), "a second run of the same user reserves first");
        assert!(limiter.overlap_reservation(1).is_none(), "and so does a third, without freeing the first");
        let other = limiter.overlap_reservation(2).expect("another user's run overlaps");
        drop(first);
        let again = limiter.overlap_reservation(1).expect("the first run's end frees the user");
        drop(again);
        limiter.note_refusal(2);
        drop(other);
        assert!(limiter.overlap_reservation(2).is_none(), "a refused user reserves first");
        assert!(limiter.overlap_reservation(1).is_some(), "others are not affected");
    }

    #[test]
    fn months_have_bounds() {
        // 2026-11-26T03:00:00Z
        let (start, next) = month_bounds(1_795_662_000_000);
        assert_eq!(crate::db::rfc3339(start), "2026-11-01T00:00:00Z");
        assert_eq!(crate::db::rfc3339(next), "2026-12-01T00:00:00Z");
        let (start, next) = month_bounds(1_798_000_000_000);
        assert_eq!(crate::db::rfc3339(start), "2026-12-01T00:00:00Z");
        assert_eq!(crate::db::rfc3339(next), "2027-01-01T00:00:00Z");
    }
}
