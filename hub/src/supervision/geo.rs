//! Distances on the ground, in metres, for corridors and stop areas.
//!
//! Corridors are a few hundred metres wide and their segments some kilometres long, so a local
//! flat projection around the point being tested (equirectangular) is accurate far below a
//! corridor's width, and much simpler than geodesics.

use serde::{Deserialize, Serialize};

const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// A point in degrees WGS84.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub lat: f64,
    pub lon: f64,
}

impl Point {
    pub fn valid(&self) -> bool {
        (-90.0..=90.0).contains(&self.lat) && (-180.0..=180.0).contains(&self.lon)
    }

    /// Great-circle distance (haversine).
    pub fn distance_m(&self, other: &Point) -> f64 {
        let (p1, p2) = (self.lat.to_radians(), other.lat.to_radians());
        let dp = p2 - p1;
        let dl = (other.lon - self.lon).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_M * a.sqrt().asin()
    }
}

/// A circle on the ground: an allowed stop, or a site's premises.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Area {
    pub lat: f64,
    pub lon: f64,
    pub radius_m: f64,
}

impl Area {
    pub fn contains(&self, p: &Point) -> bool {
        Point {
            lat: self.lat,
            lon: self.lon,
        }
        .distance_m(p)
            <= self.radius_m
    }

    pub fn check(&self) -> Result<(), String> {
        let centre = Point {
            lat: self.lat,
            lon: self.lon,
        };
        if !centre.valid() {
            return Err(format!(
                "lat {} / lon {} is not a WGS84 position: latitude -90..90, longitude -180..180",
                self.lat, self.lon
            ));
        }
        if !(self.radius_m > 0.0 && self.radius_m <= 100_000.0) {
            return Err(format!(
                "radius_m {} is out of range: use more than 0 and at most 100000",
                self.radius_m
            ));
        }
        Ok(())
    }
}

/// The declared route: a centre line and a total width.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Corridor {
    /// Centre line, at least two points.
    pub points: Vec<Point>,
    /// Total width; a position is inside when within half of it from the centre line.
    pub width_m: f64,
}

impl Corridor {
    pub fn check(&self) -> Result<(), String> {
        if self.points.len() < 2 {
            return Err(format!(
                "corridor has {} point(s): give its centre line as at least 2 points",
                self.points.len()
            ));
        }
        if let Some((i, p)) = self.points.iter().enumerate().find(|(_, p)| !p.valid()) {
            return Err(format!(
                "corridor point {i} ({}, {}) is not a WGS84 position",
                p.lat, p.lon
            ));
        }
        if !(self.width_m >= 10.0 && self.width_m <= 100_000.0) {
            return Err(format!(
                "corridor width_m {} is out of range: use 10 to 100000 metres",
                self.width_m
            ));
        }
        Ok(())
    }

    /// Distance from `p` to the centre line.
    pub fn distance_m(&self, p: &Point) -> f64 {
        // Project around `p`: x east, y north, in metres.
        let k = p.lat.to_radians().cos();
        let xy = |q: &Point| {
            (
                (q.lon - p.lon).to_radians() * EARTH_RADIUS_M * k,
                (q.lat - p.lat).to_radians() * EARTH_RADIUS_M,
            )
        };
        self.points
            .windows(2)
            .map(|seg| {
                let (ax, ay) = xy(&seg[0]);
                let (bx, by) = xy(&seg[1]);
                let (dx, dy) = (bx - ax, by - ay);
                let len2 = dx * dx + dy * dy;
                // The closest point of the segment to the origin (where `p` is).
                let t = if len2 == 0.0 {
                    0.0
                } else {
                    (-(ax * dx + ay * dy) / len2).clamp(0.0, 1.0)
                };
                let (cx, cy) = (ax + t * dx, ay + t * dy);
                (cx * cx + cy * cy).sqrt()
            })
            .fold(f64::INFINITY, f64::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_to_a_corridor() {
        // Due east along the equator-ish line at 31°N for ~0.1° of longitude (~9.5 km).
        let c = Corridor {
            points: vec![
                Point {
                    lat: 31.0,
                    lon: 121.0,
                },
                Point {
                    lat: 31.0,
                    lon: 121.1,
                },
            ],
            width_m: 400.0,
        };
        let on = Point {
            lat: 31.0,
            lon: 121.05,
        };
        assert!(c.distance_m(&on) < 1.0);
        // 0.001° of latitude is ~111 m.
        let off = Point {
            lat: 31.001,
            lon: 121.05,
        };
        assert!(
            (c.distance_m(&off) - 111.2).abs() < 1.0,
            "{}",
            c.distance_m(&off)
        );
        // Beyond the end, the distance is to the end point.
        let past = Point {
            lat: 31.0,
            lon: 121.101,
        };
        let d = c.distance_m(&past);
        assert!((d - past.distance_m(&c.points[1])).abs() < 1.0, "{d}");
        assert!(c.check().is_ok());
        assert!(Corridor {
            points: vec![on],
            width_m: 400.0
        }
        .check()
        .is_err());
        let area = Area {
            lat: 31.0,
            lon: 121.0,
            radius_m: 200.0,
        };
        assert!(area.contains(&Point {
            lat: 31.001,
            lon: 121.0
        }));
        assert!(!area.contains(&off));
    }
}
