//! Which regions may serve a request, in which order, and why.
//!
//! 1. Residency is a hard filter: a request bound to a zone never lists a
//!    region outside it, failover included.
//! 2. Regions that are unhealthy or whose breaker is open are left out —
//!    except as a last resort: a healthy region whose breaker is open goes
//!    at the end of the failover order, and leads when nothing else can
//!    (like Envoy's panic threshold), so a breaker tripped by past failures
//!    never fails a call that a healthy region could still serve.
//! 3. The rest are scored: latency EWMA plus a cost per request queued at
//!    the region's sidecars (the in-band load signal). Overloaded regions
//!    (queue at or past the spill-over depth) go last: traffic spills over.
//! 4. The caller's own region leads while it is available and not
//!    overloaded, unless another region beats it by `margin`. A leader that
//!    becomes unusable is replaced at once (failover); any other change of
//!    leader — a faster region taking over, or the local region reclaiming
//!    the lead once it is back — must be wanted for the whole `dwell_ms`
//!    (hysteresis: scores that wobble never flap the leader).

use crate::config::RoutingConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A region and its residency zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// Its name (e.g. `eu-west`).
    pub name: String,
    /// Its residency zone (e.g. `eu`).
    pub zone: String,
}

/// What the filter knows of a region now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionStatus {
    /// Active health checks pass.
    pub healthy: bool,
    /// The (region, model) breaker is open.
    pub breaker_open: bool,
    /// Smoothed latency of recent calls, if any.
    pub latency_ewma_ms: Option<f64>,
    /// Requests queued at the region's sidecars (in-band signal).
    pub queue_depth: f64,
}

/// What the router works with: every region, and the scoring and
/// hysteresis knobs of the filter's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingPolicy {
    /// Every region.
    pub regions: Vec<Region>,
    /// Margins, dwell time, load cost, spill-over depth, unknown latency.
    pub knobs: RoutingConfig,
}

/// One request's routing inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRequest<'a> {
    /// The caller's region.
    pub caller_region: &'a str,
    /// The residency zone the request is bound to, if any.
    pub residency: Option<&'a str>,
}

/// Why the order is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The caller's region leads.
    Local,
    /// Another region took over after beating the local one for the dwell time.
    Faster,
    /// The local region is down, open or outside the residency zone.
    LocalUnavailable,
    /// The local region is overloaded; traffic spills over.
    SpillOver,
    /// No allowed region can take the request.
    NoAllowedRegion,
    /// Regions exist but none is in the residency zone.
    ResidencyExcludesAll,
    /// No region is usable; healthy regions whose breaker is open take the
    /// call rather than failing it.
    LastResort,
}

/// A routing decision: an ordered list (first = primary, rest = failover),
/// or none, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Regions in preference order; empty when the request must fail fast.
    pub regions: Vec<String>,
    /// Why.
    pub reason: Reason,
}

/// Hysteresis state for one (caller region, model): who leads and who is
/// challenging since when.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Router {
    leader: Option<String>,
    challenger: Option<(String, u64)>,
}

impl Reason {
    /// The reason as a header value (`local`, `faster`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Local => "local",
            Reason::Faster => "faster",
            Reason::LocalUnavailable => "local-unavailable",
            Reason::SpillOver => "spill-over",
            Reason::NoAllowedRegion => "no-available-region",
            Reason::ResidencyExcludesAll => "residency-excludes-all",
            Reason::LastResort => "last-resort",
        }
    }
}

/// How one region stands for one request, before the order is chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// The region.
    pub region: String,
    /// Whether it may serve the request, and if not why.
    pub verdict: Verdict,
}

/// Whether a region may serve a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// It may: its score (latency EWMA, or the unknown-latency default,
    /// plus the queue cost) and whether it is overloaded (goes last).
    Usable {
        /// Lower is better, in milliseconds.
        score: f64,
        /// Its queue is at or past the spill-over depth.
        overloaded: bool,
    },
    /// Its zone is not the request's residency zone (a hard rule).
    OutsideResidency,
    /// Its active health checks fail.
    Unhealthy,
    /// The (region, model) breaker is open.
    BreakerOpen,
    /// No status is known for it (not in the snapshot).
    Unknown,
}

/// Every region of `policy`, in its order, with whether it may serve `req`
/// under `status`: the filters [`Router::route`] applies before it ranks
/// and picks a leader (and what `meridianctl explain` reports).
pub fn assess(
    policy: &RoutingPolicy,
    status: &BTreeMap<String, RegionStatus>,
    req: RouteRequest<'_>,
) -> Vec<Assessment> {
    policy
        .regions
        .iter()
        .map(|r| {
            let verdict = if req.residency.is_some_and(|zone| r.zone != zone) {
                Verdict::OutsideResidency
            } else {
                match status.get(&r.name) {
                    None => Verdict::Unknown,
                    Some(s) if !s.healthy => Verdict::Unhealthy,
                    Some(s) if s.breaker_open => Verdict::BreakerOpen,
                    Some(s) => Verdict::Usable {
                        score: s.latency_ewma_ms.unwrap_or(policy.knobs.unknown_latency_ms)
                            + policy.knobs.ms_per_queued_request * s.queue_depth,
                        overloaded: s.queue_depth >= policy.knobs.spill_queue_depth,
                    },
                }
            };
            Assessment { region: r.name.clone(), verdict }
        })
        .collect()
}

// === impl Router ===

impl Router {
    /// The region leading now, if any.
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// Decides the order for one request at `now_ms`.
    pub fn route(
        &mut self,
        policy: &RoutingPolicy,
        status: &BTreeMap<String, RegionStatus>,
        req: RouteRequest<'_>,
        now_ms: u64,
    ) -> Route {
        let assessed = assess(policy, status, req);
        if assessed.iter().all(|a| a.verdict == Verdict::OutsideResidency) {
            return Route { regions: Vec::new(), reason: Reason::ResidencyExcludesAll };
        }
        let regions_by_name = |name: &str| policy.regions.iter().find(|r| r.name == name);
        let usable: Vec<(&Region, f64, bool)> = assessed
            .iter()
            .filter_map(|a| match a.verdict {
                Verdict::Usable { score, overloaded } => Some((regions_by_name(&a.region)?, score, overloaded)),
                _ => None,
            })
            .collect();
        // The last resort: healthy regions of the zone whose breaker is open.
        let last_resort: Vec<String> =
            assessed.iter().filter(|a| a.verdict == Verdict::BreakerOpen).map(|a| a.region.clone()).collect();
        if usable.is_empty() {
            self.challenger = None;
            if last_resort.is_empty() {
                return Route { regions: Vec::new(), reason: Reason::NoAllowedRegion };
            }
            return Route { regions: last_resort, reason: Reason::LastResort };
        }
        let mut ranked = usable.clone();
        // Not overloaded first, then by score, then by name for determinism.
        ranked.sort_by(|a, b| a.2.cmp(&b.2).then(a.1.total_cmp(&b.1)).then(a.0.name.cmp(&b.0.name)));

        let local = usable.iter().find(|(r, _, _)| r.name == req.caller_region).copied();
        let local_ok = local.is_some_and(|(_, _, overloaded)| !overloaded);
        let best = ranked[0];
        let beats = |a: (&Region, f64, bool), b: (&Region, f64, bool)| {
            !a.2 && a.1 < b.1 * (1.0 - policy.knobs.margin) && b.1 - a.1 >= policy.knobs.min_margin_ms
        };

        // Where traffic should go: the local region while it is usable, not
        // overloaded and not beaten by the margin; else the best region.
        let target = match local {
            Some(l) if local_ok && !beats(best, l) => l,
            _ => best,
        };
        // The current leader, if it can still lead; with none yet (or none
        // left) the local region when it can lead: any other region must
        // win its place through the dwell time.
        let current = self
            .leader
            .as_deref()
            .and_then(|name| ranked.iter().find(|(r, _, o)| r.name == name && !o))
            .or(local.as_ref().filter(|_| local_ok));
        let leader = match current {
            // No usable leader: fail over at once.
            None => {
                self.challenger = None;
                target
            }
            Some(&cur) if cur.0.name == target.0.name => {
                self.challenger = None;
                cur
            }
            // A switch must be wanted — the local region reclaiming the
            // lead, or a region beating the leader by the margin — for the
            // whole dwell time.
            Some(&cur) if target.0.name == req.caller_region || beats(target, cur) => match &self.challenger {
                Some((name, since)) if *name == target.0.name => {
                    if now_ms.saturating_sub(*since) >= policy.knobs.dwell_ms {
                        self.challenger = None;
                        target
                    } else {
                        cur
                    }
                }
                _ => {
                    self.challenger = Some((target.0.name.clone(), now_ms));
                    cur
                }
            },
            Some(&cur) => {
                self.challenger = None;
                cur
            }
        };
        self.leader = Some(leader.0.name.clone());

        let reason = if leader.0.name == req.caller_region {
            Reason::Local
        } else if local.is_some_and(|(_, _, overloaded)| overloaded) {
            Reason::SpillOver
        } else if local.is_none() {
            Reason::LocalUnavailable
        } else {
            Reason::Faster
        };
        let mut regions = vec![leader.0.name.clone()];
        regions.extend(ranked.iter().map(|(r, _, _)| r.name.clone()).filter(|n| *n != leader.0.name));
        regions.extend(last_resort);
        Route { regions, reason }
    }
}

#[cfg(test)]
mod tests;
