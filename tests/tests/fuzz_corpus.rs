//! The fuzz targets' corpus (`fuzz/corpus/`, what cargo-fuzz found worth keeping) replayed
//! through the same entry points on every test run: an input that once reached new code keeps
//! being checked, and the targets cannot rot while nobody runs the fuzzer (it needs nightly).

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 5] = [
    ("read_frames", agents_runtime::fuzz::read_frames),
    ("parse_protocol", agents_runtime::fuzz::parse_protocol),
    ("decode_args", agents_runtime::fuzz::decode_args),
    ("prepare_tags", agents_runtime::fuzz::prepare_tags),
    ("parse_route", agents_runtime::fuzz::parse_route),
];

#[test]
fn every_corpus_input_runs_through_its_target() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (name, target) in TARGETS {
        let dir = corpus.join(name);
        let inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("a corpus entry").path())
            .collect();
        assert!(inputs.len() >= 3, "{name} has a corpus (the seeds at least)");
        for input in inputs {
            let bytes = std::fs::read(&input).expect("reads a corpus input");
            target(&bytes);
        }
    }
}
