//! The erasure code that carries the post-quantum ratchet's keys and ciphertexts in chunks
//! (SPEC §7.8.3): a systematic Reed–Solomon code over GF(2^8), evaluation form.
//!
//! A payload is zero-padded to `k` chunks of [`CHUNK_LEN`] bytes. Byte position `p` of the
//! chunks defines the polynomial `P_p` of degree below `k` with `P_p(j) = chunk_j[p]` for
//! `j < k`; chunk `x` (any `x` in 0..=255) is `(P_0(x), …, P_{CHUNK_LEN-1}(x))`. So chunks
//! `0..k` are the payload itself and any `k` distinct chunks give it back (the code is MDS):
//! a lost or reordered message delays an epoch by one chunk, never breaks it.
//!
//! The field is GF(2^8) modulo x^8 + x^4 + x^3 + x^2 + 1 (0x11d), with 2 as generator; a
//! point `x` is the field element whose bits are the byte `x`.

/// The bytes of payload one chunk carries.
pub const CHUNK_LEN: usize = 104;

/// The field's multiplicative group has this order.
const ORDER: usize = 255;

/// `LOG[b]` for `b != 0`; `LOG[0]` is a sentinel that lands in the zero tail of [`EXP`], so a
/// multiplication needs no branch.
const LOG: [u16; 256] = {
    let mut log = [0u16; 256];
    let mut x: u16 = 1;
    let mut i = 0;
    while i < ORDER {
        log[x as usize] = i as u16;
        x <<= 1;
        if x & 0x100 != 0 {
            x ^= 0x11d;
        }
        i += 1;
    }
    log[0] = 2 * ORDER as u16 + 2;
    log
};

/// `EXP[i] = 2^i` for `i < 2·255`; zero from `2·255` on (products with zero).
const EXP: [u8; 4 * ORDER] = {
    let mut exp = [0u8; 4 * ORDER];
    let mut x: u16 = 1;
    let mut i = 0;
    while i < 2 * ORDER {
        exp[i] = x as u8;
        x <<= 1;
        if x & 0x100 != 0 {
            x ^= 0x11d;
        }
        i += 1;
    }
    exp
};

/// The logarithm of a nonzero element.
fn log(a: u8) -> usize {
    debug_assert!(a != 0);
    LOG[a as usize] as usize
}

/// `out ^= c · data` for `c = 2^log_c` (so `c != 0`), bytewise.
fn mul_add(out: &mut [u8; CHUNK_LEN], data: &[u8], log_c: usize) {
    for (o, &b) in out.iter_mut().zip(data) {
        *o ^= EXP[LOG[b as usize] as usize + log_c];
    }
}

/// The number of chunks a payload of `len` bytes is cut into.
pub(crate) const fn chunks_for(len: usize) -> usize {
    len.div_ceil(CHUNK_LEN)
}

/// Data chunk `j` of `payload`: its bytes `j·CHUNK_LEN..`, zero-padded (a slice, shorter than
/// [`CHUNK_LEN`] only for the last one).
fn data(payload: &[u8], j: usize) -> &[u8] {
    let start = (j * CHUNK_LEN).min(payload.len());
    let end = ((j + 1) * CHUNK_LEN).min(payload.len());
    &payload[start..end]
}

/// Chunk `x` of `payload` cut into `k = chunks_for(payload.len())` chunks.
pub(crate) fn encode(payload: &[u8], x: u8) -> [u8; CHUNK_LEN] {
    let k = chunks_for(payload.len());
    let mut out = [0u8; CHUNK_LEN];
    let x = usize::from(x);
    if x < k {
        let d = data(payload, x);
        out[..d.len()].copy_from_slice(d);
        return out;
    }
    // Lagrange over the points 0..k: L_j(x) = Π_{m≠j} (x−m)/(j−m). With N = Π_m (x−m)
    // (no factor is zero, as x ≥ k), L_j(x) = N / ((x−j) · D_j), D_j = Π_{m≠j} (j−m).
    let log_n: usize = (0..k).map(|m| log((x ^ m) as u8)).sum();
    for j in 0..k {
        let log_d: usize = (0..k).filter(|&m| m != j).map(|m| log((j ^ m) as u8)).sum();
        let log_den = log((x ^ j) as u8) + log_d;
        let log_c = (log_n + ORDER * k - log_den % ORDER) % ORDER;
        mul_add(&mut out, data(payload, j), log_c);
    }
    out
}

/// The `k·CHUNK_LEN` bytes (the padded payload) from `k` chunks with distinct indices.
/// The caller guarantees `chunks.len() == k` and distinct indices.
pub(crate) fn decode(k: usize, chunks: &[(u8, [u8; CHUNK_LEN])]) -> Vec<u8> {
    debug_assert_eq!(chunks.len(), k);
    let mut out = vec![0u8; k * CHUNK_LEN];
    for t in 0..k {
        let slot: &mut [u8; CHUNK_LEN] = (&mut out[t * CHUNK_LEN..(t + 1) * CHUNK_LEN])
            .try_into()
            .unwrap_or_else(|_| unreachable!("the slice is CHUNK_LEN long"));
        if let Some((_, c)) = chunks.iter().find(|(x, _)| usize::from(*x) == t) {
            *slot = *c;
            continue;
        }
        // P(t) = Σ_i y_i · Π_{j≠i} (t−x_j)/(x_i−x_j); t is none of the x_j.
        let log_n: usize = chunks.iter().map(|(xj, _)| log(t as u8 ^ xj)).sum();
        for (i, (xi, yi)) in chunks.iter().enumerate() {
            let log_d: usize = chunks
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, (xj, _))| log(xi ^ xj))
                .sum();
            let log_den = log(t as u8 ^ xi) + log_d;
            let log_c = (log_n + ORDER * k - log_den % ORDER) % ORDER;
            mul_add(slot, yi, log_c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mul(a: u8, b: u8) -> u8 {
        // Shift-and-add, independent of the tables.
        let (mut a, mut b, mut p) = (u16::from(a), b, 0u16);
        while b != 0 {
            if b & 1 != 0 {
                p ^= a;
            }
            a <<= 1;
            if a & 0x100 != 0 {
                a ^= 0x11d;
            }
            b >>= 1;
        }
        p as u8
    }

    #[test]
    fn tables_multiply_like_the_field() {
        for a in 0..=255u8 {
            for b in 1..=255u8 {
                let mut out = [0u8; CHUNK_LEN];
                mul_add(&mut out, &[a], log(b));
                assert_eq!(out[0], mul(a, b), "{a} * {b}");
            }
        }
    }

    fn payload(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn systematic_chunks_are_the_payload() {
        let p = payload(1184, 7);
        let k = chunks_for(p.len());
        assert_eq!(k, 12);
        let mut joined = Vec::new();
        for x in 0..k as u8 {
            joined.extend_from_slice(&encode(&p, x));
        }
        assert_eq!(&joined[..p.len()], &p[..]);
        assert!(joined[p.len()..].iter().all(|&b| b == 0));
    }

    #[test]
    fn any_k_chunks_decode() {
        for len in [1088usize, 1184, 104, 1] {
            let p = payload(len, 3);
            let k = chunks_for(len);
            let mut padded = p.clone();
            padded.resize(k * CHUNK_LEN, 0);
            // Several index sets: all parity, mixed, the last points of the field.
            let sets: Vec<Vec<u8>> = vec![
                (0..k as u8).collect(),
                (k as u8..2 * k as u8).collect(),
                (0..k as u8)
                    .map(|i| if i % 2 == 0 { i } else { 255 - i })
                    .collect(),
                (0..k as u8).map(|i| 255 - i).collect(),
            ];
            for set in sets {
                let chunks: Vec<_> = set.iter().map(|&x| (x, encode(&p, x))).collect();
                assert_eq!(decode(k, &chunks), padded, "len {len}, set {set:?}");
            }
        }
    }

    #[test]
    fn a_wrong_chunk_changes_the_result() {
        let p = payload(1184, 9);
        let k = chunks_for(p.len());
        let mut chunks: Vec<_> = (20..20 + k as u8).map(|x| (x, encode(&p, x))).collect();
        chunks[3].1[5] ^= 1;
        assert_ne!(&decode(k, &chunks)[..p.len()], &p[..]);
    }
}
