//! Per-server event bus for websocket subscribers (SPEC §6). Publishing
//! never blocks: each subscriber has a bounded queue, and one that is full
//! is dropped, so a slow client can never slow a transfer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use serde::Serialize;

/// Only subscribers holding this permission get `transfer logs`.
pub const TRANSFER_LOGS_PERMISSION: &str = "admin.websocket.transfer";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub event: String,
    pub args: Vec<String>,
}

impl Event {
    pub fn new(event: &str, arg: String) -> Self {
        Event {
            event: event.to_string(),
            args: vec![arg],
        }
    }
}

struct Subscriber {
    id: u64,
    sender: Sender<Event>,
}

#[derive(Default)]
pub struct EventBus {
    next_id: AtomicU64,
    subscribers: Mutex<HashMap<String, Vec<Subscriber>>>,
}

/// A subscription; dropping the receiver ends it at the next publish.
pub struct Subscription {
    pub id: u64,
    pub receiver: Receiver<Event>,
}

impl EventBus {
    pub fn subscribe(&self, server: &str, capacity: usize) -> Subscription {
        let (sender, receiver) = bounded(capacity.max(1));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(server.to_string())
            .or_default()
            .push(Subscriber { id, sender });
        Subscription { id, receiver }
    }

    pub fn unsubscribe(&self, server: &str, id: u64) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = subs.get_mut(server) {
            list.retain(|s| s.id != id);
            if list.is_empty() {
                subs.remove(server);
            }
        }
    }

    /// Delivers to every subscriber of `server` that has room; the ones that
    /// are full or gone are removed (their connection closes).
    pub fn publish(&self, server: &str, event: Event) {
        if event.event == "transfer logs" {
            log::debug!(
                "{server}: {}",
                event.args.first().map(String::as_str).unwrap_or("")
            );
        }
        let mut subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        let Some(list) = subs.get_mut(server) else {
            return;
        };
        list.retain(|s| match s.sender.try_send(event.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                log::info!("events: dropping a slow subscriber of {server}");
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
        if list.is_empty() {
            subs.remove(server);
        }
    }

    pub fn is_subscribed(&self, server: &str, id: u64) -> bool {
        self.subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(server)
            .is_some_and(|list| list.iter().any(|s| s.id == id))
    }

    pub fn subscriber_count(&self, server: &str) -> usize {
        self.subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(server)
            .map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_subscriber_is_dropped_without_blocking() {
        let bus = EventBus::default();
        let slow = bus.subscribe("s", 2);
        let fast = bus.subscribe("s", 100);
        for i in 0..10 {
            bus.publish("s", Event::new("transfer status", i.to_string()));
        }
        assert_eq!(fast.receiver.len(), 10);
        assert_eq!(slow.receiver.len(), 2);
        assert_eq!(bus.subscriber_count("s"), 1);
        bus.publish("other", Event::new("x", String::new()));
        assert_eq!(fast.receiver.len(), 10);
    }

    #[test]
    fn dropped_receivers_are_pruned() {
        let bus = EventBus::default();
        let sub = bus.subscribe("s", 4);
        drop(sub);
        bus.publish("s", Event::new("x", String::new()));
        assert_eq!(bus.subscriber_count("s"), 0);
    }
}
