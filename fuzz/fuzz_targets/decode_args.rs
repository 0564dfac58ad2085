//! `cargo +nightly fuzz run decode_args`: see `agents_runtime::fuzz::decode_args`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agents_runtime::fuzz::decode_args(data));
