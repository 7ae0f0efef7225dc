//! What the platform answers: 0x8100 to a registration, 0x8001 (general reply) to the rest.
//! Encoding is pure; the platform's own serial number is the caller's (one per connection).
//!
//! # Auth codes
//!
//! The code a registration gets is `hex(HMAC-SHA256(secret, phone))[..16]`, with the phone
//! number stripped of leading zeros (so a terminal's 2013 and 2019 headers get the same code).
//! Nothing is stored: a restarted agent, or another agent configured with the same secret,
//! recomputes and accepts it, and a terminal keeps working with the code it saved at first
//! registration. Changing the secret makes every terminal register again (terminals do so when
//! their authentication is refused).

use super::frame::{write_frame, Frame, Header, Phone, Version};
use super::message::{MSG_PLATFORM_REPLY, MSG_REGISTRATION_REPLY};
use sha2::{Digest, Sha256};

/// Result of a general reply (0x8001).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeneralResult {
    Ok = 0,
    /// The terminal keeps the message and sends it again.
    Failure = 1,
    BadMessage = 2,
    Unsupported = 3,
    AlarmConfirmed = 4,
}

impl GeneralResult {
    fn from_u8(v: u8) -> Option<GeneralResult> {
        Some(match v {
            0 => GeneralResult::Ok,
            1 => GeneralResult::Failure,
            2 => GeneralResult::BadMessage,
            3 => GeneralResult::Unsupported,
            4 => GeneralResult::AlarmConfirmed,
            _ => return None,
        })
    }
}

/// Result of a registration reply (0x8100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationResult {
    Ok = 0,
    VehicleRegistered = 1,
    NoSuchVehicle = 2,
    TerminalRegistered = 3,
    NoSuchTerminal = 4,
}

impl RegistrationResult {
    fn from_u8(v: u8) -> Option<RegistrationResult> {
        Some(match v {
            0 => RegistrationResult::Ok,
            1 => RegistrationResult::VehicleRegistered,
            2 => RegistrationResult::NoSuchVehicle,
            3 => RegistrationResult::TerminalRegistered,
            4 => RegistrationResult::NoSuchTerminal,
            _ => return None,
        })
    }
}

/// Longest auth code read from a registration reply; ours are 16 characters.
const MAX_AUTH_CODE_LEN: usize = 64;

/// An auth code, at most [`MAX_AUTH_CODE_LEN`] bytes, so that any reply fits one frame.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthCode(String);

impl AuthCode {
    /// The code for `phone` under `secret` (see the module docs).
    pub fn derive(secret: &[u8], phone: &Phone) -> AuthCode {
        let mac = hmac_sha256(secret, phone.normalized().as_bytes());
        AuthCode(super::message::hex(&mac[..8]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compares in time independent of where the codes differ, so the code cannot be guessed
    /// a character at a time from response times.
    pub fn matches(&self, offered: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), offered.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl std::fmt::Debug for AuthCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A credential: never in a log line.
        f.write_str("AuthCode(..)")
    }
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.map(|x| x ^ b);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    let mut out = [0u8; 32];
    out.copy_from_slice(&outer);
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyBody {
    General {
        reply_serial: u16,
        reply_id: u16,
        result: GeneralResult,
    },
    Registration {
        reply_serial: u16,
        result: RegistrationResult,
        /// Present exactly when `result` is `Ok`.
        auth_code: Option<AuthCode>,
    },
}

/// A reply to one terminal message, addressed as that message was (phone, header version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub phone: Phone,
    pub version: Version,
    pub body: ReplyBody,
}

impl Reply {
    pub fn general(to: &Header, result: GeneralResult) -> Reply {
        Reply {
            phone: to.phone,
            version: to.version,
            body: ReplyBody::General {
                reply_serial: to.serial,
                reply_id: to.msg_id,
                result,
            },
        }
    }

    /// The frame to send, with the platform's message serial `serial`.
    pub fn encode(&self, serial: u16) -> Vec<u8> {
        let (msg_id, body) = match &self.body {
            ReplyBody::General {
                reply_serial,
                reply_id,
                result,
            } => {
                let mut b = Vec::with_capacity(5);
                b.extend_from_slice(&reply_serial.to_be_bytes());
                b.extend_from_slice(&reply_id.to_be_bytes());
                b.push(*result as u8);
                (MSG_PLATFORM_REPLY, b)
            }
            ReplyBody::Registration {
                reply_serial,
                result,
                auth_code,
            } => {
                let mut b = Vec::with_capacity(3 + MAX_AUTH_CODE_LEN);
                b.extend_from_slice(&reply_serial.to_be_bytes());
                b.push(*result as u8);
                if let Some(code) = auth_code {
                    b.extend_from_slice(code.0.as_bytes());
                }
                (MSG_REGISTRATION_REPLY, b)
            }
        };
        let header = Header {
            msg_id,
            version: self.version,
            phone: self.phone,
            serial,
            package: None,
        };
        write_frame(&header, &body)
    }

    /// What to answer instead when the message's events could not be made durable (the buffer
    /// is full): a general reply says failure, so the terminal keeps the data and sends it
    /// again; a registration reply has no such result and is withheld, so the terminal repeats
    /// its registration after its reply timeout.
    pub fn refused(&self) -> Option<Reply> {
        match &self.body {
            ReplyBody::General {
                reply_serial,
                reply_id,
                ..
            } => Some(Reply {
                body: ReplyBody::General {
                    reply_serial: *reply_serial,
                    reply_id: *reply_id,
                    result: GeneralResult::Failure,
                },
                ..self.clone()
            }),
            ReplyBody::Registration { .. } => None,
        }
    }

    /// Reads a platform reply, as a terminal does (the simulator, the tests' terminal client).
    /// `None` for other messages and malformed replies.
    pub fn parse(frame: &Frame) -> Option<Reply> {
        let b = &frame.body;
        let word = |i: usize| Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]));
        let body = match frame.header.msg_id {
            MSG_PLATFORM_REPLY if b.len() == 5 => ReplyBody::General {
                reply_serial: word(0)?,
                reply_id: word(2)?,
                result: GeneralResult::from_u8(b[4])?,
            },
            MSG_REGISTRATION_REPLY if b.len() >= 3 => {
                let result = RegistrationResult::from_u8(b[2])?;
                let code = &b[3..];
                ReplyBody::Registration {
                    reply_serial: word(0)?,
                    result,
                    auth_code: (result == RegistrationResult::Ok
                        && code.len() <= MAX_AUTH_CODE_LEN)
                        .then(|| AuthCode(super::message::gbk(code))),
                }
            }
            _ => return None,
        };
        Some(Reply {
            phone: frame.header.phone,
            version: frame.header.version,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            msg_id: 0x0200,
            version: Version::V2013,
            phone: Phone::from_digits("13511221122", Version::V2013).expect("digits"),
            serial: 0x0007,
            package: None,
        }
    }

    fn decode(wire: &[u8]) -> Frame {
        Frame::decode(&wire[1..wire.len() - 1]).expect("valid frame")
    }

    #[test]
    fn a_general_reply_is_encoded_as_the_standard_lays_it_out() {
        let wire = Reply::general(&header(), GeneralResult::Ok).encode(0x0102);
        assert_eq!(
            super::super::message::hex(&wire),
            // 7E 8001 len=5 phone serial=0102 | reply serial 0007, reply id 0200, result 0 | cs 7E
            "7e8001000501351122112201020007020000b67e"
        );
        let f = decode(&wire);
        assert_eq!(
            Reply::parse(&f).map(|r| r.body),
            Some(ReplyBody::General {
                reply_serial: 7,
                reply_id: 0x0200,
                result: GeneralResult::Ok
            })
        );
    }

    #[test]
    fn a_registration_reply_carries_the_code_and_round_trips() {
        let h = header();
        let phone = Phone::from_digits("13511221122", Version::V2019(1)).expect("digits");
        let code = AuthCode::derive(b"secret", &phone);
        let r = Reply {
            phone,
            version: Version::V2019(1),
            body: ReplyBody::Registration {
                reply_serial: 5,
                result: RegistrationResult::Ok,
                auth_code: Some(code.clone()),
            },
        };
        let f = decode(&r.encode(1));
        assert_eq!(f.header.msg_id, 0x8100);
        assert_eq!(f.header.version, Version::V2019(1));
        assert_eq!(&f.body[..3], [0, 5, 0]);
        assert_eq!(&f.body[3..], code.as_str().as_bytes());
        assert_eq!(Reply::parse(&f), Some(r.clone()));
        assert_eq!(
            r.refused(),
            None,
            "a registration reply is withheld on refusal"
        );
        let failed = Reply::general(&h, GeneralResult::Ok)
            .refused()
            .expect("general");
        assert!(matches!(
            failed.body,
            ReplyBody::General {
                result: GeneralResult::Failure,
                ..
            }
        ));
    }

    #[test]
    fn auth_codes_are_deterministic_per_secret_and_phone() {
        let p = Phone::from_digits("13511221122", Version::V2013).expect("digits");
        let p19 = Phone::from_digits("13511221122", Version::V2019(1)).expect("digits");
        let q = Phone::from_digits("13511221123", Version::V2013).expect("digits");
        let a = AuthCode::derive(b"secret-one", &p);
        assert_eq!(a.as_str().len(), 16);
        assert_eq!(
            a,
            AuthCode::derive(b"secret-one", &p),
            "same after a restart"
        );
        assert_eq!(
            a,
            AuthCode::derive(b"secret-one", &p19),
            "2013 and 2019 agree"
        );
        assert_ne!(a, AuthCode::derive(b"secret-two", &p));
        assert_ne!(a, AuthCode::derive(b"secret-one", &q));
        assert!(a.matches(a.as_str()));
        assert!(!a.matches("authentication"));
        assert!(!a.matches(""));
        assert_eq!(format!("{a:?}"), "AuthCode(..)");
    }

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        assert_eq!(
            super::super::message::hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
