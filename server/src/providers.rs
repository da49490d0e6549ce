//! The provider catalogue and the router: which provider and model answer a run.
//!
//! The catalogue is a TOML file named by `ANIATE_PROVIDERS` (see docs/server.md): named
//! OpenAI-compatible providers, each with its base URL, the name of the environment variable
//! that holds its key, and the prices of its models. Without the file, `ANIATE_UPSTREAM_URL`
//! and `ANIATE_UPSTREAM_API_KEY` make the one provider `default`, as before.
//!
//! A run names a model (`groq/llama-3.1-8b-instant`; a bare name is the default provider's) and
//! fallbacks. [`ProviderRouter::open`] tries them in order until one starts answering: a 429, a 5xx, a
//! connection failure or the first-token timeout moves the run to the next entry, within the
//! run's first-token deadline. Once a provider has sent its first event, the run stays with it.
//! A provider that keeps failing is skipped for a cooldown, then probed with one request.
//!
//! The streaming client itself is [`crate::upstream::Provider`]; this module only chooses.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use aniate_proto::event::Usage;
use serde::Deserialize;
use tokio::{sync::Semaphore, time::Instant};

use crate::{
    metrics::{Metrics, ProviderErrorLabels, ProviderLabels, ProviderModelLabels},
    upstream::{ChatMessage, Provider, ProviderConfig, ProviderError, UpstreamEvent, UpstreamStream},
};

/// The provider a bare model name means.
pub const DEFAULT_PROVIDER: &str = "default";

/// A model's prices, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input_usd_per_mtok: f64,
    pub output_usd_per_mtok: f64,
}

impl Price {
    /// What `usage` costs, in micro-dollars. One dollar per million tokens is one micro-dollar
    /// per token, so the price is the per-token cost in micro-dollars.
    pub fn cost_micro_usd(&self, usage: Usage) -> u64 {
        let cost = usage.prompt_tokens as f64 * self.input_usd_per_mtok
            + usage.completion_tokens as f64 * self.output_usd_per_mtok;
        cost.round().max(0.0) as u64
    }
}

/// When a failing provider is skipped, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CooldownPolicy {
    /// This many failures within `window` open the cooldown.
    pub failures: u32,
    pub window: Duration,
    /// How long the provider is skipped before one probe request (at least its `Retry-After`).
    pub cooldown: Duration,
}

impl Default for CooldownPolicy {
    fn default() -> Self {
        CooldownPolicy { failures: 3, window: Duration::from_secs(60), cooldown: Duration::from_secs(30) }
    }
}

/// One provider of the catalogue, checked.
#[derive(Debug, Clone)]
pub struct ProviderSpec {
    pub name: String,
    pub base_url: String,
    pub api_key: Option<String>,
    pub max_concurrency: Option<usize>,
    pub connect_timeout: Option<Duration>,
    pub first_token_timeout: Option<Duration>,
    pub cooldown: CooldownPolicy,
    /// Models with both prices; others are unpriced.
    pub prices: HashMap<String, Price>,
}

/// The checked catalogue.
#[derive(Debug, Clone)]
pub struct Catalogue {
    pub default_provider: String,
    /// Fallbacks for every run whose tool or brew names none.
    pub fallbacks: Vec<String>,
    pub providers: Vec<ProviderSpec>,
}

impl Catalogue {
    /// The one provider `default`, from `ANIATE_UPSTREAM_URL` and `ANIATE_UPSTREAM_API_KEY`.
    pub fn single(base_url: &str, api_key: Option<String>) -> Catalogue {
        Catalogue {
            default_provider: DEFAULT_PROVIDER.to_owned(),
            fallbacks: Vec::new(),
            providers: vec![ProviderSpec {
                name: DEFAULT_PROVIDER.to_owned(),
                base_url: base_url.to_owned(),
                api_key,
                max_concurrency: None,
                connect_timeout: None,
                first_token_timeout: None,
                cooldown: CooldownPolicy::default(),
                prices: HashMap::new(),
            }],
        }
    }

    /// Parses and checks a catalogue file. `env` looks up the variables named by `api_key_env`.
    /// Every error names the line it is about.
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Catalogue, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            default: Option<toml::Spanned<String>>,
            #[serde(default)]
            fallbacks: Vec<toml::Spanned<String>>,
            #[serde(default)]
            providers: BTreeMap<String, toml::Spanned<ProviderFile>>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct ProviderFile {
            base_url: toml::Spanned<String>,
            api_key_env: Option<toml::Spanned<String>>,
            max_concurrency: Option<toml::Spanned<i64>>,
            connect_timeout_ms: Option<u64>,
            first_token_timeout_ms: Option<u64>,
            cooldown_failures: Option<u32>,
            cooldown_window_ms: Option<u64>,
            cooldown_ms: Option<u64>,
            #[serde(default)]
            models: BTreeMap<String, toml::Spanned<ModelFile>>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct ModelFile {
            input_usd_per_mtok: Option<f64>,
            output_usd_per_mtok: Option<f64>,
        }
        let line = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let file: File = toml::from_str(text).map_err(|err| err.to_string().trim_end().to_owned())?;
        if file.providers.is_empty() {
            return Err("no providers: add a [providers.NAME] table with a base_url".to_owned());
        }
        let mut providers = Vec::new();
        for (name, spanned) in file.providers {
            let at = line(spanned.span().start);
            if !is_valid_provider_name(&name) {
                return Err(format!(
                    "line {at}: provider name `{}`: use 1 to 32 of a-z, 0-9, - and _",
                    name.escape_debug()
                ));
            }
            let provider = spanned.into_inner();
            let base_url = provider.base_url.get_ref().trim().to_owned();
            if !reqwest::Url::parse(&base_url).is_ok_and(|url| matches!(url.scheme(), "http" | "https")) {
                return Err(format!(
                    "line {}: providers.{name}.base_url is not an http(s) URL",
                    line(provider.base_url.span().start)
                ));
            }
            let api_key = match &provider.api_key_env {
                None => None,
                Some(var) => {
                    let at = line(var.span().start);
                    match env(var.get_ref()).filter(|value| !value.is_empty()) {
                        Some(key) => Some(key),
                        None => {
                            return Err(format!(
                                "line {at}: providers.{name}.api_key_env names the environment variable {}, which is not set",
                                var.get_ref()
                            ));
                        }
                    }
                }
            };
            let max_concurrency = match &provider.max_concurrency {
                None => None,
                Some(n) => match usize::try_from(*n.get_ref()) {
                    Ok(n) if n > 0 => Some(n),
                    _ => {
                        return Err(format!(
                            "line {}: providers.{name}.max_concurrency must be at least 1",
                            line(n.span().start)
                        ));
                    }
                },
            };
            let mut prices = HashMap::new();
            for (model, spanned) in provider.models {
                let at = line(spanned.span().start);
                let model_file = spanned.into_inner();
                for value in [model_file.input_usd_per_mtok, model_file.output_usd_per_mtok].into_iter().flatten() {
                    if !value.is_finite() || value < 0.0 {
                        return Err(format!(
                            "line {at}: providers.{name}.models.\"{model}\": a price must be 0 or more"
                        ));
                    }
                }
                if let (Some(input), Some(output)) = (model_file.input_usd_per_mtok, model_file.output_usd_per_mtok) {
                    prices.insert(model, Price { input_usd_per_mtok: input, output_usd_per_mtok: output });
                }
            }
            let defaults = CooldownPolicy::default();
            let cooldown = CooldownPolicy {
                failures: provider.cooldown_failures.unwrap_or(defaults.failures).max(1),
                window: provider.cooldown_window_ms.map_or(defaults.window, Duration::from_millis),
                cooldown: provider.cooldown_ms.map_or(defaults.cooldown, Duration::from_millis),
            };
            providers.push(ProviderSpec {
                name,
                base_url,
                api_key,
                max_concurrency,
                connect_timeout: provider.connect_timeout_ms.map(Duration::from_millis),
                first_token_timeout: provider.first_token_timeout_ms.map(Duration::from_millis),
                cooldown,
                prices,
            });
        }
        let names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
        let default_provider = match &file.default {
            Some(name) if names.contains(&name.get_ref().as_str()) => name.get_ref().clone(),
            Some(name) => {
                return Err(format!(
                    "line {}: default = \"{}\" names no provider of this file ({})",
                    line(name.span().start),
                    name.get_ref(),
                    names.join(", ")
                ));
            }
            None if names.contains(&DEFAULT_PROVIDER) => DEFAULT_PROVIDER.to_owned(),
            None if names.len() == 1 => names[0].to_owned(),
            None => {
                return Err(format!(
                    "line 1: name the provider that bare model names use, e.g. default = \"{}\"",
                    names[0]
                ));
            }
        };
        let mut fallbacks = Vec::new();
        for entry in &file.fallbacks {
            let at = line(entry.span().start);
            check_model_ref(entry.get_ref()).map_err(|err| format!("line {at}: fallbacks: {err}"))?;
            fallbacks.push(entry.get_ref().clone());
        }
        Ok(Catalogue { default_provider, fallbacks, providers })
    }
}

fn is_valid_provider_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Checks the form of a model reference (`provider/model` or a bare model name): one line of
/// 1 to 128 characters. Any other text is a model name of the default provider, which only that
/// provider can refuse; whether the provider exists is the router's call.
pub fn check_model_ref(model: &str) -> Result<(), String> {
    if model.trim().is_empty() {
        return Err("a model must not be empty".to_owned());
    }
    if model.chars().count() > 128 {
        return Err("a model is longer than 128 characters".to_owned());
    }
    if model.chars().any(char::is_control) {
        return Err(format!("model `{}` must be a single line without control characters", model.escape_debug()));
    }
    Ok(())
}

/// The most fallbacks a tool or brew may list.
pub const MAX_FALLBACKS: usize = 8;

/// Checks a list of fallbacks: each a model reference, at most [`MAX_FALLBACKS`].
pub fn check_fallbacks(fallbacks: &[String]) -> Result<(), String> {
    if fallbacks.len() > MAX_FALLBACKS {
        return Err(format!("fallbacks: at most {MAX_FALLBACKS}"));
    }
    for model in fallbacks {
        check_model_ref(model).map_err(|err| format!("fallbacks: {err}"))?;
    }
    Ok(())
}

/// A model at a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    pub provider: String,
    pub model: String,
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

/// A provider's health: recent failures and its cooldown.
#[derive(Debug, Default)]
struct Health {
    failures: VecDeque<Instant>,
    /// Skipped until then; afterwards one probe request decides.
    open_until: Option<Instant>,
    /// A probe is in flight: others still skip the provider.
    probing: bool,
    /// The failure that opened the cooldown: what a run that skips the provider reports.
    last_error: Option<ProviderError>,
}

/// Whether a run may try a provider now.
enum Admission {
    Go,
    /// The cooldown is over: this run is the one probe.
    Probe,
    /// Cooling down: the error that opened the cooldown.
    Skip(ProviderError),
}

struct Entry {
    spec: ProviderSpec,
    client: Provider,
    slots: Option<Arc<Semaphore>>,
    health: Mutex<Health>,
}

impl Entry {
    fn admit(&self, now: Instant) -> Admission {
        let mut health = self.health.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match health.open_until {
            None => Admission::Go,
            Some(until) if now < until || health.probing => {
                Admission::Skip(health.last_error.clone().unwrap_or(ProviderError::Unreachable))
            }
            Some(_) => {
                health.probing = true;
                Admission::Probe
            }
        }
    }

    fn succeeded(&self) {
        let mut health = self.health.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if health.open_until.is_some() {
            tracing::info!(provider = %self.spec.name, "provider answered its probe: cooldown closed");
        }
        *health = Health::default();
    }

    /// Records a failure; true when it opened (or re-opened) the cooldown.
    fn failed(&self, err: &ProviderError, now: Instant) -> bool {
        let policy = self.spec.cooldown;
        let mut health = self.health.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let retry_after = match err {
            ProviderError::Status { retry_after: Some(secs), .. } => Some(Duration::from_secs(*secs)),
            _ => None,
        };
        let was_probe = std::mem::take(&mut health.probing);
        health.failures.push_back(now);
        while health.failures.front().is_some_and(|at| now.duration_since(*at) > policy.window) {
            health.failures.pop_front();
        }
        // A provider that says when to come back is believed at once; others get N chances.
        let open = was_probe || retry_after.is_some() || health.failures.len() >= policy.failures as usize;
        if !open {
            return false;
        }
        let cooldown = policy.cooldown.max(retry_after.unwrap_or_default());
        health.open_until = Some(now + cooldown);
        health.failures.clear();
        health.last_error = Some(err.clone());
        tracing::warn!(
            provider = %self.spec.name,
            error = err.label(),
            cooldown_ms = cooldown.as_millis() as u64,
            "provider cooling down: skipped until one probe request succeeds"
        );
        true
    }
}

/// The providers of the catalogue, their clients and their health.
pub struct ProviderRouter {
    entries: HashMap<String, Arc<Entry>>,
    /// The run's deadline for its first token, over all its entries (`ANIATE_FIRST_TOKEN_TIMEOUT_MS`).
    first_token_timeout: Duration,
    default_provider: String,
    fallbacks: Vec<String>,
}

impl std::fmt::Debug for ProviderRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.entries.keys().collect();
        names.sort();
        f.debug_struct("ProviderRouter").field("providers", &names).field("default", &self.default_provider).finish()
    }
}

/// The defaults that a catalogue entry may override.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_token: Duration,
    pub idle: Duration,
}

/// A run that started: the provider stream and its first event, and who answers.
pub struct Opened {
    pub stream: UpstreamStream,
    pub first: Option<Result<UpstreamEvent, ProviderError>>,
    pub answered_by: ModelRef,
}

/// Every entry failed (or was cooling down).
#[derive(Debug)]
pub struct RouteFailure {
    /// The first entry's error: its class is the client's status.
    pub error: ProviderError,
    /// `provider/model` of every entry, in order, whether tried or skipped.
    pub tried: Vec<String>,
    /// The first entry, for the usage row.
    pub first: ModelRef,
    /// Whether a provider accepted the request (and so may bill for it).
    pub provider_started: bool,
}

impl ProviderRouter {
    pub fn new(catalogue: Catalogue, timeouts: Timeouts) -> anyhow::Result<ProviderRouter> {
        let mut entries = HashMap::new();
        for spec in catalogue.providers {
            let client = Provider::new(ProviderConfig {
                base_url: spec.base_url.clone(),
                api_key: spec.api_key.clone(),
                connect_timeout: spec.connect_timeout.unwrap_or(timeouts.connect),
                first_token_timeout: spec.first_token_timeout.unwrap_or(timeouts.first_token),
                idle_timeout: timeouts.idle,
            })?;
            let slots = spec.max_concurrency.map(|n| Arc::new(Semaphore::new(n)));
            entries.insert(spec.name.clone(), Arc::new(Entry { spec, client, slots, health: Mutex::default() }));
        }
        Ok(ProviderRouter {
            entries,
            first_token_timeout: timeouts.first_token,
            default_provider: catalogue.default_provider,
            fallbacks: catalogue.fallbacks,
        })
    }

    /// When a run starting now must have its first token, whichever entry answers.
    pub fn run_deadline(&self) -> Instant {
        Instant::now() + self.first_token_timeout
    }

    /// The provider names, sorted.
    pub fn provider_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.entries.keys().cloned().collect();
        names.sort();
        names
    }

    /// What a model reference means: `provider/model` when the part before the first `/` is a
    /// provider of the catalogue, else a model of the default provider (model names such as
    /// `openai/gpt-oss-20b` contain slashes of their own).
    pub fn resolve(&self, model: &str) -> ModelRef {
        match model.split_once('/') {
            Some((provider, name)) if self.entries.contains_key(provider) && !name.is_empty() => {
                ModelRef { provider: provider.to_owned(), model: name.to_owned() }
            }
            _ => ModelRef { provider: self.default_provider.clone(), model: model.to_owned() },
        }
    }

    /// The entries a run tries: its model, then its fallbacks (the catalogue's when it names
    /// none), without repeats.
    pub fn route(&self, model: &str, fallbacks: &[String]) -> Vec<ModelRef> {
        let fallbacks = if fallbacks.is_empty() { &self.fallbacks } else { fallbacks };
        let mut route: Vec<ModelRef> = Vec::with_capacity(1 + fallbacks.len());
        for entry in std::iter::once(model).chain(fallbacks.iter().map(String::as_str)) {
            let resolved = self.resolve(entry);
            if !route.contains(&resolved) {
                route.push(resolved);
            }
        }
        route
    }

    /// A model's price, if the catalogue has one.
    pub fn price(&self, model: &ModelRef) -> Option<Price> {
        self.entries.get(&model.provider)?.spec.prices.get(&model.model).copied()
    }

    /// What `usage` of `model` costs in micro-dollars, and whether the model has a price.
    pub fn cost(&self, model: &ModelRef, usage: Usage) -> (u64, bool) {
        match self.price(model) {
            Some(price) => (price.cost_micro_usd(usage), true),
            None => (0, false),
        }
    }

    /// The most a run on `route` may cost, in micro-dollars: `usage` at the priciest priced
    /// entry (a fallback may answer). Unpriced entries cost 0.
    pub fn max_cost(&self, route: &[ModelRef], usage: Usage) -> u64 {
        route.iter().map(|model| self.cost(model, usage).0).max().unwrap_or(0)
    }

    /// The `model` label of a metric: priced models by name, any other as `other`, so that
    /// the names users give their brews do not become series.
    fn model_label(&self, model: &ModelRef) -> String {
        if self.price(model).is_some() { model.model.clone() } else { "other".to_owned() }
    }

    /// Opens a streamed completion on the first entry of `route` that starts answering by
    /// `deadline`, and returns it with its first event.
    pub async fn open(
        &self,
        route: &[ModelRef],
        messages: &[ChatMessage],
        sampling: &crate::upstream::Sampling,
        deadline: Instant,
        metrics: &Metrics,
    ) -> Result<Opened, RouteFailure> {
        let mut first_error: Option<ProviderError> = None;
        let mut provider_started = false;
        let tried: Vec<String> = route.iter().map(ToString::to_string).collect();
        for (idx, target) in route.iter().enumerate() {
            let is_last = idx + 1 == route.len();
            let outcome = self.attempt(target, messages, sampling, deadline, is_last, metrics).await;
            match outcome {
                Ok(opened) => return Ok(opened),
                Err((err, started)) => {
                    provider_started |= started;
                    if !is_fallback_worthy(&err) {
                        first_error.get_or_insert(err);
                        break;
                    }
                    first_error.get_or_insert(err);
                    if !is_last && Instant::now() < deadline {
                        metrics
                            .provider_fallbacks
                            .get_or_create(&ProviderModelLabels {
                                provider: target.provider.clone(),
                                model: self.model_label(target),
                            })
                            .inc();
                        tracing::info!(from = %target, to = %route[idx + 1], "falling back before the first token");
                        continue;
                    }
                    break;
                }
            }
        }
        Err(RouteFailure {
            error: first_error.unwrap_or(ProviderError::Unreachable),
            tried,
            first: route.first().cloned().unwrap_or_else(|| self.resolve("")),
            provider_started,
        })
    }

    /// One entry: the stream and its first event, or the error and whether the provider had
    /// accepted the request.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        target: &ModelRef,
        messages: &[ChatMessage],
        sampling: &crate::upstream::Sampling,
        deadline: Instant,
        is_last: bool,
        metrics: &Metrics,
    ) -> Result<Opened, (ProviderError, bool)> {
        let Some(entry) = self.entries.get(&target.provider) else {
            // `resolve` only yields providers of the catalogue.
            return Err((ProviderError::Unreachable, false));
        };
        let labels = ProviderModelLabels { provider: target.provider.clone(), model: self.model_label(target) };
        let started = Instant::now();
        let probe = match entry.admit(started) {
            Admission::Go => false,
            Admission::Probe => true,
            // The last entry is always asked: failing a run without asking anyone helps nobody,
            // and a server with one provider behaves as it did before cooldowns.
            Admission::Skip(_) if is_last => false,
            Admission::Skip(err) => {
                tracing::debug!(provider = %target.provider, "provider cooling down: skipped");
                return Err((err, false));
            }
        };
        let permit = match &entry.slots {
            None => None,
            Some(slots) => {
                let acquired = if is_last {
                    tokio::time::timeout_at(deadline, slots.clone().acquire_owned()).await.ok().and_then(Result::ok)
                } else {
                    slots.clone().try_acquire_owned().ok()
                };
                match acquired {
                    Some(permit) => Some(permit),
                    None => {
                        if probe {
                            entry.health.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).probing = false;
                        }
                        tracing::debug!(provider = %target.provider, "provider at its max_concurrency");
                        return Err((ProviderError::Status { status: 429, retry_after: Some(1) }, false));
                    }
                }
            }
        };
        metrics.provider_requests.get_or_create(&labels).inc();
        let fail = |err: ProviderError, accepted: bool| {
            metrics
                .provider_errors
                .get_or_create(&ProviderErrorLabels {
                    provider: labels.provider.clone(),
                    model: labels.model.clone(),
                    error: err.label().to_owned(),
                })
                .inc();
            if is_fallback_worthy(&err) && entry.failed(&err, Instant::now()) {
                metrics.provider_cooldowns.get_or_create(&ProviderLabels { provider: labels.provider.clone() }).inc();
            } else if probe {
                entry.health.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).probing = false;
            }
            (err, accepted)
        };
        let mut stream = match entry.client.stream_chat(&target.model, messages, sampling, deadline).await {
            Ok(stream) => stream,
            Err(err) => return Err(fail(err, false)),
        };
        let first = match stream.next().await {
            Some(Err(err)) => return Err(fail(err, true)),
            first => first,
        };
        entry.succeeded();
        if matches!(first, Some(Ok(UpstreamEvent::Delta(_)))) {
            metrics
                .provider_time_to_first_token
                .get_or_create(&ProviderLabels { provider: target.provider.clone() })
                .observe(started.elapsed().as_secs_f64());
        }
        stream.hold(permit);
        Ok(Opened { stream, first, answered_by: target.clone() })
    }
}

/// Whether a failure before the first token moves the run to its next entry: the provider is
/// busy or broken (429, 5xx, unreachable, silent, a broken stream), not the request.
pub fn is_fallback_worthy(err: &ProviderError) -> bool {
    match err {
        ProviderError::Status { status, .. } => *status == 429 || *status >= 500,
        ProviderError::Unreachable
        | ProviderError::FirstTokenTimeout
        | ProviderError::IdleTimeout
        | ProviderError::Disconnected
        | ProviderError::Malformed
        | ProviderError::StreamError => true,
    }
}

/// Whether `model` matches a glob `pattern`: `*` any run of characters, `?` one character.
pub fn glob_matches(pattern: &str, model: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = model.chars().collect();
    // Iterative matching with one backtrack point: linear enough for names of 128 characters.
    let (mut p_idx, mut t_idx) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t_idx < text.len() {
        if p_idx < pattern.len() && (pattern[p_idx] == '?' || pattern[p_idx] == text[t_idx]) {
            p_idx += 1;
            t_idx += 1;
        } else if p_idx < pattern.len() && pattern[p_idx] == '*' {
            star = Some((p_idx, t_idx));
            p_idx += 1;
        } else if let Some((star_p, star_t)) = star {
            p_idx = star_p + 1;
            t_idx = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p_idx..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "GROQ_API_KEY").then(|| "gsk-test".to_owned())
    }

    const EXAMPLE: &str = r#"default = "groq"
fallbacks = ["local/llama3.1"]

[providers.groq]
base_url = "https://api.groq.com/openai/v1"
api_key_env = "GROQ_API_KEY"
max_concurrency = 64
[providers.groq.models."llama-3.1-8b-instant"]
input_usd_per_mtok = 0.05
output_usd_per_mtok = 0.08

[providers.local]
base_url = "http://127.0.0.1:11434/v1"
"#;

    #[test]
    fn the_example_parses() {
        let catalogue = Catalogue::parse(EXAMPLE, env).unwrap();
        assert_eq!(catalogue.default_provider, "groq");
        assert_eq!(catalogue.fallbacks, vec!["local/llama3.1"]);
        let groq = catalogue.providers.iter().find(|p| p.name == "groq").unwrap();
        assert_eq!(groq.api_key.as_deref(), Some("gsk-test"));
        assert_eq!(groq.max_concurrency, Some(64));
        assert_eq!(groq.prices["llama-3.1-8b-instant"], Price { input_usd_per_mtok: 0.05, output_usd_per_mtok: 0.08 });
        let local = catalogue.providers.iter().find(|p| p.name == "local").unwrap();
        assert_eq!(local.api_key, None);
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            (EXAMPLE.replace("max_concurrency = 64", "max_concurency = 64"), "line 7", "unknown field"),
            (EXAMPLE.replace("GROQ_API_KEY\"", "NOPE_KEY\""), "line 6", "NOPE_KEY"),
            (format!("{EXAMPLE}\n[providers.groq]\nbase_url = \"http://x\"\n"), "line 15", "duplicate"),
            (EXAMPLE.replace("0.08", "-1"), "line 8", "0 or more"),
            (EXAMPLE.replace("default = \"groq\"", "default = \"nope\""), "line 1", "names no provider"),
            (EXAMPLE.replace("https://api.groq.com/openai/v1", "ftp://x"), "line 5", "http(s)"),
        ];
        for (text, line, what) in cases {
            let err = Catalogue::parse(&text, env).unwrap_err();
            assert!(err.contains(line) && err.contains(what), "{line} {what}: {err}");
        }
    }

    #[test]
    fn several_providers_need_a_default() {
        let text = EXAMPLE.replace("default = \"groq\"", "");
        assert!(Catalogue::parse(&text, env).unwrap_err().contains("default = "));
    }

    #[test]
    fn cost_is_micro_dollars() {
        let price = Price { input_usd_per_mtok: 0.05, output_usd_per_mtok: 0.08 };
        assert_eq!(price.cost_micro_usd(Usage { prompt_tokens: 1_000_000, completion_tokens: 0 }), 50_000);
        assert_eq!(price.cost_micro_usd(Usage { prompt_tokens: 100, completion_tokens: 100 }), 13);
    }

    #[test]
    fn globs_match() {
        assert!(glob_matches("groq/*", "groq/llama-3.1-8b-instant"));
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("llama-3.?-8b*", "llama-3.1-8b-instant"));
        assert!(!glob_matches("groq/*", "openai/gpt-4o"));
        assert!(!glob_matches("gpt-4o", "gpt-4o-mini"));
        assert!(glob_matches("a*b*c", "aXbYbZc"));
    }
}
