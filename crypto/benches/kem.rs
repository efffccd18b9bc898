//! ML-KEM-768 as hush uses it (Cryspen's `libcrux-ml-kem`, through `hush_crypto::kem`)
//! beside RustCrypto's `ml-kem`, the other pure-Rust candidate, in the same run: key
//! generation from a 64-byte seed, encapsulation, decapsulation. Run:
//! `cargo bench -p hush-crypto --bench kem`. libcrux picks AVX2 code at run time on x86-64;
//! for its portable code (what runs on wasm32, or on CPUs without AVX2), build with
//! `LIBCRUX_DISABLE_SIMD256=1`. The figures and ratios are in docs/BENCHMARKS.md.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hush_crypto::SecretBytes;
use hush_crypto::kem::KemKeyPair;
use ml_kem::array::Array;
use ml_kem::{Decapsulate, DecapsulationKey, KeyExport, MlKem768};

fn kem(c: &mut Criterion) {
    let mut rng = rand::rng();
    let seed = [7u8; 64];
    let m = Array::from([9u8; 32]);

    let mut g = c.benchmark_group("ml-kem-768/keygen");
    g.bench_function("hush (libcrux-ml-kem)", |b| {
        b.iter(|| KemKeyPair::from_seed(SecretBytes::from_bytes(black_box(seed))))
    });
    g.bench_function("ml-kem (RustCrypto)", |b| {
        b.iter(|| DecapsulationKey::<MlKem768>::from_seed(black_box(Array::from(seed))))
    });
    g.finish();

    let hush = KemKeyPair::from_seed(SecretBytes::from_bytes(seed));
    let rc = DecapsulationKey::<MlKem768>::from_seed(Array::from(seed));
    assert_eq!(
        &hush.public().to_bytes()[..],
        &rc.encapsulation_key().to_bytes()[..],
        "the two implementations disagree"
    );

    let mut g = c.benchmark_group("ml-kem-768/encapsulate");
    g.bench_function("hush (libcrux-ml-kem)", |b| {
        b.iter(|| black_box(hush.public()).encapsulate(&mut rng))
    });
    g.bench_function("ml-kem (RustCrypto)", |b| {
        b.iter(|| black_box(rc.encapsulation_key()).encapsulate_deterministic(black_box(&m)))
    });
    g.finish();

    let (hush_ct, _) = hush.public().encapsulate(&mut rng);
    let (rc_ct, _) = rc.encapsulation_key().encapsulate_deterministic(&m);
    let mut g = c.benchmark_group("ml-kem-768/decapsulate");
    g.bench_function("hush (libcrux-ml-kem)", |b| {
        b.iter(|| hush.decapsulate(black_box(&hush_ct)))
    });
    g.bench_function("ml-kem (RustCrypto)", |b| {
        b.iter(|| rc.decapsulate(black_box(&rc_ct)))
    });
    g.finish();
}

criterion_group!(benches, kem);
criterion_main!(benches);
