//! A seeded telemetry data set: readings from a fleet of devices, the
//! shapes telematics units and factory sensors send. Each device has a
//! clock and a handful of values that drift (temperature, humidity,
//! battery voltage, engine rpm, odometer, position); about one reading in
//! 40 carries a status string. As JSON (one object per reading, keys
//! spelled out as devices do), as a compact binary form (postcard, as
//! eddy's firmware would encode a struct), and random bytes of the same
//! sizes as the JSON (the worst case for any codec).
//!
//! The same seed gives the same readings on every machine.

#![allow(dead_code)]

use serde::Serialize;

/// One device's state, drifting reading by reading.
struct Device {
    id: u16,
    ts_ms: u64,
    temp_c: f32,
    humidity_pct: f32,
    battery_v: f32,
    rpm: u32,
    odometer_m: u64,
    lat: f64,
    lon: f64,
}

/// A reading as the binary form encodes it (postcard: varints, f32 and
/// f64 as little-endian bytes, the status as an optional string).
#[derive(Serialize)]
pub struct Reading<'a> {
    pub device: u16,
    pub ts_ms: u64,
    pub temp_c: f32,
    pub humidity_pct: f32,
    pub battery_v: f32,
    pub rpm: u32,
    pub odometer_m: u64,
    pub lat: f64,
    pub lon: f64,
    pub status: Option<&'a str>,
}

/// Status strings a device reports now and then.
const STATUSES: [&str; 5] = [
    "door_open",
    "low_battery",
    "engine_warning",
    "geofence_exit",
    "firmware_update_pending",
];

/// Which form the values take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Json,
    Binary,
    Random,
}

impl Form {
    pub fn name(self) -> &'static str {
        match self {
            Form::Json => "json",
            Form::Binary => "binary",
            Form::Random => "random",
        }
    }
}

/// One record: the device's id as the key, the reading as the value.
pub struct TelemetryRecord {
    pub device: u16,
    pub ts_ms: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// The fleet, generating readings round-robin over its devices (each
/// device reports once a second, the fleet's clocks a little apart).
pub struct Fleet {
    rng: fastrand::Rng,
    devices: Vec<Device>,
    next: usize,
}

impl Fleet {
    /// `devices` devices, everything derived from `seed`.
    pub fn new(seed: u64, devices: u16) -> Fleet {
        let mut rng = fastrand::Rng::with_seed(seed);
        let devices = (0..devices)
            .map(|id| Device {
                id,
                ts_ms: 1_764_000_000_000 + rng.u64(0..1_000),
                temp_c: 15.0 + rng.f32() * 15.0,
                humidity_pct: 30.0 + rng.f32() * 40.0,
                battery_v: 12.2 + rng.f32() * 0.6,
                rpm: 800 + rng.u32(0..2_000),
                odometer_m: rng.u64(10_000_000..300_000_000),
                lat: 48.0 + rng.f64() * 6.0,
                lon: 6.0 + rng.f64() * 9.0,
            })
            .collect();
        Fleet {
            rng,
            devices,
            next: 0,
        }
    }

    /// The next reading of the next device, as `form`.
    pub fn next(&mut self, form: Form) -> TelemetryRecord {
        let i = self.next;
        self.next = (self.next + 1) % self.devices.len();
        let rng = &mut self.rng;
        let status = (rng.u32(0..40) == 0).then(|| STATUSES[rng.usize(0..STATUSES.len())]);
        let d = &mut self.devices[i];
        d.ts_ms += 1_000 + rng.u64(0..20);
        d.temp_c = (d.temp_c + (rng.f32() - 0.5) * 0.2).clamp(-20.0, 60.0);
        d.humidity_pct = (d.humidity_pct + (rng.f32() - 0.5) * 0.5).clamp(5.0, 95.0);
        d.battery_v = (d.battery_v + (rng.f32() - 0.52) * 0.01).clamp(11.0, 14.4);
        d.rpm = (i64::from(d.rpm) + rng.i64(-40..=40)).clamp(600, 4_000) as u32;
        d.odometer_m += u64::from(d.rpm / 100) + rng.u64(0..3);
        d.lat += (rng.f64() - 0.5) * 0.0002;
        d.lon += (rng.f64() - 0.5) * 0.0002;
        let key = format!("truck-{:04}", d.id).into_bytes();
        let json = || {
            let mut v = format!(
                "{{\"device\":\"truck-{:04}\",\"ts\":{},\"temp_c\":{:.2},\"humidity_pct\":{:.1},\
                 \"battery_v\":{:.2},\"rpm\":{},\"odometer_m\":{},\"lat\":{:.5},\"lon\":{:.5}",
                d.id,
                d.ts_ms,
                d.temp_c,
                d.humidity_pct,
                d.battery_v,
                d.rpm,
                d.odometer_m,
                d.lat,
                d.lon
            );
            if let Some(s) = status {
                v.push_str(&format!(",\"status\":\"{s}\""));
            }
            v.push('}');
            v.into_bytes()
        };
        let value = match form {
            Form::Json => json(),
            Form::Binary => postcard::to_allocvec(&Reading {
                device: d.id,
                ts_ms: d.ts_ms,
                temp_c: d.temp_c,
                humidity_pct: d.humidity_pct,
                battery_v: d.battery_v,
                rpm: d.rpm,
                odometer_m: d.odometer_m,
                lat: d.lat,
                lon: d.lon,
                status,
            })
            .expect("a reading encodes"),
            Form::Random => {
                let len = json().len();
                let mut v = vec![0u8; len];
                rng.fill(&mut v);
                v
            }
        };
        TelemetryRecord {
            device: d.id,
            ts_ms: i64::try_from(d.ts_ms).unwrap_or(i64::MAX),
            key,
            value,
        }
    }
}

/// `n` records of `form`, as eddy batches of `per_batch` readings of one
/// device each (a device sends its readings in small batches), and the
/// sum of the values' bytes.
pub fn batches(seed: u64, form: Form, n: usize, per_batch: usize) -> (Vec<Vec<u8>>, u64) {
    use eddy::wire::batch::{BatchBuilder, Headers};
    let mut fleet = Fleet::new(seed, 200);
    let mut value_bytes = 0u64;
    let readings: Vec<TelemetryRecord> = (0..n).map(|_| fleet.next(form)).collect();
    // Group per device, in arrival order.
    let mut by_device: std::collections::BTreeMap<u16, Vec<&TelemetryRecord>> =
        std::collections::BTreeMap::new();
    for r in &readings {
        by_device.entry(r.device).or_default().push(r);
    }
    let mut out = Vec::new();
    let mut chunks: Vec<Vec<&TelemetryRecord>> = by_device
        .values()
        .flat_map(|rs| rs.chunks(per_batch).map(|c| c.to_vec()))
        .collect();
    // Interleave devices as a hub receives them (by first timestamp).
    chunks.sort_by_key(|c| c[0].ts_ms);
    for chunk in chunks {
        let capacity = chunk
            .iter()
            .map(|r| r.value.len() + r.key.len() + 64)
            .sum::<usize>()
            + 256;
        let mut b = BatchBuilder::with_capacity(capacity, chunk[0].ts_ms).expect("batch");
        for r in chunk {
            value_bytes += r.value.len() as u64;
            b.push(r.ts_ms, Some(&r.key), &r.value, Headers(&[]))
                .expect("record fits");
        }
        out.push(b.finish_vec());
    }
    (out, value_bytes)
}

/// Writes the data set as files other tools can read: `telemetry.jsonl`
/// (one JSON reading a line), `telemetry.bin` (each postcard reading
/// behind a u32 big-endian length) and `random.bin` (the same framing).
pub fn write_files(dir: &std::path::Path, seed: u64, n: usize) -> std::io::Result<()> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)?;
    for form in [Form::Json, Form::Binary, Form::Random] {
        let mut fleet = Fleet::new(seed, 200);
        let name = match form {
            Form::Json => "telemetry.jsonl",
            Form::Binary => "telemetry.bin",
            Form::Random => "random.bin",
        };
        let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join(name))?);
        for _ in 0..n {
            let r = fleet.next(form);
            if form == Form::Json {
                out.write_all(&r.value)?;
                out.write_all(b"\n")?;
            } else {
                let len = u32::try_from(r.value.len()).unwrap_or(u32::MAX);
                out.write_all(&len.to_be_bytes())?;
                out.write_all(&r.value)?;
            }
        }
        out.flush()?;
    }
    Ok(())
}
