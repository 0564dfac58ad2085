//! `cargo +nightly fuzz run parse_route`: see `agents_runtime::fuzz::parse_route`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agents_runtime::fuzz::parse_route(data));
