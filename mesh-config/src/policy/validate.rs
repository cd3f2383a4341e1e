//! What the schema cannot check: names that must refer to something
//! (regions, versions, zones, models), names that must be unique, duration
//! bounds, and the filter configuration derived for every region.

use super::autoscaling::{Autoscaling, ScheduleWindow, SelectPolicy};
use super::derive::filter_config;
use super::duration::Duration;
use super::error::{Pointer, PolicyError};
use super::spec::MeshPolicy;
use super::Policy;
use meridian_autoscale::schedule::CronExpr;
use std::collections::BTreeSet;
use std::net::SocketAddr;

/// A DNS-1123 label: lowercase letters, digits and `-`, starting and ending
/// with a letter or digit, at most 63.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Every semantic error of `policy`.
pub(crate) fn check(policy: &Policy) -> Vec<PolicyError> {
    let mut c = Checker { policy, errors: Vec::new() };
    c.regions();
    c.models();
    c.callers();
    c.settings();
    if c.errors.is_empty() {
        c.derived();
    }
    c.errors
}

struct Checker<'a> {
    policy: &'a Policy,
    errors: Vec<PolicyError>,
}

fn root() -> Pointer {
    Pointer::root()
}

impl Checker<'_> {
    fn spec(&self) -> &MeshPolicy {
        self.policy.spec()
    }

    fn fail(&mut self, at: Pointer, message: String) {
        let e = self.policy.error(at, message);
        self.errors.push(e);
    }

    fn region_names(&self) -> Vec<String> {
        self.spec().regions.iter().map(|r| r.name.clone()).collect()
    }

    fn zones(&self) -> Vec<String> {
        let set: BTreeSet<String> = self.spec().regions.iter().map(|r| r.zone.clone()).collect();
        set.into_iter().collect()
    }

    fn known_region(&mut self, at: Pointer, name: &str) {
        let names = self.region_names();
        if !names.iter().any(|n| n == name) {
            let hint =
                super::schema::closest(name, &names).map(|n| format!("; did you mean `{n}`?")).unwrap_or_default();
            self.fail(at, format!("`{name}` is not a region (regions: {}){hint}", names.join(", ")));
        }
    }

    fn regions(&mut self) {
        let spec = self.spec().clone();
        let labels = spec.version_labels();
        let mut addresses: Vec<(String, Pointer)> = Vec::new();
        for (i, region) in spec.regions.iter().enumerate() {
            let at = root().key("regions").index(i);
            if let Some(first) = spec.regions[..i].iter().position(|r| r.name == region.name) {
                self.fail(
                    at.key("name"),
                    format!("region `{}` is listed twice (first as regions[{first}])", region.name),
                );
            }
            for (j, endpoint) in region.endpoints.iter().enumerate() {
                let e_at = at.key("endpoints").index(j);
                if endpoint.address.parse::<SocketAddr>().is_err() {
                    self.fail(
                        e_at.key("address"),
                        format!("`{}` is not IP:PORT (an endpoint is an address, not a name)", endpoint.address),
                    );
                }
                if let Some((_, first)) = addresses.iter().find(|(a, _)| *a == endpoint.address) {
                    let first = first.path();
                    self.fail(e_at.key("address"), format!("`{}` is also {first}", endpoint.address));
                }
                addresses.push((endpoint.address.clone(), e_at.key("address")));
                if !labels.contains(&endpoint.version) {
                    self.fail(
                        e_at.key("version"),
                        format!(
                            "`{}` is not a version of any model (versions: {})",
                            endpoint.version,
                            labels.join(", ")
                        ),
                    );
                }
            }
            if !region.endpoints.is_empty() {
                for version in spec.versions_in(&region.name) {
                    if !region.endpoints.iter().any(|e| e.version == version) {
                        self.fail(
                            at.key("endpoints"),
                            format!("no endpoint serves version `{version}`, which runs in {}", region.name),
                        );
                    }
                }
            }
        }
        if let Some(region) = &spec.caller_proxy.region {
            self.known_region(root().key("callerProxy").key("region"), region);
        }
    }

    fn models(&mut self) {
        let spec = self.spec().clone();
        let regions = self.region_names();
        let mut shadow_version: Option<(String, String)> = None;
        for (name, model) in &spec.models {
            let at = root().key("models").key(name);
            let bad_name = name.is_empty()
                || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
                || name.starts_with(['-', '_'])
                || name.ends_with(['-', '_'])
                || name.len() > 40;
            if bad_name {
                self.fail(
                    at.clone(),
                    format!(
                        "`{name}` is not a model name: lowercase letters, digits, `-` and `_`, starting and ending \
                         with a letter or digit, at most 40"
                    ),
                );
            }
            let versions = model.resolved_versions();
            let names: Vec<String> = versions.iter().map(|v| v.name.clone()).collect();
            for (i, v) in model.versions.iter().enumerate() {
                let v_at = at.key("versions").index(i);
                if model.versions[..i].iter().any(|o| o.name == v.name) {
                    self.fail(v_at.key("name"), format!("version `{}` is listed twice", v.name));
                }
                for (j, r) in v.regions.iter().flatten().enumerate() {
                    self.known_region(v_at.key("regions").index(j), r);
                }
                if v.regions.as_ref().is_some_and(Vec::is_empty) {
                    self.fail(v_at.key("regions"), "lists no region: the version would run nowhere".into());
                }
            }
            let stable = model.stable_version();
            match &model.stable {
                Some(s) if !names.contains(s) => {
                    self.fail(at.key("stable"), format!("`{s}` is not one of the versions ({})", names.join(", ")))
                }
                _ => {}
            }
            if let Some((i, v)) = model.versions.iter().enumerate().find(|(_, v)| v.name == stable) {
                let missing: Vec<&String> = regions.iter().filter(|r| !v.runs_in(r)).collect();
                if !missing.is_empty() {
                    self.fail(
                        at.key("versions").index(i).key("regions"),
                        format!(
                            "the stable version `{stable}` must run in every region (a call may fail over to any); \
                             missing: {}",
                            missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                    );
                }
            }
            if let Some(canary) = &model.canary {
                let c_at = at.key("canary");
                if canary.version == stable {
                    self.fail(c_at.key("version"), format!("`{stable}` is the stable version; a canary is another"));
                } else if !names.contains(&canary.version) {
                    self.fail(
                        c_at.key("version"),
                        format!("`{}` is not one of the versions ({})", canary.version, names.join(", ")),
                    );
                }
                for (i, step) in canary.steps.iter().enumerate() {
                    if step.hold < Duration::from_millis(1) {
                        self.fail(c_at.key("steps").index(i).key("hold"), "must be at least 1ms".into());
                    }
                }
                self.at_least(c_at.key("analysis").key("window"), canary.analysis.window, Duration::from_millis(100));
            }
            if let Some(shadow) = &model.shadow {
                let s_at = at.key("shadow").key("version");
                if shadow.version == stable {
                    self.fail(
                        s_at.clone(),
                        format!("`{stable}` is the stable version, which already serves the calls"),
                    );
                } else if !names.contains(&shadow.version) {
                    self.fail(
                        s_at.clone(),
                        format!("`{}` is not one of the versions ({})", shadow.version, names.join(", ")),
                    );
                }
                match &shadow_version {
                    Some((other_model, v)) if *v != shadow.version => self.fail(
                        s_at,
                        format!(
                            "the gateways mirror to one version: models.{other_model}.shadow.version is `{v}` \
                             (shadow the same version, or drop one)"
                        ),
                    ),
                    _ => shadow_version = Some((name.clone(), shadow.version.clone())),
                }
            }
            if let Some(t) = model.timeout {
                self.at_least(at.key("timeout"), t, Duration::from_millis(1));
            }
            if let Some(r) = &model.retry {
                if let Some(t) = r.per_try_timeout {
                    self.at_least(at.key("retry").key("perTryTimeout"), t, Duration::from_millis(1));
                }
            }
            if let Some(b) = &model.breaker {
                let base = b.base_open.unwrap_or(spec.resilience.breaker.base_open);
                let max = b.max_open.unwrap_or(spec.resilience.breaker.max_open);
                if max < base {
                    self.fail(at.key("breaker").key("maxOpen"), format!("{max} is shorter than baseOpen ({base})"));
                }
                if let Some(d) = b.base_open {
                    self.at_least(at.key("breaker").key("baseOpen"), d, Duration::from_millis(1));
                }
            }
            if let Some(p99) = model.slo.as_ref().and_then(|s| s.p99) {
                self.at_least(at.key("slo").key("p99"), p99, Duration::from_millis(1));
            }
            if let Some(a) = &model.autoscaling {
                self.autoscaling(at.key("autoscaling"), name, a);
            }
            if let Some(b) = &model.batching {
                if let (Some(sizes), max) =
                    (&b.preferred_batch_sizes, b.max_batch_size.unwrap_or(spec.batching.max_batch_size))
                {
                    self.batch_sizes(at.key("batching").key("preferredBatchSizes"), sizes, max);
                }
            }
        }
    }

    fn callers(&mut self) {
        let spec = self.spec().clone();
        let zones = self.zones();
        let models: Vec<String> = spec.resolved_models().keys().cloned().collect();
        for (name, caller) in &spec.callers {
            let at = root().key("callers").key(name);
            if name.is_empty() || name.chars().any(|c| !c.is_ascii_graphic()) {
                self.fail(at.clone(), format!("`{name}` is not a caller identity (printable ASCII, no spaces)"));
            }
            if let Some(zone) = &caller.residency {
                if !zones.contains(zone) {
                    self.fail(
                        at.key("residency"),
                        format!("no region is in zone `{zone}` (zones: {})", zones.join(", ")),
                    );
                }
            }
            if let Some(region) = &caller.region {
                self.known_region(at.key("region"), region);
            }
            for (i, m) in caller.models.iter().flatten().enumerate() {
                if !models.contains(m) {
                    self.fail(
                        at.key("models").index(i),
                        format!("`{m}` is not a model of this policy (models: {})", models.join(", ")),
                    );
                }
            }
        }
    }

    fn settings(&mut self) {
        let spec = self.spec().clone();
        let r = &spec.resilience;
        let res = root().key("resilience");
        self.at_least(res.key("timeout"), r.timeout, Duration::from_millis(1));
        self.at_least(res.key("retry").key("perTryTimeout"), r.retry.per_try_timeout, Duration::from_millis(1));
        self.at_least(res.key("budget").key("window"), r.budget.window, Duration::from_millis(100));
        self.at_least(res.key("breaker").key("window"), r.breaker.window, Duration::from_millis(10));
        self.at_least(res.key("breaker").key("baseOpen"), r.breaker.base_open, Duration::from_millis(1));
        if r.breaker.max_open < r.breaker.base_open {
            self.fail(
                res.key("breaker").key("maxOpen"),
                format!("{} is shorter than baseOpen ({})", r.breaker.max_open, r.breaker.base_open),
            );
        }
        if let Some(d) = r.breaker.slow_call {
            self.at_least(res.key("breaker").key("slowCall"), d, Duration::from_millis(1));
        }
        self.at_least(res.key("health").key("interval"), r.health.interval, Duration::from_millis(10));
        self.at_least(res.key("health").key("timeout"), r.health.timeout, Duration::from_millis(1));
        let tick = spec.filter.tick;
        let tick_at = root().key("filter").key("tick");
        self.at_least(tick_at.clone(), tick, Duration::from_millis(10));
        if tick > Duration::from_secs(1) {
            self.fail(tick_at, format!("{tick} is above the maximum of 1s"));
        }
        let b = &spec.batching;
        self.batch_sizes(root().key("batching").key("preferredBatchSizes"), &b.preferred_batch_sizes, b.max_batch_size);
    }

    fn autoscaling(&mut self, at: Pointer, model: &str, a: &Autoscaling) {
        let regions = self.region_names();
        for name in a.regions.keys() {
            self.known_region(at.key("regions").key(name), name);
        }
        self.whole_seconds(at.key("syncPeriod"), a.sync_period, 1, 3600);
        for (key, rules) in [("scaleUp", &a.scale_up), ("scaleDown", &a.scale_down)] {
            let Some(rules) = rules else { continue };
            let r_at = at.key(key);
            self.whole_seconds(r_at.key("stabilizationWindow"), rules.stabilization_window, 0, 3600);
            if rules.policies.is_empty() && rules.select_policy != SelectPolicy::Disabled {
                self.fail(
                    r_at.key("policies"),
                    "at least one policy (or selectPolicy: Disabled for no scaling in this direction)".into(),
                );
            }
            for (i, p) in rules.policies.iter().enumerate() {
                self.whole_seconds(r_at.key("policies").index(i).key("period"), p.period, 1, 1800);
            }
        }
        self.at_least(at.key("replica").key("computeTime"), a.replica.compute_time, Duration::from_micros(1));
        let sample = a.deployment_name(model, "v1", regions.first().map_or("region", String::as_str));
        if !is_dns_label(&sample) {
            self.fail(
                at.key("deployment"),
                format!(
                    "`{}` gives `{sample}`, not a Kubernetes name (lowercase letters, digits and `-`, at most 63)",
                    a.deployment
                ),
            );
        }
        let mut checked_windows = false;
        for region in &regions {
            let r = a.for_region(region);
            let overridden = a.regions.get(region);
            let r_at = if overridden.is_some() { at.key("regions").key(region) } else { at.clone() };
            if r.min_replicas > r.max_replicas {
                let field =
                    if overridden.is_some_and(|o| o.max_replicas.is_some()) { "maxReplicas" } else { "minReplicas" };
                let f_at = if overridden.is_some_and(|o| o.min_replicas.is_some() || o.max_replicas.is_some()) {
                    r_at.key(field)
                } else {
                    at.key("minReplicas")
                };
                self.fail(
                    f_at,
                    format!("in {region}: minReplicas {} is above maxReplicas {}", r.min_replicas, r.max_replicas),
                );
            }
            if let Some(cap) = &r.cost_cap {
                let c_at = if overridden.is_some_and(|o| o.cost_cap.is_some()) {
                    r_at.key("costCap")
                } else {
                    at.key("costCap")
                };
                if cap.window < a.sync_period {
                    self.fail(
                        c_at.key("window"),
                        format!("{} is shorter than syncPeriod ({})", cap.window, a.sync_period),
                    );
                }
            }
            let own_windows = overridden.is_some_and(|o| o.schedules.is_some());
            if own_windows || !checked_windows {
                let w_at = if own_windows { r_at.key("schedules") } else { at.key("schedules") };
                self.windows(w_at, &r.schedules, r.max_replicas, region);
                checked_windows |= !own_windows;
            }
        }
    }

    fn windows(&mut self, at: Pointer, windows: &[ScheduleWindow], max: u32, region: &str) {
        for (i, w) in windows.iter().enumerate() {
            let w_at = at.index(i);
            if let Some(first) = windows[..i].iter().position(|o| o.name == w.name) {
                self.fail(w_at.key("name"), format!("schedule `{}` is listed twice (first as [{first}])", w.name));
            }
            for (key, text) in [("start", &w.start), ("end", &w.end)] {
                if let Err(e) = CronExpr::parse(text) {
                    self.fail(w_at.key(key), e.to_string());
                }
            }
            if w.timezone != "UTC" {
                self.fail(
                    w_at.key("timezone"),
                    format!("`{}`: Meridian evaluates schedules in UTC only; write start and end in UTC", w.timezone),
                );
            }
            if w.replicas > max {
                self.fail(w_at.key("replicas"), format!("{} is above maxReplicas ({max}) in {region}", w.replicas));
            }
        }
    }

    fn whole_seconds(&mut self, at: Pointer, d: Duration, min_secs: u64, max_secs: u64) {
        let ms = d.as_millis();
        if !d.as_micros().is_multiple_of(1_000_000) {
            self.fail(at, format!("{d} is not a whole number of seconds (Kubernetes counts in seconds)"));
        } else if ms / 1000 < min_secs || ms / 1000 > max_secs {
            self.fail(at, format!("{d} is outside {min_secs}s–{max_secs}s"));
        }
    }

    fn batch_sizes(&mut self, at: Pointer, sizes: &[u32], max: u32) {
        for (i, size) in sizes.iter().enumerate() {
            if *size == 0 || (max > 0 && *size > max) {
                self.fail(at.index(i), format!("{size} is not a batch size from 1 to maxBatchSize ({max})"));
            }
        }
    }

    fn at_least(&mut self, at: Pointer, value: Duration, min: Duration) {
        if value < min {
            self.fail(at, format!("{value} is below the minimum of {min}"));
        }
    }

    /// The filter configuration of every region, checked by the core as
    /// the filter will check it. The checks above should have caught
    /// everything; this is the guarantee.
    fn derived(&mut self) {
        let spec = self.spec().clone();
        for region in &spec.regions {
            if let Err(e) = filter_config(&spec, &region.name) {
                self.fail(
                    root(),
                    format!("the filter configuration derived for region {} is invalid: {e}", region.name),
                );
            }
        }
    }
}
