//! A weighbridge indicator's Toledo continuous output, as a `serial` source with
//! `protocol = "toledo"` reads it: 10 frames a second of an empty scale (zero, stable), a truck
//! driving on axle by axle (motion), settling (its stable gross weight), driving off (motion),
//! and again with the next truck.
//!
//! Frames follow the bit tables of `decode::toledo`: status A `0x31` (display `XXXXX0`, one
//! dummy zero, increment x2: a 20 kg division, usual for a 60 t weighbridge), B `0x30` (gross,
//! kg; `0x38` in motion), C `0x20`; six weight digits, six tare digits (a gross weighing:
//! zeros), CR, and with `--checksum` the checksum byte.

use super::{next_second, serve_serial, SerialDevice, SerialLabel};
use chrono::Utc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct ToledoArgs {
    #[command(flatten)]
    pub output: super::SerialOut,
    /// End every frame with its checksum byte (the indicator's checksum setting; read it with
    /// `[source.toledo] checksum = "on"`, or the default "auto").
    #[arg(long)]
    pub checksum: bool,
    /// Stop after N frames, 10 a second (default: until Ctrl-C; 300 with --out).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// The same seed gives the same trucks.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

pub const FRAMES_PER_S: u64 = 10;
const STX: u8 = 0x02;
const CR: u8 = 0x0D;
/// Display `XXXXX0` (code 1), increment x2 (bit 4), bit 5.
const STATUS_A: u8 = 0x01 | 0x10 | 0x20;
/// kg (bit 4), bit 5; gross.
const STATUS_B: u8 = 0x10 | 0x20;
const MOTION: u8 = 0x08;
const STATUS_C: u8 = 0x20;
const DIVISION_KG: u32 = 20;
/// Kilograms per display count: the one dummy zero of code 1.
const COUNT_KG: u32 = 10;

pub fn run(args: ToledoArgs) -> anyhow::Result<()> {
    let label = SerialLabel {
        device: format!(
            "weighbridge indicator (Toledo continuous, {FRAMES_PER_S} frames/s, checksum {})",
            if args.checksum { "on" } else { "off" }
        ),
        protocol: "toledo",
        unit: "frames",
    };
    let scale = Weighbridge::new(args.checksum, args.seed);
    serve_serial(
        &args.output,
        args.count,
        scale,
        next_second(Utc::now()),
        &label,
    )
}

/// What one frame shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Display {
    pub kg: u32,
    pub motion: bool,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Empty {
        left: u32,
    },
    /// A truck drives on (`on`) or off: `step` of `steps` frames, axles rolling over the deck.
    Moving {
        gross_kg: u32,
        axles: u32,
        step: u32,
        steps: u32,
        on: bool,
    },
    Settled {
        gross_kg: u32,
        left: u32,
    },
}

/// The indicator, one frame at a time.
#[derive(Debug, Clone)]
pub struct Weighbridge {
    rng: StdRng,
    checksum: bool,
    phase: Phase,
}

impl Weighbridge {
    pub fn new(checksum: bool, seed: u64) -> Weighbridge {
        let mut rng = StdRng::seed_from_u64(seed);
        let left = rng.random_range(30..80);
        Weighbridge {
            rng,
            checksum,
            phase: Phase::Empty { left },
        }
    }

    /// The next frame and what it shows.
    pub fn frame(&mut self) -> (Display, Vec<u8>) {
        let (display, next) = match self.phase {
            Phase::Empty { left } => {
                let next = if left > 1 {
                    Phase::Empty { left: left - 1 }
                } else {
                    self.truck_arrives()
                };
                (
                    Display {
                        kg: 0,
                        motion: false,
                    },
                    next,
                )
            }
            Phase::Moving {
                gross_kg,
                axles,
                step,
                steps,
                on,
            } => {
                let done = step + 1;
                // Axles on the deck: more and more driving on, fewer and fewer driving off.
                let on_deck = if on {
                    (axles * done).div_ceil(steps)
                } else {
                    axles - axles * done / steps
                };
                let bounce = self.rng.random_range(-300i64..300);
                let kg = (i64::from(gross_kg * on_deck / axles) + bounce).max(0);
                let display = Display {
                    kg: to_division(u32::try_from(kg).unwrap_or(0)),
                    motion: true,
                };
                let next = match (done < steps, on) {
                    (true, _) => Phase::Moving {
                        gross_kg,
                        axles,
                        step: done,
                        steps,
                        on,
                    },
                    (false, true) => Phase::Settled {
                        gross_kg,
                        left: self.rng.random_range(50..100),
                    },
                    (false, false) => Phase::Empty {
                        left: self.rng.random_range(30..80),
                    },
                };
                (display, next)
            }
            Phase::Settled { gross_kg, left } => {
                let next = if left > 1 {
                    Phase::Settled {
                        gross_kg,
                        left: left - 1,
                    }
                } else {
                    Phase::Moving {
                        gross_kg,
                        axles: self.axles(gross_kg),
                        step: 0,
                        steps: self.rng.random_range(30..60),
                        on: false,
                    }
                };
                (
                    Display {
                        kg: gross_kg,
                        motion: false,
                    },
                    next,
                )
            }
        };
        self.phase = next;
        (display, self.encode(display))
    }

    /// Tractor and trailer of 14–18 t, a fifth of them empty, the others with 5–31 t of cargo
    /// (49 t gross is the Chinese limit for six axles).
    fn truck_arrives(&mut self) -> Phase {
        let tare = self.rng.random_range(14_000..18_000);
        let cargo = if self.rng.random_bool(0.2) {
            0
        } else {
            self.rng.random_range(5_000..31_000)
        };
        let gross_kg = to_division(tare + cargo);
        Phase::Moving {
            gross_kg,
            axles: self.axles(gross_kg),
            step: 0,
            steps: self.rng.random_range(40..70),
            on: true,
        }
    }

    /// Heavy trucks run on six axles, the others on five.
    fn axles(&self, gross_kg: u32) -> u32 {
        if gross_kg > 43_000 {
            6
        } else {
            5
        }
    }

    fn encode(&self, d: Display) -> Vec<u8> {
        let b = if d.motion {
            STATUS_B | MOTION
        } else {
            STATUS_B
        };
        let mut f = vec![STX, STATUS_A, b, STATUS_C];
        f.extend_from_slice(format!("{:06}000000", d.kg / COUNT_KG).as_bytes());
        f.push(CR);
        if self.checksum {
            let sum = f.iter().fold(0u8, |s, &x| s.wrapping_add(x));
            f.push(sum.wrapping_neg() & 0x7F);
        }
        f
    }
}

/// To the nearest 20 kg, as the indicator displays.
fn to_division(kg: u32) -> u32 {
    (kg + DIVISION_KG / 2) / DIVISION_KG * DIVISION_KG
}

impl SerialDevice for Weighbridge {
    fn period(&self) -> Duration {
        Duration::from_millis(1000 / FRAMES_PER_S)
    }

    fn transmit(&mut self) -> Vec<u8> {
        self.frame().1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::toledo::{Checksum, ToledoDecoder, ToledoOptions};
    use qyt_proto::Body;

    /// `frames` frames: the weights decoded, and the stable weights each settling shows
    /// (zero at the start and after every truck, each truck's gross weight in between).
    fn run_scale(checksum: bool, mode: Checksum, frames: usize) -> (Vec<f64>, Vec<f64>) {
        let mut scale = Weighbridge::new(checksum, 11);
        let mut decoder =
            ToledoDecoder::new(Some("wb-1".into()), &ToledoOptions { checksum: mode });
        let (mut decoded, mut expected) = (Vec::new(), Vec::new());
        let mut moved = true;
        for _ in 0..frames {
            let (display, bytes) = scale.frame();
            assert_eq!(bytes.len(), if checksum { 18 } else { 17 });
            if !display.motion && moved {
                expected.push(f64::from(display.kg));
            }
            moved = display.motion;
            let out = decoder.feed(&bytes);
            assert!(out.rejected.is_empty(), "{:?}", out.rejected);
            decoded.extend(out.events.iter().map(|e| match &e.body {
                Body::Weight(w) => {
                    assert!(w.stable && w.tare_kg.is_none());
                    assert_eq!(w.device_id.as_deref(), Some("wb-1"));
                    w.kg
                }
                other => panic!("not a weight: {other:?}"),
            }));
        }
        decoded.extend(decoder.finish().events.iter().map(|e| match &e.body {
            Body::Weight(w) => w.kg,
            other => panic!("not a weight: {other:?}"),
        }));
        (decoded, expected)
    }

    #[test]
    fn one_stable_weight_per_truck_and_zero_between() {
        // Ten minutes of frames.
        let (decoded, expected) = run_scale(false, Checksum::Off, 6000);
        assert_eq!(decoded, expected);
        let trucks: Vec<f64> = decoded.iter().copied().filter(|&kg| kg > 0.0).collect();
        assert!(trucks.len() >= 15, "{decoded:?}");
        assert!(trucks
            .iter()
            .all(|kg| (14_000.0..=49_000.0).contains(kg) && kg % 20.0 == 0.0));
        // Every truck is followed by the empty scale.
        for pair in decoded.windows(2) {
            assert!(pair[0] == 0.0 || pair[1] == 0.0, "{decoded:?}");
        }
        assert_eq!(decoded[0], 0.0);
    }

    #[test]
    fn checksummed_frames_pass_the_decoders_checks() {
        for mode in [Checksum::On, Checksum::Auto] {
            let (decoded, expected) = run_scale(true, mode, 3000);
            assert_eq!(decoded, expected, "{mode:?}");
            assert!(decoded.iter().any(|&kg| kg > 0.0));
        }
    }

    #[test]
    fn frames_are_as_the_manuals_lay_them_out() {
        let mut scale = Weighbridge::new(true, 1);
        let (display, bytes) = scale.frame();
        assert_eq!(
            display,
            Display {
                kg: 0,
                motion: false
            }
        );
        assert_eq!(&bytes[..17], b"\x021\x30 000000000000\r");
        let sum = bytes[..17].iter().fold(0u8, |s, &x| s.wrapping_add(x));
        assert_eq!(sum.wrapping_add(bytes[17]) & 0x7F, 0);
        let moving = (0..200)
            .map(|_| scale.frame())
            .find(|(d, _)| d.motion && d.kg > 0)
            .expect("a truck drives on");
        assert_eq!(moving.1[2], 0x38);
        assert_eq!(
            std::str::from_utf8(&moving.1[4..10]).expect("digits"),
            format!("{:06}", moving.0.kg / 10)
        );
    }
}
