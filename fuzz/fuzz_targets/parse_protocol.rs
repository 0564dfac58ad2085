//! `cargo +nightly fuzz run parse_protocol`: see `agents_runtime::fuzz::parse_protocol`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agents_runtime::fuzz::parse_protocol(data));
