//! Redrive: moving dead letters back to the topic they came from, once the cause is fixed.

use std::time::Duration;

use crate::delivery::dead_letter_header as h;
use crate::{BusError, DynPublisher, DynSubscriber, Message};

/// What a redrive did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedriveReport {
    /// Dead letters republished to their original topic.
    pub redriven: u64,
    /// Dead letters left in place because the filter refused them (they were released, so
    /// they stay in the dead-letter topic for another run).
    pub skipped: u64,
}

/// Republishes the dead letters of `dead_letter_topic` to the topic each came from, with
/// its original id, key, payload and headers (the dead-letter headers removed), then acks each
/// dead letter; a dead letter is acked only after its republish was confirmed. Reads as the
/// consumer group `group` until `limit` were redriven or none arrived for `idle`.
///
/// `filter` picks which dead letters to move (by reason, group, handler...): the others are
/// released at the end and stay. At most `limit` are redriven and at most `limit` skipped.
///
/// ```
/// use meshwork_event_bus::{MemoryBus, Message, Publisher, Subscriber, redrive};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), meshwork_event_bus::BusError> {
/// let bus = MemoryBus::new();
/// let mut orders = bus.subscribe("orders", "billing").await?;
/// bus.publish("orders", vec![Message::new("order 1")]).await?;
/// orders.recv().await.unwrap()?.dead_letter("billing was down").await?;
///
/// // Billing is back: move the dead letters home.
/// let report = redrive(&bus, &bus, "orders.dlq", "redrive", 100, Duration::from_millis(50), |_| true).await?;
/// assert_eq!(report.redriven, 1);
/// let again = orders.recv().await.unwrap()?;
/// assert_eq!(again.message().payload().as_ref(), b"order 1");
/// assert_eq!(again.message().headers().get("dead-letter-reason"), None);
/// again.ack().await?;
/// # Ok(())
/// # }
/// ```
pub async fn redrive<F>(
    subscriber: &dyn DynSubscriber,
    publisher: &dyn DynPublisher,
    dead_letter_topic: &str,
    group: &str,
    limit: u64,
    idle: Duration,
    filter: F,
) -> Result<RedriveReport, BusError>
where
    F: Fn(&Message) -> bool,
{
    let mut subscription = subscriber.subscribe_dyn(dead_letter_topic, group).await?;
    let mut report = RedriveReport::default();
    let mut skipped = Vec::new();
    while report.redriven < limit {
        let delivery = match tokio::time::timeout(idle, subscription.recv()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(delivery)) => delivery?,
        };
        let Some(origin) = delivery
            .message()
            .headers()
            .get(h::ORIGINAL_TOPIC)
            .map(str::to_owned)
        else {
            return Err(BusError::invalid(
                "dead letter",
                delivery.message().id().to_string(),
                "has no dead-letter-original-topic header: it was not written by meshwork's dead-letter path",
            ));
        };
        if !filter(delivery.message()) {
            // Held until the end, then released unsettled: it stays for another run, and
            // is not handed back to this loop meanwhile.
            report.skipped += 1;
            skipped.push(delivery);
            if report.skipped >= limit {
                break;
            }
            continue;
        }
        let mut message = delivery.message().clone();
        for name in [
            h::ORIGINAL_TOPIC,
            h::GROUP,
            h::REASON,
            h::ATTEMPTS,
            h::FIRST_FAILURE_AT,
            h::DEAD_LETTERED_AT,
            h::HANDLER,
            h::FIRST_FAILURE_MARK,
        ] {
            message.headers_mut().remove(name);
        }
        publisher.publish_dyn(&origin, vec![message]).await?;
        delivery.ack().await?;
        report.redriven += 1;
    }
    drop(skipped);
    Ok(report)
}
