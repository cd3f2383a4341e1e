//! `meridianctl simulate`: a policy's autoscaling replayed on a
//! request-rate trace, region by region, with `meridian_autoscale`'s
//! algorithm and queueing model.

use crate::policy::Policy;
use meridian_autoscale::simulate::{self, Options, RegionReport, RegionSetup, Trace};
use std::fmt::Write;

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The model whose autoscaling runs (default: the only model with
    /// `autoscaling`).
    pub model: Option<String>,
    /// The p99 objective (default: the model's `slo.p99`).
    pub slo_p99_s: Option<f64>,
    /// Wall time of the trace's first row, Unix ms (schedules are cron).
    pub start_unix_ms: u64,
    /// Model step, seconds.
    pub step_s: f64,
    /// Drop the schedules (what do they buy?).
    pub without_schedules: bool,
}

/// The simulation's outcome.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The model simulated.
    pub model: String,
    /// Per region, in the trace's order.
    pub regions: Vec<RegionReport>,
}

/// Runs the simulation. Errors name what is missing: no model with
/// autoscaling, a trace region the policy lacks, no objective.
pub fn run(policy: &Policy, trace: &Trace, request: &Request) -> Result<Outcome, String> {
    let spec = policy.spec();
    let models = spec.resolved_models();
    let with_scaling: Vec<&String> = models.iter().filter(|(_, m)| m.autoscaling.is_some()).map(|(n, _)| n).collect();
    let model_name = match &request.model {
        Some(m) => m.clone(),
        None => match with_scaling.as_slice() {
            [one] => (*one).clone(),
            [] => return Err("no model of the policy has `autoscaling`: there is nothing to simulate".into()),
            many => {
                return Err(format!(
                    "several models have autoscaling ({}): choose one with --model",
                    many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ))
            }
        },
    };
    let model = models.get(&model_name).ok_or_else(|| format!("the policy has no model `{model_name}`"))?;
    let scaling =
        model.autoscaling.as_ref().ok_or_else(|| format!("models.{model_name} has no `autoscaling` to simulate"))?;
    let slo = request
        .slo_p99_s
        .or_else(|| model.slo.as_ref().and_then(|s| s.p99).map(|d| d.as_millis_f64() / 1000.0))
        .ok_or_else(|| {
            format!(
                "the simulation counts time above the p99 objective: set models.{model_name}.slo.p99 or pass --slo-p99"
            )
        })?;
    let mut setups = Vec::new();
    for region in &trace.regions {
        if spec.region(region).is_none() {
            let names: Vec<&str> = spec.regions.iter().map(|r| r.name.as_str()).collect();
            return Err(format!("the trace's column `{region}` is not a region of the policy ({})", names.join(", ")));
        }
        let mut s = scaling.spec_for(region)?;
        if request.without_schedules {
            s.schedules.clear();
        }
        setups.push(RegionSetup { name: region.clone(), spec: s, replica: scaling.replica_model(), slo_p99_s: slo });
    }
    let options = Options { start_unix_ms: request.start_unix_ms, step_s: request.step_s };
    let regions = simulate::simulate(trace, &setups, options).map_err(|e| e.to_string())?;
    Ok(Outcome { model: model_name, regions })
}

impl Outcome {
    /// The table `meridianctl simulate` prints.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<14} {:>15} {:>14} {:>14} {:>13} {:>12}",
            "region", "slo_violation_s", "replica_hours", "peak_replicas", "scale_events", "max_p99_ms"
        );
        for r in &self.regions {
            let p99 = if r.max_p99_s.is_finite() { format!("{:.1}", r.max_p99_s * 1000.0) } else { "inf".into() };
            let _ = writeln!(
                out,
                "{:<14} {:>15.0} {:>14.2} {:>14} {:>13} {:>12}",
                r.region,
                r.slo_violation_s,
                r.replica_hours,
                r.peak_replicas,
                r.scale_ups + r.scale_downs,
                p99
            );
        }
        out
    }

    /// The same as JSON (with every scale event).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "model": self.model,
            "regions": self.regions.iter().map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                if !r.max_p99_s.is_finite() {
                    v["max_p99_s"] = serde_json::Value::Null;
                }
                v
            }).collect::<Vec<_>>(),
        })
    }
}
