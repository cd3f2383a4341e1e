//! `meridianctl explain`: the decision the filter would make for a call —
//! its version, region order, reason, retries — and why each region left
//! out is left out. Computed by the filter's own [`Planner`] on the filter
//! configuration the policy derives, over a mesh state built with the
//! core's own deltas (failed probes for a region down, failures for an
//! open breaker, latency samples for a slow region), so it cannot drift
//! from what the filter does.

use crate::policy::{Policy, PolicyError};
use meridian_filters_core::breaker::Outcome;
use meridian_filters_core::canary::{Choice, BUCKETS};
use meridian_filters_core::config::StickyKey;
use meridian_filters_core::decision::{Decision, RetryLimit, UNNAMED_MODEL};
use meridian_filters_core::region::Verdict;
use meridian_filters_core::request::RequestHeaders;
use meridian_filters_core::state::{AttemptOutcome, Delta, MeshState};
use meridian_filters_core::Planner;
use meridian_proto::headers;
use serde::Serialize;
use std::fmt;

/// A call, and the state of the mesh it meets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scenario {
    /// The model (`x-meridian-model`).
    pub model: String,
    /// The caller identity (`x-meridian-caller`).
    pub caller: Option<String>,
    /// The residency zone the call asks for (`x-meridian-residency`).
    pub residency: Option<String>,
    /// The caller's region; default: the caller's `region` in the policy,
    /// else the caller-side proxy's.
    pub from: Option<String>,
    /// Regions whose health checks fail.
    pub down: Vec<String>,
    /// Regions whose breaker for the model is open.
    pub open: Vec<String>,
    /// Regions answering in this many milliseconds (the others: no samples).
    pub slow: Vec<(String, u64)>,
    /// The canary's sticky key (the header's value; for `sticky: caller`
    /// the caller, which this overrides).
    pub canary_key: Option<String>,
    /// A version asked for (`x-meridian-version`).
    pub version: Option<String>,
    /// The caller's deadline (`grpc-timeout`), ms.
    pub deadline_ms: Option<u64>,
}

/// What the filter does with the call, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The region whose caller-side proxy decides.
    pub proxy_region: String,
    /// The caller's region the decision used.
    pub caller_region: String,
    /// The residency zone the call is bound to.
    pub residency: Option<String>,
    /// Routed, or refused.
    pub outcome: &'static str,
    /// The version, for a model with a canary split.
    pub version: Option<String>,
    /// How the version was picked.
    pub version_reason: Option<String>,
    /// The region order: primary, then failover.
    pub regions: Vec<String>,
    /// The cluster the filter names.
    pub cluster: Option<String>,
    /// Why this order (or why refused): `local`, `faster`, `no-available-region`…
    pub reason: String,
    /// The refusal's message.
    pub message: Option<String>,
    /// Retries granted.
    pub retries: u32,
    /// Why fewer than the policy allows.
    pub retry_limit: Option<&'static str>,
    /// Each attempt's timeout, ms.
    pub per_try_timeout_ms: u64,
    /// The regions not in the order, with why.
    pub excluded: Vec<Exclusion>,
    /// Caveats (hysteresis).
    pub notes: Vec<String>,
}

/// A region left out of the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exclusion {
    /// The region.
    pub region: String,
    /// Why, in words.
    pub why: String,
}

/// The time explain decides at; the mesh state is built before it.
const NOW_MS: u64 = 10_000_000_000;

/// Explains what the filter would do with `scenario`.
pub fn explain(policy: &Policy, scenario: &Scenario) -> Result<Report, PolicyError> {
    let spec = policy.spec();
    let known = |field: &str, region: &str| -> Result<(), PolicyError> {
        if spec.region(region).is_none() {
            let names: Vec<&str> = spec.regions.iter().map(|r| r.name.as_str()).collect();
            return Err(PolicyError::at(
                Default::default(),
                None,
                format!("{field} {region}: no such region (regions: {})", names.join(", ")),
            ));
        }
        Ok(())
    };
    for r in scenario.down.iter().chain(&scenario.open).chain(scenario.slow.iter().map(|(r, _)| r)) {
        known("--down/--open/--slow", r)?;
    }
    let caller_home = scenario.caller.as_ref().and_then(|c| spec.callers.get(c)).and_then(|c| c.region.clone());
    let from = scenario.from.clone().or(caller_home).unwrap_or_else(|| policy.caller_region().to_string());
    known("--from", &from)?;
    // One proxy fronting every region's callers (trusting their region
    // header), or each region's own proxy.
    let proxy_region =
        if spec.caller_proxy.trust_caller_region_header { policy.caller_region().to_string() } else { from.clone() };
    let config = policy.filter_config(&proxy_region)?;

    // The request's headers, read by the filter's own reader.
    let canary = config.model(&scenario.model).canary.clone();
    let sticky = canary.as_ref().and_then(|c| c.sticky.clone());
    // For `sticky: caller` the canary key is the caller.
    let caller = match (&sticky, &scenario.canary_key) {
        (Some(StickyKey::Caller), Some(key)) => Some(key.clone()),
        _ => scenario.caller.clone(),
    };
    let mut sent: Vec<(String, String)> = vec![(headers::MODEL.into(), scenario.model.clone())];
    let mut push = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            sent.push((k.to_string(), v.clone()));
        }
    };
    push(headers::CALLER, &caller);
    push(headers::RESIDENCY, &scenario.residency);
    push(headers::CALLER_REGION, &Some(from.clone()));
    push(headers::VERSION, &scenario.version);
    push("grpc-timeout", &scenario.deadline_ms.map(|ms| format!("{ms}m")));
    if let Some(StickyKey::Header(h)) = &sticky {
        push(h, &scenario.canary_key);
    }
    let request = RequestHeaders::read(&config, |name| sent.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()));
    let attrs = request.attrs();
    let model_key = attrs.model.unwrap_or(UNNAMED_MODEL).to_string();

    // The mesh state, built as the filter builds it: through deltas.
    let dwell = config.routing.dwell_ms;
    let settle = NOW_MS - dwell - 1;
    let mut state = MeshState::default();
    let mut delta = Delta::default();
    for region in &scenario.down {
        for i in 0..config.health.unhealthy_threshold {
            delta.probes.push((region.clone(), false, settle - 1 + u64::from(i)));
        }
    }
    for (region, ms) in &scenario.slow {
        delta.outcomes.push(AttemptOutcome {
            region: region.clone(),
            model: model_key.clone(),
            at_ms: settle,
            outcome: Outcome::Success { latency_ms: *ms },
            queue_depth: None,
        });
    }
    delta.apply(&mut state, &config, None, settle);
    let mut planner = Planner::new(config.clone(), "explain".into());
    planner.refresh(state.clone());
    // A first call makes the route known; the dwell time then passes.
    let _ = planner.decide(&attrs, settle, &mut |_, _| true);
    let _ = planner.take_delta();
    let _ = planner.take_counters();
    planner.advance(&mut state, settle);
    let breaker = config.model(&scenario.model).breaker.clone();
    let mut opened = Delta::default();
    for region in &scenario.open {
        for _ in 0..breaker.consecutive_failures {
            opened.outcomes.push(AttemptOutcome {
                region: region.clone(),
                model: model_key.clone(),
                at_ms: NOW_MS,
                outcome: Outcome::Failure,
                queue_depth: None,
            });
        }
    }
    opened.apply(&mut state, &config, None, NOW_MS);
    planner.advance(&mut state, NOW_MS);
    planner.refresh(state);
    let explanation = planner.explain(&attrs, NOW_MS);

    let mut report = Report {
        proxy_region,
        caller_region: explanation.caller_region.clone(),
        residency: explanation.residency.clone(),
        outcome: "routed",
        version: None,
        version_reason: None,
        regions: Vec::new(),
        cluster: None,
        reason: String::new(),
        message: None,
        retries: 0,
        retry_limit: None,
        per_try_timeout_ms: config.model(&scenario.model).retry.per_try_timeout_ms,
        excluded: Vec::new(),
        notes: Vec::new(),
    };
    match &explanation.decision {
        Decision::Route(plan) => {
            report.version = plan.version.clone();
            report.version_reason = plan.version_pick.map(|pick| {
                let canary = canary.as_ref();
                let (stable, canary_name) =
                    canary.map_or((String::new(), String::new()), |c| (c.stable.clone(), c.canary.clone()));
                let mut why = match pick.how {
                    Choice::Override => "asked for in x-meridian-version (overrides allowed)".to_string(),
                    Choice::Sticky => format!(
                        "sticky: the key is in bucket {} of {BUCKETS}; buckets below {:.0} ({}% on {canary_name}) \
                         go to {canary_name}, the rest to {stable}",
                        pick.bucket.unwrap_or_default(),
                        pick.canary_percent * f64::from(BUCKETS) / 100.0,
                        pick.canary_percent
                    ),
                    Choice::Draw => format!(
                        "drawn per call: {}% of calls go to {canary_name}, the rest to {stable} (give a sticky key \
                         to pin one)",
                        pick.canary_percent
                    ),
                };
                if pick.override_ignored {
                    why.push_str("; the x-meridian-version sent was ignored (not allowed, or not a version)");
                }
                if pick.stable_fallback {
                    why.push_str(&format!(
                        "; {canary_name} was picked but {} does not run it: {stable}",
                        plan.regions.first().cloned().unwrap_or_default()
                    ));
                }
                why
            });
            report.regions = plan.regions.clone();
            report.cluster = Some(plan.cluster.clone());
            report.reason = plan.reason.as_str().to_string();
            report.retries = plan.retries;
            report.retry_limit = plan.retry_limited.map(|l| match l {
                RetryLimit::NoTimeLeft => "no-time-left",
                RetryLimit::BudgetExhausted => "budget-exhausted",
            });
            report.per_try_timeout_ms = plan.per_try_timeout_ms;
        }
        Decision::Reject(rejection) => {
            report.outcome = "refused";
            report.reason = rejection.reason.to_string();
            report.message = Some(rejection.message.clone());
        }
    }
    let zone_of = |r: &str| spec.region(r).map(|r| r.zone.clone()).unwrap_or_default();
    for a in &explanation.regions {
        if report.regions.contains(&a.region) {
            continue;
        }
        let why = match a.verdict {
            Verdict::OutsideResidency => format!(
                "outside residency zone {} (its zone: {})",
                explanation.residency.as_deref().unwrap_or_default(),
                zone_of(&a.region)
            ),
            Verdict::Unhealthy => "down: its health checks fail".into(),
            Verdict::BreakerOpen => format!("its circuit breaker for {} is open", scenario.model),
            Verdict::Unknown => "unknown to the filter".into(),
            Verdict::Usable { .. } => format!(
                "beyond the failover length: a call tries at most {} region(s) (resilience.maxFailoverRegions)",
                explanation.max_failover_regions
            ),
        };
        report.excluded.push(Exclusion { region: a.region.clone(), why });
    }
    let last_resort: Vec<&str> = explanation
        .regions
        .iter()
        .filter(|a| a.verdict == Verdict::BreakerOpen && report.regions.contains(&a.region))
        .map(|a| a.region.as_str())
        .collect();
    if !last_resort.is_empty() {
        report.notes.push(format!(
            "{}: circuit breaker for {} open, so only the last resort (after every usable region, or alone when none \
             is usable)",
            last_resort.join(", "),
            scenario.model
        ));
    }
    if !scenario.slow.is_empty() && dwell > 0 {
        report.notes.push(format!(
            "after the dwell time: a faster region takes the lead only once it has been faster for {dwell} ms \
             (routing.dwell); until then the current leader keeps the calls"
        ));
    }
    if scenario.slow.is_empty() && report.regions.len() > 1 {
        report.notes.push(
            "no region has latency samples here, so regions after the first are in name order; the running filter \
             orders them by measured latency (model it with --slow REGION=MS)"
                .into(),
        );
    }
    if scenario.caller.as_ref().is_some_and(|c| !spec.callers.contains_key(c)) {
        report.notes.push("the caller is not in the policy: no caller policy applies".into());
    }
    Ok(report)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "decided by the caller-side proxy of {} for a caller in {}{}",
            self.proxy_region,
            self.caller_region,
            self.residency.as_ref().map(|z| format!(", bound to residency {z}")).unwrap_or_default()
        )?;
        if self.outcome == "refused" {
            writeln!(f, "refused:  gRPC UNAVAILABLE, x-meridian-reason: {}", self.reason)?;
            if let Some(m) = &self.message {
                writeln!(f, "message:  {m}")?;
            }
        } else {
            if let Some(v) = &self.version {
                writeln!(f, "version:  {v} — {}", self.version_reason.as_deref().unwrap_or_default())?;
            }
            writeln!(
                f,
                "regions:  {}   (cluster {})",
                self.regions.join(" → "),
                self.cluster.as_deref().unwrap_or_default()
            )?;
            writeln!(f, "reason:   {}", self.reason)?;
            writeln!(
                f,
                "retries:  {} granted{}, each attempt {} ms",
                self.retries,
                self.retry_limit.map(|l| format!(" ({l})")).unwrap_or_default(),
                self.per_try_timeout_ms
            )?;
        }
        if !self.excluded.is_empty() {
            writeln!(f, "excluded:")?;
            for e in &self.excluded {
                writeln!(f, "  {:<12} {}", e.region, e.why)?;
            }
        }
        for n in &self.notes {
            writeln!(f, "note:     {n}")?;
        }
        Ok(())
    }
}
