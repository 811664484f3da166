//! cargo-fuzz entry for `checks/http_head.rs` (what is checked is documented
//! there).
#![no_main]

#[path = "../checks/http_head.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
