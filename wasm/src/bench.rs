//! The same workloads in a browser and natively, for the ratios in docs/BENCHMARKS.md ("hush
//! in the browser"): `benchmark()` in the page (`web/tests/bench.mjs` runs it in Chromium)
//! and `cargo run --release -p hush-wasm --example bench` on the machine. Each workload is
//! timed three times and the fastest run kept; messages are 100 bytes, sessions are PQXDH
//! with the post-quantum ratchet (what the client uses).

use hush_crypto::IdentityKeyPair;
use hush_groups::{Group, GroupConfig, Role};
use hush_sessions::{
    KemPrekey, OneTimePrekey, PrekeyBundle, Session, SessionMessage, SignedPrekey, Suite,
};
use rand::SeedableRng as _;
use rand::rngs::StdRng;

const MSG: [u8; 100] = [0x42; 100];

/// One workload's result.
#[derive(Debug, Clone)]
pub struct Measured {
    /// What was timed.
    pub name: &'static str,
    /// Operations in one timed run.
    pub iterations: u32,
    /// The fastest of three runs, in microseconds per operation.
    pub micros: f64,
}

/// A setup failed: the workloads only use valid keys, so this is a bug.
#[derive(Debug)]
pub struct BenchError(&'static str);

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

struct Pair {
    rng: StdRng,
    alice: Session,
    bob: Session,
}

fn pair() -> Result<Pair, BenchError> {
    let mut rng = StdRng::seed_from_u64(1);
    let a = IdentityKeyPair::generate(&mut rng);
    let b = IdentityKeyPair::generate(&mut rng);
    let spk = SignedPrekey::generate_for(Suite::PostQuantum, 1, &b, &mut rng);
    let opk = OneTimePrekey::generate(2, &mut rng);
    let kem = KemPrekey::generate_one_time(3, &b, &mut rng);
    let bundle = PrekeyBundle::new(b.public(), &spk, Some(&opk)).with_kem_prekey(&kem);
    let mut alice =
        Session::initiate(&a, &bundle, None, &mut rng).map_err(|_| BenchError("initiate"))?;
    let SessionMessage::Prekey(m) = alice.encrypt(&MSG).map_err(|_| BenchError("encrypt"))? else {
        return Err(BenchError("not a prekey message"));
    };
    let (mut bob, _) =
        Session::accept_with_kem(&b, &spk, Some(&opk), Some(&kem), &m, None, &mut rng)
            .map_err(|_| BenchError("accept"))?;
    let r = bob
        .encrypt(&MSG)
        .map_err(|_| BenchError("encrypt"))?
        .to_bytes();
    alice
        .decrypt_bytes(&r, &mut rng)
        .map_err(|_| BenchError("decrypt"))?;
    Ok(Pair { rng, alice, bob })
}

/// Times `f` (which runs `n` operations) three times with `now` (milliseconds), and keeps
/// the fastest.
fn best(
    now: &dyn Fn() -> f64,
    n: u32,
    mut f: impl FnMut() -> Result<(), BenchError>,
) -> Result<f64, BenchError> {
    let mut fastest = f64::INFINITY;
    for _ in 0..3 {
        let start = now();
        f()?;
        fastest = fastest.min(now() - start);
    }
    Ok(fastest * 1000.0 / f64::from(n))
}

/// Runs every workload; `now` is a clock in milliseconds (`performance.now()` in a page,
/// `Instant` natively).
pub fn run(now: &dyn Fn() -> f64) -> Result<Vec<Measured>, BenchError> {
    let mut out = Vec::new();

    let n = 2000;
    let mut p = pair()?;
    let micros = best(now, n, || {
        for _ in 0..n {
            std::hint::black_box(p.alice.encrypt(&MSG).map_err(|_| BenchError("encrypt"))?);
        }
        Ok(())
    })?;
    out.push(Measured {
        name: "encrypt on an existing chain",
        iterations: n,
        micros,
    });

    let mut p = pair()?;
    let mut fastest = f64::INFINITY;
    for _ in 0..3 {
        let msgs = (0..n)
            .map(|_| p.bob.encrypt(&MSG).map(|m| m.to_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| BenchError("encrypt"))?;
        let start = now();
        for m in &msgs {
            std::hint::black_box(
                p.alice
                    .decrypt_bytes(m, &mut p.rng)
                    .map_err(|_| BenchError("decrypt"))?,
            );
        }
        fastest = fastest.min(now() - start);
    }
    out.push(Measured {
        name: "decrypt on an existing chain",
        iterations: n,
        micros: fastest * 1000.0 / f64::from(n),
    });

    let n = 50;
    let micros = best(now, n, || {
        for _ in 0..n {
            std::hint::black_box(pair()?);
        }
        Ok(())
    })?;
    out.push(Measured {
        name: "session setup (PQXDH, both sides, first messages)",
        iterations: n,
        micros,
    });

    let n = 2000;
    let mut rng = StdRng::seed_from_u64(2);
    let ids: Vec<_> = (0..2)
        .map(|_| IdentityKeyPair::generate(&mut rng))
        .collect();
    let config = GroupConfig::default();
    let (mut sender, create) = Group::create(
        &ids[0],
        &[(*ids[1].public(), Role::Member)],
        config,
        &mut rng,
    )
    .map_err(|_| BenchError("group"))?;
    let mut receiver =
        Group::from_create(ids[1].public(), &create, config).map_err(|_| BenchError("group"))?;
    let first = sender
        .encrypt(&MSG, 1, &mut rng)
        .map_err(|_| BenchError("group encrypt"))?;
    let Some(distribution) = first.distribution else {
        return Err(BenchError("no sender key"));
    };
    receiver
        .process_distribution(ids[0].public(), &distribution)
        .map_err(|_| BenchError("sender key"))?;
    receiver
        .decrypt(&first.message)
        .map_err(|_| BenchError("group decrypt"))?;
    let micros = best(now, n, || {
        for _ in 0..n {
            let m = sender
                .encrypt(&MSG, 1, &mut rng)
                .map_err(|_| BenchError("group encrypt"))?;
            std::hint::black_box(
                receiver
                    .decrypt(&m.message)
                    .map_err(|_| BenchError("group decrypt"))?,
            );
        }
        Ok(())
    })?;
    out.push(Measured {
        name: "group message (send and receive)",
        iterations: n,
        micros,
    });
    Ok(out)
}

/// The results as JSON: `[{ "name", "iterations", "micros" }]`.
pub fn to_json(results: &[Measured]) -> String {
    let rows: Vec<_> = results
        .iter()
        .map(|r| {
            serde_json::json!({ "name": r.name, "iterations": r.iterations, "micros": r.micros })
        })
        .collect();
    serde_json::Value::Array(rows).to_string()
}
