//! NMEA 0183 from GNSS receivers: a stream decoder from the receiver's bytes to one position per
//! fix cycle, and to a status event when the fix is lost or regained.
//!
//! Decoded: RMC, GGA, GLL, GNS, VTG and ZDA from any talker (GP, GN, GL, GA, GB, BD, QZ...).
//! Everything else (GSA, GSV, TXT, HDT, proprietary `$P...`) is valid NMEA that a position does not
//! need: skipped without a rejection.
//!
//! Decisions, and why:
//! - **Checksums.** A checksum that is present is always verified, whatever the sentence (a wrong
//!   one says the line is damaged, which the metrics should see). A missing checksum is rejected
//!   for every standard sentence: all receivers we know send one, and a sentence without one is
//!   almost always a line cut short (the last line of `ublox-8.log` is one). gpsd accepts some
//!   checksum-less lines; for customs evidence we prefer to lose a position than to record a
//!   damaged one. Proprietary sentences without a checksum are skipped silently: vendors' formats
//!   vary and we use none of them.
//! - **Lines.** A sentence runs from `$` to CR or LF, at most `max_line` bytes (`$` to checksum,
//!   without the line end). Longer: rejected `too_long` and discarded up to the next `$` or line
//!   end. Bytes outside any sentence (binary protocols sharing the port, a wrong baud rate) form
//!   one `garbage` rejection per run, reported when the run ends or reaches `max_line` bytes, so a
//!   port that only ever sends noise is still counted. A `$` inside a sentence starts a new one:
//!   the interrupted sentence is decoded if its checksum is complete, else rejected `garbage`.
//!   Lines starting with `#` are gpsd's comments in captured logs, skipped silently. No state grows
//!   with the input beyond one line of `max_line` bytes.
//! - **Cycles.** A receiver reports each fix as several sentences with the same time of day. A
//!   cycle gathers them and ends when a sentence brings another time, when a sentence of the same
//!   talker and type comes again (receivers that send no time while they have no fix, or whose
//!   time does not advance, still have their cycles delimited), or at [`NmeaDecoder::finish`].
//!   Sentences without a time (VTG, or a GGA with an empty time) join the open cycle.
//! - **Position.** From the GGA or GNS with the most satellites, else RMC, else GLL: GGA and GNS
//!   carry the fix quality and the satellite count, the most complete statement of the fix, so
//!   when a cycle has one, it decides whether the cycle has a fix at all. Speed and course from
//!   RMC, else VTG; altitude, satellites and HDOP from the chosen GGA/GNS.
//! - **Validity.** No fix: RMC status V, GLL status V, a mode indicator N (or S/M: simulated and
//!   manual positions are not observations), GGA quality 0 (or 7/8, same reason), GNS mode all N,
//!   navigational status U/V, or a satellite-based fix from fewer than 3 satellites (as gpsd:
//!   Hemisphere and Garmin receivers report quality 1 with 0 satellites while they coast).
//! - **Fix quality.** GGA 1 (and 3, PPS) is `fix3d` with an altitude and at least 4 satellites
//!   (or an unknown count), else `fix2d`; 2 and 9 (SBAS) `dgps`; 4 and 5 `rtk`; 6 `estimated`.
//!   GNS and the RMC/GLL mode indicators map the same way (D/P dgps, R/F rtk, E estimated); a
//!   position from RMC or GLL alone, which have no altitude, is `fix2d`. GSA is not used: it has
//!   no time, so which cycle it belongs to is a guess.
//! - **Dates.** Only RMC and ZDA carry one. A cycle is dated by its own RMC/ZDA, else by the last
//!   date seen (a day later if the time of day went back by more than 12 hours: midnight), else by
//!   a dated sentence that closes it (so the first cycle of a capture, often a lone GLL or GGA, is
//!   dated too), else by `now`'s date (corrected the same way across midnight). RMC's two-digit
//!   year is read in 1980–2079. Dates in invalid sentences are used: receivers keep time without
//!   a fix. A cycle with no time at all (NMEA 1.x GLL has none) has no `observed_at`: the source
//!   then uses the time of reception.
//! - **Status.** A cycle without a fix yields no position; the first such cycle after a fix (or
//!   at start) yields one `DeviceStatus { gnss_fix: Some(false) }`, then nothing until a fix
//!   returns. The first fix after that yields `gnss_fix: Some(true)` before its position, so the
//!   hub can close the outage without inferring it from positions. Cycles with no positional
//!   sentence (ZDA or VTG alone) say nothing either way.

use super::{Decoded, Output, Rejected, SAMPLE_LEN};
use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Utc};
use qyt_proto::{Body, Fix, PositionReading, StatusReport};

#[cfg(test)]
mod tests;

const KNOT_KMH: f64 = 1.852;

/// Distinct talker+type pairs one cycle can hold; more means the cycle is not one.
const CYCLE_SENTENCES: usize = 16;

/// A talker and sentence type, e.g. `GNRMC`.
type Address = [u8; 5];

/// Decodes one receiver's NMEA stream. Feed it bytes as they come, in pieces of any size.
#[derive(Debug)]
pub struct NmeaDecoder {
    device_id: String,
    max_line: usize,
    scan: Scan,
    /// The sentence being assembled (from its `$`), or the first bytes of a garbage run.
    line: Vec<u8>,
    cycle: Option<Cycle>,
    /// The latest date known, and the time of day it was known at.
    date: Option<(NaiveDate, NaiveTime)>,
    /// Whether the last cycle that said anything had a fix; `None` until one has.
    has_fix: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// At the start of a line.
    LineStart,
    /// Inside a sentence, kept in `line`.
    Sentence,
    /// A `#` line, skipped to its end.
    Comment,
    /// A run of bytes that are not a sentence: `line` keeps a sample, `len` counts them.
    Garbage { len: usize },
    /// The rest of a run already rejected, skipped up to the next `$` or line end.
    Discard,
}

impl NmeaDecoder {
    /// `max_line`: the longest sentence accepted, `$` to checksum (82 by the standard, with CR LF;
    /// real receivers send longer GSV and GNS lines, so allow some room).
    pub fn new(device_id: impl Into<String>, max_line: usize) -> Self {
        NmeaDecoder {
            device_id: device_id.into(),
            max_line,
            scan: Scan::LineStart,
            line: Vec::new(),
            cycle: None,
            date: None,
            has_fix: None,
        }
    }

    /// Decodes what `bytes` complete. `now` only dates fixes when no date has been seen yet.
    pub fn feed(&mut self, bytes: &[u8], now: DateTime<Utc>) -> Output {
        let mut out = Output::default();
        for &b in bytes {
            self.push(b, now, &mut out);
        }
        out
    }

    /// End of input: decodes an unterminated last line and reports the pending cycle.
    pub fn finish(&mut self, now: DateTime<Utc>) -> Output {
        let mut out = Output::default();
        match self.scan {
            Scan::Sentence => self.end_sentence(false, now, &mut out),
            Scan::Garbage { len } => self.reject_garbage(len, &mut out),
            Scan::LineStart | Scan::Comment | Scan::Discard => {}
        }
        self.scan = Scan::LineStart;
        self.line.clear();
        self.flush(now, &mut out);
        out
    }

    fn push(&mut self, b: u8, now: DateTime<Utc>, out: &mut Output) {
        match self.scan {
            Scan::LineStart => match b {
                b'$' => self.start_sentence(),
                b'#' => self.scan = Scan::Comment,
                b'\r' | b'\n' | b' ' | b'\t' => {}
                _ => {
                    self.line.clear();
                    self.line.push(b);
                    self.scan = Scan::Garbage { len: 1 };
                }
            },
            Scan::Comment => {
                if b == b'\n' {
                    self.scan = Scan::LineStart;
                }
            }
            Scan::Discard => match b {
                b'$' => self.start_sentence(),
                b'\r' | b'\n' => self.scan = Scan::LineStart,
                _ => {}
            },
            Scan::Garbage { len } => match b {
                b'$' => {
                    self.reject_garbage(len, out);
                    self.start_sentence();
                }
                b'\r' | b'\n' => {
                    self.reject_garbage(len, out);
                    self.scan = Scan::LineStart;
                }
                _ => {
                    if self.line.len() < SAMPLE_LEN {
                        self.line.push(b);
                    }
                    let len = len.saturating_add(1);
                    if len >= self.max_line {
                        // Reported now rather than at the run's end, which may never come.
                        self.reject_garbage(len, out);
                        self.scan = Scan::Discard;
                    } else {
                        self.scan = Scan::Garbage { len };
                    }
                }
            },
            Scan::Sentence => match b {
                b'\r' | b'\n' => {
                    self.end_sentence(false, now, out);
                    self.scan = Scan::LineStart;
                }
                b'$' => {
                    self.end_sentence(true, now, out);
                    self.start_sentence();
                }
                0x20..=0x7e if self.line.len() < self.max_line => self.line.push(b),
                0x20..=0x7e => {
                    let detail = format!("sentence longer than {} bytes", self.max_line);
                    out.rejected
                        .push(Rejected::new("too_long", detail, &self.line));
                    self.line.clear();
                    self.scan = Scan::Discard;
                }
                _ => {
                    self.line.push(b);
                    let detail = format!("byte 0x{b:02X} inside a sentence");
                    out.rejected
                        .push(Rejected::new("garbage", detail, &self.line));
                    self.line.clear();
                    self.scan = Scan::Discard;
                }
            },
        }
    }

    fn start_sentence(&mut self) {
        self.line.clear();
        self.line.push(b'$');
        self.scan = Scan::Sentence;
    }

    fn reject_garbage(&mut self, len: usize, out: &mut Output) {
        let detail = format!("{len} bytes outside any sentence");
        out.rejected
            .push(Rejected::new("garbage", detail, &self.line));
        self.line.clear();
    }

    /// `cut`: the sentence was ended by the `$` of the next one rather than by a line end.
    fn end_sentence(&mut self, cut: bool, now: DateTime<Utc>, out: &mut Output) {
        let line = std::mem::take(&mut self.line);
        match parse(&line, cut) {
            Ok(Some(sentence)) => self.accept(sentence, now, out),
            Ok(None) => {}
            Err(e) => out
                .rejected
                .push(Rejected::new(e.reason(), e.to_string(), &line)),
        }
        // Keep the allocation for the next line.
        self.line = line;
        self.line.clear();
    }

    fn accept(&mut self, s: Sentence, now: DateTime<Utc>, out: &mut Output) {
        // Before the open cycle is closed, so that a dated sentence closing it can date it.
        if let (Some(date), Some(time)) = (s.date, s.time) {
            self.date = Some((date, time));
        }
        let new_cycle = match &self.cycle {
            None => true,
            Some(c) => {
                c.has(&s.address) || matches!((c.time, s.time), (Some(a), Some(b)) if a != b)
            }
        };
        if new_cycle {
            self.flush(now, out);
        }
        self.cycle.get_or_insert_with(Cycle::default).merge(s);
    }

    /// Reports the open cycle, if any.
    fn flush(&mut self, now: DateTime<Utc>, out: &mut Output) {
        let Some(c) = self.cycle.take() else {
            return;
        };
        let observed_at = c
            .time
            .map(|t| self.date_of(t, c.date, now).and_time(t).and_utc());
        let fix = if c.solution_seen {
            c.solution
        } else if c.basic_seen {
            c.rmc.or(c.gll).map(Solution::from)
        } else {
            // Nothing in this cycle says whether there is a fix.
            return;
        };
        match fix {
            Some(s) => {
                if self.has_fix == Some(false) {
                    out.events.push(self.status(true, observed_at));
                }
                self.has_fix = Some(true);
                let reading = PositionReading {
                    device_id: self.device_id.clone(),
                    lat: s.lat,
                    lon: s.lon,
                    speed_kmh: c.rmc_motion.speed_kmh.or(c.vtg_motion.speed_kmh),
                    course: c.rmc_motion.course.or(c.vtg_motion.course),
                    fix: s.fix,
                    altitude_m: s.altitude_m,
                    satellites: s.satellites,
                    hdop: s.hdop,
                };
                out.events.push(Decoded {
                    observed_at,
                    body: Body::Position(reading),
                });
            }
            None => {
                if self.has_fix != Some(false) {
                    out.events.push(self.status(false, observed_at));
                }
                self.has_fix = Some(false);
            }
        }
    }

    fn status(&self, gnss_fix: bool, observed_at: Option<DateTime<Utc>>) -> Decoded {
        Decoded {
            observed_at,
            body: Body::DeviceStatus(StatusReport {
                device_id: self.device_id.clone(),
                online: None,
                battery_pct: None,
                gnss_fix: Some(gnss_fix),
                detail: serde_json::Value::Null,
            }),
        }
    }

    /// The date of a cycle at `time` whose own sentences carried `own` (or no) date.
    fn date_of(
        &mut self,
        time: NaiveTime,
        own: Option<NaiveDate>,
        now: DateTime<Utc>,
    ) -> NaiveDate {
        if let Some(date) = own {
            return date;
        }
        match self.date {
            Some((date, at)) => {
                let (date, later) = date_at(date, at, time);
                // Carried forward so that the next midnight is seen relative to this cycle.
                if later {
                    self.date = Some((date, time));
                }
                date
            }
            None => date_at(now.date_naive(), now.time(), time).0,
        }
    }
}

/// The date at time of day `time`, knowing that it was `date` at `at`, the two being less than
/// 12 hours apart (cycles are a second apart): a time more than 12 hours earlier is on the next
/// day, more than 12 hours later on the day before. Also says whether `time` is after `at`.
fn date_at(date: NaiveDate, at: NaiveTime, time: NaiveTime) -> (NaiveDate, bool) {
    let half_day = TimeDelta::hours(12);
    let diff = time.signed_duration_since(at);
    if diff < -half_day {
        (date.succ_opt().unwrap_or(date), true)
    } else if diff > half_day {
        (date.pred_opt().unwrap_or(date), false)
    } else {
        (date, diff >= TimeDelta::zero())
    }
}

/// The sentences of one fix cycle, merged.
#[derive(Debug, Default)]
struct Cycle {
    time: Option<NaiveTime>,
    date: Option<NaiveDate>,
    addresses: [Address; CYCLE_SENTENCES],
    n_addresses: usize,
    /// A GGA or GNS was seen: they decide whether the cycle has a fix.
    solution_seen: bool,
    /// The GGA/GNS fix with the most satellites.
    solution: Option<Solution>,
    /// An RMC or GLL was seen.
    basic_seen: bool,
    rmc: Option<Basic>,
    gll: Option<Basic>,
    rmc_motion: Motion,
    vtg_motion: Motion,
}

impl Cycle {
    /// Whether a sentence from `address` is already in the cycle (or the cycle is full).
    fn has(&self, address: &Address) -> bool {
        self.n_addresses == CYCLE_SENTENCES || self.addresses[..self.n_addresses].contains(address)
    }

    fn merge(&mut self, s: Sentence) {
        if let Some(slot) = self.addresses.get_mut(self.n_addresses) {
            *slot = s.address;
            self.n_addresses += 1;
        }
        self.time = self.time.or(s.time);
        self.date = self.date.or(s.date);
        match s.data {
            Data::Solution(fix) => {
                self.solution_seen = true;
                if let Some(new) = fix {
                    let more = |s: &Solution| s.satellites.unwrap_or(0);
                    if self.solution.is_none_or(|old| more(&new) > more(&old)) {
                        self.solution = Some(new);
                    }
                }
            }
            Data::Rmc(fix, motion) => {
                self.basic_seen = true;
                if self.rmc.is_none() && fix.is_some() {
                    self.rmc = fix;
                    self.rmc_motion = motion;
                }
            }
            Data::Gll(fix) => {
                self.basic_seen = true;
                self.gll = self.gll.or(fix);
            }
            Data::Vtg(motion) => {
                if self.vtg_motion == Motion::default() {
                    self.vtg_motion = motion;
                }
            }
            Data::Zda => {}
        }
    }
}

/// A position from GGA or GNS.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Solution {
    lat: f64,
    lon: f64,
    fix: Fix,
    altitude_m: Option<f64>,
    satellites: Option<u8>,
    hdop: Option<f64>,
}

/// A position from RMC or GLL.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Basic {
    lat: f64,
    lon: f64,
    fix: Fix,
}

impl From<Basic> for Solution {
    fn from(b: Basic) -> Solution {
        Solution {
            lat: b.lat,
            lon: b.lon,
            fix: b.fix,
            altitude_m: None,
            satellites: None,
            hdop: None,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Motion {
    speed_kmh: Option<f64>,
    course: Option<f64>,
}

/// What one decoded sentence says.
#[derive(Debug)]
struct Sentence {
    address: Address,
    time: Option<NaiveTime>,
    date: Option<NaiveDate>,
    data: Data,
}

/// `None` fixes: the sentence says there is no fix.
#[derive(Debug)]
enum Data {
    /// GGA or GNS.
    Solution(Option<Solution>),
    Rmc(Option<Basic>, Motion),
    Gll(Option<Basic>),
    Vtg(Motion),
    Zda,
}

#[derive(Debug, thiserror::Error)]
enum SentenceError {
    #[error("checksum {stated:02X} stated, {computed:02X} computed")]
    Mismatch { stated: u8, computed: u8 },
    #[error("checksum field is not two hex digits")]
    ChecksumField,
    #[error("no checksum")]
    NoChecksum,
    #[error("sentence cut short by the next '$'")]
    Cut,
    #[error("{kind}: {count} fields, at least {need} expected")]
    TooFewFields {
        kind: &'static str,
        count: usize,
        need: usize,
    },
    #[error("{kind}: bad {field} {value:?}")]
    Field {
        kind: &'static str,
        field: &'static str,
        value: String,
    },
}

impl SentenceError {
    fn reason(&self) -> &'static str {
        match self {
            SentenceError::Mismatch { .. }
            | SentenceError::ChecksumField
            | SentenceError::NoChecksum => "checksum",
            SentenceError::Cut => "garbage",
            SentenceError::TooFewFields { .. } | SentenceError::Field { .. } => "malformed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rmc,
    Gga,
    Gll,
    Gns,
    Vtg,
    Zda,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Rmc => "RMC",
            Kind::Gga => "GGA",
            Kind::Gll => "GLL",
            Kind::Gns => "GNS",
            Kind::Vtg => "VTG",
            Kind::Zda => "ZDA",
        }
    }
}

/// `line`: `$` up to the line end (excluded). `Ok(None)`: valid, but not a sentence we decode.
fn parse(line: &[u8], cut: bool) -> Result<Option<Sentence>, SentenceError> {
    let content = line.strip_prefix(b"$").unwrap_or(line);
    let (body, stated) = match content.iter().position(|&c| c == b'*') {
        Some(star) => (&content[..star], Some(&content[star + 1..])),
        None => (content, None),
    };
    let proprietary = body.first() == Some(&b'P');
    match stated {
        Some(hex) => {
            let stated = parse_hex2(hex).ok_or(SentenceError::ChecksumField)?;
            let computed = body.iter().fold(0u8, |x, b| x ^ b);
            if stated != computed {
                return Err(SentenceError::Mismatch { stated, computed });
            }
        }
        None if cut => return Err(SentenceError::Cut),
        None if proprietary => return Ok(None),
        None => return Err(SentenceError::NoChecksum),
    }
    // Borrowed, not copied: the scanner only lets printable ASCII into a sentence.
    let body = String::from_utf8_lossy(body);
    let mut parts = body.split(',');
    let head = parts.next().unwrap_or("");
    let Some((address, kind)) = classify(head) else {
        return Ok(None);
    };
    let f = Fields {
        kind: kind.name(),
        values: parts.collect(),
    };
    let (time, date, data) = match kind {
        Kind::Rmc => rmc(&f)?,
        Kind::Gga => gga(&f)?,
        Kind::Gll => gll(&f)?,
        Kind::Gns => gns(&f)?,
        Kind::Vtg => (None, None, vtg(&f)?),
        Kind::Zda => zda(&f)?,
    };
    Ok(Some(Sentence {
        address,
        time,
        date,
        data,
    }))
}

fn parse_hex2(hex: &[u8]) -> Option<u8> {
    match hex {
        [hi, lo] => {
            let digit = |c: u8| (c as char).to_digit(16);
            Some((digit(*hi)? * 16 + digit(*lo)?) as u8)
        }
        _ => None,
    }
}

/// A standard address: two-character talker and a type we decode.
fn classify(head: &str) -> Option<(Address, Kind)> {
    let address: Address = head.as_bytes().try_into().ok()?;
    let standard = |c: &u8| c.is_ascii_uppercase() || c.is_ascii_digit();
    if address[0] == b'P' || !address.iter().all(standard) {
        return None;
    }
    let kind = match &address[2..] {
        b"RMC" => Kind::Rmc,
        b"GGA" => Kind::Gga,
        b"GLL" => Kind::Gll,
        b"GNS" => Kind::Gns,
        b"VTG" => Kind::Vtg,
        b"ZDA" => Kind::Zda,
        _ => return None,
    };
    Some((address, kind))
}

/// What a sentence says: its time, its date and the rest.
type Parts = (Option<NaiveTime>, Option<NaiveDate>, Data);

/// A field value that does not parse.
struct Bad;

/// Empty fields are `Ok(None)`; a field that is there must be right.
type Value<T> = Result<Option<T>, Bad>;

/// The fields after the address.
struct Fields<'a> {
    kind: &'static str,
    values: Vec<&'a str>,
}

impl<'a> Fields<'a> {
    /// Missing trailing fields read as empty.
    fn get(&self, i: usize) -> &'a str {
        self.values.get(i).copied().unwrap_or("")
    }

    fn need(&self, need: usize) -> Result<(), SentenceError> {
        if self.values.len() < need {
            return Err(SentenceError::TooFewFields {
                kind: self.kind,
                count: self.values.len(),
                need,
            });
        }
        Ok(())
    }

    fn bad(&self, field: &'static str, value: &str) -> SentenceError {
        SentenceError::Field {
            kind: self.kind,
            field,
            value: value.to_string(),
        }
    }

    fn read<T>(
        &self,
        i: usize,
        field: &'static str,
        parse: impl Fn(&str) -> Value<T>,
    ) -> Result<Option<T>, SentenceError> {
        let value = self.get(i);
        parse(value).map_err(|Bad| self.bad(field, value))
    }

    /// Latitude and longitude from the four fields at `i`: both or neither.
    fn position(&self, i: usize) -> Result<Option<(f64, f64)>, SentenceError> {
        let coordinate = |j: usize, field, max, positive, negative| {
            let (v, hemisphere) = (self.get(j), self.get(j + 1));
            angle(v, hemisphere, max, positive, negative)
                .map_err(|Bad| self.bad(field, &format!("{v},{hemisphere}")))
        };
        let lat = coordinate(i, "latitude", 90.0, b'N', b'S')?;
        let lon = coordinate(i + 2, "longitude", 180.0, b'E', b'W')?;
        match (lat, lon) {
            (Some(lat), Some(lon)) => Ok(Some((lat, lon))),
            (None, None) => Ok(None),
            _ => {
                let value = self.values.get(i..i + 4).unwrap_or_default().join(",");
                Err(self.bad("position", &value))
            }
        }
    }

    fn time(&self, i: usize) -> Result<Option<NaiveTime>, SentenceError> {
        self.read(i, "time", time_of_day)
    }
}

/// `$--RMC,time,status,lat,N,lon,E,knots,course,ddmmyy,magvar,E,mode,navstatus`
fn rmc(f: &Fields) -> Result<Parts, SentenceError> {
    f.need(9)?;
    let time = f.time(0)?;
    let valid = match f.get(1) {
        "A" => true,
        "V" | "" => false,
        other => return Err(f.bad("status", other)),
    };
    let position = f.position(2)?;
    let knots = f.read(6, "speed", |v| decimal(v, false))?;
    let course = f.read(7, "course", |v| decimal(v, false))?;
    let date = f.read(8, "date", ddmmyy)?;
    let mode = f.read(11, "mode", mode_indicator)?;
    let nav_ok = f
        .read(12, "navigational status", nav_status)?
        .unwrap_or(true);
    let fix = match (valid && nav_ok, position, basic_fix(mode)) {
        (true, Some((lat, lon)), Some(fix)) => Some(Basic { lat, lon, fix }),
        _ => None,
    };
    let motion = Motion {
        speed_kmh: knots.map(|k| k * KNOT_KMH),
        course,
    };
    Ok((time, date, Data::Rmc(fix, motion)))
}

/// `$--GGA,time,lat,N,lon,E,quality,satellites,hdop,altitude,M,geoid,M,age,station`
fn gga(f: &Fields) -> Result<Parts, SentenceError> {
    f.need(6)?;
    let time = f.time(0)?;
    let position = f.position(1)?;
    let quality = f.read(5, "quality", |v| unsigned::<u8>(v, 2))?;
    let satellites = f.read(6, "satellites", |v| unsigned::<u8>(v, 3))?;
    let hdop = f.read(7, "hdop", hdop)?;
    let altitude_m = f.read(8, "altitude", |v| decimal(v, true))?;
    let quality = match quality {
        None | Some(0 | 7 | 8) => None,
        Some(1 | 3) => Some(Quality::Autonomous),
        Some(2 | 9) => Some(Quality::Fixed(Fix::Dgps)),
        Some(4 | 5) => Some(Quality::Fixed(Fix::Rtk)),
        Some(6) => Some(Quality::Fixed(Fix::Estimated)),
        Some(_) => return Err(f.bad("quality", f.get(5))),
    };
    let solution = solution(position, quality, altitude_m, satellites, hdop);
    Ok((time, None, Data::Solution(solution)))
}

/// `$--GLL,lat,N,lon,E,time,status,mode` (time and status since NMEA 2.0, mode since 2.3)
fn gll(f: &Fields) -> Result<Parts, SentenceError> {
    f.need(4)?;
    let position = f.position(0)?;
    let time = f.time(4)?;
    let valid = match f.get(5) {
        "A" | "" => true,
        "V" => false,
        other => return Err(f.bad("status", other)),
    };
    let mode = f.read(6, "mode", mode_indicator)?;
    let fix = match (valid, position, basic_fix(mode)) {
        (true, Some((lat, lon)), Some(fix)) => Some(Basic { lat, lon, fix }),
        _ => None,
    };
    Ok((time, None, Data::Gll(fix)))
}

/// `$--GNS,time,lat,N,lon,E,modes,satellites,hdop,altitude,geoid,age,station,navstatus`,
/// one mode character per constellation.
fn gns(f: &Fields) -> Result<Parts, SentenceError> {
    f.need(6)?;
    let time = f.time(0)?;
    let position = f.position(1)?;
    let modes = f.get(5);
    let mut best: Option<Quality> = None;
    for c in modes.bytes() {
        let quality = mode_char(c).ok_or_else(|| f.bad("mode", modes))?.quality();
        if quality.map(Quality::rank) > best.map(Quality::rank) {
            best = quality;
        }
    }
    let satellites = f.read(6, "satellites", |v| unsigned::<u8>(v, 3))?;
    let hdop = f.read(7, "hdop", hdop)?;
    let altitude_m = f.read(8, "altitude", |v| decimal(v, true))?;
    let nav_ok = f
        .read(12, "navigational status", nav_status)?
        .unwrap_or(true);
    let best = best.filter(|_| nav_ok);
    let solution = solution(position, best, altitude_m, satellites, hdop);
    Ok((time, None, Data::Solution(solution)))
}

/// `$--VTG,course,T,magnetic,M,knots,N,kmh,K,mode`, or before NMEA 2.0 (no unit letters)
/// `$--VTG,course,magnetic,knots,kmh`.
fn vtg(f: &Fields) -> Result<Data, SentenceError> {
    f.need(4)?;
    let (knots, kmh, mode) = if f.values.len() >= 8 {
        (4, 6, f.read(8, "mode", mode_indicator)?)
    } else {
        (2, 3, None)
    };
    let course = f.read(0, "course", |v| decimal(v, false))?;
    let knots = f.read(knots, "speed", |v| decimal(v, false))?;
    let kmh = f.read(kmh, "speed", |v| decimal(v, false))?;
    if basic_fix(mode).is_none() {
        // The receiver says these values are not valid.
        return Ok(Data::Vtg(Motion::default()));
    }
    Ok(Data::Vtg(Motion {
        speed_kmh: kmh.or(knots.map(|k| k * KNOT_KMH)),
        course,
    }))
}

/// `$--ZDA,time,day,month,year,zone hours,zone minutes`
fn zda(f: &Fields) -> Result<Parts, SentenceError> {
    f.need(4)?;
    let time = f.time(0)?;
    let day = f.read(1, "day", |v| unsigned::<u32>(v, 2))?;
    let month = f.read(2, "month", |v| unsigned::<u32>(v, 2))?;
    let year = f.read(3, "year", |v| unsigned::<u32>(v, 4))?;
    let date = match (day, month, year) {
        (None, None, None) => None,
        (Some(d), Some(m), Some(y)) if f.get(3).len() == 4 => Some(
            i32::try_from(y)
                .ok()
                .and_then(|y| NaiveDate::from_ymd_opt(y, m, d))
                .ok_or_else(|| f.bad("date", &format!("{d}/{m}/{y}")))?,
        ),
        _ => {
            let value = f.values.get(1..4).unwrap_or_default().join(",");
            return Err(f.bad("date", &value));
        }
    };
    Ok((time, date, Data::Zda))
}

/// What GGA's quality or a mode indicator says about a fix.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Quality {
    /// A fix from the satellites alone: 2D or 3D depending on altitude and satellites.
    Autonomous,
    Fixed(Fix),
}

impl Quality {
    /// Higher is better, to choose among GNS's per-constellation modes.
    fn rank(self) -> u8 {
        match self {
            Quality::Fixed(Fix::Rtk) => 4,
            Quality::Fixed(Fix::Dgps) => 3,
            Quality::Autonomous | Quality::Fixed(Fix::Fix3d | Fix::Fix2d) => 2,
            Quality::Fixed(Fix::Estimated) => 1,
        }
    }
}

/// NMEA 2.3+ mode indicator (RMC, GLL, VTG; one per constellation in GNS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Autonomous,
    Differential,
    Precise,
    RtkFixed,
    RtkFloat,
    Estimated,
    Manual,
    Simulator,
    NotValid,
}

impl Mode {
    /// `None`: not a fix.
    fn quality(self) -> Option<Quality> {
        match self {
            Mode::Autonomous => Some(Quality::Autonomous),
            Mode::Differential | Mode::Precise => Some(Quality::Fixed(Fix::Dgps)),
            Mode::RtkFixed | Mode::RtkFloat => Some(Quality::Fixed(Fix::Rtk)),
            Mode::Estimated => Some(Quality::Fixed(Fix::Estimated)),
            Mode::Manual | Mode::Simulator | Mode::NotValid => None,
        }
    }
}

fn mode_indicator(v: &str) -> Value<Mode> {
    match v.as_bytes() {
        [] => Ok(None),
        [c] => mode_char(*c).map(Some).ok_or(Bad),
        _ => Err(Bad),
    }
}

fn mode_char(c: u8) -> Option<Mode> {
    Some(match c {
        b'A' => Mode::Autonomous,
        b'D' => Mode::Differential,
        b'P' => Mode::Precise,
        b'R' => Mode::RtkFixed,
        b'F' => Mode::RtkFloat,
        b'E' => Mode::Estimated,
        b'M' => Mode::Manual,
        b'S' => Mode::Simulator,
        b'N' => Mode::NotValid,
        _ => return None,
    })
}

/// NMEA 4.1 navigational status: `Some(false)` when the receiver calls its solution unusable.
fn nav_status(v: &str) -> Value<bool> {
    match v {
        "" => Ok(None),
        "S" | "C" => Ok(Some(true)),
        "U" | "V" => Ok(Some(false)),
        _ => Err(Bad),
    }
}

/// The fix of an RMC or GLL, whose mode indicator (if any) allows one; `None`: not a fix.
/// Without an altitude these are at best 2D.
fn basic_fix(mode: Option<Mode>) -> Option<Fix> {
    match mode.map(Mode::quality) {
        None | Some(Some(Quality::Autonomous)) => Some(Fix::Fix2d),
        Some(Some(Quality::Fixed(fix))) => Some(fix),
        Some(None) => None,
    }
}

/// A GGA/GNS fix, if its position, quality and satellite count make one.
fn solution(
    position: Option<(f64, f64)>,
    quality: Option<Quality>,
    altitude_m: Option<f64>,
    satellites: Option<u8>,
    hdop: Option<f64>,
) -> Option<Solution> {
    let (lat, lon) = position?;
    let few_satellites = satellites.is_some_and(|n| n < 3);
    let fix = match quality? {
        Quality::Fixed(Fix::Estimated) => Fix::Estimated,
        _ if few_satellites => return None,
        Quality::Fixed(fix) => fix,
        Quality::Autonomous if altitude_m.is_some() && satellites.is_none_or(|n| n >= 4) => {
            Fix::Fix3d
        }
        Quality::Autonomous => Fix::Fix2d,
    };
    Some(Solution {
        lat,
        lon,
        fix,
        altitude_m,
        satellites,
        hdop,
    })
}

/// `hhmmss` with optional decimal fraction; second 60 is a leap second.
fn time_of_day(v: &str) -> Value<NaiveTime> {
    if v.is_empty() {
        return Ok(None);
    }
    let (hms, fraction) = v.split_once('.').unwrap_or((v, ""));
    if hms.len() != 6 || !all_digits(hms) || !(fraction.is_empty() || all_digits(fraction)) {
        return Err(Bad);
    }
    let two = |i: usize| hms[i..i + 2].parse::<u32>().map_err(|_| Bad);
    let (h, m, s) = (two(0)?, two(2)?, two(4)?);
    // Nanoseconds from the first nine digits; more precision than that is noise.
    let nanos = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(9)
        .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    let (s, nanos) = if s == 60 {
        (59, nanos + 1_000_000_000)
    } else {
        (s, nanos)
    };
    NaiveTime::from_hms_nano_opt(h, m, s, nanos)
        .map(Some)
        .ok_or(Bad)
}

/// RMC's `ddmmyy`, years 1980–2079 (GPS time starts in 1980).
fn ddmmyy(v: &str) -> Value<NaiveDate> {
    if v.is_empty() {
        return Ok(None);
    }
    if v.len() != 6 || !all_digits(v) {
        return Err(Bad);
    }
    let two = |i: usize| v[i..i + 2].parse::<u32>().map_err(|_| Bad);
    let (d, m, y) = (two(0)?, two(2)?, two(4)?);
    let year = if y < 80 { 2000 + y } else { 1900 + y };
    let year = i32::try_from(year).map_err(|_| Bad)?;
    NaiveDate::from_ymd_opt(year, m, d).map(Some).ok_or(Bad)
}

/// `DDMM.mmmm` (or `DDDMM.mmmm`) with its hemisphere letter, to signed degrees.
fn angle(v: &str, hemisphere: &str, max: f64, positive: u8, negative: u8) -> Value<f64> {
    // Some receivers keep the hemisphere letter when they have no position.
    if v.is_empty() {
        return Ok(None);
    }
    let sign = match hemisphere.as_bytes() {
        [c] if *c == positive => 1.0,
        [c] if *c == negative => -1.0,
        _ => return Err(Bad),
    };
    let (whole, fraction) = v.split_once('.').unwrap_or((v, ""));
    if whole.is_empty() || whole.len() > 5 || !all_digits(whole) || !all_digits(fraction) {
        return Err(Bad);
    }
    let whole: u32 = whole.parse().map_err(|_| Bad)?;
    let (degrees, minutes) = (whole / 100, whole % 100);
    if minutes >= 60 {
        return Err(Bad);
    }
    let fraction: f64 = if fraction.is_empty() {
        0.0
    } else {
        format!("0.{fraction}").parse().map_err(|_| Bad)?
    };
    let value = f64::from(degrees) + (f64::from(minutes) + fraction) / 60.0;
    if value > max {
        return Err(Bad);
    }
    Ok(Some(sign * value))
}

/// A plain decimal number: digits with at most one point, a sign only where `signed`. (Rust's
/// float syntax would also take `inf`, `NaN` and exponents.)
fn decimal(v: &str, signed: bool) -> Value<f64> {
    if v.is_empty() {
        return Ok(None);
    }
    let digits = match v.strip_prefix(['-', '+']) {
        Some(rest) if signed => rest,
        Some(_) => return Err(Bad),
        None => v,
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.len() + fraction.len() == 0 || !all_digits(whole) || !all_digits(fraction) {
        return Err(Bad);
    }
    v.parse().map(Some).map_err(|_| Bad)
}

/// HDOP; 99 and above is how receivers say "unknown".
fn hdop(v: &str) -> Value<f64> {
    Ok(decimal(v, false)?.filter(|&h| h < 99.0))
}

fn unsigned<T: std::str::FromStr>(v: &str, max_digits: usize) -> Value<T> {
    if v.is_empty() {
        return Ok(None);
    }
    if v.len() > max_digits || !all_digits(v) {
        return Err(Bad);
    }
    v.parse().map(Some).map_err(|_| Bad)
}

fn all_digits(v: &str) -> bool {
    v.bytes().all(|c| c.is_ascii_digit())
}
