//! `cargo +nightly fuzz run prepare_tags`: see `agents_runtime::fuzz::prepare_tags`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agents_runtime::fuzz::prepare_tags(data));
