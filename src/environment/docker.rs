//! The Docker environment: a small synchronous Engine API client over the unix socket.
