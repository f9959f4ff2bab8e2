//! Large copies split over a few threads at once.
//!
//! One core does not drive a machine's memory bandwidth: measured on a
//! 2-core VM, 100 MB into shared memory took 10.2 to 10.8 ms on one thread
//! and 6.8 to 7.2 ms on two. A value written into the store (a `put`, a
//! return, a generator's item) is such a copy, so a large one is split into
//! page-sized pieces copied at once by scoped threads (Ray copies large
//! buffers with several threads too). Small copies stay on the caller's
//! thread: a thread start costs tens of microseconds.
//!
//! Used where a front writes a whole value into a reserved slot
//! (`ferroray_core::codec::RawSlot::write_at`: the Python front's puts,
//! returns and items). The Rust front's [`crate::ArenaWriter`] writes
//! through 4 MiB windows, one at a time, and does not use it yet.

use std::sync::OnceLock;

/// Copies shorter than this stay on one thread.
pub const PARALLEL_MIN: usize = 8 << 20;

/// No piece is shorter than this (nor a thread started for less).
const PIECE_MIN: usize = 4 << 20;

/// At most this many threads copy at once (the caller's among them): past
/// the memory bandwidth more threads only take CPU from others.
const MAX_THREADS: usize = 4;

/// The threads a copy of `len` bytes uses: 1 under [`PARALLEL_MIN`], else
/// up to the CPUs this process may use and [`MAX_THREADS`].
pub fn threads_for(len: usize) -> usize {
    if len < PARALLEL_MIN {
        return 1;
    }
    static CPUS: OnceLock<usize> = OnceLock::new();
    let cpus = *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    cpus.min(MAX_THREADS).min(len / PIECE_MIN).max(1)
}

/// Copies `src` into `dst` (of the same length), in page-sized pieces on
/// up to [`threads_for`] threads, the caller's included; returns when all
/// are written.
///
/// # Panics
/// If the lengths differ.
pub fn copy_parallel(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "copy_parallel needs equal lengths");
    let threads = threads_for(src.len());
    if threads <= 1 {
        dst.copy_from_slice(src);
        return;
    }
    let piece = src.len().div_ceil(threads).next_multiple_of(4096);
    // Each thread takes the next piece until none is left: a thread that
    // could not be started leaves its pieces to the others.
    let pieces = std::sync::Mutex::new(dst.chunks_mut(piece).zip(src.chunks(piece)));
    let copy = || loop {
        let next = pieces.lock().unwrap_or_else(std::sync::PoisonError::into_inner).next();
        match next {
            Some((d, from)) => d.copy_from_slice(from),
            None => break,
        }
    };
    std::thread::scope(|s| {
        for _ in 1..threads {
            // No thread to be had: the others copy its piece.
            let _ = std::thread::Builder::new().name("ferroray-copy".into()).spawn_scoped(s, copy);
        }
        copy();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_copies_use_one_thread_large_ones_more_when_there_are_cpus() {
        assert_eq!(threads_for(0), 1);
        assert_eq!(threads_for(PARALLEL_MIN - 1), 1);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(threads_for(100 << 20), cpus.min(MAX_THREADS));
        assert!(threads_for(PARALLEL_MIN) <= 2);
    }

    #[test]
    fn every_byte_lands_in_place_whatever_the_length() {
        for len in [0, 1, 4095, PARALLEL_MIN - 1, PARALLEL_MIN, PARALLEL_MIN + 4097, 3 * PIECE_MIN + 13] {
            let src: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut dst = vec![0u8; len];
            copy_parallel(&mut dst, &src);
            assert!(dst == src, "length {len}");
        }
    }

    #[test]
    #[should_panic(expected = "equal lengths")]
    fn unequal_lengths_are_refused() {
        copy_parallel(&mut [0u8; 2], &[1u8; 3]);
    }
}
