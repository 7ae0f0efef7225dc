//! JT/T 808, the Chinese national standard spoken by vehicle terminals and GPS e-locks to their
//! platform over TCP. This module is the platform side, pure: [`Session`] takes a connection's
//! bytes and the time, and gives for every frame the events to make durable and the reply to
//! send once they are ([`Exchange`]). The `jt808_tcp` source does the I/O around it.
//!
//! - [`frame`]: delimiters, escaping, checksum, the 2013 and 2019 headers, a stream framer.
//! - [`reassembly`]: sub-packaged long messages, bounded in count, bytes and age.
//! - [`message`]: registration, authentication, location report, batch upload bodies.
//! - [`events`]: location reports to position, status, alarm and seal events.
//! - [`reply`]: 0x8100 and 0x8001, and the auth codes (derived, not stored).
//! - [`session`]: the per-connection state machine (authentication, change tracking).
//! - [`sim`]: a simulated terminal, for simulators and tests.

pub mod events;
pub mod frame;
pub mod message;
pub mod reassembly;
pub mod reply;
pub mod session;
pub mod sim;

#[cfg(test)]
mod tests;

pub use events::KeyedEvent;
pub use frame::{Frame, FrameError, Framer, Header, Phone, Version};
pub use reassembly::ReassemblyLimits;
pub use reply::{AuthCode, GeneralResult, RegistrationResult, Reply, ReplyBody};
pub use session::{Checkpoint, Exchange, Fed, Session, SessionConfig};
pub use sim::{simulate_terminal_frames, SimTerminal};
