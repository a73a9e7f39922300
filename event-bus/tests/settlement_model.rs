//! A model check of the in-memory backend's settlement: random sequences of publish, receive,
//! ack, retry (now or later), drop unsettled, term, dead letter and consumer crash, against a model of
//! what each consumer group may be handed next.
//!
//! Checked at every step: a delivery is of a message the model says is deliverable to that
//! group now (not settled, not in flight elsewhere, its retry delay over, every earlier
//! message of its key settled), with the attempt count the model predicts; a receive that
//! finds nothing happens only when the model has nothing deliverable. At the end every
//! published message is handled (acked or termed) by every group, and the log is empty.

use std::collections::HashMap;
use std::time::Duration;

use meshwork_event_bus::{
    Delivery, MemoryBus, Message, MessageId, Publisher, Subscriber, Subscription,
};
use proptest::prelude::*;
use tokio::time::{Instant, timeout};

const GROUPS: usize = 2;
const CONSUMERS_PER_GROUP: usize = 2;
const TOPIC: &str = "model";
const DELAY: Duration = Duration::from_millis(10);
const WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
enum Step {
    Publish { key: Option<u8>, n: u8 },
    Recv { consumer: u8 },
    Ack(u8),
    Retry(u8),
    RetryLater(u8),
    Drop(u8),
    Term(u8),
    DeadLetter(u8),
    Crash { consumer: u8 },
    Sleep,
}

fn step() -> impl Strategy<Value = Step> {
    let consumers = (GROUPS * CONSUMERS_PER_GROUP) as u8;
    prop_oneof![
        3 => (prop::option::of(0u8..3), 1u8..=3).prop_map(|(key, n)| Step::Publish { key, n }),
        6 => (0..consumers).prop_map(|consumer| Step::Recv { consumer }),
        3 => any::<u8>().prop_map(Step::Ack),
        1 => any::<u8>().prop_map(Step::Retry),
        1 => any::<u8>().prop_map(Step::RetryLater),
        1 => any::<u8>().prop_map(Step::Drop),
        1 => any::<u8>().prop_map(Step::Term),
        1 => any::<u8>().prop_map(Step::DeadLetter),
        1 => (0..consumers).prop_map(|consumer| Step::Crash { consumer }),
        1 => Just(Step::Sleep),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum St {
    /// Deliverable from this instant (subject to key order).
    Pending(Instant),
    InFlight,
    Done,
}

struct Model {
    keys: Vec<Option<Vec<u8>>>,
    index: HashMap<MessageId, usize>,
    sent: Vec<Message>,
    /// Per group, per message in publish order.
    state: Vec<Vec<St>>,
    attempts: Vec<Vec<u32>>,
}

impl Model {
    fn deliverable(&self, g: usize, i: usize, now: Instant) -> bool {
        let St::Pending(at) = self.state[g][i] else {
            return false;
        };
        if at > now {
            return false;
        }
        match &self.keys[i] {
            None => true,
            Some(k) => (0..self.keys.len()).all(|j| {
                j == i
                    || self.keys[j].as_ref() != Some(k)
                    || (j > i && self.state[g][j] != St::InFlight)
                    || (j < i && self.state[g][j] == St::Done)
            }),
        }
    }

    fn any_deliverable(&self, g: usize, now: Instant) -> Option<usize> {
        (0..self.sent.len()).find(|&i| self.deliverable(g, i, now))
    }

    /// Checks a delivery against the model and records it as in flight.
    fn delivered(&mut self, g: usize, d: &Delivery) -> Result<usize, TestCaseError> {
        let id = d.message().id();
        let Some(&i) = self.index.get(&id) else {
            return Err(TestCaseError::fail(format!("unknown message {id}")));
        };
        prop_assert_eq!(d.message(), &self.sent[i]);
        let group = format!("g{g}");
        prop_assert_eq!(&*d.info().group, group.as_str());
        prop_assert!(
            self.deliverable(g, i, Instant::now()),
            "group {} got message #{} while the model says it is {:?} (keys {:?}, states {:?})",
            g,
            i,
            self.state[g][i],
            self.keys,
            self.state[g]
        );
        self.state[g][i] = St::InFlight;
        self.attempts[g][i] += 1;
        prop_assert_eq!(d.info().attempt, self.attempts[g][i], "attempt of #{}", i);
        Ok(i)
    }
}

struct Held {
    consumer: usize,
    index: usize,
    delivery: Delivery,
}

fn group_of(consumer: usize) -> usize {
    consumer / CONSUMERS_PER_GROUP
}

async fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let bus = MemoryBus::new();
    let mut subs: Vec<Subscription> = Vec::new();
    for c in 0..GROUPS * CONSUMERS_PER_GROUP {
        subs.push(
            bus.subscribe(TOPIC, &format!("g{}", group_of(c)))
                .await
                .unwrap(),
        );
    }
    let mut model = Model {
        keys: Vec::new(),
        index: HashMap::new(),
        sent: Vec::new(),
        state: vec![Vec::new(); GROUPS],
        attempts: vec![Vec::new(); GROUPS],
    };
    let mut held: Vec<Held> = Vec::new();
    let mut dead_lettered = 0;
    for step in steps {
        let now = Instant::now();
        match step {
            Step::Publish { key, n } => {
                let batch: Vec<Message> = (0..n)
                    .map(|j| {
                        let m = Message::new(format!("m{}", model.sent.len() + j as usize));
                        match key {
                            Some(k) => m.with_key(vec![k]),
                            None => m,
                        }
                    })
                    .collect();
                bus.publish(TOPIC, batch.clone()).await.unwrap();
                for m in batch {
                    model.index.insert(m.id(), model.sent.len());
                    model.keys.push(m.key().map(<[u8]>::to_vec));
                    model.sent.push(m);
                    for g in 0..GROUPS {
                        model.state[g].push(St::Pending(now));
                        model.attempts[g].push(0);
                    }
                }
            }
            Step::Recv { consumer } => {
                let c = consumer as usize;
                let g = group_of(c);
                let expected = model.any_deliverable(g, now);
                match timeout(WAIT, subs[c].recv()).await {
                    Ok(got) => {
                        let d = got.expect("bus open").expect("no error");
                        let index = model.delivered(g, &d)?;
                        held.push(Held {
                            consumer: c,
                            index,
                            delivery: d,
                        });
                    }
                    Err(_) => prop_assert!(
                        expected.is_none(),
                        "consumer {} got nothing, but message #{:?} was deliverable",
                        c,
                        expected
                    ),
                }
            }
            Step::Ack(i)
            | Step::Term(i)
            | Step::DeadLetter(i)
            | Step::Retry(i)
            | Step::RetryLater(i)
            | Step::Drop(i)
                if !held.is_empty() =>
            {
                let h = held.remove(i as usize % held.len());
                let g = group_of(h.consumer);
                let next = match step {
                    Step::Ack(_) => {
                        h.delivery.ack().await.unwrap();
                        St::Done
                    }
                    Step::Term(_) => {
                        h.delivery.term().await.unwrap();
                        St::Done
                    }
                    Step::DeadLetter(_) => {
                        h.delivery.dead_letter("model").await.unwrap();
                        dead_lettered += 1;
                        St::Done
                    }
                    Step::Retry(_) => {
                        h.delivery.retry(None).await.unwrap();
                        St::Pending(now)
                    }
                    Step::RetryLater(_) => {
                        h.delivery.retry(Some(DELAY)).await.unwrap();
                        St::Pending(now + DELAY)
                    }
                    _ => {
                        drop(h.delivery);
                        St::Pending(now)
                    }
                };
                model.state[g][h.index] = next;
            }
            Step::Crash { consumer } => {
                let c = consumer as usize;
                let g = group_of(c);
                let (gone, kept): (Vec<Held>, Vec<Held>) =
                    held.into_iter().partition(|h| h.consumer == c);
                held = kept;
                let fresh = bus.subscribe(TOPIC, &format!("g{g}")).await.unwrap();
                drop(std::mem::replace(&mut subs[c], fresh));
                for h in gone {
                    model.state[g][h.index] = St::Pending(now);
                    drop(h.delivery);
                }
            }
            Step::Sleep => tokio::time::sleep(DELAY * 2).await,
            _ => {}
        }
    }
    // Drain: settle what is held, then each group handles the rest.
    for h in held.drain(..) {
        h.delivery.ack().await.unwrap();
        model.state[group_of(h.consumer)][h.index] = St::Done;
    }
    for g in 0..GROUPS {
        let c = g * CONSUMERS_PER_GROUP;
        while let Ok(got) = timeout(WAIT, subs[c].recv()).await {
            let d = got.expect("bus open").expect("no error");
            let i = model.delivered(g, &d)?;
            d.ack().await.unwrap();
            model.state[g][i] = St::Done;
        }
        let left: Vec<usize> = (0..model.sent.len())
            .filter(|&i| model.state[g][i] != St::Done)
            .collect();
        prop_assert!(
            left.is_empty(),
            "group {} never handled messages {:?}",
            g,
            left
        );
    }
    prop_assert_eq!(bus.backlog(TOPIC), 0, "every group settled everything");
    let dlq = format!("{TOPIC}.dlq");
    prop_assert_eq!(
        bus.backlog(&dlq),
        dead_lettered,
        "one envelope per dead letter"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn settlement_matches_the_model(steps in prop::collection::vec(step(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(run(steps))?;
    }
}
