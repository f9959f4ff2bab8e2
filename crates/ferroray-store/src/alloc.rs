//! Offset allocator over `[0, capacity)`: pure bookkeeping, no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Every block starts on, and is a multiple of, this many bytes.
pub const ALIGN: u64 = 64;

/// Best-fit allocator with coalescing of adjacent free blocks.
///
/// Requested sizes are rounded up to a multiple of [`ALIGN`] (size 0 takes
/// one `ALIGN` block), so every offset is `ALIGN`-aligned. A tail of the
/// capacity shorter than `ALIGN` is never handed out.
#[derive(Debug, Clone)]
pub struct Allocator {
    capacity: u64,
    used: u64,
    /// Free blocks by offset -> size.
    free_by_offset: BTreeMap<u64, u64>,
    /// Free blocks as (size, offset), for best fit.
    free_by_size: BTreeSet<(u64, u64)>,
    /// Allocated blocks: offset -> block size.
    allocated: HashMap<u64, u64>,
}

impl Allocator {
    pub fn new(capacity: u64) -> Self {
        let mut a = Allocator {
            capacity,
            used: 0,
            free_by_offset: BTreeMap::new(),
            free_by_size: BTreeSet::new(),
            allocated: HashMap::new(),
        };
        let usable = capacity / ALIGN * ALIGN;
        if usable > 0 {
            a.insert_free(0, usable);
        }
        a
    }

    fn insert_free(&mut self, offset: u64, size: u64) {
        self.free_by_offset.insert(offset, size);
        self.free_by_size.insert((size, offset));
    }

    fn remove_free(&mut self, offset: u64, size: u64) {
        self.free_by_offset.remove(&offset);
        self.free_by_size.remove(&(size, offset));
    }

    /// Block size used for a request of `size` bytes, `None` on overflow.
    pub fn block_size(size: u64) -> Option<u64> {
        size.max(1).checked_next_multiple_of(ALIGN)
    }

    /// Allocate `size` bytes (best fit, lowest offset among equals).
    /// `None` if no free block fits.
    pub fn alloc(&mut self, size: u64) -> Option<u64> {
        let need = Self::block_size(size)?;
        let &(block, offset) = self.free_by_size.range((need, 0)..).next()?;
        self.remove_free(offset, block);
        if block > need {
            self.insert_free(offset + need, block - need);
        }
        self.allocated.insert(offset, need);
        self.used += need;
        Some(offset)
    }

    /// Free the block at `offset`, merging it with free neighbours.
    /// Returns the block size, or `None` if `offset` is not allocated.
    pub fn free(&mut self, offset: u64) -> Option<u64> {
        let size = self.allocated.remove(&offset)?;
        self.used -= size;
        let (mut start, mut len) = (offset, size);
        // Merge with the previous free block if it ends here.
        if let Some((&prev, &prev_len)) = self.free_by_offset.range(..offset).next_back() {
            if prev + prev_len == offset {
                self.remove_free(prev, prev_len);
                start = prev;
                len += prev_len;
            }
        }
        // Merge with the next free block if it starts where this one ends.
        let end = offset + size;
        if let Some(&next_len) = self.free_by_offset.get(&end) {
            self.remove_free(end, next_len);
            len += next_len;
        }
        self.insert_free(start, len);
        Some(size)
    }

    /// Size of the allocated block at `offset`, if any.
    pub fn size_of(&self, offset: u64) -> Option<u64> {
        self.allocated.get(&offset).copied()
    }

    /// Free blocks as (offset, size), in address order.
    pub fn free_blocks(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.free_by_offset.iter().map(|(o, s)| (*o, *s))
    }

    /// Bytes in allocated blocks (rounded sizes).
    pub fn used(&self) -> u64 {
        self.used
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Size of the largest free block.
    pub fn largest_free(&self) -> u64 {
        self.free_by_size.last().map_or(0, |&(size, _)| size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment() {
        let mut a = Allocator::new(10_000);
        let offs: Vec<u64> = [1, 0, 63, 64, 65, 100, 7].iter().map(|&s| a.alloc(s).unwrap()).collect();
        assert!(offs.iter().all(|o| o % ALIGN == 0));
        assert_eq!(a.size_of(offs[1]), Some(64)); // size 0 gets a minimal block
        assert_eq!(a.size_of(offs[4]), Some(128));
        assert_eq!(a.used(), 64 * 3 + 64 + 128 + 128 + 64);
    }

    #[test]
    fn coalescing() {
        let mut a = Allocator::new(3000);
        let (sa, sb, sc) = (1000, 1000, 896); // fills all 2944 usable bytes
        let oa = a.alloc(sa).unwrap();
        let ob = a.alloc(sb).unwrap();
        let oc = a.alloc(sc).unwrap();
        assert!(a.alloc(sa + sb).is_none());
        assert_eq!(a.free(ob), Some(1024));
        assert!(a.alloc(sa + sb).is_none());
        assert_eq!(a.free(oa), Some(1024));
        assert_eq!(a.largest_free(), 2048);
        assert_eq!(a.alloc(sa + sb), Some(0));
        assert_eq!(a.free(0), Some(2048));
        assert_eq!(a.free(oc), Some(896));
        assert_eq!(a.used(), 0);
        assert_eq!(a.largest_free(), 3000 / 64 * 64); // one block again
        assert_eq!(a.capacity(), 3000);
    }

    #[test]
    fn coalesces_with_next_block() {
        let mut a = Allocator::new(1024);
        let x = a.alloc(256).unwrap();
        let y = a.alloc(256).unwrap();
        a.free(y); // merges with the free tail
        assert_eq!(a.largest_free(), 768);
        a.free(x);
        assert_eq!(a.largest_free(), 1024);
    }

    #[test]
    fn best_fit_and_exhaustion() {
        let mut a = Allocator::new(1024);
        let b0 = a.alloc(128).unwrap();
        let _b1 = a.alloc(64).unwrap();
        let b2 = a.alloc(64).unwrap();
        let _b3 = a.alloc(64).unwrap();
        a.free(b0); // hole of 128 at 0
        a.free(b2); // hole of 64
        assert_eq!(a.alloc(50), Some(b2)); // best fit takes the 64 hole
        assert_eq!(a.alloc(1024), None);
        assert_eq!(a.alloc(u64::MAX), None);
    }

    #[test]
    fn free_unknown_offset_is_none() {
        let mut a = Allocator::new(1024);
        assert_eq!(a.free(0), None);
        let o = a.alloc(10).unwrap();
        assert_eq!(a.free(o + 64), None);
        assert_eq!(a.free(o), Some(64));
        assert_eq!(a.free(o), None); // double free
        assert_eq!(a.used(), 0);
    }

    #[test]
    fn tiny_capacity() {
        let mut a = Allocator::new(63);
        assert_eq!(a.alloc(0), None);
        assert_eq!(a.largest_free(), 0);
    }
}
