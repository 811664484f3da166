//! cargo-fuzz entry for `checks/http_chunked.rs` (what is checked is documented
//! there).
#![no_main]

#[path = "../checks/http_chunked.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
