//! Pure translation between the panel's view of a server and the Engine's:
//! settings JSON → container create body, `process_configuration.stop` →
//! what a graceful stop sends, inspect JSON → power state, image references
//! → pull parameters. No I/O here, so all of it is unit-tested without Docker.
//!
//! Values follow what Wings sends for the same settings (env order and
//! precedence, memory overhead, swap, CPU quota, port bindings, labels), so a
//! server moved between Wings and ferry gets the same container.
//!
//! One topic a file: `settings` (the panel's settings, read leniently),
//! `create` (the container create body), `stop` (graceful stop), `state`
//! (inspect → power state), `engine` (pull references, query escaping, API
//! versions).

mod create;
mod engine;
mod settings;
mod state;
mod stop;

pub use self::create::{
    check_container_name, create_body, env_list, is_builtin_network, memory_bytes, resources,
    CreateOptions, CONTAINER_HOME,
};
pub use self::engine::{parse_api_version, pull_reference, query_escape};
pub use self::settings::{parse_settings, ContainerSettings, ExtraMount};
pub use self::state::power_state;
pub use self::stop::{normalize_signal, stop_action, StopAction};
