//! Shared helpers: a scripted RNG, hex and JSON access, and the verification report.

use std::convert::Infallible;

use serde_json::Value;

/// Why vectors could not be generated or read.
#[derive(Debug)]
pub enum VectorError {
    /// File I/O.
    Io(std::io::Error),
    /// JSON syntax.
    Json(serde_json::Error),
    /// A field is missing or has the wrong type.
    Field(String),
    /// The real crates refused something the generator expected to work.
    Generation(String),
}

impl std::fmt::Display for VectorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "I/O: {e}"),
            Self::Json(e) => write!(f, "JSON: {e}"),
            Self::Field(s) => write!(f, "field: {s}"),
            Self::Generation(s) => write!(f, "generation: {s}"),
        }
    }
}

impl std::error::Error for VectorError {}

impl From<std::io::Error> for VectorError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<serde_json::Error> for VectorError {
    fn from(e: serde_json::Error) -> Self {
        Self::Json(e)
    }
}

pub(crate) fn gen_err(what: impl std::fmt::Display) -> VectorError {
    VectorError::Generation(what.to_string())
}

/// Counts of checks, with the first failures.
#[derive(Debug, Default)]
pub struct Report {
    /// Checks that held.
    pub passed: usize,
    /// Checks that did not.
    pub failed: usize,
    /// Descriptions of failures (the first 50).
    pub failures: Vec<String>,
}

impl Report {
    pub(crate) fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if ok {
            self.passed += 1;
        } else {
            self.fail(what());
        }
    }

    pub(crate) fn eq(&mut self, what: &str, expected: &str, got: &str) {
        self.check(expected == got, || {
            format!("{what}: expected {expected}, got {got}")
        });
    }

    pub(crate) fn fail(&mut self, what: String) {
        self.failed += 1;
        if self.failures.len() < 50 {
            self.failures.push(what);
        }
    }

    pub(crate) fn merge(&mut self, other: Report) {
        self.passed += other.passed;
        self.failed += other.failed;
        for f in other.failures {
            if self.failures.len() < 50 {
                self.failures.push(f);
            }
        }
    }
}

/// Serves preset bytes in order and records nothing else: the generator's and verifier's RNG.
pub(crate) struct Scripted {
    bytes: Vec<u8>,
    pos: usize,
}

impl Scripted {
    pub(crate) fn new(values: &[Vec<u8>]) -> Self {
        Self {
            bytes: values.concat(),
            pos: 0,
        }
    }

    /// How many bytes were drawn.
    pub(crate) const fn used(&self) -> usize {
        self.pos
    }
}

impl rand_core::TryRng for Scripted {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        // Past the script, keep producing deterministic bytes (a counter), so a verifier fed
        // a short script fails by mismatch rather than by crashing.
        for b in dst.iter_mut() {
            *b = self
                .bytes
                .get(self.pos)
                .copied()
                .unwrap_or((self.pos % 251) as u8);
            self.pos += 1;
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for Scripted {}

/// 32 bytes `start, start+1, ...`.
pub(crate) fn pattern(start: u8) -> [u8; 32] {
    core::array::from_fn(|i| start.wrapping_add(i as u8))
}

/// 32 deterministic bytes named by `label` (SHA-256 of it).
pub(crate) fn seeded(label: &str) -> [u8; 32] {
    hush_crypto::hash::sha256(&[b"hush test vectors ", label.as_bytes()])
}

pub(crate) fn h(bytes: &[u8]) -> Value {
    Value::String(hex::encode(bytes))
}

pub(crate) fn field<'a>(v: &'a Value, name: &str) -> Result<&'a Value, VectorError> {
    v.get(name)
        .ok_or_else(|| VectorError::Field(format!("missing {name}")))
}

pub(crate) fn bytes(v: &Value, name: &str) -> Result<Vec<u8>, VectorError> {
    let s = field(v, name)?
        .as_str()
        .ok_or_else(|| VectorError::Field(format!("{name} is not a string")))?;
    hex::decode(s).map_err(|e| VectorError::Field(format!("{name}: {e}")))
}

pub(crate) fn arr32(v: &Value, name: &str) -> Result<[u8; 32], VectorError> {
    bytes(v, name)?
        .try_into()
        .map_err(|_| VectorError::Field(format!("{name} is not 32 bytes")))
}

pub(crate) fn text<'a>(v: &'a Value, name: &str) -> Result<&'a str, VectorError> {
    field(v, name)?
        .as_str()
        .ok_or_else(|| VectorError::Field(format!("{name} is not a string")))
}

pub(crate) fn num(v: &Value, name: &str) -> Result<u64, VectorError> {
    field(v, name)?
        .as_u64()
        .ok_or_else(|| VectorError::Field(format!("{name} is not a number")))
}

pub(crate) fn list<'a>(v: &'a Value, name: &str) -> Result<&'a Vec<Value>, VectorError> {
    field(v, name)?
        .as_array()
        .ok_or_else(|| VectorError::Field(format!("{name} is not an array")))
}

/// Compares a recorded hex field with computed bytes.
pub(crate) fn check_hex(r: &mut Report, ctx: &str, v: &Value, name: &str, got: &[u8]) {
    match v.get(name).and_then(Value::as_str) {
        Some(expected) => r.eq(&format!("{ctx}.{name}"), expected, &hex::encode(got)),
        None => r.fail(format!("{ctx}: missing {name}")),
    }
}
