//! JT/T 808 framing, messages and the session state machine: arbitrary bytes in arbitrary
//! chunks never panic and never hold more than the frame and reassembly bounds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use qyt_agent::decode::jt808::{ReassemblyLimits, Session, SessionConfig};
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let now = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let cfg = Arc::new(SessionConfig {
        auth_secret: b"fuzzing-secret-0123456789".to_vec(),
        terminals: Default::default(),
        seal_from_door_bit: true,
        max_frame_bytes: 2090,
        reassembly: ReassemblyLimits { max_messages: 4, max_bytes: 64 * 1024, max_age: chrono::TimeDelta::seconds(120) },
    });
    // Live session (authentication enforced) and capture mode (everything believed).
    for mut s in [Session::new(cfg.clone()), Session::for_capture(cfg)] {
        for chunk in data.chunks(data.first().map(|b| *b as usize + 1).unwrap_or(1)) {
            let fed = s.feed(chunk, now);
            for x in &fed.exchanges {
                if let Some(r) = &x.reply {
                    let _ = s.encode(r);
                }
            }
            assert!(s.buffered_bytes() <= 2090 + 64 * 1024 + 4 * 64);
        }
    }
});
