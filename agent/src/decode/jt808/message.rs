//! Message bodies a terminal sends: registration (0x0100), authentication (0x0102), location
//! report (0x0200) with its additional items, batch upload (0x0704). Read exactly as the standard
//! lays them out; additional items the decoder does not know are kept as sent.

use super::frame::Version;
use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Timelike, Utc};
use qyt_proto::AlarmKind;

pub const MSG_TERMINAL_REPLY: u16 = 0x0001;
pub const MSG_HEARTBEAT: u16 = 0x0002;
pub const MSG_LOGOUT: u16 = 0x0003;
pub const MSG_REGISTRATION: u16 = 0x0100;
pub const MSG_AUTHENTICATION: u16 = 0x0102;
pub const MSG_LOCATION: u16 = 0x0200;
pub const MSG_BATCH: u16 = 0x0704;
pub const MSG_TRANSPARENT: u16 = 0x0900;
pub const MSG_PLATFORM_REPLY: u16 = 0x8001;
pub const MSG_REGISTRATION_REPLY: u16 = 0x8100;

/// A body that does not have the layout its message id promises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("message 0x{msg_id:04X}: the {len}-byte body ends inside {field}")]
    Truncated {
        msg_id: u16,
        field: &'static str,
        len: usize,
    },
    #[error("batch upload declares {declared} items and carries {found}")]
    BatchCount { declared: u16, found: usize },
    #[error("batch upload: {0} bytes after the last item")]
    BatchTrailing(usize),
}

impl BodyError {
    pub fn reason(&self) -> &'static str {
        "bad_body"
    }
}

/// Big-endian reader over a body; every read says which field it was for, for the error.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    msg_id: u16,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], msg_id: u16) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            msg_id,
        }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], BodyError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(BodyError::Truncated {
                msg_id: self.msg_id,
                field,
                len: self.buf.len(),
            });
        };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, BodyError> {
        Ok(self.take(1, field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, BodyError> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, BodyError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}

/// Strings in JT/T 808 are GBK (plates start with a Chinese character, e.g. 苏); fixed-width
/// fields are padded with NULs (or spaces). Undecodable bytes become U+FFFD rather than an error:
/// a plate with one bad byte is still worth keeping.
pub fn gbk(bytes: &[u8]) -> String {
    let end = bytes
        .iter()
        .rposition(|&b| b != 0 && b != b' ')
        .map_or(0, |i| i + 1);
    let (s, _, _) = encoding_rs::GBK.decode(&bytes[..end]);
    s.into_owned()
}

/// 0x0100.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub province: u16,
    pub city: u16,
    pub manufacturer: String,
    pub model: String,
    pub terminal_id: String,
    /// 0 when the vehicle is not yet plated (the plate is then the VIN), else a colour code.
    pub plate_color: u8,
    pub plate: String,
}

impl Registration {
    pub fn parse(body: &[u8], version: Version) -> Result<Registration, BodyError> {
        // The 2019 edition widened the manufacturer, model and terminal id fields.
        let (maker, model, id) = match version {
            Version::V2013 => (5, 20, 7),
            Version::V2019(_) => (11, 30, 30),
        };
        let mut r = Reader::new(body, MSG_REGISTRATION);
        Ok(Registration {
            province: r.u16("province")?,
            city: r.u16("city")?,
            manufacturer: gbk(r.take(maker, "manufacturer")?),
            model: gbk(r.take(model, "model")?),
            terminal_id: gbk(r.take(id, "terminal id")?),
            plate_color: r.u8("plate colour")?,
            plate: gbk(r.rest()),
        })
    }
}

/// 0x0102.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authentication {
    pub code: String,
    /// 2019 only.
    pub imei: Option<String>,
    /// 2019 only.
    pub software_version: Option<String>,
}

impl Authentication {
    pub fn parse(body: &[u8], version: Version) -> Result<Authentication, BodyError> {
        match version {
            // 2013: the whole body is the code.
            Version::V2013 => Ok(Authentication {
                code: gbk(body),
                imei: None,
                software_version: None,
            }),
            Version::V2019(_) => {
                let mut r = Reader::new(body, MSG_AUTHENTICATION);
                let n = r.u8("auth code length")? as usize;
                let code = gbk(r.take(n, "auth code")?);
                // Some terminals stop after the code; what they leave out is simply unknown.
                let imei = r.take(15, "IMEI").ok().map(gbk);
                let software_version = r.take(20, "software version").ok().map(gbk);
                Ok(Authentication {
                    code,
                    imei,
                    software_version,
                })
            }
        }
    }
}

/// Status bits this decoder interprets.
pub mod status {
    pub const ACC_ON: u32 = 1 << 0;
    pub const FIXED: u32 = 1 << 1;
    pub const SOUTH: u32 = 1 << 2;
    pub const WEST: u32 = 1 << 3;
    pub const OIL_CUT: u32 = 1 << 10;
    pub const CIRCUIT_CUT: u32 = 1 << 11;
    pub const DOOR_LOCKED: u32 = 1 << 12;
}

/// Alarm bits with a name (JT/T 808 table 24; 15–17 as vendors and Traccar use them). The other
/// bits stay in the alarm word that every alarm report carries.
pub const ALARM_BITS: [(u32, AlarmKind); 21] = [
    (0, AlarmKind::Sos),
    (1, AlarmKind::Overspeed),
    (4, AlarmKind::GnssFault),
    (5, AlarmKind::AntennaCut),
    (6, AlarmKind::AntennaShort),
    (7, AlarmKind::MainPowerLow),
    (8, AlarmKind::MainPowerOff),
    (15, AlarmKind::LowBattery),
    (16, AlarmKind::Vibration),
    (17, AlarmKind::Tamper),
    (19, AlarmKind::OvertimeParking),
    (20, AlarmKind::AreaInOut),
    (21, AlarmKind::RouteInOut),
    (22, AlarmKind::RouteTime),
    (23, AlarmKind::RouteDeviation),
    (26, AlarmKind::Stolen),
    (27, AlarmKind::IllegalIgnition),
    (28, AlarmKind::IllegalDisplacement),
    (29, AlarmKind::Collision),
    (30, AlarmKind::Rollover),
    (31, AlarmKind::IllegalDoorOpening),
];

/// The named alarm kinds set in an alarm word, in bit order.
pub fn alarm_kinds(word: u32) -> Vec<AlarmKind> {
    ALARM_BITS
        .iter()
        .filter(|(bit, _)| word & (1 << bit) != 0)
        .map(|&(_, k)| k)
        .collect()
}

/// One lock of an e-lock's 0xD5 item (Traccar's reading: id BCD[5], card BCD[5], battery BYTE,
/// status WORD whose bit 5 means unlocked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub id: String,
    pub card: String,
    pub battery: u8,
    pub unlocked: bool,
}

/// An e-lock's 0xDA item: how often its steel rope was cut, and its status byte (bit 0 rope
/// cut, bit 2 moving, bit 3 back cover open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockDevice {
    pub rope_cuts: u16,
    pub status: u8,
}

impl LockDevice {
    pub fn rope_cut(&self) -> bool {
        self.status & 0x01 != 0
    }
    pub fn moving(&self) -> bool {
        self.status & 0x04 != 0
    }
    pub fn cover_open(&self) -> bool {
        self.status & 0x08 != 0
    }
}

/// Additional items of a location report. Known items with the documented length are decoded;
/// everything else (unknown ids, known ids with an unexpected length) is kept as sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Items {
    /// 0x01, 1/10 km.
    pub odometer_km: Option<f64>,
    /// 0x02, 1/10 L.
    pub fuel_l: Option<f64>,
    /// 0x03, speed from the tachograph, 1/10 km/h.
    pub recorder_speed_kmh: Option<f64>,
    /// 0x04, id of an alarm event that needs manual confirmation.
    pub alarm_event_id: Option<u16>,
    /// 0x25, extended vehicle signal status bits.
    pub ext_signals: Option<u32>,
    /// 0x2A, IO status bits.
    pub io_status: Option<u16>,
    /// 0x2B, analog inputs (AD1 high word, AD0 low word).
    pub analog: Option<u32>,
    /// 0x30, mobile network signal strength.
    pub signal_strength: Option<u8>,
    /// 0x31, GNSS satellites in use.
    pub satellites: Option<u8>,
    /// Vendor 0xD4 / 0xFE: battery level in percent (Traccar reads both so).
    pub battery_pct: Option<u8>,
    /// Vendor 0xD5: e-lock locks.
    pub locks: Vec<Lock>,
    /// Vendor 0xDA: e-lock rope and cover.
    pub lock_device: Option<LockDevice>,
    /// Everything else, as (id, value).
    pub other: Vec<(u8, Vec<u8>)>,
    /// Bytes after the last complete item (an item whose length overruns the body).
    pub trailing: Vec<u8>,
}

impl Items {
    fn parse(mut bytes: &[u8]) -> Items {
        let mut items = Items::default();
        while let [id, len, rest @ ..] = bytes {
            let len = *len as usize;
            if rest.len() < len {
                break;
            }
            let (value, next) = rest.split_at(len);
            items.take(*id, value);
            bytes = next;
        }
        items.trailing = bytes.to_vec();
        items
    }

    fn take(&mut self, id: u8, v: &[u8]) {
        let u16_at = |i: usize| u16::from_be_bytes([v[i], v[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
        match (id, v.len()) {
            (0x01, 4) => self.odometer_km = Some(u32_at(0) as f64 / 10.0),
            (0x02, 2) => self.fuel_l = Some(u16_at(0) as f64 / 10.0),
            (0x03, 2) => self.recorder_speed_kmh = Some(u16_at(0) as f64 / 10.0),
            (0x04, 2) => self.alarm_event_id = Some(u16_at(0)),
            (0x25, 4) => self.ext_signals = Some(u32_at(0)),
            (0x2A, 2) => self.io_status = Some(u16_at(0)),
            (0x2B, 4) => self.analog = Some(u32_at(0)),
            (0x30, 1) => self.signal_strength = Some(v[0]),
            (0x31, 1) => self.satellites = Some(v[0]),
            (0xD4 | 0xFE, 1) => self.battery_pct = Some(v[0]),
            (0xD5, n) if n >= 1 && n == 1 + 13 * v[0] as usize => {
                self.locks = v[1..]
                    .chunks_exact(13)
                    .map(|l| Lock {
                        id: hex(&l[0..5]),
                        card: hex(&l[5..10]),
                        battery: l[10],
                        unlocked: u16::from_be_bytes([l[11], l[12]]) & (1 << 5) != 0,
                    })
                    .collect();
            }
            (0xDA, 3) => {
                self.lock_device = Some(LockDevice {
                    rope_cuts: u16_at(0),
                    status: v[2],
                })
            }
            _ => self.other.push((id, v.to_vec())),
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 0x0200, also each item of a 0x0704.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub alarm: u32,
    pub status: u32,
    /// Degrees, signed from status bits 2 and 3. Reported even without a fix (often the last
    /// known position); [`Location::fixed`] says whether to believe it.
    pub lat: f64,
    pub lon: f64,
    pub altitude_m: i16,
    pub speed_kmh: f64,
    /// Degrees clockwise from north.
    pub course: u16,
    /// The device's clock, as sent (BCD YYMMDDhhmmss, Beijing time).
    pub time_bcd: [u8; 6],
    /// That time in UTC; `None` when it is not a valid date (all zeros before a first fix).
    pub time: Option<DateTime<Utc>>,
    pub items: Items,
}

/// The fixed part of a location report, before the additional items.
pub const LOCATION_FIXED_LEN: usize = 28;

impl Location {
    pub fn parse(body: &[u8]) -> Result<Location, BodyError> {
        Self::parse_as(body, MSG_LOCATION)
    }

    fn parse_as(body: &[u8], msg_id: u16) -> Result<Location, BodyError> {
        let mut r = Reader::new(body, msg_id);
        let alarm = r.u32("alarm")?;
        let status = r.u32("status")?;
        let lat = r.u32("latitude")? as f64 / 1e6;
        let lon = r.u32("longitude")? as f64 / 1e6;
        // Signed, as Traccar reads it: below sea level happens (and 0xFFFF is not 65 km up).
        let altitude_m = r.u16("altitude")? as i16;
        let speed_kmh = r.u16("speed")? as f64 / 10.0;
        let course = r.u16("direction")?;
        let t = r.take(6, "time")?;
        let time_bcd = [t[0], t[1], t[2], t[3], t[4], t[5]];
        Ok(Location {
            alarm,
            status,
            lat: if status & status::SOUTH != 0 {
                -lat
            } else {
                lat
            },
            lon: if status & status::WEST != 0 {
                -lon
            } else {
                lon
            },
            altitude_m,
            speed_kmh,
            course,
            time_bcd,
            time: beijing_bcd_to_utc(&time_bcd),
            items: Items::parse(r.rest()),
        })
    }

    pub fn fixed(&self) -> bool {
        self.status & status::FIXED != 0
    }
}

/// 0x0704.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// 0 regular, 1 blind-area re-upload (data stored while out of coverage).
    pub kind: u8,
    pub locations: Vec<Location>,
}

impl Batch {
    pub fn parse(body: &[u8]) -> Result<Batch, BodyError> {
        let mut r = Reader::new(body, MSG_BATCH);
        let declared = r.u16("item count")?;
        let kind = r.u8("location data type")?;
        let mut locations = Vec::new();
        // Bounded by the body: every item takes at least its two length bytes.
        while r.remaining() >= 2 && locations.len() < declared as usize {
            let len = r.u16("item length")? as usize;
            let item = r.take(len, "item")?;
            locations.push(Location::parse_as(item, MSG_BATCH)?);
        }
        if locations.len() != declared as usize {
            return Err(BodyError::BatchCount {
                declared,
                found: locations.len(),
            });
        }
        if r.remaining() > 0 {
            return Err(BodyError::BatchTrailing(r.remaining()));
        }
        Ok(Batch { kind, locations })
    }

    /// Whether the items are history (re-uploaded after a coverage gap) rather than current.
    /// Only type 0 is current; an unknown type is taken for history, the safer reading.
    pub fn is_history(&self) -> bool {
        self.kind != 0
    }
}

fn bcd2(b: u8) -> Option<u32> {
    let (hi, lo) = (b >> 4, b & 0x0F);
    (hi <= 9 && lo <= 9).then_some((hi * 10 + lo) as u32)
}

/// China has kept UTC+8 all year since 1992: no zone database needed.
const BEIJING_OFFSET: TimeDelta = TimeDelta::hours(8);

/// BCD YYMMDDhhmmss in Beijing time (UTC+8) to UTC; years are 20YY.
pub fn beijing_bcd_to_utc(t: &[u8; 6]) -> Option<DateTime<Utc>> {
    let [y, mo, d, h, mi, s] = t.map(bcd2);
    let date = NaiveDate::from_ymd_opt(2000 + y? as i32, mo?, d?)?;
    let local = date.and_hms_opt(h?, mi?, s?)?;
    Some((local - BEIJING_OFFSET).and_utc())
}

/// UTC to BCD YYMMDDhhmmss in Beijing time; years outside 2000–2099 wrap (two digits).
pub fn utc_to_beijing_bcd(t: DateTime<Utc>) -> [u8; 6] {
    // Only the far end of chrono's range (year 262143) overflows; it would wrap anyway.
    let naive = t.naive_utc();
    let l = naive.checked_add_signed(BEIJING_OFFSET).unwrap_or(naive);
    let bcd = |v: u32| (((v / 10) % 10) << 4 | (v % 10)) as u8;
    [
        bcd(l.year().rem_euclid(100) as u32),
        bcd(l.month()),
        bcd(l.day()),
        bcd(l.hour()),
        bcd(l.minute()),
        bcd(l.second()),
    ]
}

/// The fields of a location report to encode (the simulator's and the tests' terminal side).
#[derive(Debug, Clone, PartialEq)]
pub struct LocationFields {
    pub alarm: u32,
    pub status: u32,
    pub lat: f64,
    pub lon: f64,
    pub altitude_m: i16,
    pub speed_kmh: f64,
    pub course: u16,
    pub time: DateTime<Utc>,
    /// Additional items as (id, value); values longer than 255 bytes are cut.
    pub items: Vec<(u8, Vec<u8>)>,
}

impl LocationFields {
    /// The 0x0200 body; the hemisphere bits of `status` are set from the signs of lat/lon.
    pub fn encode(&self) -> Vec<u8> {
        let mut status = self.status & !(status::SOUTH | status::WEST);
        if self.lat < 0.0 {
            status |= status::SOUTH;
        }
        if self.lon < 0.0 {
            status |= status::WEST;
        }
        let micro = |deg: f64| (deg.abs() * 1e6).round().min(u32::MAX as f64) as u32;
        let mut b = Vec::with_capacity(LOCATION_FIXED_LEN + 16);
        b.extend_from_slice(&self.alarm.to_be_bytes());
        b.extend_from_slice(&status.to_be_bytes());
        b.extend_from_slice(&micro(self.lat).to_be_bytes());
        b.extend_from_slice(&micro(self.lon).to_be_bytes());
        b.extend_from_slice(&self.altitude_m.to_be_bytes());
        let speed = (self.speed_kmh * 10.0).round().clamp(0.0, u16::MAX as f64) as u16;
        b.extend_from_slice(&speed.to_be_bytes());
        b.extend_from_slice(&self.course.to_be_bytes());
        b.extend_from_slice(&utc_to_beijing_bcd(self.time));
        for (id, value) in &self.items {
            let value = &value[..value.len().min(255)];
            b.push(*id);
            b.push(value.len() as u8);
            b.extend_from_slice(value);
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beijing_time_is_utc_plus_8() {
        let t = beijing_bcd_to_utc(&[0x22, 0x05, 0x12, 0x10, 0x11, 0x38]).expect("valid");
        assert_eq!(t.to_rfc3339(), "2022-05-12T02:11:38+00:00");
        assert_eq!(utc_to_beijing_bcd(t), [0x22, 0x05, 0x12, 0x10, 0x11, 0x38]);
        // Crossing midnight backwards.
        let t = beijing_bcd_to_utc(&[0x24, 0x01, 0x01, 0x03, 0x00, 0x00]).expect("valid");
        assert_eq!(t.to_rfc3339(), "2023-12-31T19:00:00+00:00");
        assert_eq!(
            beijing_bcd_to_utc(&[0; 6]),
            None,
            "no date before a first fix"
        );
        assert_eq!(beijing_bcd_to_utc(&[0x22, 0x13, 0x01, 0, 0, 0]), None);
        assert_eq!(beijing_bcd_to_utc(&[0x2A, 0x01, 0x01, 0, 0, 0]), None);
    }

    #[test]
    fn alarm_words_name_their_bits_once_each() {
        assert_eq!(alarm_kinds(0), []);
        assert_eq!(alarm_kinds(0x80), [AlarmKind::MainPowerLow]);
        assert_eq!(alarm_kinds(0x0002_0000), [AlarmKind::Tamper]);
        assert_eq!(
            alarm_kinds(1 | (1 << 31) | (1 << 9)),
            [AlarmKind::Sos, AlarmKind::IllegalDoorOpening],
            "bit 9 has no name here; it stays in the raw word"
        );
        assert_eq!(alarm_kinds(u32::MAX).len(), ALARM_BITS.len());
    }

    #[test]
    fn a_location_round_trips_with_signs_and_items() {
        let f = LocationFields {
            alarm: 1,
            status: status::FIXED,
            lat: -33.856784,
            lon: -151.215297,
            altitude_m: -5,
            speed_kmh: 61.3,
            course: 271,
            time: DateTime::from_timestamp(1_700_000_000, 0).expect("valid"),
            items: vec![(0x31, vec![9]), (0xE9, vec![1, 2]), (0xFE, vec![77])],
        };
        let l = Location::parse(&f.encode()).expect("valid");
        assert_eq!((l.lat, l.lon), (-33.856784, -151.215297));
        assert_eq!(
            l.status & (status::SOUTH | status::WEST),
            status::SOUTH | status::WEST
        );
        assert_eq!((l.altitude_m, l.speed_kmh, l.course), (-5, 61.3, 271));
        assert_eq!(l.time, Some(f.time));
        assert_eq!(l.items.satellites, Some(9));
        assert_eq!(l.items.battery_pct, Some(77));
        assert_eq!(l.items.other, [(0xE9, vec![1, 2])]);
        assert!(l.items.trailing.is_empty());
    }

    #[test]
    fn an_item_overrunning_the_body_is_kept_as_trailing_bytes() {
        let mut body = LocationFields {
            alarm: 0,
            status: 0,
            lat: 0.0,
            lon: 0.0,
            altitude_m: 0,
            speed_kmh: 0.0,
            course: 0,
            time: DateTime::from_timestamp(0, 0).expect("valid"),
            items: vec![(0x30, vec![20])],
        }
        .encode();
        body.extend_from_slice(&[0x01, 0x04, 0xAA]);
        let l = Location::parse(&body).expect("the fixed part is whole");
        assert_eq!(l.items.signal_strength, Some(20));
        assert_eq!(l.items.trailing, [0x01, 0x04, 0xAA]);
        assert!(matches!(
            Location::parse(&body[..27]),
            Err(BodyError::Truncated { field: "time", .. })
        ));
    }

    #[test]
    fn a_2019_authentication_has_a_length_prefixed_code() {
        let mut body = vec![4];
        body.extend_from_slice(b"abcd");
        body.extend_from_slice(b"861234567890123");
        body.extend_from_slice(b"V1.2\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
        let a = Authentication::parse(&body, Version::V2019(1)).expect("valid");
        assert_eq!(a.code, "abcd");
        assert_eq!(a.imei.as_deref(), Some("861234567890123"));
        assert_eq!(a.software_version.as_deref(), Some("V1.2"));
        assert!(Authentication::parse(&[9, b'a'], Version::V2019(1)).is_err());
    }

    #[test]
    fn a_batch_with_a_wrong_count_or_trailing_bytes_is_refused() {
        let item = LocationFields {
            alarm: 0,
            status: 0,
            lat: 1.0,
            lon: 2.0,
            altitude_m: 0,
            speed_kmh: 0.0,
            course: 0,
            time: DateTime::from_timestamp(0, 0).expect("valid"),
            items: vec![],
        }
        .encode();
        let mut body = vec![0, 2, 1];
        for _ in 0..2 {
            body.extend_from_slice(&(item.len() as u16).to_be_bytes());
            body.extend_from_slice(&item);
        }
        let b = Batch::parse(&body).expect("valid");
        assert_eq!((b.kind, b.locations.len(), b.is_history()), (1, 2, true));
        let mut three = body.clone();
        three[1] = 3;
        assert_eq!(
            Batch::parse(&three),
            Err(BodyError::BatchCount {
                declared: 3,
                found: 2
            })
        );
        let mut trailing = body.clone();
        trailing.push(0);
        assert_eq!(Batch::parse(&trailing), Err(BodyError::BatchTrailing(1)));
    }
}
