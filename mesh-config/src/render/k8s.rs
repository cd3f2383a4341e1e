//! Kubernetes autoscaling for every (model, version, region) with
//! `autoscaling`: a `HorizontalPodAutoscaler` (`autoscaling/v2`, a Pods
//! metric served by prometheus-adapter with the rules of
//! `deploy/prometheus-adapter/`) or a KEDA `ScaledObject` (a Prometheus
//! trigger, and a cron trigger per schedule). Each region's resources go
//! to that region's cluster; the metric is the region's own.
//!
//! Both carry the policy's `behavior` as written (Kubernetes' defaults
//! where it says nothing), so Kubernetes runs the algorithm the local
//! mesh and `meridianctl simulate` run (`meridian_autoscale`). What
//! Kubernetes cannot express is said in a note: schedules under a plain
//! HPA (use KEDA), the cost cap (enforced by Meridian's autoscaler only;
//! Kubernetes gets `maxReplicas`), a tolerance other than the controller's.

use super::istio::{metadata, object_name, Rendered};
use crate::policy::autoscaling::{secs, Autoscaling, ScalingRules};
use crate::policy::Policy;
use meridian_autoscale as autoscale;
use serde_json::{json, Value};

/// Which autoscaler the manifests are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoscalerKind {
    /// A plain `HorizontalPodAutoscaler` (no schedules).
    Hpa,
    /// A KEDA `ScaledObject` (KEDA creates the HPA).
    Keda,
}

/// How to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K8sOptions {
    /// HPA or KEDA.
    pub autoscaler: AutoscalerKind,
    /// The Prometheus KEDA queries (each region's own).
    pub prometheus_url: String,
}

impl Default for K8sOptions {
    fn default() -> Self {
        Self {
            autoscaler: AutoscalerKind::Keda,
            prometheus_url: "http://prometheus-operated.monitoring.svc:9090".into(),
        }
    }
}

/// A Kubernetes quantity: `8`, `500m`.
fn quantity(v: f64) -> String {
    let milli = (v * 1000.0).round();
    if milli % 1000.0 == 0.0 {
        format!("{}", milli / 1000.0)
    } else {
        format!("{milli}m")
    }
}

/// KEDA's threshold: a plain decimal.
fn decimal(v: f64) -> String {
    let s = format!("{v:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn behavior_json(rules: &autoscale::ScalingRules) -> Value {
    let r = ScalingRules::from_rules(rules);
    json!({
        "stabilizationWindowSeconds": secs(r.stabilization_window),
        "selectPolicy": format!("{:?}", r.select_policy),
        "policies": r.policies.iter().map(|p| json!({
            "type": format!("{:?}", p.kind),
            "value": p.value,
            "periodSeconds": secs(p.period),
        })).collect::<Vec<_>>(),
    })
}

/// The PromQL of a target for one (model, version) in the namespace.
pub fn metric_query(target: autoscale::Target, namespace: &str, model: &str, version: u64) -> String {
    let m = format!(r#"namespace="{namespace}",model="{model}",version="{version}""#);
    match target {
        autoscale::Target::QueueToComputeRatio(_) => format!(
            "sum(rate(meridian_inference_queue_duration_seconds_sum{{{m}}}[1m])) / \
             clamp_min(sum(rate(meridian_inference_request_duration_seconds_sum{{{m}}}[1m])) - \
             sum(rate(meridian_inference_queue_duration_seconds_sum{{{m}}}[1m])), 1e-9)"
        ),
        autoscale::Target::InFlightPerReplica(_) => format!("sum(meridian_inference_pending_requests{{{m}}})"),
    }
}

/// Every autoscaling resource of the policy, in a stable order (model,
/// version, region).
pub fn render(policy: &Policy, options: &K8sOptions) -> Rendered {
    let spec = policy.spec();
    let mut documents = Vec::new();
    let mut notes = Vec::new();
    for (name, model) in spec.resolved_models() {
        let Some(a) = &model.autoscaling else { continue };
        if a.tolerance != autoscale::hpa::DEFAULT_TOLERANCE {
            notes.push(format!(
                "models.{name}.autoscaling.tolerance {} applies to Meridian's autoscaler; Kubernetes uses its \
                 controller's --horizontal-pod-autoscaler-tolerance (0.1 unless changed)",
                a.tolerance
            ));
        }
        for version in model.resolved_versions() {
            for region in spec.regions.iter().filter(|r| version.runs_in(&r.name)) {
                let r = a.for_region(&region.name);
                if r.cost_cap.is_some() {
                    notes.push(format!(
                        "models.{name}.autoscaling.costCap in {}: Kubernetes gets maxReplicas {}; the replica-hours \
                         budget is enforced by Meridian's autoscaler (the local mesh, simulate) only",
                        region.name, r.max_replicas
                    ));
                }
                let doc = match options.autoscaler {
                    AutoscalerKind::Hpa => {
                        if !r.schedules.is_empty() {
                            notes.push(format!(
                                "models.{name}.autoscaling.schedules in {}: a HorizontalPodAutoscaler has no \
                                 schedules; render with --autoscaler keda to keep them",
                                region.name
                            ));
                        }
                        hpa(policy, name.as_str(), a, version.name.as_str(), version.number(), &region.name)
                    }
                    AutoscalerKind::Keda => scaled_object(
                        policy,
                        options,
                        name.as_str(),
                        a,
                        version.name.as_str(),
                        version.number(),
                        &region.name,
                    ),
                };
                documents.push(doc);
            }
        }
    }
    notes.dedup();
    Rendered { documents, notes }
}

fn target_ref(a: &Autoscaling, model: &str, label: &str, region: &str) -> Value {
    json!({ "apiVersion": "apps/v1", "kind": "Deployment", "name": a.deployment_name(model, label, region) })
}

fn hpa(policy: &Policy, model: &str, a: &Autoscaling, label: &str, number: u64, region: &str) -> Value {
    let r = a.for_region(region);
    let behavior = a.behavior();
    let name = object_name(&[&policy.spec().metadata.name, model, label, region]);
    json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(policy, &name, Some(region)),
        "spec": {
            "scaleTargetRef": target_ref(a, model, label, region),
            "minReplicas": r.min_replicas,
            "maxReplicas": r.max_replicas,
            "metrics": [{
                "type": "Pods",
                "pods": {
                    "metric": {
                        "name": a.target.to_target().metric_name(),
                        "selector": { "matchLabels": { "model": model, "version": number.to_string() } }
                    },
                    "target": { "type": "AverageValue", "averageValue": quantity(a.target.to_target().value()) }
                }
            }],
            "behavior": {
                "scaleUp": behavior_json(&behavior.scale_up),
                "scaleDown": behavior_json(&behavior.scale_down),
            }
        }
    })
}

fn scaled_object(
    policy: &Policy,
    options: &K8sOptions,
    model: &str,
    a: &Autoscaling,
    label: &str,
    number: u64,
    region: &str,
) -> Value {
    let r = a.for_region(region);
    let behavior = a.behavior();
    let spec = policy.spec();
    let name = object_name(&[&spec.metadata.name, model, label, region]);
    let target = a.target.to_target();
    // The ratio is already an average over the replicas (Value); calls in
    // flight are a total KEDA divides by the replicas (AverageValue).
    let metric_type = match target {
        autoscale::Target::QueueToComputeRatio(_) => "Value",
        autoscale::Target::InFlightPerReplica(_) => "AverageValue",
    };
    let mut triggers = vec![json!({
        "type": "prometheus",
        "name": target.metric_name().replace('_', "-"),
        "metricType": metric_type,
        "metadata": {
            "serverAddress": options.prometheus_url,
            "query": metric_query(target, &spec.metadata.namespace, model, number),
            "threshold": decimal(target.value()),
            "activationThreshold": "0",
        }
    })];
    for w in &r.schedules {
        triggers.push(json!({
            "type": "cron",
            "name": format!("schedule-{}", w.name),
            "metadata": {
                "timezone": w.timezone,
                "start": w.start,
                "end": w.end,
                "desiredReplicas": w.replicas.to_string(),
            }
        }));
    }
    json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": metadata(policy, &name, Some(region)),
        "spec": {
            "scaleTargetRef": target_ref(a, model, label, region),
            "pollingInterval": secs(a.sync_period).max(1),
            "minReplicaCount": r.min_replicas,
            "maxReplicaCount": r.max_replicas,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "name": name,
                    "behavior": {
                        "scaleUp": behavior_json(&behavior.scale_up),
                        "scaleDown": behavior_json(&behavior.scale_down),
                    }
                }
            },
            "triggers": triggers,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_thresholds() {
        assert_eq!(quantity(8.0), "8");
        assert_eq!(quantity(0.5), "500m");
        assert_eq!(quantity(1.25), "1250m");
        assert_eq!(decimal(0.5), "0.5");
        assert_eq!(decimal(8.0), "8");
    }
}
