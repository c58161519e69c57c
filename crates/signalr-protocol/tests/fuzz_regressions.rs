//! Replays the fuzzing seeds and every input the fuzzers ever failed on (`fuzz/seeds/<target>/`
//! and `fuzz/regressions/<target>/` at the repository root) through the same checks the fuzz
//! targets run, so those inputs are tested by a plain `cargo test`, without a fuzzer.

mod fuzz_checks;

use std::path::PathBuf;

/// The inputs committed for `target`, as (path, bytes).
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut inputs = Vec::new();
    for kind in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(kind).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_file() {
                let bytes = std::fs::read(&path).expect("readable input");
                inputs.push((path, bytes));
            }
        }
    }
    inputs.sort();
    inputs
}

fn replay(target: &str, check: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "no seeds for {target}");
    for (path, bytes) in inputs {
        eprintln!("{target}: {}", path.display());
        check(&bytes);
    }
}

#[test]
fn json_messages() {
    replay("json_messages", fuzz_checks::json_messages);
}

#[test]
fn msgpack_messages() {
    replay("msgpack_messages", fuzz_checks::msgpack_messages);
}

#[test]
fn handshake() {
    replay("handshake", fuzz_checks::handshake);
}

#[test]
fn framing() {
    replay("framing", fuzz_checks::framing);
}

#[test]
fn negotiate() {
    replay("negotiate", fuzz_checks::negotiate);
}
