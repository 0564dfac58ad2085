//! `cargo +nightly fuzz run read_frames`: see `agents_runtime::fuzz::read_frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agents_runtime::fuzz::read_frames(data));
