//! One terminal connection, as a pure state machine: bytes and the time in, for every frame the
//! events to make durable and the reply to send once they are.
//!
//! A terminal that does not authenticate is not believed: until it has sent a valid 0x0102 on
//! this connection, only its registration (0x0100) and authentication are taken; anything else
//! is refused (reason `unauthenticated`) with a 0x8001 "failure", which tells a standard
//! terminal to keep the data and send it again, so nothing is lost once it authenticates. The
//! authentication binds the connection to one phone number: frames naming another are
//! unauthenticated too.

use super::events::{self, KeyedEvent, Tracking};
use super::frame::{Frame, Framer, Header, Phone};
use super::message::{
    Authentication, Batch, BodyError, Location, Registration, MSG_AUTHENTICATION, MSG_BATCH,
    MSG_HEARTBEAT, MSG_LOCATION, MSG_LOGOUT, MSG_REGISTRATION, MSG_TERMINAL_REPLY,
};
use super::reassembly::{Reassembly, ReassemblyError, ReassemblyLimits};
use super::reply::{AuthCode, GeneralResult, RegistrationResult, Reply, ReplyBody};
use crate::decode::Rejected;
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Terminal messages the platform does not answer: replies to platform requests (0x0001
/// general reply, 0x0104 parameters, 0x0107 attributes, 0x0201 position query, 0x0302 question
/// answer, 0x0500 vehicle control, 0x0700 tachograph data, 0x0802 media search, 0x0805 camera
/// command), and 0x0801 multimedia upload, which wants a 0x8800 this platform does not send.
const NOT_ANSWERED: [u16; 10] = [
    MSG_TERMINAL_REPLY,
    0x0104,
    0x0107,
    0x0201,
    0x0302,
    0x0500,
    0x0700,
    0x0801,
    0x0802,
    0x0805,
];

/// Settings shared by every connection of a source.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Key of the auth codes (see [`super::reply`]).
    pub auth_secret: Vec<u8>,
    /// Phone numbers (without leading zeros) allowed to register and authenticate; empty means
    /// any terminal that can reach the port.
    pub terminals: BTreeSet<String>,
    /// Read status bit 12 ("door locked") as the terminal's own seal.
    pub seal_from_door_bit: bool,
    pub max_frame_bytes: usize,
    pub reassembly: ReassemblyLimits,
}

impl SessionConfig {
    fn allows(&self, phone: &Phone) -> bool {
        self.terminals.is_empty() || self.terminals.contains(&phone.normalized())
    }
}

/// What one frame (or one byte run that was not a frame) led to.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    /// The frame's header; `None` when the bytes were not a readable frame.
    pub header: Option<Header>,
    /// To make durable before replying.
    pub events: Vec<KeyedEvent>,
    pub rejected: Option<Rejected>,
    /// To send once `events` are durable (at once when there are none); see
    /// [`Reply::refused`] for what to send when they cannot be stored.
    pub reply: Option<Reply>,
}

impl Exchange {
    fn unreadable(rejected: Rejected) -> Exchange {
        Exchange {
            header: None,
            events: Vec::new(),
            rejected: Some(rejected),
            reply: None,
        }
    }

    fn answered(header: Header, events: Vec<KeyedEvent>, reply: Option<Reply>) -> Exchange {
        Exchange {
            header: Some(header),
            events,
            rejected: None,
            reply,
        }
    }

    fn refused(header: Header, rejected: Rejected, reply: Option<Reply>) -> Exchange {
        Exchange {
            header: Some(header),
            events: Vec::new(),
            rejected: Some(rejected),
            reply,
        }
    }

    fn bad_body(header: Header, e: BodyError, body: &[u8]) -> Exchange {
        // Result 2: the message is wrong as sent, resending it would not help.
        let reply = general(&header, GeneralResult::BadMessage);
        Exchange::refused(
            header,
            Rejected::new(e.reason(), e.to_string(), body),
            reply,
        )
    }
}

/// A general reply, unless the message is one the platform does not answer.
fn general(header: &Header, result: GeneralResult) -> Option<Reply> {
    (!NOT_ANSWERED.contains(&header.msg_id)).then(|| Reply::general(header, result))
}

/// What feeding bytes produced.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Fed {
    /// One per frame (or non-frame byte run) received, in order.
    pub exchanges: Vec<Exchange>,
    /// Long messages given up on (incomplete past their time), not tied to a received frame.
    pub dropped: Vec<Rejected>,
}

/// The change-tracking state before a batch of exchanges, to go back to if their events could
/// not be stored (so that the terminal's resend emits them again).
#[derive(Debug, Clone)]
pub struct Checkpoint(Tracking);

#[derive(Debug)]
pub struct Session {
    cfg: Arc<SessionConfig>,
    framer: Framer,
    reassembly: Reassembly,
    /// The phone that authenticated on this connection.
    terminal: Option<Phone>,
    tracking: Tracking,
    /// The platform's message serial, one per connection.
    serial: u16,
    /// Offline decoding of a capture (`qyt-agent decode`): every terminal in it is taken as
    /// authenticated, since the capture may start after its authentication.
    trust_capture: bool,
}

impl Session {
    pub fn new(cfg: Arc<SessionConfig>) -> Session {
        Session {
            framer: Framer::new(cfg.max_frame_bytes),
            reassembly: Reassembly::new(cfg.reassembly),
            cfg,
            terminal: None,
            tracking: Tracking::default(),
            serial: 0,
            trust_capture: false,
        }
    }

    /// A session for decoding a captured stream offline: no authentication is required, so an
    /// integrator can check a device's frames from any point of a capture. Never used on a
    /// live connection.
    pub fn for_capture(cfg: Arc<SessionConfig>) -> Session {
        Session {
            trust_capture: true,
            ..Session::new(cfg)
        }
    }

    /// Takes bytes as they arrived, in chunks of any size.
    pub fn feed(&mut self, bytes: &[u8], now: DateTime<Utc>) -> Fed {
        let dropped = self
            .reassembly
            .expire(now)
            .into_iter()
            .map(|e| Rejected::new(e.reason(), e.to_string(), &[]))
            .collect();
        let exchanges = self
            .framer
            .push(bytes)
            .into_iter()
            .map(|cut| match cut {
                Err(rejected) => Exchange::unreadable(rejected),
                Ok(escaped) => match Frame::decode(&escaped) {
                    Err(e) => Exchange::unreadable(e.rejected(&escaped)),
                    Ok(frame) => self.handle(frame, now),
                },
            })
            .collect();
        Fed { exchanges, dropped }
    }

    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint(self.tracking.clone())
    }

    pub fn restore(&mut self, checkpoint: Checkpoint) {
        self.tracking = checkpoint.0;
    }

    /// The reply's frame, numbered with this connection's next platform serial.
    pub fn encode(&mut self, reply: &Reply) -> Vec<u8> {
        let wire = reply.encode(self.serial);
        self.serial = self.serial.wrapping_add(1);
        wire
    }

    /// The phone number authenticated on this connection.
    pub fn terminal(&self) -> Option<Phone> {
        self.terminal
    }

    /// Bytes held for incomplete frames and messages: bounded by `max_frame_bytes` and the
    /// reassembly limit, whatever was fed.
    pub fn buffered_bytes(&self) -> usize {
        self.framer.buffered() + self.reassembly.held_bytes()
    }

    fn handle(&mut self, frame: Frame, now: DateTime<Utc>) -> Exchange {
        let h = frame.header;
        let believed = self.trust_capture || self.terminal == Some(h.phone);
        // Registration and authentication are tiny, never sub-packaged: a sub-package before
        // authentication is refused before it can take reassembly memory.
        let admissible =
            matches!(h.msg_id, MSG_REGISTRATION | MSG_AUTHENTICATION) && h.package.is_none();
        if !believed && !admissible {
            let detail = format!(
                "message 0x{:04X} from terminal {} before it authenticated on this connection",
                h.msg_id, h.phone
            );
            let rejected = Rejected::new("unauthenticated", detail, &frame.body);
            return Exchange::refused(h, rejected, general(&h, GeneralResult::Failure));
        }
        let body = match h.package {
            None => frame.body,
            Some(p) => match self.reassembly.push(&h, p, frame.body, now) {
                Ok(Some(body)) => body,
                // Received and held; the message's own reply follows its last part.
                Ok(None) => {
                    return Exchange::answered(h, Vec::new(), general(&h, GeneralResult::Ok))
                }
                Err(e) => {
                    let result = match e {
                        ReassemblyError::TooMany { .. } | ReassemblyError::TooLarge { .. } => {
                            GeneralResult::Failure
                        }
                        _ => GeneralResult::BadMessage,
                    };
                    let rejected = Rejected::new(e.reason(), e.to_string(), &[]);
                    return Exchange::refused(h, rejected, general(&h, result));
                }
            },
        };
        match h.msg_id {
            MSG_REGISTRATION => self.register(h, &body),
            MSG_AUTHENTICATION => self.authenticate(h, &body),
            MSG_HEARTBEAT => Exchange::answered(h, Vec::new(), general(&h, GeneralResult::Ok)),
            MSG_LOGOUT => {
                self.terminal = None;
                let events = vec![events::logout_event(&h.phone)];
                Exchange::answered(h, events, general(&h, GeneralResult::Ok))
            }
            MSG_LOCATION => match Location::parse(&body) {
                Ok(loc) => {
                    let events = events::location_events(
                        &h.phone,
                        &loc,
                        &mut self.tracking,
                        self.cfg.seal_from_door_bit,
                        false,
                    );
                    Exchange::answered(h, events, general(&h, GeneralResult::Ok))
                }
                Err(e) => Exchange::bad_body(h, e, &body),
            },
            MSG_BATCH => match Batch::parse(&body) {
                Ok(batch) => {
                    // History is judged against itself, not against the live state: a blind-
                    // area upload arriving after current reports must not flip the alarms and
                    // seals the hub holds back to what they were an hour ago.
                    let mut history = Tracking::default();
                    let is_history = batch.is_history();
                    let door_seal = self.cfg.seal_from_door_bit;
                    let tracking = if is_history {
                        &mut history
                    } else {
                        &mut self.tracking
                    };
                    let events = batch
                        .locations
                        .iter()
                        .flat_map(|loc| {
                            events::location_events(&h.phone, loc, tracking, door_seal, is_history)
                        })
                        .collect();
                    Exchange::answered(h, events, general(&h, GeneralResult::Ok))
                }
                Err(e) => Exchange::bad_body(h, e, &body),
            },
            // 0x0900 pass-through and everything without a decoder: kept whole.
            id => {
                let events = vec![events::raw_event(&h.phone, id, h.serial, &body)];
                Exchange::answered(h, events, general(&h, GeneralResult::Ok))
            }
        }
    }

    fn register(&mut self, h: Header, body: &[u8]) -> Exchange {
        let registration = match Registration::parse(body, h.version) {
            Ok(r) => r,
            Err(e) => return Exchange::bad_body(h, e, body),
        };
        let reply = |result, auth_code| Reply {
            phone: h.phone,
            version: h.version,
            body: ReplyBody::Registration {
                reply_serial: h.serial,
                result,
                auth_code,
            },
        };
        if !self.cfg.allows(&h.phone) {
            let detail = format!("terminal {} is not in the configured terminals", h.phone);
            let rejected = Rejected::new("unknown_terminal", detail, body);
            let reply = reply(RegistrationResult::NoSuchTerminal, None);
            return Exchange::refused(h, rejected, Some(reply));
        }
        let code = AuthCode::derive(&self.cfg.auth_secret, &h.phone);
        let events = vec![events::registration_event(&h.phone, &registration)];
        Exchange::answered(h, events, Some(reply(RegistrationResult::Ok, Some(code))))
    }

    fn authenticate(&mut self, h: Header, body: &[u8]) -> Exchange {
        let auth = match Authentication::parse(body, h.version) {
            Ok(a) => a,
            Err(e) => return Exchange::bad_body(h, e, body),
        };
        let expected = AuthCode::derive(&self.cfg.auth_secret, &h.phone);
        if self.cfg.allows(&h.phone) && expected.matches(&auth.code) {
            if self.terminal != Some(h.phone) {
                self.tracking = Tracking::default();
            }
            self.terminal = Some(h.phone);
            return Exchange::answered(h, Vec::new(), general(&h, GeneralResult::Ok));
        }
        // A failed attempt ends whatever this connection was believed to be.
        self.terminal = None;
        let detail = format!(
            "terminal {} offered an auth code this platform did not issue",
            h.phone
        );
        // No sample: the body is the (wrong) credential.
        let rejected = Rejected::new("auth_failed", detail, &[]);
        Exchange::refused(h, rejected, general(&h, GeneralResult::Failure))
    }
}
