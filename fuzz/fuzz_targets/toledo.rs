//! Toledo continuous output: arbitrary bytes never panic; output is bounded by the input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use qyt_agent::decode::toledo::{ToledoDecoder, ToledoOptions};

fuzz_target!(|data: &[u8]| {
    let mut d = ToledoDecoder::new(Some("fuzz".into()), &ToledoOptions::default());
    let mut n = 0;
    for chunk in data.chunks(7) {
        n += d.feed(chunk).events.len();
    }
    n += d.finish().events.len();
    assert!(n <= data.len());
});
