//! JSON → protobuf for the resources the server serves: the renderers'
//! JSON (the very JSON of the static bootstraps) becomes a protobuf `Any`
//! through the descriptors of Envoy's API (vendored, see
//! `proto/envoy-api/SOURCE.md`), so xDS serves exactly what the bootstraps
//! embed, with no second renderer to drift.

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::Value;

/// Type URL prefix of every resource.
const TYPE_PREFIX: &str = "type.googleapis.com/";

/// Encodes JSON resources as protobuf.
#[derive(Debug, Clone)]
pub struct Codec {
    pool: DescriptorPool,
}

impl Codec {
    /// The codec over Envoy's resource descriptors.
    pub fn new() -> Result<Self, String> {
        let pool = DescriptorPool::decode(meridian_proto::ENVOY_DESCRIPTOR_SET)
            .map_err(|e| format!("the Envoy descriptor set does not decode: {e}"))?;
        Ok(Self { pool })
    }

    /// `value` (a message of `type_url`, in proto3 JSON: field names as in
    /// the .proto or camelCase, `Any`s with `@type`) as an `Any`.
    pub fn to_any(&self, type_url: &str, value: &Value) -> Result<prost_types::Any, String> {
        let name = type_url.strip_prefix(TYPE_PREFIX).unwrap_or(type_url);
        let descriptor =
            self.pool.get_message_by_name(name).ok_or_else(|| format!("no message type {name} in the descriptors"))?;
        let message = DynamicMessage::deserialize(descriptor, value).map_err(|e| format!("{name}: {e}"))?;
        Ok(prost_types::Any { type_url: format!("{TYPE_PREFIX}{name}"), value: message.encode_to_vec() })
    }

    /// An encoded message of `type_url` back as JSON (for tests and status).
    pub fn to_json(&self, any: &prost_types::Any) -> Result<Value, String> {
        let name = any.type_url.strip_prefix(TYPE_PREFIX).unwrap_or(&any.type_url);
        let descriptor =
            self.pool.get_message_by_name(name).ok_or_else(|| format!("no message type {name} in the descriptors"))?;
        let message = DynamicMessage::decode(descriptor, any.value.as_slice()).map_err(|e| format!("{name}: {e}"))?;
        serde_json::to_value(&message).map_err(|e| format!("{name}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_with_nested_anys_round_trips_and_typos_are_refused() {
        let codec = Codec::new().expect("descriptors");
        let cluster = json!({
            "name": "meridian~eu-west~us-east",
            "connect_timeout": "0.25s",
            "lb_policy": "CLUSTER_PROVIDED",
            "cluster_type": {
                "name": "envoy.clusters.aggregate",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig",
                    "clusters": ["meridian~eu-west", "meridian~us-east"]
                }
            }
        });
        let any = codec.to_any(crate::xds::CLUSTER, &cluster).expect("a Cluster");
        let back = codec.to_json(&any).expect("decodes");
        assert_eq!(back["name"], json!("meridian~eu-west~us-east"));
        assert_eq!(back["connectTimeout"], json!("0.250s"));
        assert_eq!(back["clusterType"]["typedConfig"]["clusters"][1], json!("meridian~us-east"));
        let err = codec.to_any(crate::xds::CLUSTER, &json!({"name": "x", "conect_timeout": "1s"})).expect_err("typo");
        assert!(err.contains("conect_timeout"), "{err}");
    }
}
