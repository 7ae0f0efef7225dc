//! A simulated terminal: a truck with a GPS e-lock that speaks JT/T 808. Pure and deterministic
//! for a seed: it only builds frames (registration, authentication, heartbeat, location
//! reports while it drives), for a simulator source and for tests. Sending them and reading the
//! platform's replies ([`super::Reply::parse`]) is the caller's.

use super::frame::{write_frame, Header, Phone, Version};
use super::message::{
    status, LocationFields, MSG_AUTHENTICATION, MSG_HEARTBEAT, MSG_LOCATION, MSG_REGISTRATION,
};
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Longest plate written into a registration (GBK bytes); real plates take 8 or 9.
const MAX_PLATE_BYTES: usize = 20;

#[derive(Debug, Clone)]
pub struct SimTerminal {
    phone: Phone,
    version: Version,
    serial: u16,
    lat: f64,
    lon: f64,
    course: f64,
    speed_kmh: f64,
    odometer_km: f64,
    battery_pct: f64,
    sealed: bool,
    alarm: u32,
    rng: StdRng,
}

impl SimTerminal {
    /// A sealed truck at `lat`/`lon`. `None` when `phone` is not 1 to 12 digits.
    pub fn new(
        phone: &str,
        version: Version,
        lat: f64,
        lon: f64,
        seed: u64,
    ) -> Option<SimTerminal> {
        if phone.is_empty() || phone.len() > 12 {
            return None;
        }
        let mut rng = StdRng::seed_from_u64(seed);
        Some(SimTerminal {
            phone: Phone::from_digits(phone, version)?,
            version,
            serial: 0,
            lat,
            lon,
            course: rng.random_range(0.0..360.0),
            speed_kmh: rng.random_range(20.0..60.0),
            odometer_km: rng.random_range(1_000.0..200_000.0f64).round(),
            battery_pct: 100.0,
            sealed: true,
            alarm: 0,
            rng,
        })
    }

    pub fn phone(&self) -> Phone {
        self.phone
    }

    /// Any message with the next serial number.
    pub fn frame(&mut self, msg_id: u16, body: &[u8]) -> Vec<u8> {
        let header = Header {
            msg_id,
            version: self.version,
            phone: self.phone,
            serial: self.serial,
            package: None,
        };
        self.serial = self.serial.wrapping_add(1);
        write_frame(&header, body)
    }

    /// 0x0100 for a vehicle with plate `plate` (GBK-encoded, e.g. "沪A12345").
    pub fn registration(&mut self, plate: &str) -> Vec<u8> {
        let (maker, model, id) = match self.version {
            Version::V2013 => (5, 20, 7),
            Version::V2019(_) => (11, 30, 30),
        };
        let fixed = |s: &str, n: usize| {
            let mut b = s.as_bytes().to_vec();
            b.resize(n, 0);
            b
        };
        let digits = self.phone.normalized();
        let mut body = Vec::new();
        body.extend_from_slice(&31u16.to_be_bytes()); // Shanghai
        body.extend_from_slice(&0u16.to_be_bytes());
        body.extend(fixed("QYTSM", maker));
        body.extend(fixed("QYT-ELOCK-SIM", model));
        body.extend(fixed(&digits[digits.len().saturating_sub(7)..], id));
        body.push(1); // blue plate
        let (plate, _, _) = encoding_rs::GBK.encode(plate);
        body.extend_from_slice(&plate[..plate.len().min(MAX_PLATE_BYTES)]);
        self.frame(MSG_REGISTRATION, &body)
    }

    /// 0x0102 with the code the registration reply gave.
    pub fn authentication(&mut self, code: &str) -> Vec<u8> {
        let code = &code.as_bytes()[..code.len().min(255)];
        let body = match self.version {
            Version::V2013 => code.to_vec(),
            Version::V2019(_) => {
                let mut b = vec![code.len() as u8];
                b.extend_from_slice(code);
                b.extend_from_slice(b"860000000000000");
                b.extend_from_slice(&[0; 20]);
                b
            }
        };
        self.frame(MSG_AUTHENTICATION, &body)
    }

    pub fn heartbeat(&mut self) -> Vec<u8> {
        self.frame(MSG_HEARTBEAT, &[])
    }

    /// Drives on for `seconds`: the course wanders, the speed drifts within 0–80 km/h.
    pub fn drive(&mut self, seconds: f64) {
        self.course = (self.course + self.rng.random_range(-15.0..15.0)).rem_euclid(360.0);
        self.speed_kmh = (self.speed_kmh + self.rng.random_range(-5.0..5.0)).clamp(0.0, 80.0);
        let km = self.speed_kmh * seconds.max(0.0) / 3600.0;
        let rad = self.course.to_radians();
        self.lat = (self.lat + km * rad.cos() / 111.32).clamp(-89.9, 89.9);
        let lon_km = 111.32 * self.lat.to_radians().cos();
        self.lon = (self.lon + km * rad.sin() / lon_km + 540.0).rem_euclid(360.0) - 180.0;
        self.odometer_km += km;
        self.battery_pct = (self.battery_pct - seconds.max(0.0) / 36_000.0).max(0.0);
    }

    /// Opens (false) or closes (true) the e-lock: status bit 12 of the next reports.
    pub fn set_sealed(&mut self, sealed: bool) {
        self.sealed = sealed;
    }

    /// The alarm word of the next reports.
    pub fn set_alarm(&mut self, alarm: u32) {
        self.alarm = alarm;
    }

    pub fn position(&self) -> (f64, f64) {
        (self.lat, self.lon)
    }

    /// 0x0200 at `at` (the device's clock), with odometer, signal, satellites and battery.
    pub fn location(&mut self, at: DateTime<Utc>) -> Vec<u8> {
        let mut st = status::FIXED | status::ACC_ON;
        if self.sealed {
            st |= status::DOOR_LOCKED;
        }
        let odometer = (self.odometer_km * 10.0).round() as u32;
        let fields = LocationFields {
            alarm: self.alarm,
            status: st,
            lat: self.lat,
            lon: self.lon,
            altitude_m: 4,
            speed_kmh: self.speed_kmh,
            course: self.course.round() as u16 % 360,
            time: at,
            items: vec![
                (0x01, odometer.to_be_bytes().to_vec()),
                (0x30, vec![self.rng.random_range(10..31)]),
                (0x31, vec![self.rng.random_range(5..15)]),
                (0xFE, vec![self.battery_pct.round() as u8]),
            ],
        };
        self.frame(MSG_LOCATION, &fields.encode())
    }
}

/// The frames of a terminal's session: registration, authentication with `auth_code`, then
/// `reports` location reports `interval_s` apart from `start`, driving in between. `None` when
/// `phone` is not 1 to 12 digits.
pub fn simulate_terminal_frames(
    phone: &str,
    auth_code: &str,
    start: DateTime<Utc>,
    reports: usize,
    interval_s: u32,
    seed: u64,
) -> Option<Vec<Vec<u8>>> {
    // Waigaoqiao bonded zone, Shanghai, like the checkpoint simulator.
    let mut t = SimTerminal::new(phone, Version::V2013, 31.3526, 121.5901, seed)?;
    let mut frames = vec![t.registration("沪A12345"), t.authentication(auth_code)];
    for i in 0..reports {
        let at = start + chrono::TimeDelta::seconds(i as i64 * interval_s as i64);
        frames.push(t.location(at));
        t.drive(interval_s as f64);
    }
    Some(frames)
}
