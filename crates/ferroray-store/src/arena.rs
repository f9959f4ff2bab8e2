//! The shared-memory arena: one `memfd_create` file mapped `MAP_SHARED`.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use memmap2::{MmapOptions, MmapRaw};

use crate::StoreError;

const MEMFD_NAME: &CStr = c"ferroray-store";

/// A shared-memory region of `capacity` bytes backed by an anonymous memfd.
///
/// The file is sparse: pages are allocated when first touched and given back
/// with [`Arena::release`].
#[derive(Debug)]
pub struct Arena {
    // Field order: the mapping is dropped before the fd is closed.
    map: MmapRaw,
    file: File,
    capacity: u64,
}

impl Arena {
    /// `memfd_create("ferroray-store", MFD_CLOEXEC | MFD_ALLOW_SEALING)`,
    /// `ftruncate(capacity)`, seal its size, then map it `MAP_SHARED`
    /// read/write.
    ///
    /// The size seals (`F_SEAL_SHRINK | F_SEAL_GROW`, then `F_SEAL_SEAL`)
    /// keep any process holding the fd (a worker) from truncating the file
    /// under the mappings, which would make their accesses raise SIGBUS.
    /// Punching holes ([`release`](Self::release)) is still allowed.
    pub fn create(capacity: u64) -> Result<Arena, StoreError> {
        check_capacity(capacity)?;
        // SAFETY: the name is a valid NUL-terminated string; flags are valid.
        let fd = unsafe { libc::memfd_create(MEMFD_NAME.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        if fd < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(capacity)?; // ftruncate: sparse, no pages allocated yet
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: fcntl on our own fd; F_ADD_SEALS takes an int argument.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(io::Error::last_os_error().into());
        }
        Self::map(file, capacity)
    }

    /// Map an arena whose fd was inherited (a worker process). Takes
    /// ownership of `fd`: it is closed when the `Arena` is dropped (also when
    /// this returns an error after validating that `fd` is open).
    ///
    /// # Safety
    /// If `fd` is open, the caller must own it (no `File`, `OwnedFd` or other
    /// owner in this process) and must not use or close it afterwards:
    /// closing an fd someone else owns would let their next use reach
    /// whatever file reuses the number. A negative or closed `fd` is rejected.
    pub unsafe fn open(fd: RawFd, capacity: u64) -> Result<Arena, StoreError> {
        // Reject a closed fd before taking ownership of it.
        // SAFETY: F_GETFD only queries the descriptor flags.
        if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(io::Error::from_raw_os_error(libc::EBADF).into());
        }
        // SAFETY: `fd` is open (checked above) and the caller hands its
        // ownership over (this function's contract).
        let file = unsafe { File::from_raw_fd(fd) };
        check_capacity(capacity)?;
        // Touching bytes past the end of the file would raise SIGBUS: the
        // file must be long enough and sealed against shrinking (as
        // `create` makes it), so that it stays long enough.
        // SAFETY: F_GET_SEALS only queries the file's seals.
        let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "arena fd is not a memfd sealed against shrinking",
            )
            .into());
        }
        let size = file.metadata()?.len();
        if size < capacity {
            return Err(StoreError::OutOfBounds { offset: 0, len: capacity, capacity: size });
        }
        Self::map(file, capacity)
    }

    fn map(file: File, capacity: u64) -> Result<Arena, StoreError> {
        let len = usize::try_from(capacity).map_err(|_| StoreError::InvalidCapacity(capacity))?;
        // MmapRaw maps MAP_SHARED, read/write.
        let map = MmapOptions::new().len(len).map_raw(&file)?;
        Ok(Arena { map, file, capacity })
    }

    /// The memfd. Created with `FD_CLOEXEC`; see [`Arena::set_inheritable`].
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Set or clear `FD_CLOEXEC` so the fd survives `exec` into a worker.
    pub fn set_inheritable(&self, inheritable: bool) -> Result<(), StoreError> {
        let fd = self.fd();
        // SAFETY: fcntl on an fd we own; only the descriptor flags change.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags < 0 {
            return Err(io::Error::last_os_error().into());
        }
        let flags = if inheritable { flags & !libc::FD_CLOEXEC } else { flags | libc::FD_CLOEXEC };
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, flags) } < 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(())
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    fn check(&self, offset: u64, len: u64) -> Result<usize, StoreError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.capacity => Ok(offset as usize),
            _ => Err(StoreError::OutOfBounds { offset, len, capacity: self.capacity }),
        }
    }

    /// Bounds-checked view of `[offset, offset + len)`.
    ///
    /// # Safety
    /// The memory is shared with other processes, which the compiler cannot
    /// see: a `&[u8]` promises that nothing writes these bytes while it
    /// lives. The caller must ensure that no process (this one included,
    /// through [`slice_mut`](Self::slice_mut), [`write_with`](Self::write_with)
    /// or another mapping of the memfd) writes the range, and that it is not
    /// released ([`release`](Self::release) makes it read back as zeros),
    /// for the lifetime of the returned slice. In ferroray this holds for a
    /// sealed object the reader holds a store pin on (sealed bytes are never
    /// written; a pinned object is not spilled, moved or freed) and for an
    /// allocation this process alone writes, once it is done writing; it
    /// relies on every process mapping the arena following that protocol.
    pub unsafe fn slice(&self, offset: u64, len: u64) -> Result<&[u8], StoreError> {
        let start = self.check(offset, len)?;
        // SAFETY: the range lies inside the mapping (checked above), which
        // lives as long as `&self`; that nobody writes it while the slice
        // lives is the caller's contract.
        Ok(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(start), len as usize) })
    }

    /// Address of the first byte of this process's mapping (for telling
    /// whether a pointer lies in the arena). Reading through it is subject
    /// to the contract of [`slice`](Self::slice).
    pub fn as_ptr(&self) -> *const u8 {
        self.map.as_ptr()
    }

    /// Bounds-checked mutable view for the writer of a fresh allocation.
    ///
    /// # Safety
    /// The caller must have exclusive access to `[offset, offset + len)` for
    /// the lifetime of the returned slice (no other slice, in this or another
    /// process, reads or writes that range meanwhile, and it is not
    /// [released](Self::release)).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, offset: u64, len: u64) -> Result<&mut [u8], StoreError> {
        let start = self.check(offset, len)?;
        // SAFETY: in bounds of the live mapping; exclusivity is the caller's contract.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(start), len as usize) })
    }

    /// Return the pages of `[offset, offset + len)` to the OS by punching a
    /// hole in the page-aligned interior (the range reads back as zeros).
    /// Errors are logged and otherwise ignored.
    pub fn release(&self, offset: u64, len: u64) {
        let page = page_size();
        let end = offset.saturating_add(len).min(self.capacity);
        let start = offset.div_ceil(page).saturating_mul(page);
        let end = end / page * page;
        if end <= start {
            return;
        }
        let (Ok(off), Ok(n)) = (libc::off_t::try_from(start), libc::off_t::try_from(end - start)) else {
            return;
        };
        // SAFETY: fallocate takes no pointers: a plain syscall on our own fd
        // with a range inside the file. It changes memory other views may
        // read (to zeros), which is why `slice` forbids releasing a viewed range.
        let rc = unsafe { libc::fallocate(self.fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, off, n) };
        if rc != 0 {
            tracing::debug!(
                offset = start,
                len = end - start,
                error = %io::Error::last_os_error(),
                "arena: punching a hole failed"
            );
        }
    }

    /// Whether every page of `[offset, offset + len)` is in memory (written
    /// or pre-faulted since it was last released), by `mincore`.
    pub fn is_resident(&self, offset: u64, len: u64) -> Result<bool, StoreError> {
        let Some((start, n)) = self.page_span(offset, len)? else {
            return Ok(true);
        };
        let page = page_size() as usize;
        let mut pages = vec![0u8; n.div_ceil(page)];
        // SAFETY: `start..start + n` lies in our live mapping and is page
        // aligned; `pages` has one byte per page of it. mincore reads no
        // memory of the range.
        let rc = unsafe { libc::mincore(self.map.as_mut_ptr().add(start).cast(), n, pages.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(pages.iter().all(|p| p & 1 != 0))
    }

    /// Whether every page of `[offset, offset + len)` is mapped in this
    /// process's mapping (its page-table entry is present, by
    /// `/proc/self/pagemap`): a copy into such pages takes no fault at all.
    /// A page in memory but not mapped here (written by another process)
    /// still costs a minor fault each. Without a readable pagemap, whether
    /// the pages are in memory ([`is_resident`](Self::is_resident)).
    pub fn is_mapped(&self, offset: u64, len: u64) -> Result<bool, StoreError> {
        let Some((start, n)) = self.page_span(offset, len)? else {
            return Ok(true);
        };
        // Opened per call: a process forked after opening it would read
        // its parent's.
        let Ok(pagemap) = File::open("/proc/self/pagemap") else {
            return self.is_resident(offset, len);
        };
        let page = page_size() as usize;
        let first = (self.map.as_ptr() as usize + start) / page;
        let mut entries = vec![0u8; n.div_ceil(page) * 8];
        std::os::unix::fs::FileExt::read_exact_at(&pagemap, &mut entries, first as u64 * 8)?;
        // Bit 63 of each 8-byte entry: present.
        Ok(entries.chunks_exact(8).all(|e| {
            let mut word = [0u8; 8];
            word.copy_from_slice(e);
            u64::from_ne_bytes(word) >> 63 == 1
        }))
    }

    /// Faults in the pages of `[offset, offset + len)`, writable, in this
    /// process's mapping (`MADV_POPULATE_WRITE`, Linux 5.14 and later),
    /// without changing any byte: a copy into them afterwards takes no
    /// fault per page. A fresh page still costs its allocation and zeroing,
    /// but in one call rather than one trap each, and on the caller's thread
    /// (a helper beside the copy). Fails with `EINVAL` on older kernels.
    pub fn prefault(&self, offset: u64, len: u64) -> Result<(), StoreError> {
        let Some((start, n)) = self.page_span(offset, len)? else {
            return Ok(());
        };
        // SAFETY: the range lies in our live mapping and is page aligned.
        // MADV_POPULATE_WRITE only allocates and maps pages (a hole reads
        // back as zeros either way); it writes no byte, so it races with no
        // reader or writer of the range.
        let rc = unsafe { libc::madvise(self.map.as_mut_ptr().add(start).cast(), n, libc::MADV_POPULATE_WRITE) };
        if rc != 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(())
    }

    /// The pages covering `[offset, offset + len)`, as (mapping offset,
    /// length), page aligned and clamped to the arena; `None` when empty.
    fn page_span(&self, offset: u64, len: u64) -> Result<Option<(usize, usize)>, StoreError> {
        self.check(offset, len)?;
        if len == 0 {
            return Ok(None);
        }
        let page = page_size();
        let start = offset / page * page;
        let end = (offset + len).div_ceil(page).saturating_mul(page).min(self.capacity);
        Ok(Some((start as usize, (end - start) as usize)))
    }

    /// Maps just `[offset, offset+len)` for writing, pre-faulted, apart from
    /// the arena's own mapping. When the window is dropped its pages leave
    /// this process's resident set, so a writer of many large objects does
    /// not look as if it kept them all. Writers go through
    /// [`Arena::write_with`](crate::writer), which maps such windows ahead of
    /// the copy.
    ///
    /// # Safety
    /// The window hands out `&mut [u8]` over the range: the caller must be
    /// the range's only reader and writer, in every process, for as long as
    /// the window lives (the contract of `write_with`).
    pub(crate) unsafe fn map_window(&self, offset: u64, len: u64) -> Result<WriteWindow, StoreError> {
        if offset.checked_add(len).is_none_or(|e| e > self.capacity()) {
            return Err(StoreError::OutOfBounds { offset, len, capacity: self.capacity() });
        }
        let page = page_size();
        let start = offset / page * page;
        let skip = (offset - start) as usize;
        // SAFETY: the file is the arena's own memfd, at least `capacity`
        // long and sealed against shrinking (made so by `create`, checked by
        // `open`), and the range is inside it, so the mapping raises no
        // SIGBUS; exclusive access to the range while the window lives is
        // this function's contract.
        let map = unsafe { MmapOptions::new().offset(start).len(skip + len as usize).populate().map_mut(&self.file)? };
        Ok(WriteWindow { map, skip, len: len as usize })
    }
}

fn check_capacity(capacity: u64) -> Result<(), StoreError> {
    if capacity == 0 || usize::try_from(capacity).is_err() || i64::try_from(capacity).is_err() {
        return Err(StoreError::InvalidCapacity(capacity));
    }
    Ok(())
}

pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

/// A temporary writable mapping of one range of the arena.
pub(crate) struct WriteWindow {
    map: memmap2::MmapMut,
    skip: usize,
    len: usize,
}

impl WriteWindow {
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.map[self.skip..self.skip + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn arena_is_send_sync() {
        assert_send_sync::<Arena>();
    }

    #[test]
    fn write_then_read_through_second_mapping() {
        let cap = 1 << 20;
        let a = Arena::create(cap).unwrap();
        assert_eq!(a.capacity(), cap);
        // SAFETY: fresh arena, no other view of this range.
        let w = unsafe { a.slice_mut(4096, 5) }.unwrap();
        w.copy_from_slice(b"hello");
        // SAFETY: dup of a valid fd.
        let fd2 = unsafe { libc::dup(a.fd()) };
        assert!(fd2 >= 0);
        // SAFETY: `fd2` is a fresh dup that nothing else owns.
        let b = unsafe { Arena::open(fd2, cap) }.unwrap();
        // SAFETY: the writes above are done; nothing writes the range while read.
        assert_eq!(unsafe { b.slice(4096, 5) }.unwrap(), b"hello");
        // And the other direction.
        // SAFETY: nobody else views this range.
        unsafe { b.slice_mut(cap - 3, 3) }.unwrap().copy_from_slice(b"end");
        // SAFETY: as above.
        assert_eq!(unsafe { a.slice(cap - 3, 3) }.unwrap(), b"end");
    }

    #[test]
    fn out_of_bounds_is_an_error() {
        let a = Arena::create(8192).unwrap();
        // SAFETY: nothing writes this fresh arena.
        unsafe {
            assert!(a.slice(0, 8192).is_ok());
            assert!(a.slice(8192, 0).is_ok());
            assert!(matches!(a.slice(8000, 193), Err(StoreError::OutOfBounds { .. })));
            assert!(matches!(a.slice(u64::MAX, 2), Err(StoreError::OutOfBounds { .. })));
        }
        // SAFETY: the call fails before creating a slice.
        assert!(unsafe { a.slice_mut(8193, 0) }.is_err());
    }

    #[test]
    fn release_zeroes_interior_pages() {
        let page = page_size();
        let a = Arena::create(4 * page).unwrap();
        // SAFETY: exclusive in this test.
        unsafe { a.slice_mut(0, 4 * page) }.unwrap().fill(0xAB);
        a.release(10, 3 * page); // interior: [page, 3*page)
                                 // SAFETY: writes and releases are done; nothing changes the range while read.
        let s = unsafe { a.slice(0, 4 * page) }.unwrap();
        assert!(s[..page as usize].iter().all(|&b| b == 0xAB));
        assert!(s[page as usize..3 * page as usize].iter().all(|&b| b == 0));
        assert!(s[3 * page as usize..].iter().all(|&b| b == 0xAB));
        a.release(0, 1); // no full page: no-op
        a.release(u64::MAX - 1, 10); // clamped: no-op
    }

    #[test]
    fn prefault_makes_pages_resident_and_keeps_bytes() {
        let page = page_size();
        let a = Arena::create(16 * page).unwrap();
        assert!(!a.is_resident(0, 16 * page).unwrap(), "a fresh arena holds no pages");
        // SAFETY: exclusive in this test.
        unsafe { a.slice_mut(page, 3) }.unwrap().copy_from_slice(b"abc");
        assert!(a.is_resident(page + 1, 2).unwrap(), "a written page");
        assert!(!a.is_resident(0, 2 * page).unwrap());
        match a.prefault(10, 8 * page) {
            // A kernel before 5.14: nothing to check.
            Err(StoreError::Io(e)) if e.raw_os_error() == Some(libc::EINVAL) => return,
            r => r.unwrap(),
        }
        assert!(a.is_resident(0, 9 * page).unwrap(), "every page the range touches");
        assert!(a.is_mapped(0, 9 * page).unwrap(), "and mapped here");
        assert!(!a.is_resident(9 * page, 7 * page).unwrap(), "nothing past it");
        // SAFETY: prefaulting is done and nothing writes the range.
        let s = unsafe { a.slice(0, 9 * page) }.unwrap();
        assert_eq!(&s[page as usize..page as usize + 3], b"abc");
        assert!(s[..page as usize].iter().all(|&b| b == 0));
        a.release(0, 16 * page);
        assert!(!a.is_resident(0, 16 * page).unwrap(), "released pages go back");
        assert!(a.prefault(0, 0).is_ok() && a.is_resident(3, 0).unwrap());
        assert!(matches!(a.prefault(page, 16 * page), Err(StoreError::OutOfBounds { .. })));
        assert!(matches!(a.is_resident(u64::MAX, 2), Err(StoreError::OutOfBounds { .. })));
    }

    #[test]
    fn pages_written_by_another_mapping_are_resident_but_not_mapped_here() {
        let page = page_size();
        let a = Arena::create(8 * page).unwrap();
        // SAFETY: dup of a valid fd, owned by nothing else.
        let b = unsafe { Arena::open(libc::dup(a.fd()), 8 * page) }.unwrap();
        // SAFETY: exclusive in this test.
        unsafe { b.slice_mut(0, 4 * page) }.unwrap().fill(7);
        assert!(b.is_mapped(0, 4 * page).unwrap());
        assert!(a.is_resident(0, 4 * page).unwrap());
        if std::fs::File::open("/proc/self/pagemap").is_ok() {
            assert!(!a.is_mapped(0, 4 * page).unwrap(), "written through the other mapping");
        }
        if a.prefault(0, 4 * page).is_ok() {
            assert!(a.is_mapped(0, 4 * page).unwrap());
        }
        assert!(!a.is_mapped(4 * page, page).unwrap(), "a page nobody touched");
        // SAFETY: writes and prefaulting are done.
        assert!(unsafe { a.slice(0, 4 * page) }.unwrap().iter().all(|&x| x == 7));
    }

    #[test]
    fn open_rejects_bad_fd_and_short_file() {
        // SAFETY: a negative fd is rejected before anything is owned.
        assert!(unsafe { Arena::open(-1, 4096) }.is_err());
        let a = Arena::create(4096).unwrap();
        // SAFETY: dup of a valid fd.
        let fd2 = unsafe { libc::dup(a.fd()) };
        // SAFETY: `fd2` is a fresh dup that nothing else owns.
        assert!(matches!(unsafe { Arena::open(fd2, 8192) }, Err(StoreError::OutOfBounds { .. })));
        assert!(matches!(Arena::create(0), Err(StoreError::InvalidCapacity(0))));
    }

    #[test]
    fn the_size_is_sealed_and_open_requires_it() {
        let a = Arena::create(8192).unwrap();
        // SAFETY: dup of a valid fd, owned by the File.
        let f = unsafe { File::from_raw_fd(libc::dup(a.fd())) };
        assert_eq!(f.set_len(4096).unwrap_err().raw_os_error(), Some(libc::EPERM), "cannot shrink");
        assert_eq!(f.set_len(16384).unwrap_err().raw_os_error(), Some(libc::EPERM), "cannot grow");
        assert_eq!(f.metadata().unwrap().len(), 8192);
        // An unsealed memfd is refused.
        // SAFETY: valid name and flags.
        let fd = unsafe { libc::memfd_create(MEMFD_NAME.as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: `fd` is fresh and nothing else owns it.
        let plain = unsafe { File::from_raw_fd(fd) };
        plain.set_len(8192).unwrap();
        // SAFETY: a dup that nothing else owns.
        let r = unsafe { Arena::open(libc::dup(plain.as_raw_fd()), 8192) };
        assert!(matches!(r, Err(StoreError::Io(e)) if e.kind() == io::ErrorKind::InvalidInput));
    }

    #[test]
    fn inheritable_toggles_cloexec() {
        let a = Arena::create(4096).unwrap();
        // SAFETY: querying flags of our fd.
        let flags = || unsafe { libc::fcntl(a.fd(), libc::F_GETFD) };
        assert_ne!(flags() & libc::FD_CLOEXEC, 0);
        a.set_inheritable(true).unwrap();
        assert_eq!(flags() & libc::FD_CLOEXEC, 0);
        a.set_inheritable(false).unwrap();
        assert_ne!(flags() & libc::FD_CLOEXEC, 0);
    }
}
