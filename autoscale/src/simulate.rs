//! A request-rate trace replayed through the autoscaler.
//!
//! Each region is a fleet of replicas; a replica has `slots` calls' worth
//! of parallel compute (its measured capacity × its compute time), each
//! slot serving one call in `compute_time`. Every `step` the region is an
//! M/M/c queue (c = ready slots, Erlang C) over a fluid backlog: arrivals
//! beyond capacity pile up and drain when capacity returns. p99 latency is
//! the compute time plus the 99th percentile of the wait plus the backlog's
//! drain time. Every `sync period` the region's [`Autoscaler`] sees the
//! metric its target names and the replica count (started or starting);
//! new replicas serve after `startup`, removed ones leave at once (they
//! drain, which the model counts as instantaneous).

use crate::hpa::{Autoscaler, Decision, Observation, Spec, Target};
use serde::Serialize;
use std::fmt;

/// A trace that cannot be read, with the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct TraceError {
    /// 1-based.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Request rates over time: `time_s,<region>,<region>…` then one row per
/// point — seconds after the simulation's start time, then req/s per
/// region; linear between points. The simulation runs from the first row
/// to the last.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// The regions, in column order.
    pub regions: Vec<String>,
    /// (seconds from the start, req/s per region).
    pub points: Vec<(f64, Vec<f64>)>,
}

impl Trace {
    /// Parses the CSV text (`#` lines are comments).
    pub fn parse_csv(text: &str) -> Result<Self, TraceError> {
        let mut lines =
            text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        let (header_no, header) = lines
            .next()
            .ok_or(TraceError { line: 1, message: "empty trace: expected `time_s,<region>,…`".into() })?;
        let columns: Vec<&str> = header.split(',').map(str::trim).collect();
        if columns.first() != Some(&"time_s") || columns.len() < 2 {
            return Err(TraceError {
                line: header_no + 1,
                message: format!("the header must be `time_s,<region>[,<region>…]`, not `{header}`"),
            });
        }
        let regions: Vec<String> = columns[1..].iter().map(|s| s.to_string()).collect();
        let mut points: Vec<(f64, Vec<f64>)> = Vec::new();
        for (no, line) in lines {
            let err = |message: String| TraceError { line: no + 1, message };
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            if cells.len() != columns.len() {
                return Err(err(format!("{} values, the header has {}", cells.len(), columns.len())));
            }
            let parse = |i: usize| -> Result<f64, TraceError> {
                let v: f64 =
                    cells[i].parse().map_err(|_| err(format!("`{}` ({}) is not a number", cells[i], columns[i])))?;
                if !v.is_finite() || v < 0.0 {
                    return Err(err(format!("{} is {v}: must be a finite number ≥ 0", columns[i])));
                }
                Ok(v)
            };
            let t = parse(0)?;
            if let Some((last, _)) = points.last() {
                if t <= *last {
                    return Err(err(format!("time_s {t} does not come after {last}")));
                }
            }
            let rates = (1..cells.len()).map(parse).collect::<Result<Vec<_>, _>>()?;
            points.push((t, rates));
        }
        if points.len() < 2 {
            return Err(TraceError { line: header_no + 1, message: "a trace needs at least two rows".into() });
        }
        Ok(Self { regions, points })
    }

    /// The first row's time and the last's.
    pub fn span_s(&self) -> (f64, f64) {
        (self.points.first().map_or(0.0, |p| p.0), self.points.last().map_or(0.0, |p| p.0))
    }

    /// Region `index`'s rate at `t` (seconds after the start).
    pub fn rate(&self, index: usize, t: f64) -> f64 {
        let after = self.points.partition_point(|(pt, _)| *pt <= t);
        match (after.checked_sub(1).and_then(|i| self.points.get(i)), self.points.get(after)) {
            (Some((t0, r0)), Some((t1, r1))) => {
                let f = (t - t0) / (t1 - t0);
                r0[index] + (r1[index] - r0[index]) * f
            }
            (Some((_, r)), None) | (None, Some((_, r))) => r[index],
            (None, None) => 0.0,
        }
    }
}

/// One replica, as measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReplicaModel {
    /// Calls per second it serves at its best batch size.
    pub capacity_rps: f64,
    /// Time one call computes (its batch's run time).
    pub compute_time_s: f64,
    /// Time from start to serving.
    pub startup_s: f64,
}

impl ReplicaModel {
    /// Parallel slots: calls computing at once at full capacity.
    pub fn slots(&self) -> u32 {
        (self.capacity_rps * self.compute_time_s).round().max(1.0) as u32
    }
}

/// One region to simulate.
#[derive(Debug, Clone)]
pub struct RegionSetup {
    /// Its name (a trace column).
    pub name: String,
    /// Its autoscaling.
    pub spec: Spec,
    /// Its replicas.
    pub replica: ReplicaModel,
    /// The p99 objective.
    pub slo_p99_s: f64,
}

/// How to run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// Wall time of the trace's first point, Unix ms (schedules are cron
    /// in UTC).
    pub start_unix_ms: u64,
    /// Model step.
    pub step_s: f64,
}

/// The state at one step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds after the start time.
    pub t_s: f64,
    /// Offered req/s.
    pub load_rps: f64,
    /// Replicas started or starting.
    pub replicas: u32,
    /// Replicas serving.
    pub ready: u32,
    /// p99 latency, seconds (infinite with nothing serving).
    pub p99_s: f64,
}

/// A change of the replica count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScaleEvent {
    /// Seconds from the start.
    pub t_s: f64,
    /// Before.
    pub from: u32,
    /// After.
    pub to: u32,
    /// Why (the autoscaler's reason).
    pub reason: String,
}

/// A region's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionReport {
    /// The region.
    pub region: String,
    /// Seconds with p99 above the objective.
    pub slo_violation_s: f64,
    /// Replica-hours run (starting replicas included).
    pub replica_hours: f64,
    /// The most replicas at once.
    pub peak_replicas: u32,
    /// Scale-ups and scale-downs.
    pub scale_ups: u32,
    /// Scale-downs.
    pub scale_downs: u32,
    /// The worst p99, seconds (infinite: calls arrived with nothing serving).
    pub max_p99_s: f64,
    /// The replica model used.
    pub replica: ReplicaModel,
    /// The objective.
    pub slo_p99_s: f64,
    /// Every change.
    pub events: Vec<ScaleEvent>,
    /// Every step.
    #[serde(skip)]
    pub samples: Vec<Sample>,
}

impl fmt::Display for RegionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: slo_violation_s={:.0} replica_hours={:.2} peak_replicas={} scale_events={} (up {}, down {})",
            self.region,
            self.slo_violation_s,
            self.replica_hours,
            self.peak_replicas,
            self.scale_ups + self.scale_downs,
            self.scale_ups,
            self.scale_downs
        )
    }
}

/// An unknown region, or a region the trace lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the trace has no column for region {0} (its columns: {1})")]
pub struct MissingRegion(pub String, pub String);

/// Runs every region over the trace. Regions are independent: each has
/// its own autoscaler, as in the mesh.
pub fn simulate(trace: &Trace, regions: &[RegionSetup], options: Options) -> Result<Vec<RegionReport>, MissingRegion> {
    regions
        .iter()
        .map(|setup| {
            let column = trace
                .regions
                .iter()
                .position(|r| *r == setup.name)
                .ok_or_else(|| MissingRegion(setup.name.clone(), trace.regions.join(", ")))?;
            Ok(simulate_region(trace, column, setup, options))
        })
        .collect()
}

/// The queue's state at one instant.
#[derive(Debug, Clone, Copy)]
struct QueueState {
    p99_s: f64,
    queue_to_compute: f64,
    in_flight_per_replica: f64,
}

/// Erlang C: the probability a call waits, `n` servers, offered load `a`
/// (Erlangs), `a < n`.
fn erlang_c(n: u32, a: f64) -> f64 {
    let mut b = 1.0;
    for k in 1..=n {
        b = a * b / (f64::from(k) + a * b);
    }
    let n = f64::from(n);
    n * b / (n - a * (1.0 - b))
}

fn queue_state(replica: &ReplicaModel, ready: u32, load: f64, backlog: f64) -> QueueState {
    let s = replica.compute_time_s;
    if ready == 0 {
        let p99_s = if load > 0.0 || backlog > 0.0 { f64::INFINITY } else { 0.0 };
        return QueueState { p99_s, queue_to_compute: f64::INFINITY, in_flight_per_replica: backlog };
    }
    let servers = ready * replica.slots();
    let capacity = f64::from(servers) / s;
    let drain_s = backlog / capacity;
    let a = load * s;
    let (mean_wait, p99_wait) = if load >= capacity {
        // Saturated: the backlog grows; waits are its drain time.
        (drain_s, drain_s)
    } else {
        let c = erlang_c(servers, a);
        let rate = capacity - load;
        let p99 = if c > 0.01 { (c / 0.01).ln() / rate } else { 0.0 };
        (c / rate + drain_s, p99 + drain_s)
    };
    QueueState {
        p99_s: s + p99_wait,
        queue_to_compute: mean_wait / s,
        in_flight_per_replica: (load * (mean_wait + s) + backlog) / f64::from(ready),
    }
}

fn simulate_region(trace: &Trace, column: usize, setup: &RegionSetup, options: Options) -> RegionReport {
    let replica = setup.replica;
    let mut autoscaler = Autoscaler::new(setup.spec.clone());
    // Replicas by the time they serve from.
    let mut ready_at: Vec<f64> = vec![0.0; setup.spec.min_replicas.max(1) as usize];
    let mut backlog = 0.0;
    let step = options.step_s.max(1e-3);
    let sync = (setup.spec.sync_period_ms as f64 / 1000.0).max(step);
    let mut next_sync = 0.0;
    let mut report = RegionReport {
        region: setup.name.clone(),
        slo_violation_s: 0.0,
        replica_hours: 0.0,
        peak_replicas: 0,
        scale_ups: 0,
        scale_downs: 0,
        max_p99_s: 0.0,
        replica,
        slo_p99_s: setup.slo_p99_s,
        events: Vec::new(),
        samples: Vec::new(),
    };
    let (mut t, end) = trace.span_s();
    next_sync += t;
    while t <= end {
        let load = trace.rate(column, t);
        let ready = ready_at.iter().filter(|r| **r <= t).count() as u32;
        let state = queue_state(&replica, ready, load, backlog);
        if t + 1e-9 >= next_sync {
            next_sync += sync;
            let metric = match setup.spec.target {
                Target::QueueToComputeRatio(_) => state.queue_to_compute,
                Target::InFlightPerReplica(_) => state.in_flight_per_replica,
            };
            let now_ms = options.start_unix_ms + (t * 1000.0) as u64;
            let current = ready_at.len() as u32;
            let decision = autoscaler.decide(Observation { now_ms, current, metric: (ready > 0).then_some(metric) });
            apply(&mut ready_at, &decision, t, replica.startup_s, &mut report);
        }
        let replicas = ready_at.len() as u32;
        let capacity = f64::from(ready * replica.slots()) / replica.compute_time_s;
        backlog = (backlog + (load - capacity) * step).max(0.0);
        report.replica_hours += f64::from(replicas) * step / 3600.0;
        report.peak_replicas = report.peak_replicas.max(replicas);
        if state.p99_s > setup.slo_p99_s {
            report.slo_violation_s += step;
        }
        report.max_p99_s = report.max_p99_s.max(state.p99_s);
        report.samples.push(Sample { t_s: t, load_rps: load, replicas, ready, p99_s: state.p99_s });
        t += step;
    }
    report
}

fn apply(ready_at: &mut Vec<f64>, decision: &Decision, t: f64, startup_s: f64, report: &mut RegionReport) {
    let (from, to) = (decision.current, decision.desired);
    if to > from {
        ready_at.extend(std::iter::repeat_n(t + startup_s, (to - from) as usize));
        report.scale_ups += 1;
    } else if to < from {
        // The newest (still starting, then latest ready) go first.
        ready_at.sort_by(|a, b| a.total_cmp(b));
        ready_at.truncate(to as usize);
        report.scale_downs += 1;
    } else {
        return;
    }
    report.events.push(ScaleEvent { t_s: t, from, to, reason: decision.reason.to_string() });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_are_read_and_interpolated() {
        let t = Trace::parse_csv("# a comment\ntime_s,eu,us\n0,10,0\n60,70,30\n").expect("parses");
        assert_eq!(t.regions, ["eu", "us"]);
        assert!((t.rate(0, 30.0) - 40.0).abs() < 1e-9);
        assert!((t.rate(1, 60.0) - 30.0).abs() < 1e-9);
        assert!((t.rate(1, 600.0) - 30.0).abs() < 1e-9, "the last value holds");
        assert_eq!(t.span_s(), (0.0, 60.0));
    }

    #[test]
    fn bad_traces_name_the_line() {
        let e = Trace::parse_csv("time,eu\n0,1\n1,2\n").expect_err("header");
        assert_eq!(e.line, 1);
        let e = Trace::parse_csv("time_s,eu\n0,1\n1,x\n").expect_err("number");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("`x` (eu)"), "{e}");
        let e = Trace::parse_csv("time_s,eu\n5,1\n5,2\n").expect_err("order");
        assert!(e.message.contains("does not come after"), "{e}");
        let e = Trace::parse_csv("time_s,eu\n0,1\n1,-2\n").expect_err("negative");
        assert!(e.message.contains("≥ 0"), "{e}");
        let e = Trace::parse_csv("time_s,eu,us\n0,1\n").expect_err("width");
        assert!(e.message.contains("1 values") || e.message.contains("2 values"), "{e}");
    }

    #[test]
    fn erlang_c_matches_known_values() {
        // One server: P(wait) = utilisation.
        assert!((erlang_c(1, 0.5) - 0.5).abs() < 1e-12);
        // Two servers, a = 1: C = 1/3.
        assert!((erlang_c(2, 1.0) - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn a_saturated_queue_grows_and_its_p99_with_it() {
        // Ten calls computing at once, 10 ms each.
        let r = ReplicaModel { capacity_rps: 1000.0, compute_time_s: 0.01, startup_s: 0.0 };
        assert_eq!(r.slots(), 10);
        let calm = queue_state(&r, 1, 500.0, 0.0);
        assert!(calm.p99_s < 0.02 && calm.queue_to_compute < 0.1, "{calm:?}");
        let near = queue_state(&r, 1, 950.0, 0.0);
        assert!(near.queue_to_compute > calm.queue_to_compute * 10.0, "{near:?}");
        let busy = queue_state(&r, 1, 1200.0, 6000.0);
        assert!(busy.p99_s > 5.0, "6000 queued at 1000/s: {busy:?}");
        assert_eq!(queue_state(&r, 0, 1.0, 0.0).p99_s, f64::INFINITY);
    }
}
