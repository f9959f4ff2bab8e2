//! The object table: allocation, sealing, pins, deferred deletes, spilling.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{Debug, Display};
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::alloc::Allocator;
use crate::arena::Arena;
use crate::spill::{self, SpillDir};
use crate::StoreError;

/// Names tried for one spill file before the spill fails.
const SPILL_NAME_ATTEMPTS: u64 = 16;

/// A snapshot of the store's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Arena size in bytes.
    pub capacity: u64,
    /// Bytes allocated in the arena (block sizes, unsealed allocations included).
    pub used: u64,
    /// Sealed, not deleted objects (in the arena or spilled).
    pub objects: usize,
    /// Objects currently spilled to disk.
    pub spilled: usize,
    /// Total length of the spilled objects.
    pub spilled_bytes: u64,
    /// Objects with at least one pin (deleted-but-pinned ones included).
    pub pinned: usize,
    /// Allocations not sealed yet.
    pub unsealed: usize,
}

#[derive(Debug)]
enum Location {
    Arena(u64),
    Spilled(PathBuf),
}

#[derive(Debug)]
struct Entry {
    len: u64,
    loc: Location,
    pins: u32,
    /// Deleted while pinned: freed when the last pin goes.
    deleted: bool,
    /// Recency stamp (unique); the key of this entry in `evictable`.
    tick: u64,
}

/// Sealed objects in an [`Arena`], spilled to a private directory under memory pressure.
///
/// Not thread-safe by itself: the node wraps it in a lock. Readers in other
/// processes map the arena and read `(offset, len)` returned by [`Store::pin`].
#[derive(Debug)]
pub struct Store<K> {
    /// Estimate of free bytes whose pages are still resident: grows with each
    /// free, shrinks with each allocation (best fit reuses freed blocks
    /// first), reset by a trim.
    dirty_free: u64,
    /// Freed-but-resident bytes past which a free trims at once
    /// ([`set_keep_free`](Self::set_keep_free)).
    keep_free: u64,
    /// When space was last allocated (trimming waits for a quiet store).
    last_alloc: std::time::Instant,
    arena: Arc<Arena>,
    alloc: Allocator,
    objects: HashMap<K, Entry>,
    /// Unsealed allocations: offset -> requested size.
    unsealed: HashMap<u64, u64>,
    /// Spill candidates (sealed, in the arena, unpinned, live), oldest first.
    evictable: BTreeMap<u64, K>,
    tick: u64,
    spill_paths: HashSet<PathBuf>,
    spill_dir: SpillDir,
}

impl<K: Copy + Eq + Hash + Debug + Display> Store<K> {
    /// Spill files go to a fresh directory `ferroray-spill-<pid>-<random>`
    /// made under `spill_parent` (mode 0700, never an existing path; see
    /// [`spill`](crate::spill)) at the first spill. On drop the store removes
    /// that directory with its files.
    ///
    /// First removes the spill directories under `spill_parent` that dead
    /// processes of this user left behind ([`spill::remove_stale`]).
    pub fn new(arena: Arc<Arena>, spill_parent: PathBuf) -> Result<Self, StoreError> {
        spill::remove_stale(&spill_parent);
        let keep_free = arena.capacity() / 4;
        Ok(Store {
            alloc: Allocator::new(arena.capacity()),
            arena,
            objects: HashMap::new(),
            unsealed: HashMap::new(),
            evictable: BTreeMap::new(),
            tick: 0,
            spill_paths: HashSet::new(),
            spill_dir: SpillDir::new(spill_parent),
            dirty_free: 0,
            keep_free,
            last_alloc: std::time::Instant::now(),
        })
    }

    pub fn arena(&self) -> &Arc<Arena> {
        &self.arena
    }

    /// The spill directory, once the first spill made it.
    pub fn spill_dir(&self) -> Option<&Path> {
        self.spill_dir.path()
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn full(&self, requested: u64) -> StoreError {
        StoreError::Full { requested, capacity: self.arena.capacity(), used: self.alloc.used() }
    }

    /// Reserve `size` bytes for an object being written (unsealed).
    ///
    /// If no block fits, sealed unpinned objects are spilled, least recently
    /// used first, until one does; otherwise `Err(Full)`.
    pub fn allocate(&mut self, size: u64) -> Result<u64, StoreError> {
        self.last_alloc = std::time::Instant::now();
        let offset = self.alloc_spilling(size)?;
        // A stream of large objects frees one block and allocates the next in
        // its warm pages: not counting reused space, such a stream never
        // trims the pages it is about to write again.
        if let Some(block) = self.alloc.size_of(offset) {
            self.dirty_free = self.dirty_free.saturating_sub(block);
        }
        self.unsealed.insert(offset, size);
        Ok(offset)
    }

    fn alloc_spilling(&mut self, size: u64) -> Result<u64, StoreError> {
        let block = match Allocator::block_size(size) {
            Some(b) if b <= self.alloc.capacity() => b,
            _ => return Err(self.full(size)),
        };
        if let Some(offset) = self.alloc.alloc(size) {
            return Ok(offset);
        }
        // Don't spill anything if even spilling everything cannot make room.
        let usable = self.alloc.capacity() / crate::alloc::ALIGN * crate::alloc::ALIGN;
        let reclaimable: u64 = self
            .evictable
            .values()
            .filter_map(|k| match self.objects.get(k)?.loc {
                Location::Arena(off) => self.alloc.size_of(off),
                Location::Spilled(_) => None,
            })
            .sum();
        if usable - self.alloc.used() + reclaimable < block {
            return Err(self.full(size));
        }
        loop {
            let Some((_, &victim)) = self.evictable.first_key_value() else {
                return Err(self.full(size));
            };
            self.spill(victim)?;
            if let Some(offset) = self.alloc.alloc(size) {
                return Ok(offset);
            }
        }
    }

    /// Write an evictable object to its spill file and free its block.
    fn spill(&mut self, key: K) -> Result<(), StoreError> {
        let Some(entry) = self.objects.get(&key) else {
            return Err(StoreError::UnknownObject(key.to_string()));
        };
        let Location::Arena(offset) = entry.loc else {
            return Ok(());
        };
        let (len, tick) = (entry.len, entry.tick);
        let base = SpillDir::file_name_for(&key);
        let dir = self.spill_dir.ensure()?.to_path_buf();
        // SAFETY: the object is sealed, so no process writes its bytes (the
        // node hands out writable ranges only for unsealed allocations), and
        // `&mut self` keeps it from being freed or moved during the copy.
        let data = unsafe { self.arena.slice(offset, len)? };
        // Another name if two keys sanitize to the same one, or if an entry is
        // already there (`write` never follows or reuses one).
        let mut written = None;
        for n in 0..SPILL_NAME_ATTEMPTS {
            let path = dir.join(if n == 0 { base.clone() } else { format!("{base}-{tick}-{n}") });
            if self.spill_paths.contains(&path) {
                continue;
            }
            match spill::write(&path, data) {
                Ok(()) => {
                    written = Some(path);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    tracing::warn!(path = %path.display(), "store: spill file name taken, trying another");
                }
                Err(e) => return Err(e.into()),
            }
        }
        let Some(path) = written else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("no free spill file name for object {key} in {}", dir.display()),
            )
            .into());
        };
        tracing::debug!(object = %key, len, path = %path.display(), "store: spilled");
        self.evictable.remove(&tick);
        if let Some(block) = self.alloc.free(offset) {
            self.arena.release(offset, block);
        }
        self.spill_paths.insert(path.clone());
        if let Some(entry) = self.objects.get_mut(&key) {
            entry.loc = Location::Spilled(path);
        }
        Ok(())
    }

    /// Give back an unsealed allocation (the writer failed).
    pub fn abort(&mut self, offset: u64) {
        if self.unsealed.remove(&offset).is_none() {
            tracing::warn!(offset, "store: abort of an unknown allocation");
            return;
        }
        self.free_block(offset);
    }

    /// Frees a block but keeps its pages: the next object written there
    /// finds them already in memory (a fresh page costs a fault and zeroing,
    /// which caps large writes below 1 GB/s). The pages go back to the
    /// system on [`trim`](Self::trim), or at once past
    /// [`set_keep_free`](Self::set_keep_free)'s bytes (a quarter of capacity
    /// unless set).
    fn free_block(&mut self, offset: u64) {
        if let Some(block) = self.alloc.free(offset) {
            self.dirty_free += block;
            if self.dirty_free > self.keep_free {
                self.trim();
            }
        }
    }

    /// Freed bytes whose pages may stay resident before a free trims at
    /// once: a process that embeds the store keeps few, a node given its
    /// memory for objects may keep all of it.
    pub fn set_keep_free(&mut self, bytes: u64) {
        self.keep_free = bytes;
    }

    /// [`trim`](Self::trim), but only once nothing was allocated for `quiet`
    /// (a busy store reuses its warm pages instead).
    pub fn trim_if_quiet(&mut self, quiet: std::time::Duration) -> u64 {
        if self.last_alloc.elapsed() >= quiet {
            self.trim()
        } else {
            0
        }
    }

    /// Returns the pages of every free block to the system. Returns the bytes
    /// of freed-but-resident space that were outstanding.
    pub fn trim(&mut self) -> u64 {
        let dirty = std::mem::take(&mut self.dirty_free);
        if dirty > 0 {
            for (offset, size) in self.alloc.free_blocks() {
                self.arena.release(offset, size);
            }
        }
        dirty
    }

    /// The unsealed allocation at `offset` becomes object `key` of `len`
    /// bytes (`len` <= the allocated size).
    pub fn seal(&mut self, key: K, offset: u64, len: u64) -> Result<(), StoreError> {
        let &allocated = self.unsealed.get(&offset).ok_or(StoreError::NotAllocated(offset))?;
        if len > allocated {
            return Err(StoreError::SealTooLong { len, allocated });
        }
        if self.objects.contains_key(&key) {
            return Err(StoreError::ObjectExists(key.to_string()));
        }
        self.unsealed.remove(&offset);
        let tick = self.next_tick();
        self.objects.insert(key, Entry { len, loc: Location::Arena(offset), pins: 0, deleted: false, tick });
        self.evictable.insert(tick, key);
        Ok(())
    }

    /// Pin `key` for reading and return its `(offset, len)` in the arena.
    ///
    /// A spilled object is restored first (possibly at a new offset, possibly
    /// spilling others). Pinned objects are never spilled or moved.
    pub fn pin(&mut self, key: K) -> Result<(u64, u64), StoreError> {
        let unknown = || StoreError::UnknownObject(key.to_string());
        let entry = self.objects.get(&key).filter(|e| !e.deleted).ok_or_else(unknown)?;
        let len = entry.len;
        let offset = match &entry.loc {
            Location::Arena(offset) => {
                let offset = *offset;
                self.evictable.remove(&entry.tick);
                offset
            }
            Location::Spilled(path) => {
                let path = path.clone();
                let offset = self.restore(&path, len)?;
                tracing::debug!(object = %key, len, offset, "store: restored");
                offset
            }
        };
        let tick = self.next_tick();
        let entry = self.objects.get_mut(&key).ok_or_else(unknown)?;
        entry.loc = Location::Arena(offset);
        entry.pins += 1;
        entry.tick = tick;
        Ok((offset, len))
    }

    /// Copy a spill file back into a fresh block; the file is removed.
    fn restore(&mut self, path: &Path, len: u64) -> Result<u64, StoreError> {
        let offset = self.alloc_spilling(len)?;
        // SAFETY: the block was just allocated and its offset not handed out
        // yet, so no other view of it exists in any process; the slice is
        // gone before this returns.
        let read = unsafe { self.arena.slice_mut(offset, len) }.and_then(|dst| Ok(spill::read_into(path, dst)?));
        if let Err(e) = read {
            self.free_block(offset);
            return Err(e);
        }
        spill::remove(path);
        self.spill_paths.remove(path);
        Ok(offset)
    }

    /// Drop one pin. When the last pin goes, a deleted object is freed and
    /// a live one becomes a spill candidate (as the most recently used).
    pub fn unpin(&mut self, key: K) {
        let Some(entry) = self.objects.get_mut(&key).filter(|e| e.pins > 0) else {
            tracing::warn!(object = %key, "store: unpin of an object that is not pinned");
            return;
        };
        entry.pins -= 1;
        if entry.pins > 0 {
            return;
        }
        if entry.deleted {
            if let Some(entry) = self.objects.remove(&key) {
                self.free_entry(entry);
            }
        } else {
            self.tick += 1;
            entry.tick = self.tick;
            self.evictable.insert(self.tick, key);
        }
    }

    /// Delete `key`. A pinned object is freed when its last pin goes; until
    /// then its key cannot be sealed again.
    pub fn delete(&mut self, key: K) {
        let Some(entry) = self.objects.get_mut(&key) else {
            return;
        };
        if entry.pins > 0 {
            entry.deleted = true;
            return;
        }
        if let Some(entry) = self.objects.remove(&key) {
            self.free_entry(entry);
        }
    }

    fn free_entry(&mut self, entry: Entry) {
        self.evictable.remove(&entry.tick);
        match entry.loc {
            Location::Arena(offset) => self.free_block(offset),
            Location::Spilled(path) => {
                spill::remove(&path);
                self.spill_paths.remove(&path);
            }
        }
    }

    /// Whether `key` is a live (sealed, not deleted) object.
    pub fn contains(&self, key: K) -> bool {
        self.objects.get(&key).is_some_and(|e| !e.deleted)
    }

    /// The length of live object `key`.
    pub fn len_of(&self, key: K) -> Option<u64> {
        self.objects.get(&key).filter(|e| !e.deleted).map(|e| e.len)
    }

    /// Whether `key` is currently spilled to disk.
    pub fn is_spilled(&self, key: K) -> bool {
        self.objects.get(&key).is_some_and(|e| matches!(e.loc, Location::Spilled(_)))
    }

    pub fn stats(&self) -> StoreStats {
        let mut s = StoreStats {
            capacity: self.arena.capacity(),
            used: self.alloc.used(),
            unsealed: self.unsealed.len(),
            ..StoreStats::default()
        };
        for e in self.objects.values() {
            if !e.deleted {
                s.objects += 1;
            }
            if e.pins > 0 {
                s.pinned += 1;
            }
            if matches!(e.loc, Location::Spilled(_)) {
                s.spilled += 1;
                s.spilled_bytes += e.len;
            }
        }
        s
    }
}
