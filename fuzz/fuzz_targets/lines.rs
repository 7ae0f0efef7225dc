//! The line decoder, delimited and JSON: arbitrary bytes never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use qyt_agent::decode::lines::{LineDecoder, LineFormat};

fuzz_target!(|data: &[u8]| {
    let formats = [
        "format = \"delimited\"\n[fields]\nseal_id = 0\nstate = 1\nbattery_pct = 2\n[values.state]\n\"0\" = \"sealed\"\n",
        "format = \"json\"\nobserved_at_field = \"t\"\n[fields]\nseal_id = \"s.id\"\nstate = \"st\"\n",
    ];
    for f in formats {
        let format: LineFormat = toml::from_str(f).expect("fixed format");
        let mut d = LineDecoder::new(&format, "fuzz", 512);
        let _ = d.feed(data);
        let _ = d.finish();
    }
});
