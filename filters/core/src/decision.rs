//! One worker's decisions: a [`Planner`] turns a request's attributes into a
//! [`Decision`] — a cluster (the region order) with a retry grant, or a
//! local reply with a reason — and a finished request into outcomes for the
//! shared state.
//!
//! The planner reads a snapshot of the shared [`MeshState`], refreshed once
//! per tick, and gathers what it learns in a [`Delta`] that the adapter
//! applies under CAS. So a request costs no shared-data access at all,
//! except a half-open breaker's probe admission, which must be exact.

use crate::breaker::{classify, BreakerState, Outcome};
use crate::canary::{Choice, Phase, Rollout, Split, SplitInput, BUCKETS};
use crate::config::{cluster_name, FilterConfig};
use crate::region::{assess, Assessment, Reason, RegionStatus, RouteRequest, Router, RoutingPolicy};
use crate::request::RequestAttrs;
use crate::state::{AttemptOutcome, Delta, MeshState, VersionOutcome};
use std::collections::BTreeMap;

/// The model key of requests that name none.
pub const UNNAMED_MODEL: &str = "_";

/// Retry conditions (Envoy `retry_on`) of the route for models that may run
/// twice: any upstream failure, and the gRPC statuses a region returns when
/// it is down or overloaded.
pub const RETRY_ON_IDEMPOTENT: &str =
    "5xx,reset,connect-failure,refused-stream,retriable-headers,unavailable,resource-exhausted,internal";
/// Retry conditions of the route for models that must not run twice: only
/// failures before the request reached a sidecar (a region gateway marks
/// its own "no sidecar reachable" replies with `x-meridian-unreached`).
pub const RETRY_ON_NOT_IDEMPOTENT: &str = "connect-failure,refused-stream,retriable-headers";
/// The request header (set by the filter) that selects the route with
/// [`RETRY_ON_NOT_IDEMPOTENT`].
pub const RETRY_CLASS_HEADER: &str = "x-meridian-retry-class";
/// Its value for models that must not run twice.
pub const RETRY_CLASS_NOT_IDEMPOTENT: &str = "not-idempotent";

/// What to do with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Send it to `cluster`.
    Route(RoutePlan),
    /// Answer at once with gRPC UNAVAILABLE.
    Reject(Rejection),
}

/// Where a request goes and how it may be retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutePlan {
    /// The model key (breakers and budgets are per model).
    pub model: String,
    /// The cluster serving `regions` in order.
    pub cluster: String,
    /// The region order: primary first, then failover.
    pub regions: Vec<String>,
    /// Why this order.
    pub reason: Reason,
    /// Retries granted (0: none).
    pub retries: u32,
    /// Why fewer retries than the policy allows, if so.
    pub retry_limited: Option<RetryLimit>,
    /// Whether the model may run twice (which route's retry conditions apply).
    pub idempotent: bool,
    /// Each attempt's timeout.
    pub per_try_timeout_ms: u64,
    /// The model version (`x-meridian-route-version`), for a model with a
    /// canary split.
    pub version: Option<String>,
    /// The canary's state for the debug header (`debug.decision_header`):
    /// weight and rollout phase, e.g. `50%:step-1`, `100%:promoted`,
    /// `0%:rolled-back-error-rate`.
    pub canary_state: Option<String>,
    /// How `version` was picked (for a model with a canary split).
    pub version_pick: Option<VersionPick>,
    /// The model's own request timeout, when its policy sets one (else the
    /// route's).
    pub timeout_ms: Option<u64>,
}

impl RoutePlan {
    /// The decision in one line, as `x-meridian-decision` carries it:
    /// `regions=eu-west,eu-central;reason=…;retries=2;version=v2;canary=…`
    /// (`-` where there is no version or canary).
    pub fn summary(&self) -> String {
        format!(
            "regions={};reason={};retries={};version={};canary={}",
            self.regions.join(","),
            self.reason.as_str(),
            self.retries,
            self.version.as_deref().unwrap_or("-"),
            self.canary_state.as_deref().unwrap_or("-")
        )
    }
}

/// How a request's version was picked, for a model with a canary split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VersionPick {
    /// By override, sticky bucket or draw.
    pub how: Choice,
    /// The canary's weight at the time, percent.
    pub canary_percent: f64,
    /// The sticky key's bucket (of [`BUCKETS`]), when a key decided.
    pub bucket: Option<u32>,
    /// A version override was sent but not honoured.
    pub override_ignored: bool,
    /// The canary was picked but the primary region does not run it: stable.
    pub stable_fallback: bool,
}

/// A decision with its reasons: [`Planner::explain`].
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// What the filter does with the request.
    pub decision: Decision,
    /// The caller's region the decision used.
    pub caller_region: String,
    /// The residency zone the request is bound to (by the caller's policy
    /// or its header), if any.
    pub residency: Option<String>,
    /// Every region, in the configuration's order, with whether it could
    /// serve (empty for a request refused before routing, such as a
    /// residency conflict).
    pub regions: Vec<Assessment>,
    /// How many regions one call may try.
    pub max_failover_regions: usize,
}

/// Why a request got fewer retries than its policy allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryLimit {
    /// The caller's deadline cannot fit another try.
    NoTimeLeft,
    /// The model's retry budget is spent.
    BudgetExhausted,
}

/// A request the mesh will not route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// For `x-meridian-reason` (kebab-case).
    pub reason: &'static str,
    /// For `grpc-message`.
    pub message: String,
    /// The request was bound to a residency zone.
    pub residency: bool,
}

/// How a routed request ended, as the adapter saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Completion<'a> {
    /// `grpc-status` (headers or trailers), if any.
    pub grpc_status: Option<u32>,
    /// `:status`.
    pub http_status: u16,
    /// `x-meridian-region` on the response (the region gateway's stamp).
    pub served_region: Option<&'a str>,
    /// Attempts Envoy made, if known.
    pub attempts: Option<u32>,
    /// The final attempt's upstream time (`x-envoy-upstream-service-time`).
    pub latency_ms: Option<u64>,
    /// `x-meridian-queue-depth` from the sidecar.
    pub queue_depth: Option<f64>,
}

impl Rejection {
    /// `message` encoded for `grpc-message`: bytes outside printable ASCII,
    /// and `%` itself, percent-encoded.
    pub fn grpc_message(&self) -> String {
        let mut out = String::with_capacity(self.message.len());
        for b in self.message.bytes() {
            if (0x20..0x7f).contains(&b) && b != b'%' {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }
}

impl<'a> Completion<'a> {
    /// Reads the caller-side route's `x-meridian-outcome` summary,
    /// `region|queue-depth|upstream-ms|attempts|grpc-status|http-status`
    /// (fields empty where unknown).
    pub fn from_outcome(summary: &'a str) -> Self {
        let mut fields = summary.split('|').map(|f| Some(f.trim()).filter(|f| !f.is_empty() && *f != "-"));
        let mut next = || fields.next().flatten();
        let served_region = next();
        let queue_depth = next().and_then(|v| v.parse().ok());
        let latency_ms = next().and_then(|v| v.parse().ok());
        let attempts = next().and_then(|v| v.parse().ok()).filter(|n| *n > 0);
        let grpc_status = next().and_then(|v| v.parse().ok());
        let http_status = next().and_then(|v| v.parse().ok()).unwrap_or(0);
        Self { grpc_status, http_status, served_region, attempts, latency_ms, queue_depth }
    }
}

#[derive(Debug, Clone)]
struct CachedRoute {
    regions: Vec<String>,
    half_open: Vec<bool>,
    reason: Reason,
    /// The cluster for `regions` (cut to the failover length) when none is
    /// half-open: the common case costs no formatting per request.
    cluster: String,
}

/// The canary's weight now (percent): the configured one without steps;
/// with steps, the shared rollout's for the configuration whose
/// [`crate::config::CanaryConfig::rollout_hash`] is `rollout_hash` (its
/// first step until a tick has started that rollout).
pub fn canary_weight(state: &MeshState, model: &str, canary: &crate::config::CanaryConfig, rollout_hash: u64) -> f64 {
    if canary.steps.is_empty() {
        return canary.weight;
    }
    match state.rollouts.get(model) {
        Some(r) if r.config_hash == rollout_hash => r.weight(&canary.steps),
        _ => canary.steps[0].weight,
    }
}

/// SplitMix64's output function (the stream adds the golden gamma to its
/// state per draw).
fn splitmix64(state: u64) -> u64 {
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Counter increments since the last flush, by Envoy stat name. Names are
/// kept between flushes (values reset), so a request allocates none.
#[derive(Debug, Default)]
struct Counters(BTreeMap<String, u64>);

impl Counters {
    fn add(&mut self, name: &str, by: u64) {
        match self.0.get_mut(name) {
            Some(v) => *v += by,
            None => {
                self.0.insert(name.to_string(), by);
            }
        }
    }

    fn take(&mut self) -> BTreeMap<String, u64> {
        self.0.iter_mut().filter(|(_, v)| **v > 0).map(|(k, v)| (k.clone(), std::mem::take(v))).collect()
    }
}

/// A region's stat names, built once.
#[derive(Debug)]
struct RegionStats {
    region: String,
    decision: String,
    /// success, failure, caller_error.
    outcome: [String; 3],
}

/// A canary model's stat names, built once.
#[derive(Debug)]
struct CanaryStats {
    stable: String,
    canary: String,
    override_ignored: String,
    stable_fallback: String,
}

impl CanaryStats {
    fn new(model: &str, canary: &crate::config::CanaryConfig) -> Self {
        let prefix = format!("meridian.canary.{model}");
        Self {
            stable: format!("{prefix}.{}", canary.stable),
            canary: format!("{prefix}.{}", canary.canary),
            override_ignored: format!("{prefix}.override_ignored"),
            stable_fallback: format!("{prefix}.stable_fallback"),
        }
    }
}

/// One worker's decision maker.
#[derive(Debug)]
pub struct Planner {
    config: FilterConfig,
    policy: RoutingPolicy,
    worker: String,
    snapshot: MeshState,
    routes: BTreeMap<RouteKey, CachedRoute>,
    delta: Delta,
    counters: Counters,
    stat_names: Vec<RegionStats>,
    /// The state of this worker's SplitMix64 stream for canary draws.
    draws: u64,
    /// Stat names per canary model.
    canary_stats: BTreeMap<String, CanaryStats>,
    /// Each rollout's configuration hash, computed once (it serialises
    /// the canary policy), not per request.
    rollout_hashes: BTreeMap<String, u64>,
}

// === impl Planner ===

impl Planner {
    /// A planner for `config`, identified as `worker` in the shared state.
    pub fn new(config: FilterConfig, worker: String) -> Self {
        let policy = config.routing_policy();
        let stat_names = config
            .regions
            .iter()
            .map(|r| RegionStats {
                region: r.name.clone(),
                decision: format!("meridian.decision.{}", r.name),
                outcome: ["success", "failure", "caller_error"].map(|k| format!("meridian.outcome.{}.{k}", r.name)),
            })
            .collect();
        let draws = crate::canary::fnv1a(worker.as_bytes());
        let rollout_hashes = config
            .models
            .iter()
            .filter_map(|(m, p)| {
                p.canary.as_ref().filter(|c| !c.steps.is_empty()).map(|c| (m.clone(), c.rollout_hash()))
            })
            .collect();
        Self {
            config,
            policy,
            worker,
            snapshot: MeshState::default(),
            routes: BTreeMap::new(),
            delta: Delta::default(),
            counters: Counters::default(),
            stat_names,
            draws,
            canary_stats: BTreeMap::new(),
            rollout_hashes,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &FilterConfig {
        &self.config
    }

    /// This worker's id.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// The shared state as of the last refresh.
    pub fn snapshot(&self) -> &MeshState {
        &self.snapshot
    }

    /// Decides where a request goes. `admit_probe(region, model)` asks the
    /// shared state to admit one half-open probe (called only when the
    /// leading region's breaker is half-open).
    pub fn decide(
        &mut self,
        attrs: &RequestAttrs<'_>,
        now_ms: u64,
        admit_probe: &mut dyn FnMut(&str, &str) -> bool,
    ) -> Decision {
        let key = match self.route_key(attrs) {
            Ok(key) => key,
            Err((reason, message)) => return self.reject(reason, message, true),
        };
        if !self.routes.contains_key(&key) {
            // First sight of this key: start from the shared leader if any
            // worker has one; the next tick shares this one.
            let mut router = self.snapshot.routers.get(&key.shared()).cloned().unwrap_or_default();
            let cached = route(&self.config, &self.policy, &self.snapshot, &mut router, &key, now_ms);
            self.routes.insert(key.clone(), cached);
        }
        let cached = &self.routes[&key];
        let (model, residency) = (&key.model, key.residency.as_deref());

        // A half-open region takes calls as the primary only as admitted
        // probes (a failover attempt cannot be admitted in advance); else it
        // is the last resort, after every other region of the order.
        let max = self.config.max_failover_regions;
        let (regions, cluster) = if cached.half_open.iter().any(|h| *h) {
            let mut regions = Vec::with_capacity(cached.regions.len());
            let mut last_resort = Vec::new();
            for (i, (region, half_open)) in cached.regions.iter().zip(&cached.half_open).enumerate() {
                if !half_open || (i == 0 && admit_probe(region, model)) {
                    regions.push(region.clone());
                } else {
                    last_resort.push(region.clone());
                }
            }
            regions.extend(last_resort);
            regions.truncate(max);
            let cluster = cluster_name(&regions);
            (regions, cluster)
        } else {
            (cached.regions[..cached.regions.len().min(max)].to_vec(), cached.cluster.clone())
        };
        let reason = cached.reason;
        if regions.is_empty() {
            let (tag, message) = match reason {
                Reason::ResidencyExcludesAll => (
                    "residency-excludes-all",
                    format!("no region is in residency zone `{}`", residency.unwrap_or_default()),
                ),
                _ => (
                    "no-available-region",
                    match residency {
                        Some(zone) => format!("every region in residency zone `{zone}` is down or its breaker open"),
                        None => "every region is down or its breaker open".to_string(),
                    },
                ),
            };
            return self.reject(tag, format!("{message} (model `{model}`)"), residency.is_some());
        }

        let model = model.clone();
        let retry = self.config.model(&model).retry.clone();
        let wanted = retry.max_attempts.saturating_sub(1);
        let mut retries = wanted;
        let mut retry_limited = None;
        if wanted > 0 && attrs.deadline_ms.is_some_and(|left| left < retry.per_try_timeout_ms + retry.backoff_ms) {
            retries = 0;
            retry_limited = Some(RetryLimit::NoTimeLeft);
        }
        let pending = self.delta.budget.entry(model.clone()).or_insert((0, 0));
        pending.0 += 1;
        if retries > 0 {
            // This worker's share of the room the shared budget had at the
            // last refresh, less what it reserved since: the workers
            // together never reserve more than the budget holds.
            let workers = self.snapshot.live_workers(&self.config) as f64;
            let b = &self.config.retry_budget;
            let shared_room =
                self.snapshot.budgets.get(&model).map_or(f64::from(b.min_retries), |budget| budget.room(now_ms, 0, 0));
            let room = shared_room / workers + b.ratio * f64::from(pending.0) - pending.1 as f64;
            let granted = room.max(0.0).floor().min(f64::from(retries)) as u32;
            if granted < retries {
                retry_limited = Some(RetryLimit::BudgetExhausted);
            }
            retries = granted;
            pending.1 += i64::from(granted);
        }

        if let Some(names) = self.stat_names.iter().find(|n| n.region == regions[0]) {
            self.counters.add(&names.decision, 1);
        }
        if retries > 0 {
            self.counters.add("meridian.retry.granted", u64::from(retries));
        }
        match retry_limited {
            Some(RetryLimit::BudgetExhausted) => self.counters.add("meridian.retry.budget_exhausted", 1),
            Some(RetryLimit::NoTimeLeft) => self.counters.add("meridian.retry.no_time_left", 1),
            None => {}
        }
        let (version, version_pick) = self.choose_version(&model, &regions[0], attrs).unzip();
        let timeout_ms = self.config.model(&model).timeout_ms;
        let canary_state =
            version.as_ref().filter(|_| self.config.debug.decision_header).map(|_| self.canary_state(&model));
        Decision::Route(RoutePlan {
            cluster,
            model,
            regions,
            reason,
            retries,
            retry_limited,
            idempotent: retry.idempotent,
            per_try_timeout_ms: retry.per_try_timeout_ms,
            version,
            canary_state,
            version_pick,
            timeout_ms,
        })
    }

    /// The route a request belongs to — caller region, model, residency
    /// zone (the caller's policy and the request's header must agree) —
    /// or why it cannot have one.
    fn route_key(&self, attrs: &RequestAttrs<'_>) -> Result<RouteKey, (&'static str, String)> {
        let model = attrs.model.unwrap_or(UNNAMED_MODEL).to_string();
        let caller_policy = attrs.caller.and_then(|c| self.config.callers.get(c));
        let policy_zone = caller_policy.and_then(|p| p.residency.as_deref());
        let residency = match (policy_zone, attrs.residency) {
            (Some(p), Some(h)) if p != h => {
                return Err((
                    "residency-conflict",
                    format!("caller policy binds this call to residency `{p}`, the request asks for `{h}`"),
                ));
            }
            (Some(zone), _) | (None, Some(zone)) => Some(zone.to_string()),
            (None, None) => None,
        };
        let caller_region = match attrs.caller_region {
            Some(r) if self.config.trust_caller_region_header => r.to_string(),
            _ => self.config.region.clone(),
        };
        Ok(RouteKey { caller_region, model, residency })
    }

    /// The decision `attrs` gets now (as [`Planner::decide`], every
    /// half-open probe admitted) and, for every region, whether it could
    /// serve the request and if not why: what `meridianctl explain` prints.
    pub fn explain(&mut self, attrs: &RequestAttrs<'_>, now_ms: u64) -> Explanation {
        let (caller_region, residency, regions) = match self.route_key(attrs) {
            Ok(key) => {
                let status = statuses(&self.config, &self.snapshot, &key.model, now_ms);
                let request = RouteRequest { caller_region: &key.caller_region, residency: key.residency.as_deref() };
                let regions = assess(&self.policy, &status, request);
                (key.caller_region, key.residency, regions)
            }
            Err(_) => (self.config.region.clone(), None, Vec::new()),
        };
        let decision = self.decide(attrs, now_ms, &mut |_, _| true);
        Explanation {
            decision,
            caller_region,
            residency,
            regions,
            max_failover_regions: self.config.max_failover_regions,
        }
    }

    fn canary_state(&self, model: &str) -> String {
        let Some(canary) = self.config.model(model).canary.as_ref() else { return String::new() };
        let hash = self.rollout_hash(model);
        let weight = canary_weight(&self.snapshot, model, canary, hash);
        let phase = match self.snapshot.rollouts.get(model).filter(|r| r.config_hash == hash) {
            _ if canary.steps.is_empty() => "static".to_string(),
            None => "step-0".to_string(),
            Some(r) => match r.phase {
                Phase::Progressing { step, .. } => format!("step-{step}"),
                Phase::Promoted => "promoted".into(),
                Phase::RolledBack { reason: crate::canary::Breach::ErrorRate, .. } => "rolled-back-error-rate".into(),
                Phase::RolledBack { reason: crate::canary::Breach::Latency, .. } => "rolled-back-latency".into(),
            },
        };
        format!("{weight}%:{phase}")
    }

    /// The version of a model with a canary split: the allowed override,
    /// else the sticky key's bucket, else a draw; the canary only where the
    /// primary region runs it (else stable, counted). Counts
    /// `meridian.canary.<model>.<version>` per version chosen,
    /// `…override_ignored` and `…stable_fallback`.
    fn choose_version(
        &mut self,
        model: &str,
        primary: &str,
        attrs: &RequestAttrs<'_>,
    ) -> Option<(String, VersionPick)> {
        let canary = self.config.model(model).canary.as_ref()?;
        let split = Split {
            model,
            stable: &canary.stable,
            canary: &canary.canary,
            canary_percent: canary_weight(&self.snapshot, model, canary, self.rollout_hash(model)),
            allow_override: canary.allow_override,
        };
        self.draws = self.draws.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let draw = (splitmix64(self.draws) % u64::from(BUCKETS)) as u32;
        let input = SplitInput { override_version: attrs.version_override, sticky_key: attrs.sticky_key, draw };
        let (mut version, how, ignored) = split.choose(input);
        let mut pick = VersionPick {
            how,
            canary_percent: split.canary_percent,
            bucket: attrs.sticky_key.filter(|_| how == Choice::Sticky).map(|key| crate::canary::bucket(model, key)),
            override_ignored: ignored,
            stable_fallback: false,
        };
        if version == canary.canary && how != Choice::Override && !canary.in_region(primary) {
            version = &canary.stable;
            pick.stable_fallback = true;
        }
        let version = version.to_string();
        // Stat names are built once per model, not per request.
        if !self.canary_stats.contains_key(model) {
            self.canary_stats.insert(model.to_string(), CanaryStats::new(model, canary));
        }
        if let Some(names) = self.canary_stats.get(model) {
            if ignored {
                self.counters.add(&names.override_ignored, 1);
            }
            if pick.stable_fallback {
                self.counters.add(&names.stable_fallback, 1);
            }
            self.counters.add(if version == canary.canary { &names.canary } else { &names.stable }, 1);
        }
        Some((version, pick))
    }

    /// Records how a routed request ended: every attempt before the last
    /// failed at its region in order (Envoy's retry priority moves each
    /// retry to the next region), the last is classified from its status.
    pub fn complete(&mut self, plan: &RoutePlan, done: &Completion<'_>, now_ms: u64) {
        let n = plan.regions.len().max(1);
        let served_at = done.served_region.and_then(|r| plan.regions.iter().position(|p| p == r));
        let attempts = done.attempts.or(served_at.map(|i| i as u32 + 1)).unwrap_or(1).max(1);
        let used = attempts - 1;
        // A call to a canary under a rollout is judged by the rollout's
        // analysis, not by the regions' breakers: a failing canary is
        // rolled back, and does not push the stable version's traffic out
        // of its region.
        let rollout = self.config.model(&plan.model).canary.as_ref().filter(|c| !c.steps.is_empty());
        let judged = rollout.is_some();
        let on_judged_canary = rollout.is_some_and(|c| plan.version.as_deref() == Some(c.canary.as_str()));
        if !on_judged_canary {
            for i in 0..used as usize {
                self.outcome(&plan.regions[i % n], &plan.model, now_ms, Outcome::Failure, None);
            }
        }
        let last = done.served_region.map(str::to_string).unwrap_or_else(|| plan.regions[used as usize % n].clone());
        let outcome = classify(done.grpc_status, done.http_status, false, done.latency_ms.unwrap_or(0));
        if let Some(version) = plan.version.as_ref().filter(|_| judged) {
            let latency_ms = match outcome {
                Outcome::Success { latency_ms } => Some(Some(latency_ms)),
                Outcome::Failure => Some(None),
                Outcome::CallerError => None,
            };
            if let Some(latency_ms) = latency_ms {
                let key = format!("{}/{version}", plan.model);
                self.delta.versions.push(VersionOutcome { key, at_ms: now_ms, latency_ms });
            }
        }
        if !on_judged_canary {
            self.outcome(&last, &plan.model, now_ms, outcome, done.queue_depth);
        }
        let refund = i64::from(plan.retries) - i64::from(used);
        if let Some(pending) = self.delta.budget.get_mut(&plan.model) {
            pending.1 -= refund;
        } else {
            self.delta.budget.insert(plan.model.clone(), (0, -refund));
        }
        if used > 0 {
            self.counters.add("meridian.retry.used", u64::from(used));
        }
    }

    /// Hands over what this worker learned since the last call.
    pub fn take_delta(&mut self) -> Delta {
        std::mem::take(&mut self.delta)
    }

    /// Puts back a delta that could not be applied (kept for the next tick).
    pub fn restore_delta(&mut self, mut delta: Delta) {
        let newer = std::mem::take(&mut self.delta);
        delta.outcomes.extend(newer.outcomes);
        delta.probes.extend(newer.probes);
        delta.versions.extend(newer.versions);
        for (model, (q, r)) in newer.budget {
            let e = delta.budget.entry(model).or_insert((0, 0));
            e.0 += q;
            e.1 += r;
        }
        self.delta = delta;
    }

    /// Records a health probe's result.
    pub fn record_probe(&mut self, region: &str, passed: bool, now_ms: u64) {
        self.delta.probes.push((region.to_string(), passed, now_ms));
    }

    /// Advances every route — this worker's and every other worker's — on
    /// the shared state, inside the tick's CAS update: the hysteresis state
    /// (leader, challenger, since when) lives in the shared state, so all
    /// workers follow one leader per (caller region, model, residency), and
    /// dwell timers advance with time, not only with traffic.
    pub fn advance(&mut self, state: &mut MeshState, now_ms: u64) {
        self.advance_rollouts(state, now_ms);
        let mut keys: Vec<RouteKey> = self.routes.keys().cloned().collect();
        keys.extend(state.routers.keys().filter_map(|k| RouteKey::parse(k)));
        keys.sort();
        keys.dedup();
        for key in keys {
            let shared = key.shared();
            let mut router = state.routers.get(&shared).cloned().unwrap_or_default();
            let cached = route(&self.config, &self.policy, state, &mut router, &key, now_ms);
            state.routers.insert(shared, router);
            self.routes.insert(key, cached);
        }
    }

    /// Moves every model's canary rollout (models with `steps`): a new or
    /// changed configuration starts at its first step with fresh version
    /// stats; otherwise the analysis of canary against stable over the
    /// window promotes, holds or rolls back. Counts
    /// `meridian.canary.<model>.rolled_back` / `.promoted` when this worker
    /// makes the move.
    fn advance_rollouts(&mut self, state: &mut MeshState, now_ms: u64) {
        // Rollouts run for the models named under `models` (the config
        // refuses steps on `default_model`).
        let mut moves = Vec::new();
        for (model, policy) in &self.config.models {
            let Some(canary) = policy.canary.as_ref().filter(|c| !c.steps.is_empty()) else { continue };
            let hash = self.rollout_hash(model);
            let fresh = state.rollouts.get(model).is_none_or(|r| r.config_hash != hash);
            if fresh {
                state.rollouts.insert(model.clone(), Rollout::start(hash, now_ms));
                state.versions.retain(|k, _| k.split('/').next() != Some(model.as_str()));
            }
            let window = canary.analysis.window_ms;
            let observed = |v: &str| {
                state.versions.get(&format!("{model}/{v}")).map(|s| s.observed(window, now_ms)).unwrap_or_default()
            };
            let (on_canary, on_stable) = (observed(&canary.canary), observed(&canary.stable));
            if let Some(rollout) = state.rollouts.get_mut(model) {
                let before = rollout.phase;
                rollout.advance(&canary.steps, &canary.analysis, on_canary, on_stable, now_ms);
                match (before, rollout.phase) {
                    (Phase::Progressing { .. }, Phase::RolledBack { .. }) => {
                        moves.push(format!("meridian.canary.{model}.rolled_back"))
                    }
                    (Phase::Progressing { .. }, Phase::Promoted) => {
                        moves.push(format!("meridian.canary.{model}.promoted"))
                    }
                    _ => {}
                }
            }
        }
        for name in moves {
            self.counters.add(&name, 1);
        }
    }

    /// The configuration hash of `model`'s rollout (0 for a model without).
    fn rollout_hash(&self, model: &str) -> u64 {
        self.rollout_hashes.get(model).copied().unwrap_or_default()
    }

    /// Takes the shared state just written (after [`Planner::advance`]) as
    /// this worker's snapshot.
    pub fn refresh(&mut self, state: MeshState) {
        self.snapshot = state;
    }

    /// Counts `by` on counter `name` (an event the adapter saw), flushed
    /// with the planner's own at the next tick.
    pub fn count(&mut self, name: &str, by: u64) {
        self.counters.add(name, by);
    }

    /// Counter increments since the last call (Envoy stat name, amount).
    pub fn take_counters(&mut self) -> BTreeMap<String, u64> {
        self.counters.take()
    }

    /// Gauges from the snapshot: `meridian.breaker.<region>.<model>` (0
    /// closed, 1 open, 2 half-open) and `meridian.healthy.<region>`.
    pub fn gauges(&self, now_ms: u64) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> = self
            .config
            .regions
            .iter()
            .map(|r| {
                let healthy = self.snapshot.health.get(&r.name).is_none_or(|h| h.healthy);
                (format!("meridian.healthy.{}", r.name), i64::from(healthy))
            })
            .collect();
        for (model, canary) in self.config.models.iter().filter_map(|(m, p)| p.canary.as_ref().map(|c| (m, c))) {
            let weight = canary_weight(&self.snapshot, model, canary, self.rollout_hash(model));
            out.push((format!("meridian.canary.{model}.weight_pct"), weight.round() as i64));
            let phase = match self.snapshot.rollouts.get(model).map(|r| r.phase) {
                Some(Phase::Promoted) => 1,
                Some(Phase::RolledBack { .. }) => 2,
                _ => 0,
            };
            out.push((format!("meridian.canary.{model}.phase"), phase));
        }
        for (key, link) in &self.snapshot.links {
            let value = match link.breaker.state(now_ms) {
                BreakerState::Closed => 0,
                BreakerState::Open { .. } => 1,
                BreakerState::HalfOpen { .. } => 2,
            };
            out.push((format!("meridian.breaker.{}", key.replace('/', ".")), value));
        }
        out
    }

    fn reject(&mut self, reason: &'static str, message: String, residency: bool) -> Decision {
        self.counters.add(&format!("meridian.reject.{reason}"), 1);
        if residency {
            self.counters.add("meridian.residency_rejected", 1);
        }
        Decision::Reject(Rejection { reason, message, residency })
    }

    fn outcome(&mut self, region: &str, model: &str, at_ms: u64, outcome: Outcome, queue_depth: Option<f64>) {
        let kind = match outcome {
            Outcome::Success { .. } => 0,
            Outcome::Failure => 1,
            Outcome::CallerError => 2,
        };
        if let Some(names) = self.stat_names.iter().find(|n| n.region == region) {
            self.counters.add(&names.outcome[kind], 1);
        }
        self.delta.outcomes.push(AttemptOutcome {
            region: region.to_string(),
            model: model.to_string(),
            at_ms,
            outcome,
            queue_depth,
        });
    }
}

/// What a route depends on besides the state: who calls (their region),
/// which model, bound to which residency zone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RouteKey {
    caller_region: String,
    model: String,
    residency: Option<String>,
}

impl RouteKey {
    /// The key in [`MeshState::routers`]: `caller|model|residency`.
    fn shared(&self) -> String {
        format!("{}|{}|{}", self.caller_region, self.model, self.residency.as_deref().unwrap_or(""))
    }

    fn parse(shared: &str) -> Option<Self> {
        let mut parts = shared.splitn(3, '|');
        let (caller_region, model, residency) = (parts.next()?, parts.next()?, parts.next()?);
        Some(Self {
            caller_region: caller_region.to_string(),
            model: model.to_string(),
            residency: Some(residency.to_string()).filter(|r| !r.is_empty()),
        })
    }
}

/// What the router knows of every region for `model` at `now_ms`.
fn statuses(config: &FilterConfig, state: &MeshState, model: &str, now_ms: u64) -> BTreeMap<String, RegionStatus> {
    config.regions.iter().map(|r| (r.name.clone(), state.status(&r.name, model, now_ms))).collect()
}

/// Runs `router` for `key` over `state`, and notes which regions of the
/// order are half-open.
fn route(
    config: &FilterConfig,
    policy: &RoutingPolicy,
    state: &MeshState,
    router: &mut Router,
    key: &RouteKey,
    now_ms: u64,
) -> CachedRoute {
    let status = statuses(config, state, &key.model, now_ms);
    let request = RouteRequest { caller_region: &key.caller_region, residency: key.residency.as_deref() };
    let route = router.route(policy, &status, request, now_ms);
    let half_open = route
        .regions
        .iter()
        .map(|r| matches!(state.breaker_state(r, &key.model, now_ms), BreakerState::HalfOpen { .. }))
        .collect();
    let cluster = cluster_name(&route.regions[..route.regions.len().min(config.max_failover_regions)]);
    CachedRoute { regions: route.regions, half_open, reason: route.reason, cluster }
}

#[cfg(test)]
mod tests;
