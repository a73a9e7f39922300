//! The stand-in's wire behaviour, checked with a plain HTTP client against the shapes in
//! Consul's API documentation.

use std::time::Duration;

use tokio::time::Instant;

use meshwork_discovery::standin::{AclPolicy, ConsulStandIn, StandInConfig, parse_go_duration};
use serde_json::{Value, json};

async fn put(url: String, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .put(url)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn default_check_id_name_and_critical_start() {
    let consul = ConsulStandIn::start().await.unwrap();
    let r = put(
        format!("{}/v1/agent/service/register", consul.url()),
        json!({"Name": "redis", "Port": 6379, "Check": {"TTL": "15s"}}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = reqwest::get(format!("{}/v1/health/service/redis", consul.url()))
        .await
        .unwrap();
    let index: u64 = r.headers()["x-consul-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(index >= 1);
    let body: Value = r.json().await.unwrap();
    let entry = &body[0];
    assert_eq!(entry["Service"]["ID"], "redis", "ID defaults to Name");
    assert_eq!(entry["Service"]["Meta"], Value::Null);
    assert_eq!(entry["Node"]["Address"], "127.0.0.1");
    let check = entry["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["ServiceID"] == "redis")
        .unwrap();
    assert_eq!(check["CheckID"], "service:redis");
    assert_eq!(check["Name"], "Service 'redis' check");
    assert_eq!(check["Status"], "critical");
    let passing: Value = reqwest::get(format!("{}/v1/health/service/redis?passing", consul.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(passing, json!([]));

    // Several checks get numbered ids.
    put(
        format!("{}/v1/agent/service/register", consul.url()),
        json!({"ID": "db-1", "Name": "db", "Checks": [{"TTL": "5s"}, {"TTL": "5s"}]}),
    )
    .await;
    assert!(consul.check("service:db-1:1").is_some());
    assert!(consul.check("service:db-1:2").is_some());
}

#[tokio::test]
async fn not_found_and_bad_request_texts() {
    let consul = ConsulStandIn::start().await.unwrap();
    let r = put(
        format!("{}/v1/agent/service/deregister/nope", consul.url()),
        json!(null),
    )
    .await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.text().await.unwrap(),
        "Unknown service ID \"nope\". Ensure that the service ID is passed, not the service name."
    );
    let r = put(
        format!("{}/v1/agent/check/pass/nope", consul.url()),
        json!(null),
    )
    .await;
    assert_eq!(r.status(), 404);
    assert!(
        r.text()
            .await
            .unwrap()
            .starts_with("Unknown check ID \"nope\"")
    );
    let r = put(
        format!("{}/v1/agent/service/register", consul.url()),
        json!({"Port": 1}),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await.unwrap(), "Missing service name");
    let r = put(
        format!("{}/v1/agent/check/update/nope", consul.url()),
        json!({"Status": "bogus"}),
    )
    .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn blocking_query_holds_until_the_index_moves_or_wait_expires() {
    let consul = ConsulStandIn::start().await.unwrap();
    let url = format!("{}/v1/health/service/web", consul.url());
    let r = reqwest::get(&url).await.unwrap();
    let index: u64 = r.headers()["x-consul-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();

    let started = Instant::now();
    let r = reqwest::get(format!("{url}?index={index}&wait=300ms"))
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(
        waited < Duration::from_millis(300 + 300 / 16 + 250),
        "{waited:?}"
    );
    assert_eq!(
        r.headers()["x-consul-index"].to_str().unwrap(),
        index.to_string()
    );

    let register_url = format!("{}/v1/agent/service/register", consul.url());
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        put(
            register_url,
            json!({"ID": "web-1", "Name": "web", "Port": 80}),
        )
        .await;
    });
    let started = Instant::now();
    let r = reqwest::get(format!("{url}?index={index}&wait=10s"))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    let new_index: u64 = r.headers()["x-consul-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(new_index > index);
    writer.await.unwrap();
}

#[tokio::test]
async fn acl_token_headers() {
    let consul =
        ConsulStandIn::start_with(StandInConfig::default().acl_token("t0k", AclPolicy::Write))
            .await
            .unwrap();
    let url = format!("{}/v1/health/service/web", consul.url());
    let client = reqwest::Client::new();
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().starts_with("Permission denied"));
    let r = client
        .get(&url)
        .header("X-Consul-Token", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap()),
        (403, "ACL not found".to_string())
    );
    let r = client
        .get(&url)
        .header("X-Consul-Token", "t0k")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .get(&url)
        .header("Authorization", "Bearer t0k")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client.get(format!("{url}?token=t0k")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn restart_keeps_the_port_and_forgets_the_catalog() {
    let mut consul = ConsulStandIn::start().await.unwrap();
    let addr = consul.addr();
    put(
        format!("{}/v1/agent/service/register", consul.url()),
        json!({"ID": "web-1", "Name": "web", "Port": 80}),
    )
    .await;
    assert_eq!(consul.service_ids(), vec!["web-1".to_string()]);
    let before = consul.index();
    consul.restart().await.unwrap();
    assert_eq!(consul.addr(), addr);
    assert!(consul.service_ids().is_empty());
    assert!(consul.index() < before);
    let r = reqwest::get(format!("{}/v1/health/service/web", consul.url()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    consul.stop().await;
    assert!(
        reqwest::get(format!("{}/v1/health/service/web", consul.url()))
            .await
            .is_err()
    );
}

#[test]
fn go_durations_parse_like_go() {
    assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
    assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
    assert_eq!(parse_go_duration("10"), None);
    assert_eq!(parse_go_duration("abc"), None);
}
