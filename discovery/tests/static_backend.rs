//! The static backend: fixed instances, in-memory registration, DNS names, watches.

use std::sync::Arc;
use std::time::Duration;

use meshwork_discovery::{
    Change, Discover, DynDiscover, DynRegistrar, Error, Health, Instance, Registrar, Registration,
    StaticConfig, StaticDiscovery,
};
use tokio::time::timeout;

#[tokio::test]
async fn resolve_register_deregister_and_watch() {
    let d = StaticDiscovery::new([
        Instance::new("a", "web", "10.0.0.1", 80),
        Instance::new("x", "other", "10.0.0.9", 80),
        Instance::new("sick", "web", "10.0.0.3", 80).with_health(Health::Critical),
    ]);
    assert_eq!(
        d.resolve("web").await.unwrap().len(),
        1,
        "critical instances are not resolved"
    );
    let mut watch = d.watch("web");
    let first = watch.recv().await.unwrap().unwrap();
    assert_eq!(first.instances.len(), 1);

    d.register(&Registration::new(Instance::new(
        "b", "web", "10.0.0.2", 80,
    )))
    .await
    .unwrap();
    let second = watch.recv().await.unwrap().unwrap();
    assert_eq!(
        second.changes,
        vec![Change::Upsert(Instance::new("b", "web", "10.0.0.2", 80))]
    );

    // A change to another service does not wake this watch.
    d.set("other", []);
    assert!(
        timeout(Duration::from_millis(100), watch.recv())
            .await
            .is_err()
    );

    d.deregister("a").await.unwrap();
    let third = watch.recv().await.unwrap().unwrap();
    assert_eq!(third.changes, vec![Change::Remove("a".into())]);
    d.deregister("a").await.unwrap();
    assert!(matches!(
        d.heartbeat("a").await,
        Err(Error::NotFound { .. })
    ));
    d.heartbeat("b").await.unwrap();
}

#[tokio::test]
async fn dyn_twins_work_behind_arc_dyn() {
    let backend = Arc::new(StaticDiscovery::default());
    let registrar: Arc<dyn DynRegistrar> = backend.clone();
    let discover: Arc<dyn DynDiscover> = backend;
    registrar
        .register_dyn(&Registration::new(Instance::new(
            "a",
            "web",
            "127.0.0.1",
            80,
        )))
        .await
        .unwrap();
    registrar.heartbeat_dyn("a").await.unwrap();
    assert_eq!(discover.resolve_dyn("web").await.unwrap().len(), 1);
    let mut watch = discover.watch_dyn("web");
    assert_eq!(watch.recv().await.unwrap().unwrap().instances.len(), 1);
    registrar.deregister_dyn("a").await.unwrap();
    assert!(watch.recv().await.unwrap().unwrap().instances.is_empty());
}

#[tokio::test]
async fn dns_names_become_instances() {
    let config = StaticConfig::builder()
        .dns("local", "localhost:8080")
        .dns_refresh(Duration::from_millis(50))
        .build()
        .unwrap();
    let d = StaticDiscovery::from_config(config);
    let found = d.resolve("local").await.unwrap();
    assert!(!found.is_empty());
    assert!(
        found
            .iter()
            .all(|i| i.port == 8080 && i.socket_addr().is_some_and(|a| a.ip().is_loopback()))
    );
    assert_eq!(
        found[0].metadata.get("dns_name").map(String::as_str),
        Some("localhost")
    );
    let mut watch = d.watch("local");
    assert_eq!(
        watch.recv().await.unwrap().unwrap().instances.len(),
        found.len()
    );
    // Refreshes that find the same addresses yield nothing.
    assert!(
        timeout(Duration::from_millis(300), watch.recv())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn dns_failures_are_reported_and_the_watch_goes_on() {
    let config = StaticConfig::builder()
        .dns("gone", "no-such-host.invalid:80")
        .dns_refresh(Duration::from_millis(100))
        .dns_error_backoff(Duration::from_millis(10))
        .build()
        .unwrap();
    let d = StaticDiscovery::from_config(config);
    let err = d.resolve("gone").await.unwrap_err();
    assert!(err.to_string().contains("no-such-host.invalid"), "{err}");
    let mut watch = d.watch("gone");
    for _ in 0..2 {
        let item = timeout(Duration::from_secs(10), watch.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(item, Err(Error::Dns { .. })));
    }
}

#[test]
fn config_errors_name_field_value_and_range() {
    let err = StaticConfig::builder()
        .dns("x", "no-port")
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "dns must be host:port with a port in 1..=65535, got no-port"
    );
    let err = StaticConfig::builder()
        .dns_error_backoff(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "dns_error_backoff");
    let err = StaticConfig::builder()
        .instance(Instance::new("", "web", "h", 1))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "instance.id");
}
