//! The decoder against gpsd's regression captures (real receivers), then unit and fuzz-style
//! tests for what the captures do not show.

use super::*;
use chrono::{NaiveDateTime, TimeZone};
use proptest::prelude::*;
use std::collections::BTreeMap;

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata/nmea");
const MAX_LINE: usize = 120;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 6, 15, 12, 0, 0).unwrap()
}

fn at(s: &str) -> DateTime<Utc> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .unwrap()
        .and_utc()
}

/// A sentence with its checksum and CR LF.
fn nmea(body: &str) -> String {
    let sum = body.bytes().fold(0u8, |x, b| x ^ b);
    format!("${body}*{sum:02X}\r\n")
}

fn lines(bodies: &[&str]) -> Vec<u8> {
    bodies
        .iter()
        .map(|b| nmea(b))
        .collect::<String>()
        .into_bytes()
}

/// Feeds `input` in pieces whose sizes cycle through `chunks`, then finishes.
fn decode_in(input: &[u8], chunks: &[usize]) -> Output {
    let mut d = NmeaDecoder::new("gps-1", MAX_LINE);
    let mut out = Output::default();
    let mut rest = input;
    for &n in chunks.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(n.clamp(1, rest.len()));
        append(&mut out, d.feed(piece, now()));
        assert!(d.line.len() <= MAX_LINE + 1, "{}", d.line.len());
        rest = tail;
    }
    append(&mut out, d.finish(now()));
    out
}

fn decode(input: &[u8]) -> Output {
    decode_in(input, &[input.len()])
}

fn append(out: &mut Output, more: Output) {
    out.events.extend(more.events);
    out.rejected.extend(more.rejected);
}

fn positions(out: &Output) -> Vec<(DateTime<Utc>, &PositionReading)> {
    out.events
        .iter()
        .filter_map(|e| match &e.body {
            Body::Position(p) => Some((e.observed_at.expect("positions are dated"), p)),
            _ => None,
        })
        .collect()
}

/// The status events, as (observed_at, gnss_fix).
fn statuses(out: &Output) -> Vec<(Option<DateTime<Utc>>, bool)> {
    out.events
        .iter()
        .filter_map(|e| match &e.body {
            Body::DeviceStatus(s) => Some((e.observed_at, s.gnss_fix.expect("gnss_fix is set"))),
            _ => None,
        })
        .collect()
}

fn reasons(out: &Output) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for r in &out.rejected {
        *m.entry(r.reason).or_insert(0) += 1;
    }
    m
}

fn only_position(out: &Output) -> (DateTime<Utc>, PositionReading) {
    let p = positions(out);
    assert_eq!(p.len(), 1, "{out:#?}");
    (p[0].0, p[0].1.clone())
}

// ---- the captures ----

/// What each capture in shared/testdata/nmea decodes to.
struct Capture {
    log: &'static str,
    positions: usize,
    /// Positions whose time gpsd did not report (it had no date yet: the capture's first
    /// sentence), matched by coordinates to gpsd's undated fix instead.
    untimed: usize,
    /// Positions for which gpsd reported no fix at all, with their coordinates read by hand from
    /// the sentences: gpsd ends a cycle on the sentence it learned comes last, and skips a cycle
    /// that lacks it.
    not_in_gpsd: &'static [(&'static str, f64, f64)],
    statuses: &'static [bool],
    rejected: &'static [(&'static str, usize)],
    /// The true date, from the sentences (gpsd's .chk moves some by GPS week rollovers).
    date: &'static str,
}

const CAPTURES: &[Capture] = &[
    Capture {
        log: "bu353s4.log",
        positions: 25,
        untimed: 0,
        not_in_gpsd: &[],
        statuses: &[],
        rejected: &[],
        date: "2014-12-31",
    },
    Capture {
        // No fix for 10 s (RMC V, GGA 0), then a second with RMC A but GGA quality 1 from
        // 0 satellites (no fix, as for gpsd), then fixes.
        log: "garmin25lp.log",
        positions: 9,
        untimed: 0,
        not_in_gpsd: &[],
        statuses: &[false, true],
        rejected: &[],
        date: "2005-03-15",
    },
    Capture {
        // Named after the GPS week rollover it was captured across, not after damaged lines: it
        // has none (see `damaged_lines_lose_no_good_fix` for that).
        log: "gp-320fw-2019-04-06-overflow.log",
        positions: 21,
        untimed: 1,
        // The one cycle without a GLL, the sentence gpsd ends its cycles on.
        not_in_gpsd: &[("23:57:26.020", 48.149963333, 11.584666667)],
        statuses: &[],
        rejected: &[],
        date: "2019-04-06",
    },
    Capture {
        // GGA and ZDA, no RMC; GGA without time while there is no fix, then quality 1 from
        // 0 satellites (no fix, as for gpsd), then half-second fixes.
        log: "hemi.log",
        positions: 6,
        untimed: 0,
        not_in_gpsd: &[],
        statuses: &[false, true],
        rejected: &[],
        date: "2018-09-07",
    },
    Capture {
        log: "mt3339.log",
        positions: 30,
        untimed: 0,
        not_in_gpsd: &[],
        statuses: &[],
        rejected: &[],
        date: "2015-04-13",
    },
    Capture {
        log: "neo-m8n.log",
        positions: 24,
        untimed: 1,
        // The last cycle, whose GLL the capture does not have: reported by `finish`.
        not_in_gpsd: &[("17:19:48", 44.068983667, -121.3142285)],
        statuses: &[],
        rejected: &[],
        date: "2015-03-18",
    },
    Capture {
        log: "sirfstarv-nmea.log",
        positions: 59,
        untimed: 0,
        not_in_gpsd: &[],
        statuses: &[],
        rejected: &[],
        date: "2019-02-05",
    },
    Capture {
        // Starts with u-blox binary (UBX) before the first `$` on the line, ends with an RMC cut
        // short without its checksum.
        log: "ublox-8.log",
        positions: 72,
        untimed: 0,
        not_in_gpsd: &[],
        statuses: &[],
        rejected: &[("checksum", 1), ("garbage", 1)],
        date: "2017-01-10",
    },
];

/// gpsd's fixes: (time of day, lat, lon) for those with a time, (lat, lon) for those without.
type GpsdFixes = (Vec<(NaiveTime, f64, f64)>, Vec<(f64, f64)>);

fn gpsd_fixes(chk: &str) -> GpsdFixes {
    let (mut timed, mut untimed) = (Vec::new(), Vec::new());
    for line in chk.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let mode = v["mode"].as_i64().unwrap_or(0);
        if v["class"] != "TPV" || !(mode == 2 || mode == 3) {
            continue;
        }
        let (lat, lon) = (v["lat"].as_f64().unwrap(), v["lon"].as_f64().unwrap());
        match v["time"].as_str() {
            Some(t) => {
                let t = DateTime::parse_from_rfc3339(t).unwrap().naive_utc().time();
                timed.push((t, lat, lon));
            }
            None => untimed.push((lat, lon)),
        }
    }
    (timed, untimed)
}

fn close(a: (f64, f64), b: (f64, f64)) -> bool {
    (a.0 - b.0).abs() <= 1e-6 && (a.1 - b.1).abs() <= 1e-6
}

/// The capture without gpsd's `#` comment lines, as a serial port would deliver it.
fn device_output(raw: &[u8]) -> Vec<u8> {
    raw.split_inclusive(|&b| b == b'\n')
        .filter(|l| !l.starts_with(b"#"))
        .flatten()
        .copied()
        .collect()
}

fn read_capture(log: &str) -> Vec<u8> {
    std::fs::read(format!("{TESTDATA}/{log}")).unwrap()
}

#[test]
fn every_capture_matches_gpsd() {
    let mut logs: Vec<String> = std::fs::read_dir(TESTDATA)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".log"))
        .collect();
    logs.sort();
    let mut listed: Vec<&str> = CAPTURES.iter().map(|c| c.log).collect();
    listed.sort();
    let mut report = String::new();
    for log in &logs {
        let raw = read_capture(log);
        let input = device_output(&raw);
        // Odd-sized pieces, so that sentences are split everywhere.
        let out = decode_in(&input, &[1, 3, 7, 13, 31, 61, 127, 5]);
        // Comment lines are skipped silently: the raw capture decodes the same.
        assert_eq!(decode(&raw), out, "{log}: raw capture");
        let chk = std::fs::read_to_string(format!("{TESTDATA}/{log}.chk")).unwrap();
        let (timed, untimed) = gpsd_fixes(&chk);
        let found = positions(&out);
        let mut matched_untimed = 0;
        let mut unmatched = Vec::new();
        for (when, p) in &found {
            let t = when.time();
            let same_time: Vec<_> = timed.iter().filter(|f| f.0 == t).collect();
            if same_time.is_empty() {
                if untimed.iter().any(|&f| close(f, (p.lat, p.lon))) {
                    matched_untimed += 1;
                } else {
                    unmatched.push((t.format("%H:%M:%S%.f").to_string(), p.lat, p.lon));
                }
            } else {
                assert!(
                    same_time.iter().any(|f| close((f.1, f.2), (p.lat, p.lon))),
                    "{log}: position at {when} ({}, {}) differs from gpsd's {same_time:?}",
                    p.lat,
                    p.lon
                );
            }
        }
        let mut tpv_times: Vec<NaiveTime> = timed.iter().map(|f| f.0).collect();
        tpv_times.dedup();
        for t in &tpv_times {
            assert!(
                found.iter().any(|(when, _)| when.time() == *t),
                "{log}: gpsd has a fix at {t}, the decoder none"
            );
        }
        report.push_str(&format!(
            "{log}: {} positions ({} matched to undated gpsd fixes), {} gpsd fix times all \
             matched, not in gpsd {:?}, statuses {:?}, rejected {:?}, dates {:?}\n",
            found.len(),
            matched_untimed,
            tpv_times.len(),
            unmatched,
            statuses(&out).iter().map(|s| s.1).collect::<Vec<_>>(),
            reasons(&out),
            found
                .iter()
                .map(|(w, _)| w.date_naive())
                .collect::<std::collections::BTreeSet<_>>(),
        ));
        if let Some(c) = CAPTURES.iter().find(|c| c.log == log) {
            assert_eq!(found.len(), c.positions, "{log}: positions");
            assert_eq!(matched_untimed, c.untimed, "{log}: undated matches");
            assert_eq!(unmatched.len(), c.not_in_gpsd.len(), "{log}: {unmatched:?}");
            for ((t, lat, lon), (want, want_lat, want_lon)) in unmatched.iter().zip(c.not_in_gpsd) {
                assert_eq!(t, want, "{log}: position not in gpsd");
                assert!(
                    close((*lat, *lon), (*want_lat, *want_lon)),
                    "{log}: {t}: {lat} {lon}"
                );
            }
            let st: Vec<bool> = statuses(&out).iter().map(|s| s.1).collect();
            assert_eq!(st, c.statuses, "{log}: statuses");
            let rejected: BTreeMap<&str, usize> = c.rejected.iter().copied().collect();
            assert_eq!(reasons(&out), rejected, "{log}: rejections");
            let date = NaiveDate::parse_from_str(c.date, "%Y-%m-%d").unwrap();
            assert!(
                found.iter().all(|(w, _)| w.date_naive() == date),
                "{log}: dates"
            );
        }
    }
    eprintln!("{report}");
    assert_eq!(logs, listed, "every capture is listed in CAPTURES");
}

#[test]
fn damaged_lines_lose_no_good_fix() {
    // The overflow capture has no damaged lines of its own: damage it the ways serial lines get
    // damaged, only in sentences whose cycles have other sentences with the same fix.
    let clean = device_output(&read_capture("gp-320fw-2019-04-06-overflow.log"));
    let mut damaged = Vec::new();
    let (mut gsv, mut gsa, mut gll) = (0, 0, 0);
    for (i, line) in clean.split_inclusive(|&b| b == b'\n').enumerate() {
        if i == 5 {
            // An overlong line.
            damaged.extend_from_slice(b"$GPGSV,3,1,12");
            damaged.extend(std::iter::repeat_n(b'9', 300));
            damaged.extend_from_slice(b"\r\n");
        }
        if i == 20 {
            // Binary noise on its own line, and a run of NULs.
            damaged.extend_from_slice(&[0xB5, 0x62, 0x01, 0x07, 0x5C, 0x00, 0xFF, 0x80, 0x0B]);
            damaged.extend_from_slice(b"\r\n\0\0\0\0\r\n");
        }
        let kind = line.get(3..6).unwrap_or_default();
        match kind {
            b"GSV" => {
                gsv += 1;
                match gsv {
                    // Cut short and run into the next sentence.
                    3 => damaged.extend_from_slice(&line[..30]),
                    // Cut short at the line end: no checksum.
                    7 => {
                        damaged.extend_from_slice(&line[..25]);
                        damaged.extend_from_slice(b"\r\n");
                    }
                    _ => damaged.extend_from_slice(line),
                }
            }
            b"GSA" | b"GLL" => {
                let n = if kind == b"GSA" { &mut gsa } else { &mut gll };
                *n += 1;
                let mut line = line.to_vec();
                if *n == 2 {
                    // A flipped bit in a field.
                    line[12] ^= 0x01;
                }
                damaged.extend_from_slice(&line);
            }
            _ => damaged.extend_from_slice(line),
        }
    }
    let want = decode(&clean);
    let got = decode_in(&damaged, &[17, 1, 250, 3]);
    assert_eq!(got.events, want.events);
    assert_eq!(
        reasons(&got),
        BTreeMap::from([("checksum", 3), ("garbage", 3), ("too_long", 1)]),
        "{:#?}",
        got.rejected
    );
    let too_long = got
        .rejected
        .iter()
        .find(|r| r.reason == "too_long")
        .unwrap();
    assert!(too_long.sample.starts_with(b"$GPGSV,3,1,12999"));
    assert_eq!(too_long.sample.len(), SAMPLE_LEN);
}

// ---- unit tests ----

#[test]
fn checksum_failure_is_rejected() {
    let mut line = nmea("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,");
    line = line.replace("4807.038", "4807.039");
    let out = decode(line.as_bytes());
    assert!(out.events.is_empty());
    assert_eq!(out.rejected.len(), 1);
    assert_eq!(out.rejected[0].reason, "checksum");
    assert!(
        out.rejected[0].detail.contains("stated"),
        "{:?}",
        out.rejected[0]
    );
    // A checksum field that is not two hex digits.
    let out = decode(b"$GPGGA,123519,,,,,0,,,,,,,,*6\r\n$GPGGA,123519,,,,,0,,,,,,,,*6GG\r\n");
    assert_eq!(reasons(&out), BTreeMap::from([("checksum", 2)]));
}

#[test]
fn missing_checksum_is_rejected_except_proprietary() {
    let input = b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W\r\n\
                  $GPGSV,1,1,01,20,78,050,41\r\n\
                  $PGRME,15.0,M,45.0,M,25.0,M\r\n";
    let out = decode(input);
    assert!(out.events.is_empty());
    assert_eq!(reasons(&out), BTreeMap::from([("checksum", 2)]));
}

#[test]
fn other_sentences_are_skipped_silently() {
    let input = lines(&[
        "GPGSA,A,3,20,,,,31,13,,04,,,,,02.6,01.4,02.1",
        "GPGSV,3,1,12,20,78,050,41,11,72,261,,06,41,278,,14,38,185,",
        "GPTXT,01,01,02,ANTSTATUS=OK",
        "GPHDT,274.11,T",
        "PUBX,00,081350.00,4717.113210,N,00833.915187,E,546.589,G3,2.1,2.0,0.007,77.52,0.007,,0.92,1.19,0.77,9,0,0",
        "PGRMZ,93,f,3",
    ]);
    let out = decode(&input);
    assert_eq!(out, Output::default());
}

#[test]
fn empty_fields_before_a_fix() {
    // u-blox and Hemisphere output before the first fix: no time, no position.
    let input = lines(&[
        "GPRMC,,V,,,,,,,,,,N",
        "GPVTG,,,,,,,,,N",
        "GPGGA,,,,,,0,00,99.99,,,,,,",
        "GPGSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99",
        "GPGLL,,,,,,V,N",
        "GNGNS,,,,,,NN,00,99.99,,,,,V",
        "GPZDA,,,,,,",
    ]);
    let out = decode(&input);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    assert_eq!(statuses(&out), [(None, false)]);
    // A fix with the optional fields empty.
    let input = lines(&[
        "GPRMC,120000,A,4807.038,N,01131.000,E,,,010224,,",
        "GPGGA,120000,4807.038,N,01131.000,E,1,,,,,,,,",
    ]);
    let (when, p) = only_position(&decode(&input));
    assert_eq!(when, at("2024-02-01 12:00:00"));
    assert_eq!((p.speed_kmh, p.course, p.altitude_m), (None, None, None));
    assert_eq!((p.satellites, p.hdop, p.fix), (None, None, Fix::Fix2d));
}

#[test]
fn one_position_per_cycle_from_the_best_sentences() {
    let input = lines(&[
        "GNRMC,083559.00,A,4717.11437,N,00833.91522,E,10.0,77.52,091202,,,A",
        "GNVTG,77.52,T,,M,10.0,N,18.6,K,A",
        "GNGGA,083559.00,4717.11399,N,00833.91590,E,1,08,1.01,499.6,M,48.0,M,,",
        "GNGLL,4717.11364,N,00833.91565,E,083559.00,A,A",
    ]);
    let out = decode(&input);
    let (when, p) = only_position(&out);
    assert_eq!(when, at("2002-12-09 08:35:59"));
    // GGA's position, RMC's speed (knots) and course, GGA's altitude, satellites and HDOP.
    assert!(close(
        (p.lat, p.lon),
        (47.0 + 17.11399 / 60.0, 8.0 + 33.91590 / 60.0)
    ));
    assert!((p.speed_kmh.unwrap() - 18.52).abs() < 1e-9);
    assert_eq!(p.course, Some(77.52));
    assert_eq!(
        (p.altitude_m, p.satellites, p.hdop),
        (Some(499.6), Some(8), Some(1.01))
    );
    assert_eq!(p.fix, Fix::Fix3d);
    assert_eq!(p.device_id, "gps-1");
}

#[test]
fn vtg_speed_in_kmh_when_there_is_no_rmc() {
    let input = lines(&[
        "GPGGA,120000,4807.038,S,01131.000,W,1,05,1.2,10.0,M,,M,,",
        "GPVTG,054.7,T,034.4,M,005.5,N,010.2,K,A",
        "GPZDA,120000,01,03,2024,00,00",
    ]);
    let (_, p) = only_position(&decode(&input));
    assert_eq!((p.speed_kmh, p.course), (Some(10.2), Some(54.7)));
    assert!(p.lat < 0.0 && p.lon < 0.0);
    // NMEA 1.x VTG, without unit letters; knots converted when km/h is empty.
    let input = lines(&[
        "GPGGA,120000,4807.038,N,01131.000,E,1,05,1.2,10.0,M,,M,,",
        "GPVTG,054.7,034.4,005.5,",
    ]);
    let (_, p) = only_position(&decode(&input));
    assert!((p.speed_kmh.unwrap() - 5.5 * 1.852).abs() < 1e-9);
}

#[test]
fn fix_quality_mapping() {
    let fix = |quality: &str, satellites: &str, altitude: &str| {
        let gga = format!(
            "GPGGA,120000,4807.038,N,01131.000,E,{quality},{satellites},1.0,{altitude},M,,M,,"
        );
        let out = decode(&lines(&[&gga, "GPZDA,120000,01,03,2024,00,00"]));
        positions(&out).first().map(|p| p.1.fix)
    };
    assert_eq!(fix("1", "08", "545.4"), Some(Fix::Fix3d));
    assert_eq!(fix("1", "08", ""), Some(Fix::Fix2d));
    assert_eq!(fix("1", "03", "545.4"), Some(Fix::Fix2d));
    assert_eq!(fix("1", "", "545.4"), Some(Fix::Fix3d));
    assert_eq!(fix("2", "08", "545.4"), Some(Fix::Dgps));
    assert_eq!(fix("4", "08", "545.4"), Some(Fix::Rtk));
    assert_eq!(fix("5", "08", "545.4"), Some(Fix::Rtk));
    assert_eq!(fix("6", "00", ""), Some(Fix::Estimated));
    assert_eq!(fix("0", "08", "545.4"), None);
    assert_eq!(fix("1", "00", "545.4"), None);
    assert_eq!(fix("1", "02", "545.4"), None);
    assert_eq!(fix("8", "08", "545.4"), None);
    // GNS: the best of the per-constellation modes; all N is no fix.
    let gns = |modes: &str| {
        let gns = format!("GNGNS,120000,4807.038,N,01131.000,E,{modes},10,0.9,545.4,46.9,,");
        let out = decode(&lines(&[&gns, "GPZDA,120000,01,03,2024,00,00"]));
        positions(&out).first().map(|p| p.1.fix)
    };
    assert_eq!(gns("AN"), Some(Fix::Fix3d));
    assert_eq!(gns("ADN"), Some(Fix::Dgps));
    assert_eq!(gns("RA"), Some(Fix::Rtk));
    assert_eq!(gns("NN"), None);
    // RMC and GLL alone: 2D, refined by their mode indicator.
    let rmc = |status: &str, mode: &str| {
        let rmc = format!("GPRMC,120000,{status},4807.038,N,01131.000,E,0.0,0.0,010324,,,{mode}");
        positions(&decode(&lines(&[&rmc]))).first().map(|p| p.1.fix)
    };
    assert_eq!(rmc("A", "A"), Some(Fix::Fix2d));
    assert_eq!(rmc("A", "D"), Some(Fix::Dgps));
    assert_eq!(rmc("A", "N"), None);
    assert_eq!(rmc("A", "S"), None);
    assert_eq!(rmc("V", "A"), None);
    let gll = |status: &str| {
        let gll = format!("GPGLL,4807.038,N,01131.000,E,120000,{status},A");
        positions(&decode(&lines(&[&gll]))).first().map(|p| p.1.fix)
    };
    assert_eq!(gll("A"), Some(Fix::Fix2d));
    assert_eq!(gll("V"), None);
}

#[test]
fn every_talker_is_decoded() {
    for talker in ["GP", "GN", "GL", "GA", "GB", "BD", "QZ"] {
        let rmc = format!("{talker}RMC,120000,A,4807.038,N,01131.000,E,0.0,0.0,010324,,,A");
        assert_eq!(positions(&decode(&lines(&[&rmc]))).len(), 1, "{talker}");
    }
}

#[test]
fn receiver_without_rmc_is_dated_by_zda() {
    // GGA + ZDA, the ZDA last in the cycle or alone in its own.
    let input = lines(&[
        "GPGGA,235958,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",
        "GPZDA,235958,31,12,2024,00,00",
        "GPGGA,235959,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",
        "GPGGA,000000,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",
    ]);
    let out = decode(&input);
    let when: Vec<_> = positions(&out).iter().map(|p| p.0).collect();
    assert_eq!(
        when,
        [
            at("2024-12-31 23:59:58"),
            at("2024-12-31 23:59:59"),
            at("2025-01-01 00:00:00")
        ]
    );
    // GLL only, after a ZDA in an earlier cycle.
    let input = lines(&[
        "GPZDA,101010.5,29,02,2024,,",
        "GPGLL,4807.038,N,01131.000,E,101011.00,A,A",
    ]);
    let (when, _) = only_position(&decode(&input));
    assert_eq!(when, at("2024-02-29 10:10:11"));
}

#[test]
fn the_first_cycle_is_dated_by_the_sentence_that_closes_it() {
    // As the overflow capture starts: the end of a cycle, then a new one with its date.
    let input = lines(&[
        "GPGLL,4808.9977,N,01135.0800,E,235959.02,A,A",
        "GPRMC,000000.02,A,4808.9978,N,01135.0800,E,000.0,000.0,070419,003.0,E,A",
    ]);
    let out = decode(&input);
    let when: Vec<_> = positions(&out).iter().map(|p| p.0).collect();
    assert_eq!(
        when,
        [at("2019-04-06 23:59:59.02"), at("2019-04-07 00:00:00.02")]
    );
}

#[test]
fn without_any_date_now_dates_the_fix() {
    let gga = |time: &str| {
        let gga = format!("GPGGA,{time},4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,");
        let mut d = NmeaDecoder::new("gps-1", MAX_LINE);
        let now = at("2024-06-01 00:00:30");
        let mut out = d.feed(nmea(&gga).as_bytes(), now);
        append(&mut out, d.finish(now));
        only_position(&out).0
    };
    assert_eq!(gga("000015"), at("2024-06-01 00:00:15"));
    // Just before midnight, seen just after it: yesterday.
    assert_eq!(gga("235959"), at("2024-05-31 23:59:59"));
}

#[test]
fn midnight_rollover() {
    // RMC dates every cycle; GGA-only cycles after the last RMC date move to the next day.
    let input = lines(&[
        "GPRMC,235959.50,A,4807.038,N,01131.000,E,0.0,0.0,311299,,,A",
        "GPGGA,235959.50,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",
        "GPGGA,000000.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",
        "GPGGA,000000.50,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",
        "GPRMC,000001.00,A,4807.038,N,01131.000,E,0.0,0.0,010100,,,A",
    ]);
    let out = decode(&input);
    let when: Vec<_> = positions(&out).iter().map(|p| p.0).collect();
    assert_eq!(
        when,
        [
            at("1999-12-31 23:59:59.5"),
            at("2000-01-01 00:00:00"),
            at("2000-01-01 00:00:00.5"),
            at("2000-01-01 00:00:01")
        ]
    );
}

#[test]
fn leap_second() {
    let input = lines(&[
        "GPRMC,235960,A,4807.038,N,01131.000,E,0.0,0.0,311216,,,A",
        "GPRMC,000000,A,4807.038,N,01131.000,E,0.0,0.0,010117,,,A",
    ]);
    let out = decode(&input);
    let when: Vec<_> = positions(&out).iter().map(|p| p.0).collect();
    assert_eq!(when.len(), 2);
    assert_eq!(when[0].format("%H:%M:%S").to_string(), "23:59:60");
    assert!(when[0] < when[1]);
}

#[test]
fn a_position_without_any_time_has_no_observed_at() {
    // NMEA 1.x GLL: position only.
    let out = decode(&lines(&["GPGLL,4807.038,N,01131.000,E"]));
    assert_eq!(out.events.len(), 1);
    assert_eq!(out.events[0].observed_at, None);
    assert!(matches!(out.events[0].body, Body::Position(_)));
}

#[test]
fn lost_fix_reports_one_status_then_silence_until_it_returns() {
    let fix = |t: &str| format!("GPRMC,{t},A,4807.038,N,01131.000,E,0.0,0.0,010324,,,A");
    let lost = |t: &str| format!("GPRMC,{t},V,,,,,,,010324,,,N");
    let bodies = [
        fix("120000"),
        fix("120001"),
        lost("120002"),
        lost("120003"),
        lost("120004"),
        fix("120005"),
        fix("120006"),
    ];
    let out = decode(&lines(
        &bodies.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let kinds: Vec<String> = out
        .events
        .iter()
        .map(|e| match &e.body {
            Body::Position(_) => format!("position {}", e.observed_at.unwrap().time()),
            Body::DeviceStatus(s) => {
                format!("fix {:?} {}", s.gnss_fix, e.observed_at.unwrap().time())
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "position 12:00:00",
            "position 12:00:01",
            "fix Some(false) 12:00:02",
            "fix Some(true) 12:00:05",
            "position 12:00:05",
            "position 12:00:06",
        ]
    );
    let Body::DeviceStatus(s) = &out.events[2].body else {
        unreachable!()
    };
    assert_eq!(s.device_id, "gps-1");
}

#[test]
fn untimed_no_fix_sentences_still_report_the_loss() {
    // No time and no ZDA: cycles are told apart by a sentence type coming again.
    let bodies = ["GPRMC,,V,,,,,,,,,,N", "GPGGA,,,,,,0,00,99.99,,,,,,"];
    let mut d = NmeaDecoder::new("gps-1", MAX_LINE);
    let mut out = d.feed(&lines(&bodies), now());
    for _ in 0..5 {
        append(&mut out, d.feed(&lines(&bodies), now()));
    }
    // Reported while the stream goes on, not only at its end.
    assert_eq!(statuses(&out), [(None, false)]);
    append(&mut out, d.finish(now()));
    assert_eq!(statuses(&out), [(None, false)]);
}

#[test]
fn ten_megabytes_of_garbage_are_bounded_and_rejected_once() {
    let mut d = NmeaDecoder::new("gps-1", MAX_LINE);
    let junk = vec![b'x'; 1 << 20];
    let mut out = Output::default();
    for _ in 0..10 {
        append(&mut out, d.feed(&junk, now()));
        assert!(d.line.capacity() <= 2 * MAX_LINE, "{}", d.line.capacity());
    }
    // Counted before the run ends, which on a noisy port may be never.
    assert_eq!(reasons(&out), BTreeMap::from([("garbage", 1)]));
    // The same from a `$`: one sentence, too long.
    let mut sentence = vec![b'$'];
    sentence.extend(std::iter::repeat_n(b'9', 10 << 20));
    append(&mut out, d.feed(&sentence, now()));
    assert!(d.line.capacity() <= 2 * MAX_LINE);
    assert_eq!(
        reasons(&out),
        BTreeMap::from([("garbage", 1), ("too_long", 1)])
    );
    assert!(out.rejected.iter().all(|r| r.sample.len() <= SAMPLE_LEN));
    // And the next line decodes.
    let rmc = nmea("GPRMC,120000,A,4807.038,N,01131.000,E,0.0,0.0,010324,,,A");
    append(&mut out, d.feed(format!("\r\n{rmc}").as_bytes(), now()));
    append(&mut out, d.finish(now()));
    assert_eq!(positions(&out).len(), 1);
    assert_eq!(out.rejected.len(), 2);
}

#[test]
fn garbage_before_a_sentence_on_its_line() {
    let rmc = nmea("GPRMC,120000,A,4807.038,N,01131.000,E,0.0,0.0,010324,,,A");
    let mut input = vec![0xB5, 0x62, 0x01, 0x02, 0x00];
    input.extend_from_slice(rmc.as_bytes());
    let out = decode(&input);
    assert_eq!(positions(&out).len(), 1);
    assert_eq!(reasons(&out), BTreeMap::from([("garbage", 1)]));
    assert_eq!(out.rejected[0].sample, [0xB5, 0x62, 0x01, 0x02, 0x00]);
}

#[test]
fn a_sentence_cut_by_the_next_one() {
    let rmc = nmea("GPRMC,120000,A,4807.038,N,01131.000,E,0.0,0.0,010324,,,A");
    let gga = nmea("GPGGA,120000,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,");
    // Cut short: rejected. Complete but without its line end: decoded.
    let input = format!("$GPGSV,3,1,12,20,78{}{}", rmc.trim_end(), gga);
    let out = decode(input.as_bytes());
    assert_eq!(reasons(&out), BTreeMap::from([("garbage", 1)]));
    let (_, p) = only_position(&out);
    assert_eq!(p.altitude_m, Some(545.4));
}

#[test]
fn comment_lines_are_skipped_only_at_line_start() {
    let rmc = nmea("GPRMC,120000,A,4807.038,N,01131.000,E,0.0,0.0,010324,,,A");
    let input = format!("# Name: test $GPRMC,not,a,sentence*00\n{rmc}#\r\n# end\n");
    let out = decode(input.as_bytes());
    assert_eq!(positions(&out).len(), 1);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    // Not at the start of its line, `#` is just a byte that is not NMEA.
    let out = decode(format!("x# not a comment\n{rmc}").as_bytes());
    assert_eq!(positions(&out).len(), 1);
    assert_eq!(reasons(&out), BTreeMap::from([("garbage", 1)]));
}

#[test]
fn malformed_fields_are_rejected() {
    for body in [
        "GPGGA,120000,4899.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",
        "GPGGA,120000,4807.038,X,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",
        "GPGGA,120000,4807.038,N,,,1,08,0.9,545.4,M,46.9,M,,",
        "GPGGA,126000,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",
        "GPGGA,120000,4807.038,N,01131.000,E,1,08,0.9,5e3,M,46.9,M,,",
        "GPGGA,120000,4807.038,N,01131.000,E,1,08,NaN,545.4,M,46.9,M,,",
        "GPGGA,120000,9007.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",
        "GPGGA,120000,4807.038,N",
        "GPRMC,120000,X,4807.038,N,01131.000,E,0.0,0.0,010324,,,A",
        "GPRMC,120000,A,4807.038,N,01131.000,E,0.0,0.0,310224,,,A",
        "GPRMC,120000,A,4807.038,N,01131.000,E,-1.0,0.0,010324,,,A",
        "GPRMC,120000,A,4807.038,N,01131.000,E,0.0,0.0,010324,,,Q",
        "GNGNS,120000,4807.038,N,01131.000,E,AX,10,0.9,545.4,46.9,,",
        "GPZDA,120000,01,13,2024,00,00",
        "GPZDA,120000,01,,2024,00,00",
        "GPZDA,120000,01,01,24,00,00",
        "GPVTG,x,T,,M,0.1,N,0.2,K,A",
    ] {
        let out = decode(nmea(body).as_bytes());
        assert!(out.events.is_empty(), "{body}: {:?}", out.events);
        assert_eq!(reasons(&out), BTreeMap::from([("malformed", 1)]), "{body}");
    }
}

#[test]
fn bytes_split_anywhere_decode_the_same() {
    let input = device_output(&read_capture("ublox-8.log"));
    let whole = decode(&input);
    assert_eq!(decode_in(&input, &[1]), whole);
    assert_eq!(decode_in(&input, &[2, 81, 82, 83]), whole);
}

// ---- fuzz-style ----

/// Fields that the parsers treat specially, to build sentences with valid checksums.
const TOKENS: &[&str] = &[
    "",
    "A",
    "V",
    "N",
    "S",
    "E",
    "W",
    "T",
    "M",
    "K",
    "D",
    "R",
    "0",
    "1",
    "2",
    "4",
    "6",
    "8",
    "9",
    "00",
    "03",
    "08",
    "99",
    "255",
    "256",
    "99.99",
    "0.9",
    "-3.5",
    "+1",
    ".",
    "1e5",
    "inf",
    "NaN",
    "4807.038",
    "01131.000",
    "9000.000",
    "18000.0000",
    "4860.0",
    "123519",
    "235960",
    "240000",
    "123519.1234567890123",
    "311224",
    "290223",
    "000000",
    "2024",
    "12",
    "31",
    "AN",
    "NNNN",
];

fn sentences() -> impl Strategy<Value = Vec<u8>> {
    let address = prop::sample::select(vec![
        "GPRMC", "GNGGA", "GLGLL", "GAGNS", "GBVTG", "BDZDA", "QZGGA", "GPGSV", "PUBX", "GPRM",
    ]);
    let fields = prop::collection::vec(prop::sample::select(TOKENS), 0..16);
    let sentence = (address, fields).prop_map(|(a, f)| nmea(&format!("{a},{}", f.join(","))));
    prop::collection::vec(sentence, 0..40).prop_map(|s| s.concat().into_bytes())
}

fn check_bounded(input: &[u8], out: &Output) {
    // Every event needs a sentence (at least 9 bytes) and gives at most two events; every
    // rejection needs at least a byte.
    assert!(out.events.len() + out.rejected.len() <= input.len() + 3);
    for r in &out.rejected {
        assert!(r.sample.len() <= SAMPLE_LEN);
        assert!(r.detail.len() <= 2 * MAX_LINE);
    }
    for e in &out.events {
        if let Body::Position(p) = &e.body {
            assert!(p.lat.abs() <= 90.0 && p.lon.abs() <= 180.0, "{p:?}");
        }
    }
}

/// One generated cycle: latitude (degrees, 1/10000 minutes, north), longitude (same, east),
/// and whether it has an RMC (else GGA alone, dated from earlier cycles).
type GeneratedCycle = (u32, u32, bool, u32, u32, bool, bool);

fn generated_cycles() -> impl Strategy<Value = (u32, Vec<GeneratedCycle>)> {
    let cycle = (
        0u32..90,
        0u32..600_000,
        any::<bool>(),
        0u32..180,
        0u32..600_000,
        any::<bool>(),
        any::<bool>(),
    );
    // Half the runs start just before midnight, to cross it.
    let start = prop_oneof![0u32..86_400, 86_370u32..86_400];
    (start, prop::collection::vec(cycle, 1..40))
}

proptest! {
    #[test]
    fn generated_fixes_come_out_as_sent(
        (start, cycles) in generated_cycles(),
        chunks in prop::collection::vec(1usize..200, 1..8),
    ) {
        // From a second of 28 Feb 2024 (a leap year), so runs cross midnight and the leap day.
        let base = at("2024-02-28 00:00:00") + TimeDelta::seconds(i64::from(start));
        let mut input = String::new();
        let mut want = Vec::new();
        for (i, &(lat_d, lat_m, north, lon_d, lon_m, east, rmc)) in cycles.iter().enumerate() {
            let when = base + TimeDelta::seconds(i as i64);
            let time = when.format("%H%M%S");
            let lat = format!("{lat_d:02}{:02}.{:04},{}", lat_m / 10_000, lat_m % 10_000,
                if north { 'N' } else { 'S' });
            let lon = format!("{lon_d:03}{:02}.{:04},{}", lon_m / 10_000, lon_m % 10_000,
                if east { 'E' } else { 'W' });
            if rmc || i == 0 {
                let date = when.format("%d%m%y");
                input += &nmea(&format!("GNRMC,{time}.00,A,{lat},{lon},1.5,45.0,{date},,,A"));
            }
            input += &nmea(&format!("GNGGA,{time}.00,{lat},{lon},1,08,0.9,12.5,M,,M,,"));
            let degrees = |d: u32, m: u32| f64::from(d) + f64::from(m) / 10_000.0 / 60.0;
            let sign = |positive: bool| if positive { 1.0 } else { -1.0 };
            want.push((when, sign(north) * degrees(lat_d, lat_m), sign(east) * degrees(lon_d, lon_m)));
        }
        let out = decode_in(input.as_bytes(), &chunks);
        prop_assert!(out.rejected.is_empty(), "{:?}", out.rejected);
        let got = positions(&out);
        prop_assert_eq!(got.len(), want.len());
        for ((when, p), (want_when, lat, lon)) in got.iter().zip(&want) {
            prop_assert_eq!(when, want_when);
            prop_assert!(close((p.lat, p.lon), (*lat, *lon)), "{:?} vs {} {}", p, lat, lon);
            prop_assert_eq!(p.fix, Fix::Fix3d);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        input in prop::collection::vec(any::<u8>(), 0..4096),
        chunks in prop::collection::vec(1usize..300, 1..8),
    ) {
        let out = decode_in(&input, &chunks);
        check_bounded(&input, &out);
        prop_assert_eq!(&out, &decode(&input));
    }

    #[test]
    fn sentences_with_valid_checksums_never_panic(
        input in sentences(),
        chunks in prop::collection::vec(1usize..300, 1..8),
    ) {
        let out = decode_in(&input, &chunks);
        check_bounded(&input, &out);
        prop_assert_eq!(&out, &decode(&input));
    }
}
