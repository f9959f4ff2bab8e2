//! Writing a large object into the arena at the speed of one memory copy.
//!
//! A writer maps the range it fills apart from the arena's own mapping, so
//! that its pages leave the writer's resident set afterwards (a worker that
//! streams many large objects keeps none of them). Mapping a range costs a
//! page-table entry per 4 KiB page on the way in and again on the way out:
//! for 100 MB, about as long as the copy itself. Large writes therefore go
//! through a pipeline of small windows:
//!
//! 1. A helper thread maps [`CHUNK`]-sized windows, pre-faulted, and queues
//!    at most [`AHEAD`] of them: the copy never waits for page tables, and
//!    the mapped memory stays a few chunks whatever the object's size.
//! 2. The writer's thread copies into the front window; when it is full it
//!    hands it back and takes the next one. Serialization runs on the
//!    caller's thread, so its thread-locals (the nested-ref collector) see it.
//! 3. The helper unmaps the windows handed back, between mappings, so the
//!    teardown overlaps the copy as well.
//! 4. The helper stops when the range is covered, when mapping fails (the
//!    error reaches the writer in the window's place), or when the writer is
//!    dropped early (its send fails); it then unmaps what it still holds.
//!
//! Writes up to `2 * CHUNK` use one window and no thread.

use std::io;
use std::sync::mpsc;

use crate::arena::{Arena, WriteWindow};
use crate::StoreError;

/// Window size of a pipelined write.
pub const CHUNK: u64 = 4 << 20;
/// Windows mapped ahead of the one being filled.
pub const AHEAD: usize = 2;

impl Arena {
    /// Runs `fill` with an [`ArenaWriter`] over `[offset, offset + len)`.
    /// Bytes past the range are refused (`write` returns 0, so `write_all`
    /// fails with `WriteZero`).
    ///
    /// # Safety
    /// The caller must be the only writer of that range, and nobody may read
    /// it until `write_with` returns (a fresh allocation, sealed afterwards).
    pub unsafe fn write_with<R>(
        &self,
        offset: u64,
        len: u64,
        fill: impl FnOnce(&mut ArenaWriter) -> R,
    ) -> Result<R, StoreError> {
        if offset.checked_add(len).is_none_or(|e| e > self.capacity()) {
            return Err(StoreError::OutOfBounds { offset, len, capacity: self.capacity() });
        }
        if len <= 2 * CHUNK {
            // SAFETY: our caller is the range's only user until we return, and
            // the window is dropped before we do.
            let window = unsafe { self.map_window(offset, len)? };
            let mut writer = ArenaWriter::new(Some(window), None, None);
            return Ok(fill(&mut writer));
        }
        std::thread::scope(|s| {
            let (ready_tx, ready_rx) = mpsc::sync_channel(AHEAD);
            let (done_tx, done_rx) = mpsc::channel();
            std::thread::Builder::new()
                .name("ferroray-map-ahead".into())
                // SAFETY: the helper's windows cover `[offset, offset + len)`,
                // which our caller alone uses until we return; the scope
                // joins the helper, and the writer (holding the windows it
                // received) is dropped inside it.
                .spawn_scoped(s, move || unsafe { self.map_ahead(offset, len, ready_tx, done_rx) })
                .map_err(StoreError::Io)?;
            let mut writer = ArenaWriter::new(None, Some(ready_rx), Some(done_tx));
            Ok(fill(&mut writer))
        })
    }

    /// The helper's side of the pipeline (steps 1, 3 and 4).
    ///
    /// # Safety
    /// As [`Arena::map_window`], for `[offset, offset + len)` until every
    /// window sent on `ready` has been dropped.
    unsafe fn map_ahead(
        &self,
        offset: u64,
        len: u64,
        ready: mpsc::SyncSender<Result<WriteWindow, StoreError>>,
        done: mpsc::Receiver<WriteWindow>,
    ) {
        let mut at = 0;
        while at < len {
            let n = CHUNK.min(len - at);
            // SAFETY: a sub-range of ours; see this function's contract.
            let window = unsafe { self.map_window(offset + at, n) };
            let failed = window.is_err();
            while let Ok(old) = done.try_recv() {
                drop(old);
            }
            if ready.send(window).is_err() || failed {
                break;
            }
            at += n;
        }
        drop(ready);
        // Until the writer is dropped.
        for old in done {
            drop(old);
        }
    }
}

/// An `io::Write` into a range of the arena; see [`Arena::write_with`].
///
/// Serde writes a `Vec<u8>` or `Vec<f64>` one element at a time, so the
/// common case (the bytes fit the current window) is a bounds check and a copy
/// through a cached pointer.
pub struct ArenaWriter {
    /// Next byte to write in `current`; meaningful while `room > 0`.
    next: *mut u8,
    /// Bytes left in `current`.
    room: usize,
    /// The window being filled; `next` points into its mapping, which does
    /// not move when the `WriteWindow` value does.
    current: Option<WriteWindow>,
    /// Windows from the helper; `None` for a single-window write.
    ready: Option<mpsc::Receiver<Result<WriteWindow, StoreError>>>,
    /// Filled windows back to the helper, to unmap.
    done: Option<mpsc::Sender<WriteWindow>>,
}

impl ArenaWriter {
    fn new(
        first: Option<WriteWindow>,
        ready: Option<mpsc::Receiver<Result<WriteWindow, StoreError>>>,
        done: Option<mpsc::Sender<WriteWindow>>,
    ) -> Self {
        let mut w = ArenaWriter { next: std::ptr::null_mut(), room: 0, current: None, ready, done };
        if let Some(window) = first {
            w.start(window);
        }
        w
    }

    /// Makes `window` the current one; the filled one goes back to the helper.
    fn start(&mut self, mut window: WriteWindow) {
        let slice = window.as_mut_slice();
        (self.next, self.room) = (slice.as_mut_ptr(), slice.len());
        if let Some(filled) = self.current.replace(window) {
            if let Some(done) = &self.done {
                // The helper only goes away after `done` is dropped.
                let _ = done.send(filled);
            }
        }
    }

    /// Copies `buf[..n]` into the current window; `n <= self.room`.
    #[inline]
    fn put(&mut self, buf: &[u8], n: usize) {
        debug_assert!(n <= self.room && n <= buf.len());
        // SAFETY: `n <= room` and `next..next + room` lies in the current
        // window's mapping, which stays mapped while `current` holds it and
        // which nothing else reads or writes (the `write_with` contract), so
        // `buf`, a live shared reference, cannot overlap it.
        unsafe {
            std::ptr::copy_nonoverlapping(buf.as_ptr(), self.next, n);
            self.next = self.next.add(n);
        }
        self.room -= n;
    }

    /// Replaces the filled window with the next one; false at the end of the range.
    #[cold]
    fn advance(&mut self) -> io::Result<bool> {
        let Some(ready) = &self.ready else {
            return Ok(false);
        };
        match ready.recv() {
            Ok(Ok(window)) => {
                self.start(window);
                Ok(true)
            }
            Ok(Err(StoreError::Io(e))) => Err(e),
            Ok(Err(e)) => Err(io::Error::other(e)),
            Err(mpsc::RecvError) => Ok(false),
        }
    }
}

impl io::Write for ArenaWriter {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.room == 0 {
            if !self.advance()? {
                return Ok(0);
            }
        }
        let n = self.room.min(buf.len());
        self.put(buf, n);
        Ok(n)
    }

    #[inline]
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if buf.len() <= self.room {
            self.put(buf, buf.len());
            return Ok(());
        }
        let mut rest = buf;
        while !rest.is_empty() {
            match self.write(rest)? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => rest = &rest[n..],
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn small_and_pipelined_writes_land_in_place() {
        let cap = 64 << 20;
        let a = Arena::create(cap).unwrap();
        // One window; odd offset and length.
        let small = pattern(100_003);
        // SAFETY: fresh arena, this test is the only writer and reads after.
        let r = unsafe { a.write_with(4097, small.len() as u64, |w| w.write_all(&small)) }.unwrap();
        r.unwrap();
        // SAFETY: written and done; nothing writes the range while it is read.
        assert_eq!(unsafe { a.slice(4097, small.len() as u64) }.unwrap(), &small[..]);
        // Pipelined: many windows, a length that is not a multiple of CHUNK,
        // written in pieces that straddle window boundaries.
        let big = pattern(5 * CHUNK as usize + 12_345);
        let at = 8 << 20;
        // SAFETY: as above, a disjoint range.
        let r = unsafe {
            a.write_with(at + 3, big.len() as u64, |w| {
                for piece in big.chunks(1_000_003) {
                    w.write_all(piece)?;
                }
                io::Result::Ok(())
            })
        }
        .unwrap();
        r.unwrap();
        // SAFETY: written and done; nothing writes the range while it is read.
        assert_eq!(unsafe { a.slice(at + 3, big.len() as u64) }.unwrap(), &big[..]);
        // Tiny writes (as serde makes for a `Vec<u8>`) across window boundaries.
        let tiny = pattern(2 * CHUNK as usize + 100);
        let at = 40 << 20;
        // SAFETY: as above, a disjoint range.
        let r = unsafe {
            a.write_with(at, tiny.len() as u64, |w| {
                for piece in tiny.chunks(7) {
                    w.write_all(piece)?;
                }
                io::Result::Ok(())
            })
        }
        .unwrap();
        r.unwrap();
        // SAFETY: written and done; nothing writes the range while it is read.
        assert_eq!(unsafe { a.slice(at, tiny.len() as u64) }.unwrap(), &tiny[..]);
    }

    #[test]
    fn writing_past_the_range_is_refused() {
        let a = Arena::create(64 << 20).unwrap();
        for len in [1000u64, 3 * CHUNK + 7] {
            let data = vec![1u8; len as usize + 1];
            // SAFETY: fresh arena, the only writer.
            let r = unsafe { a.write_with(0, len, |w| w.write_all(&data)) }.unwrap();
            assert_eq!(r.unwrap_err().kind(), io::ErrorKind::WriteZero, "len {len}");
        }
        // SAFETY: the call fails before mapping anything.
        assert!(matches!(unsafe { a.write_with(1, 64 << 20, |_| ()) }, Err(StoreError::OutOfBounds { .. })));
    }

    #[test]
    fn a_writer_that_stops_early_leaves_nothing_mapped() {
        use std::os::unix::fs::MetadataExt;
        let a = Arena::create(64 << 20).unwrap();
        // Mappings of this arena's memfd (other tests map their own arenas).
        // SAFETY: dup of a valid fd, owned by the File.
        let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(libc::dup(a.fd())) };
        let inode = file.metadata().unwrap().ino().to_string();
        let mappings = || {
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
            maps.lines().filter(|l| l.split_whitespace().nth(4) == Some(inode.as_str())).count()
        };
        assert_eq!(mappings(), 1, "the arena's own mapping");
        // SAFETY: fresh arena, the only writer.
        unsafe { a.write_with(0, 40 << 20, |w| w.write_all(&[9u8; 1000])) }.unwrap().unwrap();
        assert_eq!(mappings(), 1, "every window is unmapped when write_with returns");
        // SAFETY: written and done; nothing writes the range while it is read.
        assert!(unsafe { a.slice(0, 1000) }.unwrap().iter().all(|&b| b == 9));
    }
}
