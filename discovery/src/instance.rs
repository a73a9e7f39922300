//! What discovery finds: service instances, their health and weights, and changes to a set.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The health of an instance, as its checks report it (the worst check wins).
///
/// ```
/// use meshwork_discovery::Health;
///
/// assert!(Health::Passing.is_passing());
/// assert_eq!(Health::Warning.to_string(), "warning");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[non_exhaustive]
pub enum Health {
    /// Every check passes (or the instance has none).
    #[default]
    Passing,
    /// At least one check warns and none is critical.
    Warning,
    /// At least one check is critical.
    Critical,
}

impl Health {
    /// Whether this is [`Health::Passing`].
    pub fn is_passing(self) -> bool {
        self == Health::Passing
    }

    /// Consul's spelling of the status (`passing`, `warning`, `critical`).
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Passing => "passing",
            Health::Warning => "warning",
            Health::Critical => "critical",
        }
    }

    /// Parses Consul's spelling; anything unknown (`maintenance` included) is critical.
    pub fn from_consul(status: &str) -> Health {
        match status {
            "passing" => Health::Passing,
            "warning" => Health::Warning,
            _ => Health::Critical,
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Relative weights of an instance for load balancing, by health state (Consul's `Weights`).
///
/// ```
/// use meshwork_discovery::{Health, Weights};
///
/// let w = Weights { passing: 10, warning: 1 };
/// assert_eq!(w.for_health(Health::Passing), 10);
/// assert_eq!(w.for_health(Health::Critical), 0);
/// assert_eq!(Weights::default(), Weights { passing: 1, warning: 1 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Weights {
    /// Weight while every check passes; Consul's default is 1.
    pub passing: u32,
    /// Weight while a check warns; Consul's default is 1.
    pub warning: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            passing: 1,
            warning: 1,
        }
    }
}

impl Weights {
    /// The weight that applies in `health` (0 when critical).
    pub fn for_health(&self, health: Health) -> u32 {
        match health {
            Health::Passing => self.passing,
            Health::Warning => self.warning,
            Health::Critical => 0,
        }
    }
}

/// One instance of a service: where it listens and what it says about itself.
///
/// ```
/// use meshwork_discovery::{Health, Instance, Weights};
///
/// let web = Instance::new("web-1", "web", "10.0.0.7", 8080)
///     .with_tag("v2")
///     .with_metadata("zone", "eu-1a")
///     .with_weights(Weights { passing: 3, warning: 1 });
/// assert_eq!(web.socket_addr(), Some("10.0.0.7:8080".parse().unwrap()));
/// assert_eq!(web.weight(), 3);
/// assert_eq!(web.health, Health::Passing);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Instance {
    /// Unique id of the instance (Consul's service ID).
    pub id: String,
    /// Name of the service it belongs to.
    pub service: String,
    /// Host name or IP address it listens on.
    pub address: String,
    /// Port it listens on.
    pub port: u16,
    /// Free-form tags.
    pub tags: Vec<String>,
    /// Key/value metadata (Consul's `Meta`).
    pub metadata: BTreeMap<String, String>,
    /// Load-balancing weights.
    pub weights: Weights,
    /// Health as last reported.
    pub health: Health,
}

impl Instance {
    /// An instance with no tags or metadata, default weights, passing.
    pub fn new(
        id: impl Into<String>,
        service: impl Into<String>,
        address: impl Into<String>,
        port: u16,
    ) -> Self {
        Instance {
            id: id.into(),
            service: service.into(),
            address: address.into(),
            port,
            tags: Vec::new(),
            metadata: BTreeMap::new(),
            weights: Weights::default(),
            health: Health::Passing,
        }
    }

    /// Adds a tag.
    #[must_use]
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Adds a metadata entry.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets the weights.
    #[must_use]
    pub fn with_weights(mut self, weights: Weights) -> Self {
        self.weights = weights;
        self
    }

    /// Sets the health.
    #[must_use]
    pub fn with_health(mut self, health: Health) -> Self {
        self.health = health;
        self
    }

    /// The socket address, when `address` is an IP literal.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.address
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }

    /// `address:port`, with IPv6 literals bracketed (ready for a URL authority).
    pub fn authority(&self) -> String {
        if self.address.contains(':') && !self.address.starts_with('[') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }

    /// The load-balancing weight in its current health.
    pub fn weight(&self) -> u32 {
        self.weights.for_health(self.health)
    }

    /// Whether the instance carries `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// One change to the instances of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// A new instance, or a new version of a known one (same id).
    Upsert(Instance),
    /// The instance with this id is gone.
    Remove(String),
}

/// What a watch yields when the set of instances of a service changes: the whole new set and
/// the changes from the previous one.
///
/// ```
/// use meshwork_discovery::{Change, Instance, Update};
///
/// let a = Instance::new("a", "web", "10.0.0.1", 80);
/// let b = Instance::new("b", "web", "10.0.0.2", 80);
/// let first = Update::between(&[], vec![a.clone()]).unwrap();
/// assert_eq!(first.changes, vec![Change::Upsert(a.clone())]);
/// let second = Update::between(&first.instances, vec![b.clone()]).unwrap();
/// assert_eq!(second.changes, vec![Change::Upsert(b), Change::Remove("a".into())]);
/// assert!(Update::between(&second.instances, second.instances.to_vec()).is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Update {
    /// The service's instances now, sorted by id.
    pub instances: Arc<[Instance]>,
    /// What differs from the previous set: upserts first, then removals.
    pub changes: Vec<Change>,
}

impl Update {
    /// The update from `old` to `new`, or `None` when they hold the same instances.
    pub fn between(old: &[Instance], mut new: Vec<Instance>) -> Option<Update> {
        new.sort_by(|a, b| a.id.cmp(&b.id));
        new.dedup_by(|a, b| a.id == b.id);
        let before: HashMap<&str, &Instance> = old.iter().map(|i| (i.id.as_str(), i)).collect();
        let mut changes: Vec<Change> = new
            .iter()
            .filter(|i| before.get(i.id.as_str()) != Some(i))
            .cloned()
            .map(Change::Upsert)
            .collect();
        let after: HashMap<&str, ()> = new.iter().map(|i| (i.id.as_str(), ())).collect();
        changes.extend(
            old.iter()
                .filter(|i| !after.contains_key(i.id.as_str()))
                .map(|i| Change::Remove(i.id.clone())),
        );
        if changes.is_empty() {
            None
        } else {
            Some(Update {
                instances: new.into(),
                changes,
            })
        }
    }
}
