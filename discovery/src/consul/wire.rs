//! Consul's JSON shapes, as far as the backend reads and writes them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Check, Health, Instance, Registration, Weights};

/// Formats a duration the way Go's `time.ParseDuration` reads it.
pub(crate) fn go_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}ns", d.as_nanos())
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RegisterBody<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    name: &'a str,
    tags: &'a [String],
    address: &'a str,
    port: u16,
    meta: &'a BTreeMap<String, String>,
    weights: WeightsBody,
    #[serde(skip_serializing_if = "Option::is_none")]
    check: Option<CheckBody<'a>>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WeightsBody {
    passing: u32,
    warning: u32,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "PascalCase")]
struct CheckBody<'a> {
    #[serde(rename = "HTTP", skip_serializing_if = "Option::is_none")]
    http: Option<&'a str>,
    #[serde(rename = "TCP", skip_serializing_if = "Option::is_none")]
    tcp: Option<&'a str>,
    #[serde(rename = "TTL", skip_serializing_if = "Option::is_none")]
    ttl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deregister_critical_service_after: Option<String>,
}

impl<'a> RegisterBody<'a> {
    pub(crate) fn new(r: &'a Registration) -> Self {
        let i = &r.instance;
        let check = r.check.as_ref().map(|c| {
            let mut body = match c {
                Check::Http {
                    url,
                    interval,
                    timeout,
                } => CheckBody {
                    http: Some(url),
                    interval: Some(go_duration(*interval)),
                    timeout: Some(go_duration(*timeout)),
                    ..CheckBody::default()
                },
                Check::Tcp {
                    address,
                    interval,
                    timeout,
                } => CheckBody {
                    tcp: Some(address),
                    interval: Some(go_duration(*interval)),
                    timeout: Some(go_duration(*timeout)),
                    ..CheckBody::default()
                },
                Check::Ttl { ttl } => CheckBody {
                    ttl: Some(go_duration(*ttl)),
                    ..CheckBody::default()
                },
            };
            body.deregister_critical_service_after = r.deregister_critical_after.map(go_duration);
            body
        });
        RegisterBody {
            id: &i.id,
            name: &i.service,
            tags: &i.tags,
            address: &i.address,
            port: i.port,
            meta: &i.metadata,
            weights: WeightsBody {
                passing: i.weights.passing,
                warning: i.weights.warning,
            },
            check,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct HealthEntry {
    #[serde(default)]
    node: Option<NodeBody>,
    service: ServiceBody,
    #[serde(default)]
    checks: Option<Vec<CheckStatusBody>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NodeBody {
    #[serde(default)]
    address: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceBody {
    #[serde(rename = "ID")]
    id: String,
    service: String,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    meta: Option<BTreeMap<String, String>>,
    #[serde(default)]
    weights: Option<WeightsBody>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CheckStatusBody {
    #[serde(default)]
    status: Option<String>,
}

impl HealthEntry {
    pub(crate) fn into_instance(self) -> Instance {
        let s = self.service;
        let address = s
            .address
            .filter(|a| !a.is_empty())
            .or_else(|| self.node.and_then(|n| n.address))
            .unwrap_or_default();
        let health = self
            .checks
            .unwrap_or_default()
            .iter()
            .map(|c| Health::from_consul(c.status.as_deref().unwrap_or("critical")))
            .max()
            .unwrap_or(Health::Passing);
        let mut instance = Instance::new(s.id, s.service, address, s.port.unwrap_or(0))
            .with_health(health)
            .with_weights(
                s.weights
                    .map(|w| Weights {
                        passing: w.passing,
                        warning: w.warning,
                    })
                    .unwrap_or_default(),
            );
        instance.tags = s.tags.unwrap_or_default();
        instance.metadata = s.meta.unwrap_or_default();
        instance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::from_secs(90)), "90s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(go_duration(Duration::from_nanos(7)), "7ns");
    }

    #[test]
    fn decodes_null_meta_node_address_fallback_and_unknown_fields() {
        let body = r#"[{"Node":{"Node":"n1","Address":"10.1.1.1","Extra":1},
            "Service":{"ID":"web-1","Service":"web","Tags":null,"Address":"","Port":80,
                       "Meta":null,"Weights":{"Passing":3,"Warning":1},"Unknown":{"x":[1]}},
            "Checks":[{"Status":"passing"},{"Status":"warning"}]}]"#;
        let entries: Vec<HealthEntry> = serde_json::from_str(body).unwrap();
        let i = entries.into_iter().next().unwrap().into_instance();
        assert_eq!(i.address, "10.1.1.1");
        assert!(i.metadata.is_empty());
        assert!(i.tags.is_empty());
        assert_eq!(i.weights.passing, 3);
        assert_eq!(i.health, Health::Warning);
    }
}
