//! The simulation as an SVG chart: per region, offered load against the
//! capacity of the replicas serving (replicas on the right axis), and p99
//! latency against the objective.

use crate::simulate::RegionReport;
use std::fmt::Write;

const WIDTH: f64 = 960.0;
const PANEL: f64 = 150.0;
const GAP: f64 = 46.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 60.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn polyline(points: &[(f64, f64)], color: &str, dashed: bool) -> String {
    let mut d = String::new();
    for (x, y) in points {
        let _ = write!(d, "{x:.1},{y:.1} ");
    }
    let dash = if dashed { r#" stroke-dasharray="5,4""# } else { "" };
    format!(r#"<polyline fill="none" stroke="{color}" stroke-width="1.4"{dash} points="{}"/>"#, d.trim_end())
}

/// Thins `n` samples to at most `max` (every k-th, the last kept).
fn stride(n: usize, max: usize) -> usize {
    n.div_ceil(max.max(1)).max(1)
}

/// The chart, as an SVG document.
pub fn svg(reports: &[RegionReport], title: &str) -> String {
    let height = 50.0 + reports.len() as f64 * 2.0 * (PANEL + GAP);
    let plot_w = WIDTH - LEFT - RIGHT;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="24" font-size="15">{}</text>"#,
        esc(title)
    );
    let mut top = 50.0;
    for r in reports {
        let (Some(first), Some(last)) = (r.samples.first(), r.samples.last()) else { continue };
        let (t0, duration) = (first.t_s, (last.t_s - first.t_s).max(1.0));
        let k = stride(r.samples.len(), 2000);
        let x = |t: f64| LEFT + (t - t0) / duration * plot_w;
        // Load and capacity.
        let per_replica = r.replica.capacity_rps;
        let max_rps =
            r.samples.iter().map(|s| s.load_rps.max(f64::from(s.replicas) * per_replica)).fold(1.0, f64::max) * 1.1;
        let y = |v: f64| top + PANEL - v / max_rps * PANEL;
        let load: Vec<(f64, f64)> = r.samples.iter().step_by(k).map(|s| (x(s.t_s), y(s.load_rps))).collect();
        let capacity: Vec<(f64, f64)> =
            r.samples.iter().step_by(k).map(|s| (x(s.t_s), y(f64::from(s.ready) * per_replica))).collect();
        let replicas: Vec<(f64, f64)> =
            r.samples.iter().step_by(k).map(|s| (x(s.t_s), y(f64::from(s.replicas) * per_replica))).collect();
        axes(&mut out, top, plot_w, &format!("{} — load and capacity (req/s)", r.region), max_rps, "");
        let max_replicas = max_rps / per_replica;
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="start" fill="#2a7">{max_replicas:.0} replicas</text>"##,
            LEFT + plot_w + 4.0,
            top + 10.0
        );
        out.push_str(&polyline(&load, "#246", false));
        out.push_str(&polyline(&replicas, "#2a7", true));
        out.push_str(&polyline(&capacity, "#2a7", false));
        legend(&mut out, top, &[("#246", "offered load"), ("#2a7", "serving capacity (dashed: started)")]);
        top += PANEL + GAP;
        // p99 against the objective (capped at 4× it).
        let cap = r.slo_p99_s * 4.0;
        let yl = |v: f64| top + PANEL - v.min(cap) / cap * PANEL;
        let p99: Vec<(f64, f64)> = r.samples.iter().step_by(k).map(|s| (x(s.t_s), yl(s.p99_s))).collect();
        axes(&mut out, top, plot_w, &format!("{} — p99 latency (ms)", r.region), cap * 1000.0, "");
        out.push_str(&polyline(&p99, "#c33", false));
        out.push_str(&polyline(&[(x(t0), yl(r.slo_p99_s)), (x(t0 + duration), yl(r.slo_p99_s))], "#999", true));
        legend(&mut out, top, &[("#c33", "p99"), ("#999", &format!("objective {:.0} ms", r.slo_p99_s * 1000.0))]);
        let _ = write!(
            out,
            r#"<text x="{LEFT}" y="{:.1}">time (h after the start) — SLO violated {:.0} s, {:.1} replica-hours, peak {} replicas</text>"#,
            top + PANEL + 30.0,
            r.slo_violation_s,
            r.replica_hours,
            r.peak_replicas
        );
        for i in 0..=6 {
            let t = t0 + duration * f64::from(i) / 6.0;
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{:.1}</text>"#,
                x(t),
                top + PANEL + 14.0,
                t / 3600.0
            );
        }
        top += PANEL + GAP;
    }
    out.push_str("</svg>\n");
    out
}

fn axes(out: &mut String, top: f64, plot_w: f64, title: &str, max: f64, _unit: &str) {
    let _ = write!(
        out,
        r##"<rect x="{LEFT}" y="{top:.1}" width="{plot_w:.1}" height="{PANEL}" fill="none" stroke="#ccc"/><text x="{LEFT}" y="{:.1}" font-weight="bold">{}</text>"##,
        top - 6.0,
        esc(title)
    );
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let y = top + PANEL - PANEL * f64::from(i) / 4.0;
        let _ = write!(out, r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{v:.0}</text>"##, LEFT - 4.0, y + 4.0);
    }
}

fn legend(out: &mut String, top: f64, items: &[(&str, &str)]) {
    let mut x = LEFT + 8.0;
    for (color, label) in items {
        let _ = write!(
            out,
            r#"<rect x="{x:.1}" y="{:.1}" width="10" height="3" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            top + 9.0,
            x + 14.0,
            top + 13.0,
            esc(label)
        );
        x += 24.0 + label.len() as f64 * 6.0;
    }
}
