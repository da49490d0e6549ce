//! Prometheus metrics, served as text at `GET /metrics`.
//!
//! Labels are bounded: routes are route templates (`/tool/{slug}`), tools are slugs of global
//! tools that exist (every chat with a brew is the one value `brew`, see [`tool_label`]),
//! statuses and codes come from fixed lists. Nothing a client sends becomes a label verbatim.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub tool: String,
    pub status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabels {
    pub tool: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub tool: String,
    pub kind: &'static str,
}

/// A provider of the catalogue (`ANIATE_PROVIDERS`): a bounded set.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
}

/// A provider and a model; models without a price in the catalogue are all `other`, so users'
/// brews cannot add series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderModelLabels {
    pub provider: String,
    pub model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderErrorLabels {
    pub provider: String,
    pub model: String,
    /// A `ProviderError` label, from a fixed list.
    pub error: String,
}

/// The `tool` label of a run labelled `label` (a tool slug, `chat`, or `chat:<brew>`): a brew's
/// slug is its owner's private name, and every brew would add series, so all brews are `brew`.
pub fn tool_label(label: &str) -> String {
    if label.starts_with("chat:") { "brew".to_owned() } else { label.to_owned() }
}

fn ttft_histogram() -> Histogram {
    // 1 ms to ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub tool_runs: Family<RunLabels, Counter>,
    pub tool_errors: Family<RunLabels, Counter>,
    pub time_to_first_token: Family<ToolLabels, Histogram, fn() -> Histogram>,
    pub tokens: Family<TokenLabels, Counter>,
    pub rate_limited: Family<RunLabels, Counter>,
    /// 1 while the shared (Redis) limiter answers, 0 while this replica limits on its own.
    pub redis_up: Gauge,
    pub redis_fallbacks: Counter,
    /// Answers stopped by the prompt guard (`guard = "block"`).
    pub prompt_guard_blocks: Family<ToolLabels, Counter>,
    /// Answers that repeated their prompt under `guard = "log"` and were relayed anyway.
    pub prompt_guard_logged: Family<ToolLabels, Counter>,
    /// Requests sent to a provider (each attempt of a run counts).
    pub provider_requests: Family<ProviderModelLabels, Counter>,
    pub provider_errors: Family<ProviderErrorLabels, Counter>,
    /// Runs moved from this provider and model to their next entry before the first token.
    pub provider_fallbacks: Family<ProviderModelLabels, Counter>,
    /// Cooldowns opened: the provider is skipped until a probe succeeds.
    pub provider_cooldowns: Family<ProviderLabels, Counter>,
    pub provider_time_to_first_token: Family<ProviderLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("aniate");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by route and status", http_requests.clone());
        let tool_runs = Family::<RunLabels, Counter>::default();
        registry.register("tool_runs", "Tool runs by tool and outcome (ok, cancelled or an error)", tool_runs.clone());
        let tool_errors = Family::<RunLabels, Counter>::default();
        registry.register("tool_errors", "Failed tool runs by tool and error", tool_errors.clone());
        let time_to_first_token =
            Family::<ToolLabels, Histogram, fn() -> Histogram>::new_with_constructor(ttft_histogram);
        registry.register(
            "time_to_first_token_seconds",
            "From receiving a tool run to the provider's first token",
            time_to_first_token.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register("tokens", "Tokens by tool and kind (prompt or completion)", tokens.clone());
        let rate_limited = Family::<RunLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused by a limit (status: per_minute or monthly_tokens)",
            rate_limited.clone(),
        );
        let redis_up = Gauge::default();
        registry.register("rate_limiter_redis_up", "1 while rate limits are shared through Redis", redis_up.clone());
        let redis_fallbacks = Counter::default();
        registry.register(
            "rate_limiter_fallbacks",
            "Rate-limit decisions made locally because Redis did not answer",
            redis_fallbacks.clone(),
        );
        let prompt_guard_blocks = Family::<ToolLabels, Counter>::default();
        registry.register(
            "prompt_guard_blocks",
            "Answers stopped because they repeated the tool's private prompt",
            prompt_guard_blocks.clone(),
        );
        let prompt_guard_logged = Family::<ToolLabels, Counter>::default();
        registry.register(
            "prompt_guard_logged",
            "Answers that repeated the tool's private prompt and were relayed (guard = log)",
            prompt_guard_logged.clone(),
        );
        let provider_requests = Family::<ProviderModelLabels, Counter>::default();
        registry.register(
            "provider_requests",
            "Requests sent to a provider, by provider and model (every attempt of a run)",
            provider_requests.clone(),
        );
        let provider_errors = Family::<ProviderErrorLabels, Counter>::default();
        registry.register(
            "provider_errors",
            "Provider requests that failed before the first token, by provider, model and error",
            provider_errors.clone(),
        );
        let provider_fallbacks = Family::<ProviderModelLabels, Counter>::default();
        registry.register(
            "provider_fallbacks",
            "Runs moved from this provider and model to their next fallback before the first token",
            provider_fallbacks.clone(),
        );
        let provider_cooldowns = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "provider_cooldowns",
            "Cooldowns opened: the provider is skipped until one probe request succeeds",
            provider_cooldowns.clone(),
        );
        let provider_time_to_first_token =
            Family::<ProviderLabels, Histogram, fn() -> Histogram>::new_with_constructor(ttft_histogram);
        registry.register(
            "provider_time_to_first_token_seconds",
            "From sending a request to a provider to its first token",
            provider_time_to_first_token.clone(),
        );
        Metrics {
            provider_requests,
            provider_errors,
            provider_fallbacks,
            provider_cooldowns,
            provider_time_to_first_token,
            prompt_guard_blocks,
            prompt_guard_logged,
            registry,
            http_requests,
            tool_runs,
            tool_errors,
            time_to_first_token,
            tokens,
            rate_limited,
            redis_up,
            redis_fallbacks,
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        encode(&mut out, &self.registry).expect("encoding metrics into a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brews_are_one_label_and_tools_their_slug() {
        assert_eq!(tool_label("chat:secret-project-falcon"), "brew");
        assert_eq!(tool_label("chat"), "chat");
        assert_eq!(tool_label("fix"), "fix");
    }
}
