#![no_main]

use signalr_fuzz as _;

#[path = "../../crates/signalr-protocol/tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::json_messages(data));
