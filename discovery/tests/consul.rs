//! The Consul backend against the in-process stand-in (`meshwork_discovery::standin`).
//!
//! Set `CONSUL_HTTP_ADDR` to run the agent-independent cases in `real_agent` against a real
//! Consul agent too; the cases here start their own stand-in so they can disturb it.

use std::sync::Arc;
use std::time::Duration;

use meshwork_discovery::standin::{AclPolicy, ConsulStandIn, StandInConfig};
use meshwork_discovery::{
    Check, ConsulConfig, ConsulDiscovery, Discover, Error, Health, Instance, Registrar,
    Registration, RegistrationGuard, Update, Weights,
};
use tokio::time::{sleep, timeout};

fn client(standin: &ConsulStandIn) -> ConsulDiscovery {
    client_with(standin, |b| b)
}

fn client_with(
    standin: &ConsulStandIn,
    f: impl FnOnce(meshwork_discovery::ConsulConfigBuilder) -> meshwork_discovery::ConsulConfigBuilder,
) -> ConsulDiscovery {
    let builder = ConsulConfig::builder()
        .address(standin.url())
        .wait(Duration::from_millis(400))
        .request_timeout(Duration::from_secs(2))
        .min_watch_interval(Duration::from_millis(20))
        .error_backoff(Duration::from_millis(20), Duration::from_millis(200));
    ConsulDiscovery::new(f(builder).build().unwrap()).unwrap()
}

fn web(id: &str, port: u16) -> Instance {
    Instance::new(id, "web", "127.0.0.1", port)
        .with_tag("v2")
        .with_metadata("zone", "eu-1a")
        .with_weights(Weights {
            passing: 5,
            warning: 1,
        })
}

fn ttl(id: &str, ttl_ms: u64) -> Registration {
    Registration::new(web(id, 8080)).with_check(Check::ttl(Duration::from_millis(ttl_ms)))
}

/// Polls `f` every 20 ms until it returns true, for at most `secs` seconds.
async fn eventually<F: AsyncFnMut() -> bool>(secs: u64, mut f: F) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        sleep(Duration::from_millis(20)).await;
    }
    false
}

type Items = tokio::sync::mpsc::UnboundedReceiver<Result<Update, Error>>;

/// Drives a watch in the background (a watch only queries while it is polled), forwarding
/// its items.
fn follow(mut watch: meshwork_discovery::WatchStream) -> Items {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(item) = watch.recv().await {
            if tx.send(item).is_err() {
                break;
            }
        }
    });
    rx
}

async fn next_update(watch: &mut Items, secs: u64) -> Update {
    loop {
        match timeout(Duration::from_secs(secs), watch.recv()).await {
            Ok(Some(Ok(update))) => return update,
            Ok(Some(Err(_))) => continue,
            Ok(None) => panic!("watch ended"),
            Err(_) => panic!("no update within {secs}s"),
        }
    }
}

#[tokio::test]
async fn registration_lifecycle() {
    let standin = ConsulStandIn::start().await.unwrap();
    let consul = client(&standin);

    consul.register(&ttl("web-1", 10_000)).await.unwrap();
    // Checks start critical: not passing until the first heartbeat.
    assert!(consul.resolve("web").await.unwrap().is_empty());
    let check = standin.check("service:web-1").unwrap();
    assert_eq!(check.status, "critical");

    consul.heartbeat("web-1").await.unwrap();
    let found = consul.resolve("web").await.unwrap();
    assert_eq!(found.len(), 1);
    let i = &found[0];
    assert_eq!(
        (i.id.as_str(), i.service.as_str(), i.port),
        ("web-1", "web", 8080)
    );
    assert_eq!(i.address, "127.0.0.1");
    assert_eq!(i.tags, vec!["v2".to_string()]);
    assert_eq!(i.metadata.get("zone").map(String::as_str), Some("eu-1a"));
    assert_eq!(
        i.weights,
        Weights {
            passing: 5,
            warning: 1
        }
    );
    assert_eq!(i.health, Health::Passing);

    consul.deregister("web-1").await.unwrap();
    assert!(consul.resolve("web").await.unwrap().is_empty());
    // An instance the agent doesn't know counts as deregistered.
    consul.deregister("web-1").await.unwrap();
    // A heartbeat for it is a clear NotFound.
    let err = consul.heartbeat("web-1").await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("Unknown check ID"), "{err}");
}

#[tokio::test]
async fn invalid_registration_is_refused_before_any_request() {
    let standin = ConsulStandIn::start().await.unwrap();
    let consul = client(&standin);
    let err = consul
        .register(&Registration::new(Instance::new(
            "x",
            "web",
            "127.0.0.1",
            0,
        )))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "instance.port must be in 1..=65535, got 0");
    assert!(standin.requests().is_empty());
}

#[tokio::test]
async fn ttl_expiry_takes_the_instance_out_of_passing() {
    let standin = ConsulStandIn::start().await.unwrap();
    let consul = client(&standin);
    consul.register(&ttl("web-1", 300)).await.unwrap();
    consul.heartbeat("web-1").await.unwrap();
    assert_eq!(consul.resolve("web").await.unwrap().len(), 1);

    assert!(eventually(3, async || consul.resolve("web").await.unwrap().is_empty()).await);
    let check = standin.check("service:web-1").unwrap();
    assert_eq!(check.status, "critical");
    assert_eq!(check.output, "TTL expired");
    // Expired, not removed (no DeregisterCriticalServiceAfter).
    assert_eq!(standin.service_ids(), vec!["web-1".to_string()]);
}

#[tokio::test]
async fn the_reaper_deregisters_critical_instances() {
    let standin = ConsulStandIn::start_with(
        StandInConfig::default()
            .reap_interval(Duration::from_millis(100))
            .min_deregister_critical_after(Duration::ZERO),
    )
    .await
    .unwrap();
    let consul = client(&standin);
    let registration = ttl("web-1", 200).deregister_critical_after(Duration::from_millis(300));
    consul.register(&registration).await.unwrap();
    consul.heartbeat("web-1").await.unwrap();
    assert_eq!(standin.service_ids(), vec!["web-1".to_string()]);
    assert!(eventually(5, async || standin.service_ids().is_empty()).await);
}

#[tokio::test]
async fn the_reaper_respects_consuls_one_minute_floor() {
    let standin = ConsulStandIn::start_with(
        StandInConfig::default().reap_interval(Duration::from_millis(50)),
    )
    .await
    .unwrap();
    let consul = client(&standin);
    let registration = ttl("web-1", 100).deregister_critical_after(Duration::from_millis(100));
    consul.register(&registration).await.unwrap();
    sleep(Duration::from_millis(600)).await;
    assert_eq!(
        standin.check("service:web-1").unwrap().output,
        "TTL expired"
    );
    assert_eq!(standin.service_ids(), vec!["web-1".to_string()]);
}

#[tokio::test]
async fn tcp_and_http_checks_are_probed() {
    let standin = ConsulStandIn::start().await.unwrap();
    let consul = client(&standin);

    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let http_server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let (mut s, _) = http.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
        }
    });

    let tcp_reg = Registration::new(Instance::new(
        "t-1",
        "tcp-svc",
        "127.0.0.1",
        tcp_addr.port(),
    ))
    .with_check(Check::tcp(tcp_addr.to_string(), Duration::from_millis(100)));
    let http_reg = Registration::new(Instance::new(
        "h-1",
        "http-svc",
        "127.0.0.1",
        http_addr.port(),
    ))
    .with_check(Check::http(
        format!("http://{http_addr}/health"),
        Duration::from_millis(100),
    ));
    consul.register(&tcp_reg).await.unwrap();
    consul.register(&http_reg).await.unwrap();

    assert!(
        eventually(3, async || consul.resolve("tcp-svc").await.unwrap().len()
            == 1)
        .await
    );
    assert!(
        eventually(3, async || consul.resolve("http-svc").await.unwrap().len()
            == 1)
        .await
    );
    assert!(
        standin
            .check("service:h-1")
            .unwrap()
            .output
            .contains("200 OK")
    );

    drop(tcp);
    http_server.abort();
    let _ = http_server.await;
    assert!(
        eventually(3, async || consul
            .resolve("tcp-svc")
            .await
            .unwrap()
            .is_empty())
        .await
    );
    assert!(
        eventually(3, async || consul
            .resolve("http-svc")
            .await
            .unwrap()
            .is_empty())
        .await
    );
}

#[tokio::test]
async fn watch_fires_on_change_and_not_otherwise() {
    let standin = ConsulStandIn::start().await.unwrap();
    let consul = client(&standin);
    let mut watch = follow(consul.watch("web"));
    let first = next_update(&mut watch, 3).await;
    assert!(first.instances.is_empty());

    consul.register(&ttl("web-1", 60_000)).await.unwrap();
    consul.heartbeat("web-1").await.unwrap();
    let update = next_update(&mut watch, 3).await;
    assert_eq!(update.instances.len(), 1);
    assert_eq!(update.changes.len(), 1);

    // Heartbeats, another service's churn and expiring waits (400 ms) change nothing here.
    let before = standin.requests().len();
    for n in 0..5 {
        consul.heartbeat("web-1").await.unwrap();
        consul
            .register(&Registration::new(Instance::new(
                format!("o-{n}"),
                "other",
                "127.0.0.1",
                1,
            )))
            .await
            .unwrap();
        sleep(Duration::from_millis(250)).await;
    }
    assert!(
        timeout(Duration::from_millis(300), watch.recv())
            .await
            .is_err(),
        "spurious update"
    );
    let health_queries = standin.requests()[before..]
        .iter()
        .filter(|r| r.path == "/v1/health/service/web")
        .count();
    assert!(
        health_queries >= 2,
        "the watch kept polling: {health_queries}"
    );

    consul.deregister("web-1").await.unwrap();
    let gone = next_update(&mut watch, 3).await;
    assert!(gone.instances.is_empty());
    assert_eq!(
        gone.changes,
        vec![meshwork_discovery::Change::Remove("web-1".into())]
    );
}

#[tokio::test]
async fn watch_uses_blocking_queries_with_index_and_wait() {
    let standin = ConsulStandIn::start().await.unwrap();
    let consul = client(&standin);
    consul
        .register(&Registration::new(web("web-1", 80)))
        .await
        .unwrap();
    let mut watch = follow(consul.watch("web"));
    assert_eq!(next_update(&mut watch, 3).await.instances.len(), 1);
    sleep(Duration::from_millis(100)).await;
    let requests = standin.requests();
    let health: Vec<_> = requests
        .iter()
        .filter(|r| r.path == "/v1/health/service/web")
        .collect();
    assert!(
        !health[0].query.contains_key("index"),
        "first query is not blocking"
    );
    assert_eq!(
        health[0].query.get("passing").map(String::as_str),
        Some("true")
    );
    let second = health.get(1).expect("a blocking query follows");
    assert_eq!(
        second.query.get("index"),
        Some(&standin.index().to_string())
    );
    assert_eq!(second.query.get("wait").map(String::as_str), Some("400ms"));
}

#[tokio::test]
async fn index_going_backwards_resets_and_zero_is_treated_as_one() {
    let standin = ConsulStandIn::start().await.unwrap();
    let consul = client_with(&standin, |b| b.wait(Duration::from_millis(200)));
    let mut watch = follow(consul.watch("web"));
    next_update(&mut watch, 3).await;

    standin.set_reported_index(Some(1000));
    sleep(Duration::from_millis(600)).await;
    standin.set_reported_index(Some(5));
    sleep(Duration::from_millis(900)).await;
    let mark = standin.requests().len();
    standin.set_reported_index(Some(0));
    sleep(Duration::from_millis(1500)).await;

    let requests = standin.requests();
    let indexes: Vec<Option<&str>> = requests
        .iter()
        .filter(|r| r.path == "/v1/health/service/web")
        .map(|r| r.query.get("index").map(String::as_str))
        .collect();
    let pos_1000 = indexes
        .iter()
        .position(|i| *i == Some("1000"))
        .expect("index 1000 used");
    let after = &indexes[pos_1000..];
    let reset = after
        .iter()
        .position(|i| i.is_none())
        .expect("a reset to a fresh query");
    assert!(after[reset..].contains(&Some("5")), "{indexes:?}");
    // Index 0 from the agent: never sent back as 0, clamped to 1, and no busy loop.
    let tail: Vec<_> = requests[mark..]
        .iter()
        .filter(|r| r.path == "/v1/health/service/web")
        .collect();
    assert!(
        tail.iter()
            .all(|r| r.query.get("index").map(String::as_str) != Some("0"))
    );
    assert!(
        tail.iter()
            .any(|r| r.query.get("index").map(String::as_str) == Some("1"))
    );
    assert!(
        tail.len() <= 10,
        "tight loop: {} queries in 1.5 s",
        tail.len()
    );
}

#[tokio::test]
async fn min_watch_interval_rate_limits_a_churning_service() {
    let standin = ConsulStandIn::start().await.unwrap();
    let consul = client_with(&standin, |b| {
        b.min_watch_interval(Duration::from_millis(200))
    });
    let mut watch = follow(consul.watch("web"));
    next_update(&mut watch, 3).await;
    let mark = standin.requests().len();
    // The service changes every 10 ms for one second.
    for n in 0..100u16 {
        consul
            .register(&Registration::new(web("web-1", 1000 + n)))
            .await
            .unwrap();
        sleep(Duration::from_millis(10)).await;
    }
    let queries = standin.requests()[mark..]
        .iter()
        .filter(|r| r.path == "/v1/health/service/web")
        .count();
    assert!(
        (2..=8).contains(&queries),
        "{queries} queries in ~1 s with a 200 ms floor"
    );
}

#[tokio::test]
async fn acl_refusals_are_clear_errors() {
    let standin = ConsulStandIn::start_with(
        StandInConfig::default()
            .acl_token("root-token", AclPolicy::Write)
            .acl_token("reader-token", AclPolicy::Read),
    )
    .await
    .unwrap();

    let anonymous = client(&standin);
    let err = anonymous.register(&ttl("web-1", 1000)).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::AclDenied {
                operation: "register",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("Permission denied"), "{err}");

    let bogus = client_with(&standin, |b| b.token("no-such-token"));
    let err = bogus.resolve("web").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "resolve refused by the registry's ACL: ACL not found"
    );

    let reader = client_with(&standin, |b| b.token("reader-token"));
    assert!(reader.resolve("web").await.unwrap().is_empty());
    let err = reader.register(&ttl("web-1", 1000)).await.unwrap_err();
    assert!(
        err.to_string().contains("lacks permission 'service:write'"),
        "{err}"
    );

    let root = client_with(&standin, |b| b.token("root-token"));
    root.register(&ttl("web-1", 1000)).await.unwrap();
    root.heartbeat("web-1").await.unwrap();
    assert_eq!(reader.resolve("web").await.unwrap().len(), 1);
    assert!(!format!("{root:?}").contains("root-token"));

    // A watch with a refused token reports the refusal and keeps trying.
    let mut watch = follow(bogus.watch("web"));
    for _ in 0..2 {
        let item = timeout(Duration::from_secs(3), watch.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(item, Err(Error::AclDenied { .. })));
    }
}

#[tokio::test]
async fn host_port_address_and_token_from_the_builder() {
    // `from_env` can't be exercised here: setting variables is `unsafe` in edition 2024 and
    // the workspace forbids unsafe code. It feeds the same `address`/`token` setters.
    let standin =
        ConsulStandIn::start_with(StandInConfig::default().acl_token("env-token", AclPolicy::Read))
            .await
            .unwrap();
    let config = ConsulConfig::builder()
        .address(standin.addr().to_string())
        .token("env-token")
        .build()
        .unwrap();
    assert!(config.address.starts_with("http://127.0.0.1:"));
    let consul = ConsulDiscovery::new(config).unwrap();
    assert!(consul.resolve("web").await.unwrap().is_empty());
}

#[tokio::test]
async fn datacenter_and_filter_are_passed_through() {
    let standin = ConsulStandIn::start().await.unwrap();
    let consul = client(&standin);
    consul
        .register(&Registration::new(web("web-1", 80)))
        .await
        .unwrap();
    consul
        .register(&Registration::new(Instance::new(
            "web-2",
            "web",
            "127.0.0.1",
            81,
        )))
        .await
        .unwrap();
    let filtered = client_with(&standin, |b| {
        b.filter("\"v2\" in Service.Tags").datacenter("dc1")
    });
    let found = filtered.resolve("web").await.unwrap();
    assert_eq!(
        found.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        vec!["web-1"]
    );
    let last = standin.requests().pop().unwrap();
    assert_eq!(last.query.get("dc").map(String::as_str), Some("dc1"));

    let elsewhere = client_with(&standin, |b| b.datacenter("dc9"));
    let err = elsewhere.resolve("web").await.unwrap_err();
    assert!(err.to_string().contains("No path to datacenter"), "{err}");
}

#[tokio::test]
async fn guard_registers_heartbeats_and_deregisters() {
    let standin = ConsulStandIn::start().await.unwrap();
    let consul = client(&standin);
    let guard = RegistrationGuard::start(Arc::new(consul.clone()), ttl("web-1", 300))
        .await
        .unwrap();
    // Passing at once, and still passing well after the TTL thanks to heartbeats.
    assert_eq!(consul.resolve("web").await.unwrap().len(), 1);
    sleep(Duration::from_millis(900)).await;
    assert_eq!(consul.resolve("web").await.unwrap().len(), 1);
    let passes = standin
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/agent/check/pass/service:web-1")
        .count();
    assert!(passes >= 3, "{passes} heartbeats in 900 ms at ttl/3");
    guard.shutdown().await.unwrap();
    assert!(standin.service_ids().is_empty());

    // Dropping a guard deregisters too.
    let guard = RegistrationGuard::start(Arc::new(consul.clone()), ttl("web-2", 300))
        .await
        .unwrap();
    drop(guard);
    assert!(eventually(3, async || standin.service_ids().is_empty()).await);
}

#[tokio::test]
async fn watch_survives_a_standin_restart() {
    let mut standin = ConsulStandIn::start().await.unwrap();
    let consul = client_with(&standin, |b| b.wait(Duration::from_secs(2)));
    let _guard = RegistrationGuard::start(Arc::new(consul.clone()), ttl("web-1", 300))
        .await
        .unwrap();
    let mut watch = follow(consul.watch("web"));
    assert_eq!(next_update(&mut watch, 3).await.instances.len(), 1);
    sleep(Duration::from_millis(100)).await; // the watch is now inside a blocking query

    standin.restart().await.unwrap();
    // The blocking query in flight fails; the watch reports it instead of an empty set.
    let item = timeout(Duration::from_secs(3), watch.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        item.is_err(),
        "expected the interrupted query to fail, got {item:?}"
    );
    // The restarted agent forgot the instance; the guard's next heartbeat re-registers it and
    // the watch converges on it again.
    let converged = eventually(5, async || {
        match timeout(Duration::from_millis(100), watch.recv()).await {
            Ok(Some(Ok(update))) => update.instances.len() == 1,
            _ => false,
        }
    })
    .await;
    assert!(converged);
    assert_eq!(standin.service_ids(), vec!["web-1".to_string()]);
}

/// The same lifecycle against a real agent when `CONSUL_HTTP_ADDR` is set; against a fresh
/// stand-in otherwise (so this test always runs and can always fail).
#[tokio::test]
async fn real_agent_or_standin_lifecycle() {
    let standin;
    let config = match std::env::var("CONSUL_HTTP_ADDR") {
        Ok(addr) if !addr.is_empty() => ConsulConfig::builder().from_env().build().unwrap(),
        _ => {
            standin = ConsulStandIn::start().await.unwrap();
            ConsulConfig::builder()
                .address(standin.url())
                .build()
                .unwrap()
        }
    };
    let consul = ConsulDiscovery::new(config).unwrap();
    let id = format!("meshwork-test-{}", std::process::id());
    let service = format!("meshwork-test-svc-{}", std::process::id());
    let registration = Registration::new(Instance::new(&id, &service, "127.0.0.1", 9))
        .with_check(Check::ttl(Duration::from_secs(30)));
    consul.register(&registration).await.unwrap();
    assert!(consul.resolve(&service).await.unwrap().is_empty());
    consul.heartbeat(&id).await.unwrap();
    assert_eq!(consul.resolve(&service).await.unwrap().len(), 1);
    consul.deregister(&id).await.unwrap();
    assert!(consul.resolve(&service).await.unwrap().is_empty());
}
