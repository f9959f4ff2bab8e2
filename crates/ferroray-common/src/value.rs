//! The format of user values (task arguments and results, `put` objects,
//! a task's error value): postcard, named here and nowhere else.
//!
//! - [`encoded_size`] then [`to_writer`] writes a value of known size
//!   straight into its destination (shared memory) with no intermediate copy;
//!   [`to_vec`] does both into a `Vec` of exactly that size.
//! - [`from_slice`] decodes borrowing from the input, so a byte buffer inside
//!   a value can be a view of it rather than a copy.
//! - [`serialize_aligned_bytes`] / [`deserialize_aligned_bytes`] give a byte
//!   buffer a header of a whole number of 8-byte words, so that its contents
//!   keep the alignment of its start (see `TypedBuffer` in ferroray-core).
//!
//! postcard is not self-describing: serde attributes that need one
//! (`#[serde(untagged)]`, `flatten`, `deserialize_any`) do not round-trip,
//! and a custom serde error's own text is not kept (the error says that
//! encoding or decoding failed, not why).

use postcard::ser_flavors::{Flavor, Size};
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a value did not encode or decode.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error("value does not encode: {0}")]
    Encode(postcard::Error),
    #[error("value does not decode: {0}")]
    Decode(postcard::Error),
    #[error("writing a value: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, ValueError>;

/// The exact number of bytes `v` encodes to.
pub fn encoded_size<T: Serialize + ?Sized>(v: &T) -> Result<u64> {
    postcard::serialize_with_flavor(v, Size::default()).map(|n| n as u64).map_err(ValueError::Encode)
}

/// `v` encoded, in a `Vec` of exactly its size.
pub fn to_vec<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>> {
    let size = encoded_size(v)?;
    to_vec_sized(v, size)
}

/// `v` encoded, when its [`encoded_size`] is already known.
pub fn to_vec_sized<T: Serialize + ?Sized>(v: &T, size: u64) -> Result<Vec<u8>> {
    let out = VecFlavor(Vec::with_capacity(size as usize));
    postcard::serialize_with_flavor(v, out).map_err(ValueError::Encode)
}

/// `v` encoded in one pass, if it takes fewer than `limit` bytes; `None`
/// (having stopped at the limit) if not. Small values, the common case, are
/// encoded once instead of measured and then written.
pub fn to_vec_below<T: Serialize + ?Sized>(v: &T, limit: u64) -> Result<Option<Vec<u8>>> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let out = CappedVecFlavor { v: Vec::with_capacity(limit.min(128)), limit };
    match postcard::serialize_with_flavor(v, out) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(postcard::Error::SerializeBufferFull) => Ok(None),
        Err(e) => Err(ValueError::Encode(e)),
    }
}

/// Writes `v` encoded into `w`, as it goes (no buffer of the whole value).
pub fn to_writer<T: Serialize + ?Sized, W: std::io::Write>(v: &T, w: W) -> Result<()> {
    let mut failed = None;
    let r = postcard::serialize_with_flavor(v, WriteFlavor { w, failed: &mut failed });
    match (r, failed) {
        (_, Some(e)) => Err(ValueError::Io(e)),
        (r, None) => r.map_err(ValueError::Encode),
    }
}

/// Decodes a `T` from the start of `bytes`, borrowing from them where `T`
/// asks to (`visit_borrowed_bytes`, `&str`).
pub fn from_slice<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(ValueError::Decode)
}

struct VecFlavor(Vec<u8>);

impl Flavor for VecFlavor {
    type Output = Vec<u8>;

    #[inline(always)]
    fn try_push(&mut self, b: u8) -> postcard::Result<()> {
        self.0.push(b);
        Ok(())
    }

    #[inline(always)]
    fn try_extend(&mut self, b: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(b);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// An `io::Write` as a postcard output; the first write error is kept in
/// `failed` (postcard's own error cannot carry it).
/// A `Vec` that refuses to reach `limit` bytes.
struct CappedVecFlavor {
    v: Vec<u8>,
    limit: usize,
}

impl Flavor for CappedVecFlavor {
    type Output = Vec<u8>;

    #[inline(always)]
    fn try_push(&mut self, b: u8) -> postcard::Result<()> {
        if self.v.len() + 1 >= self.limit {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.v.push(b);
        Ok(())
    }

    #[inline(always)]
    fn try_extend(&mut self, b: &[u8]) -> postcard::Result<()> {
        if self.v.len() + b.len() >= self.limit {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.v.extend_from_slice(b);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.v)
    }
}

struct WriteFlavor<'a, W> {
    w: W,
    failed: &'a mut Option<std::io::Error>,
}

impl<W: std::io::Write> Flavor for WriteFlavor<'_, W> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, b: u8) -> postcard::Result<()> {
        self.try_extend(&[b])
    }

    #[inline]
    fn try_extend(&mut self, b: &[u8]) -> postcard::Result<()> {
        self.w.write_all(b).map_err(|e| {
            self.failed.get_or_insert(e);
            postcard::Error::SerializeBufferFull
        })
    }

    fn finalize(mut self) -> postcard::Result<()> {
        self.w.flush().map_err(|e| {
            self.failed.get_or_insert(e);
            postcard::Error::SerializeBufferFull
        })
    }
}

/// The encoded size of a length (a LEB128 varint).
fn varint_len(n: usize) -> usize {
    (usize::BITS as usize - (n | 1).leading_zeros() as usize).div_ceil(7)
}

/// Padding that makes the header before `n` bytes a whole number of 8-byte
/// words: the padding's own length (one byte), the padding, then `n`'s
/// length, add up to 8 (16 from 2^49 bytes on).
fn padding_len(n: usize) -> usize {
    let header = 1 + varint_len(n);
    header.next_multiple_of(8) - header
}

const ZEROS: [u8; 16] = [0; 16];

/// Serializes `bytes` behind a header of 8 bytes (16 for 512 TiB or more):
/// a byte string of zero padding, then `bytes` as a byte string. Bytes that
/// start on an 8-byte boundary of the output therefore keep their contents
/// on one.
pub fn serialize_aligned_bytes<S: Serializer>(bytes: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeTuple;
    let mut t = s.serialize_tuple(2)?;
    t.serialize_element(serde_bytes_ref(&ZEROS[..padding_len(bytes.len())]))?;
    t.serialize_element(serde_bytes_ref(bytes))?;
    t.end()
}

/// Reads what [`serialize_aligned_bytes`] wrote: skips the padding and hands
/// the bytes to `visitor` (`visit_borrowed_bytes` when the input allows).
pub fn deserialize_aligned_bytes<'de, D: Deserializer<'de>, V: Visitor<'de>>(
    d: D,
    visitor: V,
) -> std::result::Result<V::Value, D::Error> {
    struct Outer<V>(V);
    impl<'de, V: Visitor<'de>> Visitor<'de> for Outer<V> {
        type Value = V::Value;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("padding, then bytes")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<V::Value, A::Error> {
            let missing = || serde::de::Error::custom("aligned bytes are missing a part");
            seq.next_element_seed(BytesSeed(Ignore))?.ok_or_else(missing)?;
            seq.next_element_seed(BytesSeed(self.0))?.ok_or_else(missing)
        }
    }
    d.deserialize_tuple(2, Outer(visitor))
}

/// A byte slice that serializes as a byte string (`serialize_bytes`).
fn serde_bytes_ref(b: &[u8]) -> &BytesRef {
    // SAFETY: `BytesRef` is a `repr(transparent)` wrapper of `[u8]`.
    unsafe { &*(b as *const [u8] as *const BytesRef) }
}

#[repr(transparent)]
struct BytesRef([u8]);

impl Serialize for BytesRef {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

struct BytesSeed<V>(V);

impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for BytesSeed<V> {
    type Value = V::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<V::Value, D::Error> {
        d.deserialize_bytes(self.0)
    }
}

/// Accepts any byte string (the padding).
struct Ignore;

impl<'de> Visitor<'de> for Ignore {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("padding bytes")
    }
    fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        while seq.next_element::<u8>()?.is_some() {}
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Aligned<'a>(&'a [u8]);
    impl Serialize for Aligned<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            serialize_aligned_bytes(self.0, s)
        }
    }

    struct Borrowed;
    impl<'de> Visitor<'de> for Borrowed {
        type Value = &'de [u8];
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("borrowed bytes")
        }
        fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> std::result::Result<&'de [u8], E> {
            Ok(v)
        }
    }

    #[test]
    fn aligned_bytes_have_a_header_of_whole_words_and_decode_borrowed() {
        for n in [0usize, 1, 127, 128, 16_383, 16_384, 1 << 21, (1 << 28) + 3] {
            assert_eq!((1 + varint_len(n) + padding_len(n)) % 8, 0, "{n}");
        }
        assert_eq!(varint_len(1 << 49), 8);
        assert_eq!(1 + varint_len(1 << 49) + padding_len(1 << 49), 16);
        for n in [0usize, 5, 200, 70_000] {
            let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let enc = to_vec(&Aligned(&data)).unwrap();
            assert_eq!(enc.len(), 8 + n, "an 8-byte header");
            assert_eq!(encoded_size(&Aligned(&data)).unwrap(), enc.len() as u64);
            let mut de = postcard::Deserializer::from_bytes(&enc);
            let back = deserialize_aligned_bytes(&mut de, Borrowed).unwrap();
            assert_eq!(back, &data[..]);
            assert_eq!(back.as_ptr() as usize - enc.as_ptr() as usize, 8, "borrowed, not copied");
        }
    }

    #[test]
    fn sizes_vec_and_writer_agree() {
        let v = (7u64, "seven".to_string(), vec![1.5f64; 3], Some(-2i32));
        let n = encoded_size(&v).unwrap();
        let a = to_vec(&v).unwrap();
        let mut b = Vec::new();
        to_writer(&v, &mut b).unwrap();
        assert_eq!((a.len() as u64, &a), (n, &b));
        assert_eq!(from_slice::<(u64, String, Vec<f64>, Option<i32>)>(&a).unwrap(), v);
        assert!(matches!(from_slice::<(u64, String)>(&a[..3]), Err(ValueError::Decode(_))));
    }

    #[test]
    fn a_write_error_is_an_io_error() {
        struct Full;
        impl std::io::Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("full"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        assert!(matches!(to_writer(&1u64, Full), Err(ValueError::Io(e)) if e.to_string() == "full"));
    }
}
