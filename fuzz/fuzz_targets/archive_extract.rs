//! cargo-fuzz entry for `checks/archive_extract.rs` (what is checked is documented
//! there).
#![no_main]

#[path = "../checks/archive_extract.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
