//! Every integration test, built as one binary so the suite links once
//! (ripgrep's `tests/tests.rs` shape): a module per area, support code in
//! `support/`. Real nodes on loopback, real HTTP, real files, real Docker.

mod support;

mod abuse;
mod abuse_config;
mod abuse_ipv6;
mod abuse_panel;
mod abuse_stream;
mod adversarial_fuzz_corpus;
mod adversarial_http;
mod adversarial_jwt;
mod adversarial_multipart;
mod archive_cancel;
mod archive_extract_race;
mod archive_go;
mod archive_hostile;
mod archive_limits;
mod archive_nonroot;
mod archive_roundtrip;
mod archive_sparse;
mod archive_staging;
mod archive_tar_interop;
mod cli_transfer;
mod cli_usage;
mod docker_env;
mod docker_transfer;
mod faults;
mod finish;
mod http_limits;
mod http_server;
mod jwt_panel_token;
mod multipart_interop;
mod node_api;
mod ops_cli;
mod ops_config;
mod ops_install;
mod ops_metrics;
mod ops_signals;
mod panel_client;
mod precopy;
mod transfer_dialects;
mod transfer_dialects_go;
mod transfer_dialects_undo;
mod transfer_e2e;
mod transfer_errors;
mod transfer_tls;
mod transport;
mod transport_resume;
mod transport_session;
mod ws_events;
