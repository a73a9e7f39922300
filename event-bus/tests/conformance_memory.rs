//! The conformance suite on the in-memory backend, plus checks that the suite itself fails
//! a backend that breaks its promises.

use meshwork_event_bus::conformance::{
    self, Backend, MemoryBackend, PublisherClient, check_capabilities,
};
use meshwork_event_bus::{BusError, Capabilities, MemoryBus, Message, Publisher};

meshwork_event_bus::conformance_tests!(
    MemoryBackend::new(),
    capabilities = include_str!("capabilities.toml"),
);

/// A publisher that silently loses the last message of every batch.
#[derive(Debug)]
struct Lossy(MemoryBus);

impl Publisher for Lossy {
    async fn publish(&self, topic: &str, mut messages: Vec<Message>) -> Result<(), BusError> {
        messages.pop();
        self.0.publish(topic, messages).await
    }

    async fn close(&self) -> Result<(), BusError> {
        self.0.close().await
    }
}

/// The memory bus with a lossy publisher, or declaring other capabilities.
#[derive(Debug, Default)]
struct Broken {
    inner: MemoryBackend,
    lossy: bool,
    declares_persistent: Option<bool>,
}

impl Backend for Broken {
    type Publisher = PublisherClient<Lossy>;
    type Subscriber = MemoryBus;

    fn name(&self) -> &str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = MemoryBus::capabilities();
        if let Some(p) = self.declares_persistent {
            caps.persistent = p;
        }
        caps
    }

    async fn publisher(&self) -> Result<Self::Publisher, BusError> {
        assert!(self.lossy, "only the lossy variant publishes");
        Ok(PublisherClient::new(Lossy(self.inner.bus().clone())))
    }

    async fn subscriber(&self) -> Result<Self::Subscriber, BusError> {
        self.inner.subscriber().await
    }

    async fn shutdown(&self) -> Result<(), BusError> {
        self.inner.shutdown().await
    }

    fn timing(&self) -> conformance::Timing {
        self.inner
            .timing()
            .receive_timeout(std::time::Duration::from_secs(1))
    }
}

#[tokio::test]
async fn the_suite_fails_a_backend_that_loses_messages() {
    let lossy = Broken {
        lossy: true,
        ..Broken::default()
    };
    let failure = conformance::publish_subscribe_exact_payloads_and_headers(&lossy)
        .await
        .unwrap_err();
    assert!(
        failure.message().contains("no delivery within"),
        "{failure}"
    );
    let failure = conformance::consumer_groups_fan_out(&lossy)
        .await
        .unwrap_err();
    assert!(failure.message().contains("fan-out"), "{failure}");
}

#[test]
fn the_capability_check_fails_a_backend_that_declares_otherwise() {
    let list = include_str!("capabilities.toml");
    let ok = Broken::default();
    check_capabilities(&ok, list).unwrap();
    for declares in [true, false] {
        let backend = Broken {
            declares_persistent: Some(declares),
            ..Broken::default()
        };
        let result = check_capabilities(&backend, list);
        if declares == MemoryBus::capabilities().persistent {
            result.unwrap();
        } else {
            let err = result.unwrap_err();
            assert!(
                err.message()
                    .contains("persistent = true but the list expects false"),
                "{err}"
            );
        }
    }
}

#[test]
fn the_memory_backend_skips_only_the_restart_case() {
    let skipped = conformance::skipped_cases(&MemoryBackend::new().capabilities());
    let names: Vec<&str> = skipped.iter().map(|(case, _)| *case).collect();
    assert_eq!(names, ["survives_a_broker_restart"]);
}

#[tokio::test]
async fn a_skipped_case_says_so() {
    let outcome = conformance::survives_a_broker_restart(&MemoryBackend::new())
        .await
        .unwrap();
    assert_eq!(
        outcome,
        conformance::Outcome::Skipped(
            "needs `persistent` (accepted messages survive a broker restart)".into()
        )
    );
}
