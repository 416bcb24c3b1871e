//! A plain streaming read: the bandwidth baseline the quantized kernels are measured against.
//!
//! A quantized matmul at small M is bound by reading its weight bytes, so the honest question
//! is "how close does it get to just reading those bytes?". [`stream_read`] answers the second
//! half: it touches every byte once, on every rayon thread, with wide loads and no other work.

use rayon::prelude::*;

/// Bytes per task: a whole number of 64-byte strides (so the sum is the same whatever the
/// split), large enough that scheduling costs nothing next to the read.
const CHUNK: usize = 256 * 1024;

/// Independent accumulators: eight u64 lanes make one 64-byte stride, which the compiler turns
/// into full-width vector adds without a loop-carried dependency on a single register.
const LANES: usize = 8;

/// Reads every byte of `bytes` once, split over rayon threads, and returns a checksum (the
/// wrapping sum of the little-endian u64 words, trailing bytes added one by one) that depends
/// on every byte, so no read can be optimised away.
pub fn stream_read(bytes: &[u8]) -> u64 {
    if bytes.len() <= CHUNK {
        return sum(bytes);
    }
    bytes
        .par_chunks(CHUNK)
        .map(sum)
        .reduce(|| 0, u64::wrapping_add)
}

/// The widest copy of [`sum_words`] this CPU can run.
fn sum(bytes: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, the only feature `sum_avx512` is compiled for.
            return unsafe { sum_avx512(bytes) };
        }
        if is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, the only feature `sum_avx2` is compiled for.
            return unsafe { sum_avx2(bytes) };
        }
    }
    sum_words(bytes)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn sum_avx512(bytes: &[u8]) -> u64 {
    sum_words(bytes)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_avx2(bytes: &[u8]) -> u64 {
    sum_words(bytes)
}

/// Wrapping sum of the u64 words of `bytes` plus its trailing bytes; inlined into each
/// target-feature copy so every copy is vectorised at its own width.
#[inline(always)]
fn sum_words(bytes: &[u8]) -> u64 {
    let mut acc = [0u64; LANES];
    let strides = bytes.chunks_exact(8 * LANES);
    let tail = strides.remainder();
    for stride in strides {
        for (a, word) in acc.iter_mut().zip(stride.chunks_exact(8)) {
            *a = a.wrapping_add(u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
    }
    let words = tail.chunks_exact(8);
    let bytes_left = words.remainder();
    let mut total = acc.iter().fold(0u64, |s, a| s.wrapping_add(*a));
    for word in words {
        total = total.wrapping_add(u64::from_le_bytes(word.try_into().expect("8 bytes")));
    }
    bytes_left
        .iter()
        .fold(total, |s, b| s.wrapping_add(u64::from(*b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize) -> Vec<u8> {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 56) as u8
            })
            .collect()
    }

    /// The sum as a plain loop over words, to check the vector and threaded versions against.
    fn reference(bytes: &[u8]) -> u64 {
        let words = bytes.chunks_exact(8);
        let tail = words.remainder();
        let mut s = 0u64;
        for w in words {
            s = s.wrapping_add(u64::from_le_bytes(w.try_into().unwrap()));
        }
        tail.iter().fold(s, |s, b| s.wrapping_add(u64::from(*b)))
    }

    #[test]
    fn matches_a_plain_loop_for_every_split() {
        for len in [
            0,
            1,
            7,
            8,
            63,
            64,
            65,
            1000,
            CHUNK,
            CHUNK + 3,
            3 * CHUNK + 77,
        ] {
            let b = bytes(len);
            assert_eq!(stream_read(&b), reference(&b), "len {len}");
        }
    }

    #[test]
    fn depends_on_every_byte() {
        // A length with a partial last chunk, a partial stride and trailing bytes.
        let mut b = bytes(2 * CHUNK + 8 * LANES + 8 + 5);
        let base = stream_read(&b);
        let positions = (0..b.len()).step_by(997).chain([
            0,
            CHUNK - 1,
            CHUNK,
            b.len() - 6,
            b.len() - 5,
            b.len() - 1,
        ]);
        for i in positions {
            b[i] = b[i].wrapping_add(1);
            assert_ne!(stream_read(&b), base, "byte {i} was not read");
            b[i] = b[i].wrapping_sub(1);
        }
        // Every byte, on a buffer small enough to flip them all.
        let mut small = bytes(200);
        let base = stream_read(&small);
        for i in 0..small.len() {
            small[i] ^= 0x80;
            assert_ne!(stream_read(&small), base, "byte {i} was not read");
            small[i] ^= 0x80;
        }
    }
}
