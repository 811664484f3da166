//! cargo-fuzz entry for `checks/multipart.rs` (what is checked is documented
//! there).
#![no_main]

#[path = "../checks/multipart.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
