//! NMEA 0183: arbitrary bytes, split at an arbitrary point, never panic, and the decoder keeps
//! at most one line buffered.
#![no_main]
use libfuzzer_sys::fuzz_target;
use qyt_agent::decode::nmea::NmeaDecoder;

fuzz_target!(|data: &[u8]| {
    let now = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let split = data.first().map(|b| *b as usize % (data.len() + 1)).unwrap_or(0);
    let mut d = NmeaDecoder::new("fuzz", 256);
    let a = d.feed(&data[..split], now);
    let b = d.feed(&data[split..], now);
    let c = d.finish(now);
    // Output is bounded by the input: at most one event or rejection per input byte or so.
    assert!(a.events.len() + b.events.len() + c.events.len() <= data.len() + 2);
});
