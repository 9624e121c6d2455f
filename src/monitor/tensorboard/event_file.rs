//! TensorBoard event files, written and read without a protobuf build step.
//!
//! A file is a sequence of TFRecords: the data's length as a little-endian u64, the masked
//! CRC-32C of those eight bytes, the data, the masked CRC-32C of the data. Each record's data
//! is one `tensorflow.Event` protobuf, of which only these fields are used:
//!
//! ```text
//! Event   { double wall_time = 1; int64 step = 2;
//!           oneof what { string file_version = 3; Summary summary = 5; } }
//! Summary { repeated Value value = 1; }
//! Value   { string tag = 1; float simple_value = 2; }
//! ```
//!
//! The first record of a file is an `Event` holding [`FILE_VERSION`]; every later one holds one
//! scalar. TensorBoard stops reading a file at its first torn or corrupt record and goes on
//! with the next file of the folder; [`read_scalars`] reads the same way, so what it returns is
//! what TensorBoard shows.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The version record that opens every event file. Version 2 makes TensorBoard keep points
/// whose step is below an earlier one's instead of discarding them as a restarted run's.
pub const FILE_VERSION: &str = "brain.Event:2";

/// What filtermon's event file names end with, so that its own files are told from others
/// (e.g. the training's) in the same folder.
pub const SUFFIX: &str = ".filtermon";

const PREFIX: &str = "events.out.tfevents.";

/// One scalar point: a value of a tag at a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    /// Seconds since the Unix epoch.
    pub wall_time: f64,
    /// The x position (tokens seen or training step).
    pub step: i64,
    /// The chart it belongs to.
    pub tag: String,
    /// The value.
    pub value: f32,
}

/// A CRC-32C as TFRecord stores it, `((crc >> 15) | (crc << 17)) + 0xa282ead8`: rotated and
/// offset, because a CRC of data that itself holds CRCs is weak.
pub fn masked_crc(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
        .rotate_right(15)
        .wrapping_add(0xa282_ead8)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn key(out: &mut Vec<u8>, field: u8, wire: u8) {
    out.push(field << 3 | wire);
}

fn len_field(out: &mut Vec<u8>, field: u8, data: &[u8]) {
    key(out, field, LEN);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn event_head(wall_time: f64, step: i64) -> Vec<u8> {
    let mut e = Vec::with_capacity(64);
    key(&mut e, 1, FIXED64);
    e.extend_from_slice(&wall_time.to_le_bytes());
    key(&mut e, 2, VARINT);
    // Negative steps take ten bytes, as protobuf encodes an int64.
    varint(&mut e, step as u64);
    e
}

/// The `Event` that opens a file.
pub fn version_event(wall_time: f64) -> Vec<u8> {
    let mut e = event_head(wall_time, 0);
    len_field(&mut e, 3, FILE_VERSION.as_bytes());
    e
}

/// The `Event` of one scalar. `simple_value` is written even when it is zero: it is a member of
/// a oneof, so its presence is what makes the value a scalar.
pub fn scalar_event(s: &Scalar) -> Vec<u8> {
    let mut value = Vec::with_capacity(s.tag.len() + 8);
    len_field(&mut value, 1, s.tag.as_bytes());
    key(&mut value, 2, FIXED32);
    value.extend_from_slice(&s.value.to_le_bytes());
    let mut summary = Vec::with_capacity(value.len() + 4);
    len_field(&mut summary, 1, &value);
    let mut e = event_head(s.wall_time, s.step);
    len_field(&mut e, 5, &summary);
    e
}

/// Appends `data` to `out` as one TFRecord.
pub fn frame(out: &mut Vec<u8>, data: &[u8]) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
}

/// The data of each whole, intact record, up to the first torn or corrupt one.
pub fn records(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 12 {
        let (len, crc) = (&rest[..8], &rest[8..12]);
        if masked_crc(len).to_le_bytes() != crc {
            break;
        }
        let n = u64::from_le_bytes(len.try_into().unwrap_or_default());
        let Some(end) = usize::try_from(n).ok().and_then(|n| n.checked_add(16)) else {
            break;
        };
        if rest.len() < end {
            break;
        }
        let data = &rest[12..end - 4];
        if masked_crc(data).to_le_bytes() != rest[end - 4..end] {
            break;
        }
        out.push(data);
        rest = &rest[end..];
    }
    out
}

/// A protobuf field: its number and its value.
enum Field<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Len(&'a [u8]),
    Fixed32([u8; 4]),
}

/// Splits a protobuf message into its fields.
fn fields(mut msg: &[u8]) -> anyhow::Result<Vec<(u64, Field<'_>)>> {
    fn read_varint(msg: &mut &[u8]) -> anyhow::Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = msg.split_first().context("truncated varint")?;
            *msg = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        anyhow::bail!("varint longer than ten bytes")
    }
    fn take<'a>(msg: &mut &'a [u8], n: usize) -> anyhow::Result<&'a [u8]> {
        anyhow::ensure!(msg.len() >= n, "truncated field");
        let (head, rest) = msg.split_at(n);
        *msg = rest;
        Ok(head)
    }
    let mut out = Vec::new();
    while !msg.is_empty() {
        let k = read_varint(&mut msg)?;
        let field = match (k & 7) as u8 {
            VARINT => Field::Varint(read_varint(&mut msg)?),
            FIXED64 => Field::Fixed64(take(&mut msg, 8)?.try_into()?),
            LEN => {
                let n = usize::try_from(read_varint(&mut msg)?)?;
                Field::Len(take(&mut msg, n)?)
            }
            FIXED32 => Field::Fixed32(take(&mut msg, 4)?.try_into()?),
            w => anyhow::bail!("unsupported wire type {w}"),
        };
        out.push((k >> 3, field));
    }
    Ok(out)
}

/// The scalars of one `Event` (none for the version record).
fn event_scalars(event: &[u8]) -> anyhow::Result<Vec<Scalar>> {
    let (mut wall_time, mut step) = (0.0, 0);
    let mut values = Vec::new();
    for (number, field) in fields(event)? {
        match (number, field) {
            (1, Field::Fixed64(b)) => wall_time = f64::from_le_bytes(b),
            (2, Field::Varint(v)) => step = v as i64,
            (5, Field::Len(summary)) => {
                for (number, field) in fields(summary)? {
                    if let (1, Field::Len(value)) = (number, field) {
                        values.push(value);
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::with_capacity(values.len());
    for value in values {
        let (mut tag, mut simple) = (None, None);
        for (number, field) in fields(value)? {
            match (number, field) {
                (1, Field::Len(t)) => tag = Some(String::from_utf8(t.to_vec())?),
                (2, Field::Fixed32(b)) => simple = Some(f32::from_le_bytes(b)),
                _ => {}
            }
        }
        if let (Some(tag), Some(value)) = (tag, simple) {
            out.push(Scalar {
                wall_time,
                step,
                tag,
                value,
            });
        }
    }
    Ok(out)
}

/// Every scalar of an event file's bytes, in order, up to its first torn or corrupt record.
pub fn read_scalars(bytes: &[u8]) -> anyhow::Result<Vec<Scalar>> {
    let mut out = Vec::new();
    for (i, data) in records(bytes).into_iter().enumerate() {
        out.extend(event_scalars(data).with_context(|| format!("record {i}: bad Event"))?);
    }
    Ok(out)
}

/// filtermon's event files in `dir` (none when it does not exist), in the order TensorBoard
/// reads them: by name.
pub fn own_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("{}: cannot list", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("{}: cannot list", dir.display()))?
            .path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(PREFIX) && name.ends_with(SUFFIX) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// An event file being written. Records are written whole and flushed by each
/// [`EventFile::append`]; a file that saw a write error is never written again (a torn record
/// in its middle would hide every later one from TensorBoard).
pub struct EventFile {
    path: PathBuf,
    file: File,
}

impl EventFile {
    /// Creates a new event file in `dir` (and `dir` with its parents) holding the version
    /// record. Its name, `events.out.tfevents.<secs>.<host>.filtermon`, sorts after every event
    /// file already there: a running TensorBoard reads a folder's files in name order and
    /// never goes back to an earlier one.
    pub fn create(dir: &Path, wall_time: f64, host: &str) -> anyhow::Result<EventFile> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create folder", dir.display()))?;
        let latest = std::fs::read_dir(dir)
            .with_context(|| format!("{}: cannot list", dir.display()))?
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let secs = name.strip_prefix(PREFIX)?.split('.').next()?;
                secs.parse::<u64>().ok()
            })
            .max();
        let mut secs = (wall_time.max(0.0) as u64).max(latest.map_or(0, |s| s + 1));
        loop {
            // Ten digits until the year 2286, so names sort as their times do.
            let path = dir.join(format!("{PREFIX}{secs:010}.{host}{SUFFIX}"));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    let mut f = EventFile { path, file };
                    let mut bytes = Vec::new();
                    frame(&mut bytes, &version_event(wall_time));
                    f.write(&bytes)?;
                    return Ok(f);
                }
                // Another writer took this second; the next one still sorts after it.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => secs += 1,
                Err(e) => {
                    return Err(e).with_context(|| format!("{}: cannot create", path.display()))
                }
            }
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record per scalar and flushes them to the operating system.
    pub fn append(&mut self, scalars: &[Scalar]) -> anyhow::Result<()> {
        let mut bytes = Vec::with_capacity(scalars.len() * 96);
        for s in scalars {
            frame(&mut bytes, &scalar_event(s));
        }
        self.write(&bytes)
    }

    fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.file
            .write_all(bytes)
            .and_then(|()| self.file.flush())
            .with_context(|| format!("{}: cannot write", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_and_its_mask_match_known_values() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        // ((0xE3069283 >> 15) | (0xE3069283 << 17)) + 0xa282ead8, modulo 2³².
        assert_eq!(masked_crc(b"123456789"), 0xc78a_b0e5);
        // The length field of an empty record.
        assert_eq!(masked_crc(&0u64.to_le_bytes()), 0x0798_0329);
    }

    #[test]
    fn varints_match_protobufs_encoding() {
        let enc = |v: u64| {
            let mut out = Vec::new();
            varint(&mut out, v);
            out
        };
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(1), [0x01]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(enc(16_384), [0x80, 0x80, 0x01]);
        assert_eq!(
            enc(-1i64 as u64),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
    }

    #[test]
    fn a_scalar_event_has_protobufs_bytes() {
        let e = scalar_event(&Scalar {
            wall_time: 1.5,
            step: 300,
            tag: "a/b".into(),
            value: 0.25,
        });
        let mut want = vec![0x09];
        want.extend_from_slice(&1.5f64.to_le_bytes());
        want.extend_from_slice(&[0x10, 0xac, 0x02]);
        // summary (5, 12 bytes) ∋ value (1, 10 bytes) ∋ tag (1, "a/b") and simple_value (2).
        want.extend_from_slice(&[0x2a, 12, 0x0a, 10, 0x0a, 3, b'a', b'/', b'b', 0x15]);
        want.extend_from_slice(&0.25f32.to_le_bytes());
        assert_eq!(e, want);
    }

    #[test]
    fn records_round_trip_and_reading_stops_at_a_torn_or_corrupt_record() {
        let scalars: Vec<Scalar> = (0..3)
            .map(|i| Scalar {
                wall_time: 1e9 + f64::from(i),
                step: i64::from(i) * 1000 - 1,
                tag: format!("filtermon/e/f{i}"),
                value: if i == 0 {
                    0.0
                } else {
                    1.0 / f32::from(i as u8)
                },
            })
            .collect();
        let mut bytes = Vec::new();
        frame(&mut bytes, &version_event(1e9));
        for s in &scalars {
            frame(&mut bytes, &scalar_event(s));
        }
        assert_eq!(read_scalars(&bytes).expect("read"), scalars);

        let torn = &bytes[..bytes.len() - 3];
        assert_eq!(read_scalars(torn).expect("read"), scalars[..2]);
        let mut corrupt = bytes.clone();
        let last_data = bytes.len() - 10;
        corrupt[last_data] ^= 1;
        assert_eq!(read_scalars(&corrupt).expect("read"), scalars[..2]);
    }

    #[test]
    fn new_files_sort_after_existing_ones() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("run");
        let a = EventFile::create(&dir, 1_700_000_000.5, "h").expect("create");
        let b = EventFile::create(&dir, 1_700_000_000.9, "h").expect("create");
        assert_eq!(
            a.path().file_name().and_then(|n| n.to_str()),
            Some("events.out.tfevents.1700000000.h.filtermon")
        );
        assert!(b.path() > a.path());
        assert_eq!(own_files(&dir).expect("list"), [a.path(), b.path()]);
        let bytes = std::fs::read(b.path()).expect("read");
        assert_eq!(records(&bytes), [version_event(1_700_000_000.9)]);
    }
}
