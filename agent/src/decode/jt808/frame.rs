//! JT/T 808 framing: `7E | header | body | checksum | 7E`, with 7E and 7D escaped inside, and the
//! two header layouts (2013: 12 bytes; 2019: 17 bytes, flagged by bit 14 of the attributes).
//!
//! [`Framer`] cuts an arbitrary byte stream at the delimiters; [`Frame::decode`] unescapes one
//! frame, checks its checksum and length and reads its header. Both refuse rather than guess: a
//! frame that fails a check is reported and skipped, and the stream goes on at the next 0x7E.

use super::super::Rejected;
use std::fmt;

/// Frame delimiter.
pub const FLAG: u8 = 0x7E;
/// Escape byte: 7D 02 stands for 7E, 7D 01 for 7D.
const ESCAPE: u8 = 0x7D;

/// Largest body a single frame can carry: the attributes' length field has 10 bits.
pub const MAX_BODY_LEN: usize = 0x03FF;
const HEADER_2013_LEN: usize = 12;
const HEADER_2019_LEN: usize = 17;
const PACKAGE_FIELDS_LEN: usize = 4;
/// Largest unescaped frame: 2019 header, sub-package fields, body, checksum.
pub const MAX_CONTENT_LEN: usize = HEADER_2019_LEN + PACKAGE_FIELDS_LEN + MAX_BODY_LEN + 1;
/// The largest valid frame with every byte escaped: anything longer between two delimiters is
/// garbage, whatever it contains.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 2 * MAX_CONTENT_LEN;

const ATTR_BODY_LEN: u16 = 0x03FF;
const ATTR_ENCRYPTION_SHIFT: u16 = 10;
const ATTR_SUBPACKAGED: u16 = 1 << 13;
const ATTR_VERSION_2019: u16 = 1 << 14;

/// Why a frame was refused. [`FrameError::reason`] is its stable metrics label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("{len} bytes before the first 0x7E delimiter")]
    Garbage { len: usize },
    #[error("more than {max} bytes without a 0x7E delimiter; discarded up to the next one")]
    TooLong { max: usize },
    #[error("0x7D followed by 0x{0:02X} is not an escape sequence")]
    BadEscape(u8),
    #[error("the frame ends inside an escape sequence")]
    TruncatedEscape,
    #[error("{0} bytes: shorter than a header and a checksum")]
    TooShort(usize),
    #[error("checksum byte is 0x{sent:02X}, the content XORs to 0x{computed:02X}")]
    Checksum { sent: u8, computed: u8 },
    #[error("the header declares a {declared}-byte body, the frame carries {actual} bytes")]
    Length { declared: usize, actual: usize },
    #[error("the body is encrypted (attribute bits 10-12 = {0:03b}); no key is configured")]
    Encrypted(u8),
}

impl FrameError {
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::Garbage { .. } => "garbage",
            FrameError::TooLong { .. } => "frame_too_long",
            FrameError::BadEscape(_) | FrameError::TruncatedEscape => "bad_escape",
            FrameError::TooShort(_) => "frame_too_short",
            FrameError::Checksum { .. } => "bad_checksum",
            FrameError::Length { .. } => "bad_length",
            FrameError::Encrypted(_) => "encrypted",
        }
    }

    pub fn rejected(&self, bytes: &[u8]) -> Rejected {
        Rejected::new(self.reason(), self.to_string(), bytes)
    }
}

/// Which edition of the standard the header follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V2013,
    /// JT/T 808-2019, with the protocol version byte the terminal sent (1 for the 2019 edition).
    V2019(u8),
}

/// A terminal's phone number (its identity on the platform), as BCD: 6 bytes in a 2013 header,
/// 10 in a 2019 one. Kept as sent, so a reply names the terminal exactly as it named itself.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Phone {
    bcd: [u8; 10],
    len: u8,
}

impl Phone {
    /// `bcd` must be 6 or 10 bytes (shorter input is padded, longer is cut: headers are fixed).
    fn from_bcd(bcd: &[u8]) -> Phone {
        let mut b = [0u8; 10];
        let len = bcd.len().min(10);
        b[..len].copy_from_slice(&bcd[..len]);
        Phone {
            bcd: b,
            len: len as u8,
        }
    }

    /// A phone number from its decimal digits, left-padded with zeros to the header's width
    /// (12 digits in 2013, 20 in 2019). `None` for non-digits or too many digits.
    pub fn from_digits(digits: &str, version: Version) -> Option<Phone> {
        let width = match version {
            Version::V2013 => 12,
            Version::V2019(_) => 20,
        };
        if digits.len() > width || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let padded = format!("{digits:0>width$}");
        let nibbles: Vec<u8> = padded.bytes().map(|c| c - b'0').collect();
        let bcd: Vec<u8> = nibbles.chunks(2).map(|p| (p[0] << 4) | p[1]).collect();
        Some(Phone::from_bcd(&bcd))
    }

    pub fn bcd(&self) -> &[u8] {
        &self.bcd[..self.len as usize]
    }

    /// The number at the width a header of `version` has: a 2013 number in a 2019 header gets
    /// leading zeros; a 2019 number in a 2013 header keeps its last 12 digits.
    fn bcd_for(&self, version: Version) -> Vec<u8> {
        let width: usize = match version {
            Version::V2013 => 6,
            Version::V2019(_) => 10,
        };
        let bcd = self.bcd();
        let mut out = vec![0u8; width.saturating_sub(bcd.len())];
        out.extend_from_slice(&bcd[bcd.len().saturating_sub(width)..]);
        out
    }

    /// The number without its leading zeros: the same terminal's 2013 (12-digit) and 2019
    /// (20-digit) headers give the same normalized number.
    pub fn normalized(&self) -> String {
        let s = self.to_string();
        let t = s.trim_start_matches('0');
        if t.is_empty() {
            "0".into()
        } else {
            t.into()
        }
    }
}

impl fmt::Display for Phone {
    /// One character per BCD nibble. Nibbles above 9 (some terminals pad with F) are shown as
    /// hex digits rather than refused: the number is an identity, not arithmetic.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.bcd() {
            write!(f, "{:x}{:x}", b >> 4, b & 0x0F)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({self})")
    }
}

/// Position of a sub-package in a long message: `index` counts from 1 to `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Package {
    pub total: u16,
    pub index: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub msg_id: u16,
    pub version: Version,
    pub phone: Phone,
    /// The sender's message serial number; replies name it.
    pub serial: u16,
    pub package: Option<Package>,
}

/// One checked frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: Header,
    pub body: Vec<u8>,
}

impl Frame {
    /// Unescapes one frame's content (the bytes between two delimiters), checks its checksum and
    /// declared body length, and reads its header. The checksum is checked first: a frame that
    /// fails it says nothing reliable, not even its length.
    pub fn decode(escaped: &[u8]) -> Result<Frame, FrameError> {
        let content = unescape(escaped)?;
        let Some((&sent, covered)) = content.split_last() else {
            return Err(FrameError::TooShort(0));
        };
        if covered.len() < HEADER_2013_LEN {
            return Err(FrameError::TooShort(content.len()));
        }
        let computed = checksum(covered);
        if computed != sent {
            return Err(FrameError::Checksum { sent, computed });
        }
        let msg_id = u16::from_be_bytes([covered[0], covered[1]]);
        let attrs = u16::from_be_bytes([covered[2], covered[3]]);
        let (version, phone, mut pos) = if attrs & ATTR_VERSION_2019 != 0 {
            if covered.len() < HEADER_2019_LEN {
                return Err(FrameError::TooShort(content.len()));
            }
            (
                Version::V2019(covered[4]),
                Phone::from_bcd(&covered[5..15]),
                15,
            )
        } else {
            (Version::V2013, Phone::from_bcd(&covered[4..10]), 10)
        };
        let serial = u16::from_be_bytes([covered[pos], covered[pos + 1]]);
        pos += 2;
        let package = if attrs & ATTR_SUBPACKAGED != 0 {
            let Some(f) = covered.get(pos..pos + PACKAGE_FIELDS_LEN) else {
                return Err(FrameError::TooShort(content.len()));
            };
            pos += PACKAGE_FIELDS_LEN;
            Some(Package {
                total: u16::from_be_bytes([f[0], f[1]]),
                index: u16::from_be_bytes([f[2], f[3]]),
            })
        } else {
            None
        };
        let declared = (attrs & ATTR_BODY_LEN) as usize;
        let actual = covered.len() - pos;
        if declared != actual {
            return Err(FrameError::Length { declared, actual });
        }
        let encryption = ((attrs >> ATTR_ENCRYPTION_SHIFT) & 0x07) as u8;
        if encryption != 0 {
            return Err(FrameError::Encrypted(encryption));
        }
        Ok(Frame {
            header: Header {
                msg_id,
                version,
                phone,
                serial,
                package,
            },
            body: covered[pos..].to_vec(),
        })
    }
}

/// The frame on the wire: delimiters, header, body, checksum, escaped. Private because the body
/// must fit the 10-bit length field: every caller here builds bodies far below
/// [`MAX_BODY_LEN`] (replies of a few bytes, simulated reports of a few dozen).
pub(super) fn write_frame(header: &Header, body: &[u8]) -> Vec<u8> {
    let mut attrs = (body.len() as u16) & ATTR_BODY_LEN;
    if header.package.is_some() {
        attrs |= ATTR_SUBPACKAGED;
    }
    let mut content = Vec::with_capacity(HEADER_2019_LEN + PACKAGE_FIELDS_LEN + body.len() + 1);
    content.extend_from_slice(&header.msg_id.to_be_bytes());
    if let Version::V2019(v) = header.version {
        attrs |= ATTR_VERSION_2019;
        content.extend_from_slice(&attrs.to_be_bytes());
        content.push(v);
    } else {
        content.extend_from_slice(&attrs.to_be_bytes());
    }
    content.extend_from_slice(&header.phone.bcd_for(header.version));
    content.extend_from_slice(&header.serial.to_be_bytes());
    if let Some(p) = header.package {
        content.extend_from_slice(&p.total.to_be_bytes());
        content.extend_from_slice(&p.index.to_be_bytes());
    }
    content.extend_from_slice(body);
    content.push(checksum(&content));
    let mut out = Vec::with_capacity(content.len() + 8);
    out.push(FLAG);
    escape_into(&content, &mut out);
    out.push(FLAG);
    out
}

pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |acc, b| acc ^ b)
}

pub fn escape_into(content: &[u8], out: &mut Vec<u8>) {
    for &b in content {
        match b {
            FLAG => out.extend_from_slice(&[ESCAPE, 0x02]),
            ESCAPE => out.extend_from_slice(&[ESCAPE, 0x01]),
            _ => out.push(b),
        }
    }
}

pub fn unescape(escaped: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(escaped.len());
    let mut bytes = escaped.iter();
    while let Some(&b) = bytes.next() {
        if b != ESCAPE {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(0x01) => out.push(ESCAPE),
            Some(0x02) => out.push(FLAG),
            Some(&other) => return Err(FrameError::BadEscape(other)),
            None => return Err(FrameError::TruncatedEscape),
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing seen yet but (possibly) bytes that are not a frame.
    Start,
    /// Collecting the bytes after a delimiter.
    Inside,
    /// Past the length limit: dropping bytes until the next delimiter.
    Discarding,
}

/// Cuts a byte stream into frame contents at the 0x7E delimiters, whatever the chunking.
///
/// Start and end delimiters look alike, so the framer treats every run of bytes between two
/// delimiters as a frame candidate: the empty run between one frame's end and the next one's
/// start is skipped, and junk between frames becomes a candidate that fails its checksum. Memory
/// is bounded by `max_frame_bytes`.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    max: usize,
    state: State,
    /// Bytes seen before the first delimiter, reported once that delimiter arrives.
    garbage: usize,
}

/// What a [`Framer`] produced: the escaped content of a frame, or a refusal.
pub type Cut = Result<Vec<u8>, Rejected>;

impl Framer {
    pub fn new(max_frame_bytes: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            max: max_frame_bytes.max(HEADER_2013_LEN + 1),
            state: State::Start,
            garbage: 0,
        }
    }

    /// Feeds bytes as they arrived; returns the frame contents (still escaped) completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Cut> {
        let mut out = Vec::new();
        for &b in bytes {
            match (self.state, b) {
                (State::Start, FLAG) => {
                    if self.garbage > 0 {
                        out.push(Err(
                            FrameError::Garbage { len: self.garbage }.rejected(&self.buf)
                        ));
                        self.buf.clear();
                        self.garbage = 0;
                    }
                    self.state = State::Inside;
                }
                (State::Start, _) => {
                    self.garbage = self.garbage.saturating_add(1);
                    // A sample for the log; the rest is only counted.
                    if self.buf.len() < super::super::SAMPLE_LEN {
                        self.buf.push(b);
                    }
                }
                (State::Inside, FLAG) => {
                    if !self.buf.is_empty() {
                        out.push(Ok(std::mem::take(&mut self.buf)));
                    }
                }
                (State::Inside, _) => {
                    if self.buf.len() >= self.max {
                        out.push(Err(
                            FrameError::TooLong { max: self.max }.rejected(&self.buf)
                        ));
                        self.buf = Vec::new();
                        self.state = State::Discarding;
                    } else {
                        self.buf.push(b);
                    }
                }
                (State::Discarding, FLAG) => self.state = State::Inside,
                (State::Discarding, _) => {}
            }
        }
        out
    }

    /// Bytes held for an incomplete frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(version: Version) -> Header {
        Header {
            msg_id: 0x0200,
            version,
            phone: Phone::from_digits("13511221122", version).expect("digits"),
            serial: 0x1234,
            package: None,
        }
    }

    #[test]
    fn escaping_round_trips_and_matches_the_standard_example() {
        // The standard's own example: 30 7E 08 7D 55 is sent as 30 7D 02 08 7D 01 55.
        let mut out = Vec::new();
        escape_into(&[0x30, 0x7E, 0x08, 0x7D, 0x55], &mut out);
        assert_eq!(out, [0x30, 0x7D, 0x02, 0x08, 0x7D, 0x01, 0x55]);
        assert_eq!(
            unescape(&out).expect("valid"),
            [0x30, 0x7E, 0x08, 0x7D, 0x55]
        );
        assert_eq!(unescape(&[0x7D, 0x03]), Err(FrameError::BadEscape(0x03)));
        assert_eq!(unescape(&[0x01, 0x7D]), Err(FrameError::TruncatedEscape));
    }

    proptest! {
        #[test]
        fn any_content_round_trips_through_escaping(content in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut escaped = Vec::new();
            escape_into(&content, &mut escaped);
            prop_assert!(!escaped.contains(&FLAG));
            prop_assert_eq!(unescape(&escaped).expect("valid"), content);
        }

        #[test]
        fn frames_with_any_body_round_trip(body in proptest::collection::vec(any::<u8>(), 0..MAX_BODY_LEN), v2019 in any::<bool>()) {
            let h = header(if v2019 { Version::V2019(1) } else { Version::V2013 });
            let wire = write_frame(&h, &body);
            let mut framer = Framer::new(DEFAULT_MAX_FRAME_BYTES);
            let cuts = framer.push(&wire);
            prop_assert_eq!(cuts.len(), 1);
            let f = Frame::decode(cuts[0].as_ref().expect("a frame")).expect("valid");
            prop_assert_eq!(f.header, h);
            prop_assert_eq!(f.body, body);
        }
    }

    #[test]
    fn a_2019_header_carries_the_version_and_a_20_digit_phone() {
        let h = Header {
            msg_id: 0x0102,
            version: Version::V2019(1),
            phone: Phone::from_digits("13511221122", Version::V2019(1)).expect("digits"),
            serial: 7,
            package: None,
        };
        let wire = write_frame(&h, b"code");
        // 7E, id, attrs with bit 14 and length 4, version 1, BCD[10], serial.
        assert_eq!(
            &wire[..18],
            [
                0x7E, 0x01, 0x02, 0x40, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x35, 0x11, 0x22,
                0x11, 0x22, 0x00, 0x07
            ]
        );
        let f = Frame::decode(&wire[1..wire.len() - 1]).expect("valid");
        assert_eq!(f.header, h);
        assert_eq!(f.header.phone.to_string(), "00000000013511221122");
        assert_eq!(f.header.phone.normalized(), "13511221122");
        assert_eq!(f.body, b"code");
    }

    #[test]
    fn the_phone_is_written_at_the_width_of_the_header() {
        let p13 = Phone::from_digits("13511221122", Version::V2013).expect("digits");
        let mut h = header(Version::V2019(1));
        h.phone = p13;
        let wire = write_frame(&h, &[]);
        let f = Frame::decode(&wire[1..wire.len() - 1]).expect("valid");
        assert_eq!(f.header.phone.to_string(), "00000000013511221122");
        let mut h = header(Version::V2013);
        h.phone = f.header.phone;
        let wire = write_frame(&h, &[]);
        let f = Frame::decode(&wire[1..wire.len() - 1]).expect("valid");
        assert_eq!(f.header.phone, p13);
    }

    #[test]
    fn sub_package_fields_are_read() {
        let mut h = header(Version::V2013);
        h.package = Some(Package { total: 3, index: 2 });
        let wire = write_frame(&h, &[1, 2, 3]);
        let f = Frame::decode(&wire[1..wire.len() - 1]).expect("valid");
        assert_eq!(f.header.package, Some(Package { total: 3, index: 2 }));
        assert_eq!(f.body, [1, 2, 3]);
    }

    #[test]
    fn the_framer_takes_any_chunking_and_skips_garbage() {
        let h = header(Version::V2013);
        let a = write_frame(&h, &[0x7E, 0x7D, 0x00]);
        let b = write_frame(&h, &[9; 40]);
        let mut stream = b"AT+junk".to_vec();
        stream.extend_from_slice(&a);
        stream.extend_from_slice(&b);
        for chunk in [1, 2, 3, 7, 1000] {
            let mut framer = Framer::new(DEFAULT_MAX_FRAME_BYTES);
            let cuts: Vec<Cut> = stream.chunks(chunk).flat_map(|c| framer.push(c)).collect();
            assert_eq!(cuts.len(), 3, "chunk {chunk}");
            assert_eq!(cuts[0].as_ref().expect_err("garbage").reason, "garbage");
            for (cut, body) in cuts[1..].iter().zip([vec![0x7E, 0x7D, 0x00], vec![9; 40]]) {
                let f = Frame::decode(cut.as_ref().expect("frame")).expect("valid");
                assert_eq!(f.body, body);
            }
            assert_eq!(framer.buffered(), 0);
        }
    }

    #[test]
    fn an_overlong_run_is_discarded_up_to_the_next_delimiter_and_counted_once() {
        let h = header(Version::V2013);
        let good = write_frame(&h, &[1, 2, 3]);
        let mut stream = vec![FLAG];
        stream.extend(std::iter::repeat_n(0x55, 10_000));
        stream.extend_from_slice(&good);
        let mut framer = Framer::new(100);
        let cuts = framer.push(&stream);
        assert_eq!(cuts.len(), 2);
        assert_eq!(
            cuts[0].as_ref().expect_err("too long").reason,
            "frame_too_long"
        );
        assert_eq!(
            Frame::decode(cuts[1].as_ref().expect("frame"))
                .expect("valid")
                .body,
            [1, 2, 3]
        );
    }

    #[test]
    fn damaged_frames_give_typed_errors() {
        let h = header(Version::V2013);
        let wire = write_frame(&h, &[1, 2, 3]);
        let content = &wire[1..wire.len() - 1];
        let mut bad_sum = content.to_vec();
        let last = bad_sum.len() - 1;
        bad_sum[last] ^= 0xFF;
        assert!(matches!(
            Frame::decode(&bad_sum),
            Err(FrameError::Checksum { .. })
        ));
        // A body one byte short of what the header declares, with a checksum that matches.
        let mut short = content[..content.len() - 2].to_vec();
        short.push(checksum(&short));
        assert_eq!(
            Frame::decode(&short),
            Err(FrameError::Length {
                declared: 3,
                actual: 2
            })
        );
        assert_eq!(Frame::decode(&[1, 2, 3]), Err(FrameError::TooShort(3)));
        let mut encrypted = content[..content.len() - 1].to_vec();
        encrypted[2] |= 0x04; // attribute bit 10: RSA
        encrypted.push(checksum(&encrypted));
        assert_eq!(Frame::decode(&encrypted), Err(FrameError::Encrypted(1)));
    }
}
