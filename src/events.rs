//! Per-server event bus for websocket subscribers.
