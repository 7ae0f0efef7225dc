//! Toledo continuous output, as weighbridge indicators send it (Mettler Toledo and the many
//! indicators that copy the format), 7–20 frames a second:
//!
//! ```text
//! STX  A  B  C  wwwwww  [tttttt]  CR  [checksum]
//! ```
//!
//! `A`, `B`, `C` are status words; `wwwwww` the displayed weight (gross or net) and `tttttt` the
//! tare, six ASCII digits each with no decimal point and no sign (some indicators blank leading
//! zeros with spaces); the short form has no tare. The checksum is the two's complement of the
//! low seven bits of the sum of every byte before it, STX and CR included.
//!
//! Status bits, from the Mettler Toledo indicator manuals (Wildcat, IND-series; the Fairbanks and
//! Ohaus manuals agree on every bit used here):
//!
//! - A, bits 0–2: where the decimal point (or dummy zeros) go: 0 → `XXXX00`, 1 → `XXXXX0`,
//!   2 → `XXXXXX`, 3 → `XXXXX.X`, … 7 → `X.XXXXX`. Bits 3–4 are the display increment (×1, ×2,
//!   ×5), which the digits already reflect. Bit 5 is always 1.
//! - B: bit 0 net, bit 1 negative, bit 2 out of range (over capacity or under zero), bit 3 in
//!   motion, bit 4 kg (else lb), bit 6 zero not yet captured after power-up.
//! - C, bits 0–2: unit when not lb/kg (1 grams, 2 metric tons; others — ounces, troy ounces,
//!   pennyweight, tons, custom — are not weighbridge units and are refused rather than guessed);
//!   bit 3 print request; bit 4 display expanded ×10 (a test mode, not a weighing). Bit 5 is
//!   always 1.
//!
//! Bit 7 of every byte is ignored: it is the parity bit when a 7-bit device is read as 8 data
//! bits, and no valid byte of the format uses it.
//!
//! # Which frames become events
//!
//! Only stable (no motion), in-range readings become [`Body::Weight`]. An indicator repeats the
//! same reading many times a second, so a reading is emitted only when it differs from the last
//! one emitted (weight or tare), or when the scale was in motion (or out of range) since: a
//! vehicle can only get on or off through motion, so every weighing yields exactly one event
//! per settled load, and a weighbridge standing still yields none. Motion frames are normal and
//! are neither events nor rejections. An unusable condition (out of range, not zeroed, expanded,
//! unknown unit) is reported once as a rejection when it starts, not once per frame.

use super::{Decoded, Output, Rejected, SAMPLE_LEN};
use qyt_proto::{Body, WeightReading};
use serde::{Deserialize, Serialize};

const STX: u8 = 0x02;
const CR: u8 = 0x0D;
/// STX, three status words, six weight digits, CR.
const SHORT_LEN: usize = 11;
/// STX, three status words, six weight digits, six tare digits, CR.
const LONG_LEN: usize = 17;
/// Bytes skipped between frames are reported in runs of at most this many, so that a line
/// carrying nothing but noise (e.g. a wrong baud rate) shows up without waiting for an STX.
const GARBAGE_RUN: usize = 256;

const LB_KG: f64 = 0.453_592_37;

/// Whether frames end with a checksum byte after the CR (an indicator setting).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Checksum {
    /// A byte after the CR that is not an STX is taken as the checksum and verified. A checksum
    /// that happens to equal STX is then read as the start of a frame, which the real STX right
    /// after it cancels: the frame is kept, only unverified.
    #[default]
    Auto,
    /// Every frame must end with a checksum that matches.
    On,
    /// Frames end at the CR; anything before the next STX is skipped as garbage.
    Off,
}

/// The `[source.toledo]` options of a serial source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ToledoOptions {
    #[serde(default)]
    pub checksum: Checksum,
}

/// A stable reading, in kilograms.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reading {
    kg: f64,
    tare_kg: Option<f64>,
}

/// What a well-formed frame says.
enum Status {
    Stable(Reading),
    Motion,
    /// A condition under which the indicator shows no valid weight.
    Unusable(&'static str, String),
}

/// Stream decoder: feed it the bytes as they arrive, in chunks split anywhere.
#[derive(Debug)]
pub struct ToledoDecoder {
    device_id: Option<String>,
    checksum: Checksum,
    /// The frame being assembled, STX first; empty while looking for an STX.
    frame: Vec<u8>,
    /// The frame is complete up to its CR and waits for a possible checksum byte.
    after_cr: bool,
    /// Bytes skipped while looking for an STX, and the first of them.
    skipped: usize,
    skipped_sample: Vec<u8>,
    /// The bytes being skipped are the rest of a frame already reported as bad.
    resyncing: bool,
    last: Option<Reading>,
    /// Motion or an unusable condition was seen since `last` was emitted.
    unsettled: bool,
    /// The unusable condition already reported, until a stable reading ends it.
    condition: Option<&'static str>,
}

impl ToledoDecoder {
    pub fn new(device_id: Option<String>, options: &ToledoOptions) -> ToledoDecoder {
        ToledoDecoder {
            device_id,
            checksum: options.checksum,
            frame: Vec::with_capacity(LONG_LEN + 1),
            after_cr: false,
            skipped: 0,
            skipped_sample: Vec::new(),
            resyncing: false,
            last: None,
            unsettled: true,
            condition: None,
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) -> Output {
        let mut out = Output::default();
        for &b in bytes {
            self.byte(b & 0x7F, &mut out);
        }
        out
    }

    /// The stream ended (port closed, end of a capture): a frame still waiting for its optional
    /// checksum is complete; a partial frame is reported as truncated. The decoder can then be
    /// fed a new stream; it still remembers the last reading emitted.
    pub fn finish(&mut self) -> Output {
        let mut out = Output::default();
        if self.after_cr && self.checksum == Checksum::Auto {
            self.complete(None, &mut out);
        } else if !self.frame.is_empty() {
            let len = self.frame.len();
            out.rejected.push(Rejected::new(
                "truncated",
                format!("stream ended inside a frame ({len} bytes)"),
                &self.frame,
            ));
            self.reset_frame();
        }
        self.flush_skipped(&mut out);
        self.resyncing = false;
        out
    }

    fn byte(&mut self, b: u8, out: &mut Output) {
        if self.frame.is_empty() {
            if b == STX {
                self.flush_skipped(out);
                self.resyncing = false;
                self.frame.push(b);
            } else {
                self.skip(b, out);
            }
            return;
        }
        // Only `Auto` and `On` wait after the CR (`Off` completes the frame at its CR).
        if self.after_cr {
            if self.checksum == Checksum::Auto && b == STX {
                self.complete(None, out);
                self.frame.push(b);
            } else {
                self.complete(Some(b), out);
            }
            return;
        }
        let pos = self.frame.len();
        let fits = match pos {
            // Status words A and C always have bit 5 set: a control character there means the
            // bytes are not aligned on a frame. B's bit 5 differs between manuals: any byte.
            1 | 3 => b & 0x20 != 0,
            2 => true,
            4..=9 => is_digit(b),
            10 => is_digit(b) || b == CR,
            11..=15 => is_digit(b),
            _ => b == CR,
        };
        if !fits {
            if pos > 1 {
                let mut seen = self.frame.clone();
                seen.push(b);
                out.rejected.push(Rejected::new(
                    "bad_frame",
                    format!("unexpected byte 0x{b:02X} at position {pos} of a frame"),
                    &seen,
                ));
                self.resyncing = true;
            }
            // A lone STX followed by anything unexpected was not a frame worth reporting
            // (e.g. a checksum byte equal to STX, read as a start in `Checksum::Auto`).
            self.reset_frame();
            if b == STX {
                self.frame.push(b);
            } else {
                self.skip(b, out);
            }
            return;
        }
        self.frame.push(b);
        // Status word B may be any byte, CR included: only CR at the end positions ends a frame.
        if b == CR && (pos == SHORT_LEN - 1 || pos == LONG_LEN - 1) {
            if self.checksum == Checksum::Off {
                self.complete(None, out);
            } else {
                self.after_cr = true;
            }
        }
    }

    fn skip(&mut self, b: u8, out: &mut Output) {
        if self.resyncing {
            return;
        }
        self.skipped += 1;
        if self.skipped_sample.len() < SAMPLE_LEN {
            self.skipped_sample.push(b);
        }
        if self.skipped >= GARBAGE_RUN {
            self.flush_skipped(out);
        }
    }

    fn flush_skipped(&mut self, out: &mut Output) {
        if self.skipped > 0 {
            out.rejected.push(Rejected::new(
                "garbage",
                format!("{} bytes outside any frame skipped", self.skipped),
                &self.skipped_sample,
            ));
            self.skipped = 0;
            self.skipped_sample.clear();
        }
    }

    fn reset_frame(&mut self) {
        self.frame.clear();
        self.after_cr = false;
    }

    /// The frame in `self.frame` (STX to CR) is complete, with its checksum byte if it had one.
    fn complete(&mut self, checksum: Option<u8>, out: &mut Output) {
        let frame = std::mem::take(&mut self.frame);
        self.after_cr = false;
        if let Some(got) = checksum {
            let sum = frame.iter().fold(0u8, |s, &b| s.wrapping_add(b));
            let want = sum.wrapping_neg() & 0x7F;
            if got != want {
                let mut seen = frame.clone();
                seen.push(got);
                out.rejected.push(Rejected::new(
                    "bad_checksum",
                    format!("checksum 0x{got:02X}, expected 0x{want:02X}"),
                    &seen,
                ));
                self.frame = reuse(frame);
                return;
            }
        }
        match interpret(&frame) {
            Ok(Status::Stable(r)) => {
                self.condition = None;
                if self.unsettled || self.last != Some(r) {
                    self.unsettled = false;
                    self.last = Some(r);
                    out.events.push(Decoded {
                        observed_at: None,
                        body: Body::Weight(WeightReading {
                            kg: r.kg,
                            stable: true,
                            tare_kg: r.tare_kg,
                            device_id: self.device_id.clone(),
                        }),
                    });
                }
            }
            Ok(Status::Motion) => self.unsettled = true,
            Ok(Status::Unusable(reason, detail)) => {
                self.unsettled = true;
                if self.condition != Some(reason) {
                    self.condition = Some(reason);
                    out.rejected.push(Rejected::new(reason, detail, &frame));
                }
            }
            Err(r) => out.rejected.push(r),
        }
        self.frame = reuse(frame);
    }
}

/// Gives the frame's allocation back, emptied, so that decoding allocates nothing per frame.
fn reuse(mut frame: Vec<u8>) -> Vec<u8> {
    frame.clear();
    frame
}

fn is_digit(b: u8) -> bool {
    b.is_ascii_digit() || b == b' '
}

/// A frame from STX to CR, well formed (positions checked by the framer).
fn interpret(f: &[u8]) -> Result<Status, Rejected> {
    let (&[_, a, b, c, ..], Some(weight)) = (f, f.get(4..10)) else {
        return Err(Rejected::new("bad_frame", "frame too short", f));
    };
    if b & 0x04 != 0 {
        return Ok(Status::Unusable(
            "out_of_range",
            "indicator reports over capacity or under zero".into(),
        ));
    }
    if b & 0x40 != 0 {
        return Ok(Status::Unusable(
            "not_zeroed",
            "indicator has not captured zero since power-up".into(),
        ));
    }
    if b & 0x08 != 0 {
        return Ok(Status::Motion);
    }
    if c & 0x10 != 0 {
        return Ok(Status::Unusable(
            "expanded",
            "indicator display is expanded x10 (test mode)".into(),
        ));
    }
    // Power of ten of one display count, in kg for metric units.
    let (metric_exp, lb) = match (c & 0x07, b & 0x10 != 0) {
        (0, true) => (0, false),
        (0, false) => (0, true),
        (1, _) => (-3, false),
        (2, _) => (3, false),
        (code, _) => {
            return Ok(Status::Unusable(
                "unsupported_unit",
                format!("status word C unit code {code} is not a weighbridge unit"),
            ))
        }
    };
    // Code 0 puts two dummy zeros after the digits, code 2 none, code 7 five decimals.
    let exp = 2 - i32::from(a & 0x07) + metric_exp;
    let to_kg = |digits: u32| {
        let v = if exp >= 0 {
            f64::from(digits) * 10f64.powi(exp)
        } else {
            f64::from(digits) / 10f64.powi(-exp)
        };
        if lb {
            v * LB_KG
        } else {
            v
        }
    };
    let weight = digits(weight).ok_or_else(|| bad_digits("weight", f))?;
    let mut kg = to_kg(weight);
    if b & 0x02 != 0 {
        kg = -kg;
    }
    // Only a net weight has its tare applied; a gross frame's tare field says nothing about
    // the load shown.
    let tare_kg = match f.get(10..16) {
        Some(tare) if f.len() == LONG_LEN && b & 0x01 != 0 => {
            Some(to_kg(digits(tare).ok_or_else(|| bad_digits("tare", f))?))
        }
        _ => None,
    };
    Ok(Status::Stable(Reading { kg, tare_kg }))
}

/// Six positions of leading spaces then digits (at least one).
fn digits(field: &[u8]) -> Option<u32> {
    let text = field.iter().skip_while(|&&b| b == b' ');
    let mut n: u32 = 0;
    let mut any = false;
    for &b in text {
        if !b.is_ascii_digit() {
            return None;
        }
        any = true;
        n = n * 10 + u32::from(b - b'0');
    }
    any.then_some(n)
}

fn bad_digits(field: &str, frame: &[u8]) -> Rejected {
    Rejected::new(
        "bad_frame",
        format!("{field} field is not digits with leading spaces"),
        frame,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Status words built from the manuals' bit tables.
    /// A: no decimal point (`XXXXXX`, code 2), increment x2 (bit 4), bit 5.
    const A_UNITS_X2: u8 = 0x02 | 0x10 | 0x20;
    /// A: `XXXX.XX` (code 4), increment x1 (bit 3), bit 5.
    const A_HUNDREDTHS: u8 = 0x04 | 0x08 | 0x20;
    /// A: `XXXX00` (code 0): two dummy zeros, increment x1, bit 5.
    const A_HUNDREDS: u8 = 0x08 | 0x20;
    const B_KG: u8 = 0x10 | 0x20;
    const B_LB: u8 = 0x20;
    const NET: u8 = 0x01;
    const NEGATIVE: u8 = 0x02;
    const OVER: u8 = 0x04;
    const MOTION: u8 = 0x08;
    const C_PLAIN: u8 = 0x20;

    fn frame(a: u8, b: u8, c: u8, weight: &str, tare: Option<&str>, checksum: bool) -> Vec<u8> {
        let mut f = vec![STX, a, b, c];
        f.extend_from_slice(weight.as_bytes());
        if let Some(t) = tare {
            f.extend_from_slice(t.as_bytes());
        }
        f.push(CR);
        if checksum {
            let sum = f.iter().fold(0u8, |s, &x| s.wrapping_add(x));
            f.push(sum.wrapping_neg() & 0x7F);
        }
        f
    }

    fn stable_kg(w: &str) -> Vec<u8> {
        frame(A_UNITS_X2, B_KG, C_PLAIN, w, Some("000000"), false)
    }

    fn weights(out: &Output) -> Vec<(f64, Option<f64>)> {
        out.events
            .iter()
            .map(|e| match &e.body {
                Body::Weight(w) => {
                    assert!(w.stable);
                    (w.kg, w.tare_kg)
                }
                other => panic!("not a weight: {other:?}"),
            })
            .collect()
    }

    fn reasons(out: &Output) -> Vec<&'static str> {
        out.rejected.iter().map(|r| r.reason).collect()
    }

    fn decoder(checksum: Checksum) -> ToledoDecoder {
        ToledoDecoder::new(Some("wb-1".into()), &ToledoOptions { checksum })
    }

    #[test]
    fn gross_frame_with_tare_field() {
        let mut d = decoder(Checksum::Off);
        let out = d.feed(&stable_kg("032540"));
        assert_eq!(weights(&out), vec![(32540.0, None)]);
        assert!(out.rejected.is_empty());
        let Body::Weight(w) = &out.events[0].body else {
            unreachable!()
        };
        assert_eq!(w.device_id.as_deref(), Some("wb-1"));
        assert_eq!(out.events[0].observed_at, None);
    }

    #[test]
    fn net_negative_decimals_and_tare() {
        let mut d = decoder(Checksum::Off);
        let f = frame(
            A_HUNDREDTHS,
            B_KG | NET | NEGATIVE,
            C_PLAIN,
            "001250",
            Some("015000"),
            false,
        );
        assert_eq!(weights(&d.feed(&f)), vec![(-12.5, Some(150.0))]);
    }

    #[test]
    fn dummy_zeros_and_leading_spaces() {
        let mut d = decoder(Checksum::Off);
        let f = frame(A_HUNDREDS, B_KG, C_PLAIN, "   325", None, false);
        assert_eq!(weights(&d.feed(&f)), vec![(32500.0, None)]);
    }

    #[test]
    fn short_form_has_no_tare() {
        let mut d = decoder(Checksum::Off);
        let f = frame(A_UNITS_X2, B_KG | NET, C_PLAIN, "018000", None, false);
        assert_eq!(f.len(), SHORT_LEN);
        assert_eq!(weights(&d.feed(&f)), vec![(18000.0, None)]);
    }

    #[test]
    fn pounds_and_tonnes_become_kg() {
        let mut d = decoder(Checksum::Off);
        let lb = frame(
            A_UNITS_X2,
            B_LB | NET,
            C_PLAIN,
            "010000",
            Some("002000"),
            false,
        );
        let got = weights(&d.feed(&lb));
        assert!((got[0].0 - 4535.9237).abs() < 1e-9, "{got:?}");
        assert!((got[0].1.unwrap() - 907.18474).abs() < 1e-9, "{got:?}");
        // Metric tons with two decimals: 32.54 t.
        let t = frame(A_HUNDREDTHS, B_KG, C_PLAIN | 0x02, "003254", None, false);
        assert_eq!(weights(&d.feed(&t)), vec![(32540.0, None)]);
        let g = frame(A_UNITS_X2, B_KG, C_PLAIN | 0x01, "012345", None, false);
        assert_eq!(weights(&d.feed(&g)), vec![(12.345, None)]);
    }

    #[test]
    fn repeats_and_motion_are_suppressed() {
        let mut d = decoder(Checksum::Off);
        let mut stream = Vec::new();
        for _ in 0..20 {
            stream.extend(stable_kg("000000"));
        }
        // A truck drives on: motion frames with changing weights, then it settles.
        for w in ["004000", "018000", "031000", "032560"] {
            stream.extend(frame(
                A_UNITS_X2,
                B_KG | MOTION,
                C_PLAIN,
                w,
                Some("000000"),
                false,
            ));
        }
        for _ in 0..20 {
            stream.extend(stable_kg("032540"));
        }
        // The driver shifts: motion, then the same weight again — a new settled reading.
        stream.extend(frame(
            A_UNITS_X2,
            B_KG | MOTION,
            C_PLAIN,
            "032600",
            Some("000000"),
            false,
        ));
        stream.extend(stable_kg("032540"));
        // A stable change without motion (zero tracking, a slow drift) is a new reading.
        stream.extend(stable_kg("032520"));
        stream.extend(stable_kg("032520"));
        let out = d.feed(&stream);
        assert!(out.rejected.is_empty(), "{:?}", out.rejected);
        assert_eq!(
            weights(&out),
            vec![
                (0.0, None),
                (32540.0, None),
                (32540.0, None),
                (32520.0, None)
            ]
        );
    }

    #[test]
    fn unusable_conditions_are_reported_once_per_episode() {
        let mut d = decoder(Checksum::Off);
        let over = frame(A_UNITS_X2, B_KG | OVER, C_PLAIN, "999999", None, false);
        let over_moving = frame(
            A_UNITS_X2,
            B_KG | OVER | MOTION,
            C_PLAIN,
            "999999",
            None,
            false,
        );
        let mut stream = Vec::new();
        for _ in 0..10 {
            stream.extend(&over);
            stream.extend(&over_moving);
        }
        let out = d.feed(&stream);
        assert_eq!(reasons(&out), vec!["out_of_range"]);
        assert!(out.events.is_empty());
        let out = d.feed(&stable_kg("040000"));
        assert_eq!(weights(&out), vec![(40000.0, None)]);
        let out = d.feed(&over);
        assert_eq!(reasons(&out), vec!["out_of_range"]);

        let mut d = decoder(Checksum::Off);
        let not_zeroed = frame(A_UNITS_X2, B_KG | 0x40, C_PLAIN, "000000", None, false);
        let expanded = frame(A_UNITS_X2, B_KG, C_PLAIN | 0x10, "000000", None, false);
        let ounces = frame(A_UNITS_X2, B_KG, C_PLAIN | 0x03, "000000", None, false);
        let out = d.feed(&[not_zeroed, expanded, ounces].concat());
        assert_eq!(
            reasons(&out),
            vec!["not_zeroed", "expanded", "unsupported_unit"]
        );
        assert!(out.events.is_empty());
    }

    #[test]
    fn checksums_are_verified() {
        let good = frame(A_UNITS_X2, B_KG, C_PLAIN, "032540", Some("000000"), true);
        for mode in [Checksum::On, Checksum::Auto] {
            let mut d = decoder(mode);
            // Two frames, so that `Auto` sees the byte after the checksum too.
            let out = d.feed(&[good.clone(), good.clone()].concat());
            assert_eq!(weights(&out), vec![(32540.0, None)], "{mode:?}");
            assert!(out.rejected.is_empty(), "{mode:?}: {:?}", out.rejected);
            let mut bad = good.clone();
            *bad.last_mut().unwrap() ^= 0x01;
            let mut d = decoder(mode);
            let out = d.feed(&bad);
            assert_eq!(reasons(&out), vec!["bad_checksum"], "{mode:?}");
            assert!(out.events.is_empty());
        }
        // Auto without checksums: the next STX completes the frame; the end of the stream too.
        let plain = stable_kg("032540");
        let mut d = decoder(Checksum::Auto);
        assert!(
            d.feed(&plain).events.is_empty(),
            "waits for a possible checksum"
        );
        let out = d.feed(&stable_kg("032520"));
        assert_eq!(weights(&out), vec![(32540.0, None)]);
        assert_eq!(weights(&d.finish()), vec![(32520.0, None)]);
        // Off with a device that sends checksums: the extra byte is skipped as garbage.
        let mut d = decoder(Checksum::Off);
        let out = d.feed(&[good.clone(), good.clone()].concat());
        assert_eq!(weights(&out), vec![(32540.0, None)]);
        assert_eq!(reasons(&out), vec!["garbage"]);
    }

    #[test]
    fn checksum_equal_to_stx_is_not_lost() {
        // Find a weight whose frame's checksum is STX.
        let f = (0..1_000_000)
            .map(|w| {
                frame(
                    A_UNITS_X2,
                    B_KG,
                    C_PLAIN,
                    &format!("{w:06}"),
                    Some("000000"),
                    true,
                )
            })
            .find(|f| *f.last().unwrap() == STX)
            .expect("some weight has checksum 0x02");
        let next = frame(A_UNITS_X2, B_KG, C_PLAIN, "000000", Some("000000"), true);
        let mut d = decoder(Checksum::Auto);
        let out = d.feed(&[f.clone(), next.clone(), next].concat());
        assert!(out.rejected.is_empty(), "{:?}", out.rejected);
        assert_eq!(out.events.len(), 2);
        let mut d = decoder(Checksum::On);
        let out = d.feed(&[f, stable_kg("000000")].concat());
        assert!(out.rejected.is_empty(), "{:?}", out.rejected);
        assert_eq!(out.events.len(), 1);
    }

    #[test]
    fn garbage_is_skipped_and_the_next_stx_resyncs() {
        let mut d = decoder(Checksum::Off);
        let mut stream = b"noise\r\n".to_vec();
        stream.extend(stable_kg("010000"));
        // A frame cut short by a new STX (a byte lost on the line), then a good one.
        stream.extend(&stable_kg("020000")[..8]);
        stream.extend(stable_kg("030000"));
        // A frame with a letter in its weight: the rest of it is not reported again.
        let mut bad = stable_kg("040000");
        bad[6] = b'x';
        stream.extend(&bad);
        stream.extend(stable_kg("050000"));
        let out = d.feed(&stream);
        assert_eq!(reasons(&out), vec!["garbage", "bad_frame", "bad_frame"]);
        assert_eq!(out.rejected[0].sample, b"noise\r\n");
        assert_eq!(
            weights(&out),
            vec![(10000.0, None), (30000.0, None), (50000.0, None)]
        );
        // Endless noise is reported in bounded runs, without waiting for an STX.
        let out = d.feed(&[b'?'; 1000]);
        assert_eq!(reasons(&out), vec!["garbage"; 3]);
        assert!(out.rejected.iter().all(|r| r.sample.len() <= SAMPLE_LEN));
        assert_eq!(reasons(&d.finish()), vec!["garbage"]);
    }

    #[test]
    fn parity_bits_are_ignored() {
        let mut d = decoder(Checksum::On);
        let f: Vec<u8> = frame(A_UNITS_X2, B_KG, C_PLAIN, "032540", None, true)
            .into_iter()
            .map(|b| if b.count_ones() % 2 == 1 { b | 0x80 } else { b })
            .collect();
        assert_eq!(weights(&d.feed(&f)), vec![(32540.0, None)]);
    }

    #[test]
    fn truncated_frame_at_end_of_stream() {
        let mut d = decoder(Checksum::On);
        d.feed(&stable_kg("010000")[..9]);
        assert_eq!(reasons(&d.finish()), vec!["truncated"]);
        // The decoder takes a new stream afterwards.
        let out = d.feed(&frame(A_UNITS_X2, B_KG, C_PLAIN, "010000", None, true));
        assert_eq!(weights(&out), vec![(10000.0, None)]);
    }

    #[test]
    fn chunks_split_anywhere_decode_the_same() {
        let mut stream = Vec::new();
        for (i, w) in ["000000", "012000", "012000", "025460"].iter().enumerate() {
            stream.extend(frame(A_UNITS_X2, B_KG, C_PLAIN, w, Some("000000"), true));
            if i == 1 {
                stream.extend(b"\x07junk");
            }
        }
        let whole = decoder(Checksum::Auto).feed(&stream);
        assert_eq!(weights(&whole).len(), 3);
        for size in 1..stream.len() {
            let mut d = decoder(Checksum::Auto);
            let mut out = Output::default();
            for chunk in stream.chunks(size) {
                let o = d.feed(chunk);
                out.events.extend(o.events);
                out.rejected.extend(o.rejected);
            }
            assert_eq!(out, whole, "chunks of {size}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(
            data in proptest::collection::vec(any::<u8>(), 0..4096),
            cut in 1usize..64,
            mode in prop_oneof![Just(Checksum::Auto), Just(Checksum::On), Just(Checksum::Off)],
        ) {
            let mut whole = decoder(mode);
            let mut expected = whole.feed(&data);
            let tail = whole.finish();
            expected.events.extend(tail.events);
            expected.rejected.extend(tail.rejected);
            prop_assert!(expected.events.len() <= data.len() / SHORT_LEN);
            prop_assert!(expected.rejected.len() <= data.len());
            prop_assert!(expected.rejected.iter().all(|r| r.sample.len() <= SAMPLE_LEN));

            let mut d = decoder(mode);
            let mut got = Output::default();
            for chunk in data.chunks(cut) {
                let o = d.feed(chunk);
                prop_assert!(d.frame.capacity() <= LONG_LEN + 1);
                got.events.extend(o.events);
                got.rejected.extend(o.rejected);
            }
            let tail = d.finish();
            got.events.extend(tail.events);
            got.rejected.extend(tail.rejected);
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn frames_among_noise_are_found(
            noise in proptest::collection::vec(any::<u8>().prop_filter("no STX", |b| b & 0x7F != STX), 0..64),
            w in 0u32..1_000_000,
        ) {
            let mut d = decoder(Checksum::On);
            let mut stream = noise;
            stream.extend(frame(A_UNITS_X2, B_KG, C_PLAIN, &format!("{w:06}"), Some("000000"), true));
            let out = d.feed(&stream);
            prop_assert_eq!(weights(&out), vec![(f64::from(w), None)]);
        }
    }
}
