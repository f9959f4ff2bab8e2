//! Length-prefixed frames.
//!
//! Layout: `u32` little-endian body length, then the body: one protobuf
//! message of [`crate::wire`]. The length is checked against [`MAX_FRAME`]
//! before anything is allocated, and the body's buffer grows with the bytes
//! that actually arrive, so garbage on a socket costs at most one error, not
//! a huge allocation. Decoding allocates no more than a small multiple of
//! the body (protobuf has no counts to trust: every list grows element by
//! element as the bytes are read).

use prost::Message;
use std::io::{self, Read, Write};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest frame body accepted. Values this large go to shared memory,
/// so only a broken or hostile peer sends more.
pub const MAX_FRAME: u32 = 64 << 20;

/// Bytes of a frame's body reserved before they arrive; past this, the
/// buffer grows with what is actually read.
const PREALLOCATE: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the limit ({MAX_FRAME} bytes; {hello} before the hello)", hello = crate::limits::MAX_HELLO_FRAME)]
    TooLarge(u32),
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<FrameError> for ferroray_common::Error {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => ferroray_common::Error::Disconnected(e.to_string()),
            other => ferroray_common::Error::Protocol(other.to_string()),
        }
    }
}

/// A message that travels in frames: [`ToNode`](crate::ToNode) and
/// [`FromNode`](crate::FromNode), each with its protobuf form.
pub trait WireMessage: Sized {
    /// The protobuf form (see [`crate::wire`]).
    type Wire: Message + Default;

    /// Moves the message into its protobuf form (value bytes are moved, not
    /// copied).
    fn into_wire(self) -> Self::Wire;

    /// Checks and converts a decoded protobuf message.
    fn from_wire(wire: Self::Wire) -> Result<Self, FrameError>;

    /// Appends the message's protobuf body to `buf`: by default through
    /// [`into_wire`](Self::into_wire); the same bytes either way.
    fn encode_body(self, buf: &mut Vec<u8>) -> Result<(), prost::EncodeError> {
        self.into_wire().encode(buf)
    }

    /// Decodes and checks a body: by default through
    /// [`from_wire`](Self::from_wire); the same result either way. From the
    /// frame buffer itself: the direct path copies each `bytes` field once
    /// from it; the derived one twice (prost's `bytes::merge` from a slice),
    /// which only the rarer messages take.
    fn decode_body(body: &[u8]) -> Result<Self, FrameError> {
        let wire = Self::Wire::decode(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
        Self::from_wire(wire)
    }
}

impl WireMessage for crate::ToNode {
    type Wire = crate::wire::ToNode;

    fn into_wire(self) -> Self::Wire {
        self.into()
    }

    fn from_wire(wire: Self::Wire) -> Result<Self, FrameError> {
        wire.try_into()
    }

    // The hot messages skip the wire structs (see `direct`).
    fn encode_body(self, buf: &mut Vec<u8>) -> Result<(), prost::EncodeError> {
        crate::direct::encode_to_node(self, buf)
    }

    fn decode_body(body: &[u8]) -> Result<Self, FrameError> {
        crate::direct::decode_to_node(body)
    }
}

impl WireMessage for crate::FromNode {
    type Wire = crate::wire::FromNode;

    fn into_wire(self) -> Self::Wire {
        self.into()
    }

    fn from_wire(wire: Self::Wire) -> Result<Self, FrameError> {
        wire.try_into()
    }

    fn encode_body(self, buf: &mut Vec<u8>) -> Result<(), prost::EncodeError> {
        crate::direct::encode_from_node(self, buf)
    }

    fn decode_body(body: &[u8]) -> Result<Self, FrameError> {
        crate::direct::decode_from_node(body)
    }
}

/// Appends one frame holding `msg` to `buf` (so several can go out in one
/// write). A message over [`MAX_FRAME`] is refused and `buf` is unchanged.
pub fn encode_into<M: WireMessage>(buf: &mut Vec<u8>, msg: M) -> Result<(), FrameError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    // Fails only for a buffer that cannot grow to the message's size; a
    // `Vec` grows.
    if let Err(e) = msg.encode_body(buf) {
        buf.truncate(start);
        return Err(FrameError::Malformed(e.to_string()));
    }
    let len = (buf.len() - start - 4) as u64;
    if len > MAX_FRAME as u64 {
        buf.truncate(start);
        return Err(FrameError::TooLarge(len.min(u32::MAX as u64) as u32));
    }
    buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

pub fn write_frame<W: Write, M: WireMessage>(w: &mut W, msg: M) -> Result<(), FrameError> {
    let mut buf = Vec::new();
    encode_into(&mut buf, msg)?;
    w.write_all(&buf)?;
    Ok(())
}

fn decode<M: WireMessage>(body: &[u8]) -> Result<M, FrameError> {
    M::decode_body(body)
}

/// The two ways a body is made and read, for measuring one against the
/// other (the benchmark's `wire` rows): `direct` is what frames use;
/// `derived` goes through the wire structs, as every message did before.
/// Each decode reads the body in place, as [`read_frame_async`] does.
#[doc(hidden)]
pub mod paths {
    use super::*;

    pub fn encode_direct<M: WireMessage>(msg: M, buf: &mut Vec<u8>) {
        // Fails only for a buffer that cannot grow (see `encode_into`).
        let _ = msg.encode_body(buf);
    }

    pub fn encode_derived<M: WireMessage>(msg: M, buf: &mut Vec<u8>) {
        let _ = msg.into_wire().encode(buf);
    }

    pub fn decode_direct<M: WireMessage>(body: &[u8]) -> Result<M, FrameError> {
        M::decode_body(body)
    }

    pub fn decode_derived<M: WireMessage>(body: &[u8]) -> Result<M, FrameError> {
        M::Wire::decode(body).map_err(|e| FrameError::Malformed(e.to_string())).and_then(M::from_wire)
    }
}

fn check_len(header: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(header);
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len as usize)
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
pub fn read_frame<R: Read, M: WireMessage>(r: &mut R) -> Result<Option<M>, FrameError> {
    read_frame_into(r, &mut Vec::new())
}

/// [`read_frame`], reusing `body` as the buffer (no allocation per frame:
/// the message is decoded from the buffer in place).
pub fn read_frame_into<R: Read, M: WireMessage>(r: &mut R, body: &mut Vec<u8>) -> Result<Option<M>, FrameError> {
    let mut header = [0u8; 4];
    match r.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = check_len(header)?;
    body.clear();
    body.reserve(len.min(PREALLOCATE));
    // Grown as bytes arrive: a length claimed and never sent costs nothing.
    if r.take(len as u64).read_to_end(body)? != len {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
    }
    decode(body).map(Some)
}

/// The frame at the start of `buf`, if all of it is there: the message
/// and the bytes it took; `Ok(None)` if more must be read first. For
/// handling the frames a read brought in together.
pub fn buffered_frame<M: WireMessage>(buf: &[u8]) -> Result<Option<(M, usize)>, FrameError> {
    let Some(header) = buf.first_chunk::<4>() else { return Ok(None) };
    let len = check_len(*header)?;
    match buf.get(4..4 + len) {
        Some(body) => decode(body).map(|m| Some((m, 4 + len))),
        None => Ok(None),
    }
}

/// Async [`read_frame_into`].
pub async fn read_frame_async<R: AsyncRead + Unpin, M: WireMessage>(
    r: &mut R,
    body: &mut Vec<u8>,
) -> Result<Option<M>, FrameError> {
    read_frame_async_max(r, body, MAX_FRAME).await
}

/// [`read_frame_async`] with a lower size limit (a peer that has not proved
/// who it is gets [`crate::limits::MAX_HELLO_FRAME`]).
pub async fn read_frame_async_max<R: AsyncRead + Unpin, M: WireMessage>(
    r: &mut R,
    body: &mut Vec<u8>,
    max: u32,
) -> Result<Option<M>, FrameError> {
    let mut header = [0u8; 4];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = check_len(header)?;
    if len > max as usize {
        return Err(FrameError::TooLarge(len as u32));
    }
    body.clear();
    body.reserve(len.min(PREALLOCATE));
    // Grown as bytes arrive (see `read_frame_into`).
    if (&mut *r).take(len as u64).read_to_end(body).await? != len {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
    }
    decode(body).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Role, ToNode, PROTOCOL_VERSION};
    use ferroray_common::WorkerId;

    #[test]
    fn buffered_frames_are_taken_whole() {
        let a = ToNode::Blocked;
        let b = ToNode::Unblocked;
        let mut buf = Vec::new();
        encode_into(&mut buf, a.clone()).unwrap();
        let first = buf.len();
        encode_into(&mut buf, b.clone()).unwrap();
        let (m, n) = buffered_frame::<ToNode>(&buf).unwrap().expect("a whole frame");
        assert_eq!((m, n), (a, first));
        // A frame cut short, or only part of its header, is not taken.
        assert!(buffered_frame::<ToNode>(&buf[n..buf.len() - 1]).unwrap().is_none());
        assert!(buffered_frame::<ToNode>(&buf[n..n + 3]).unwrap().is_none());
        assert_eq!(buffered_frame::<ToNode>(&buf[n..]).unwrap().expect("the second").0, b);
        // A length over the limit is an error before its bytes are awaited.
        let err = buffered_frame::<ToNode>(&(MAX_FRAME + 1).to_le_bytes()).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge(_)));
    }

    #[test]
    fn roundtrip_several_frames_in_one_buffer() {
        let token = ferroray_common::ClusterToken::zero();
        let a = ToNode::Hello { protocol: PROTOCOL_VERSION, worker_id: WorkerId(5), pid: 9, role: Role::Driver, token };
        let b = ToNode::Blocked;
        let mut buf = Vec::new();
        encode_into(&mut buf, a.clone()).unwrap();
        encode_into(&mut buf, b.clone()).unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame::<_, ToNode>(&mut r).unwrap(), Some(a));
        assert_eq!(read_frame::<_, ToNode>(&mut r).unwrap(), Some(b));
        assert_eq!(read_frame::<_, ToNode>(&mut r).unwrap(), None);
    }

    #[test]
    fn oversized_length_is_rejected_before_allocating() {
        let buf = u32::MAX.to_le_bytes();
        let err = read_frame::<_, ToNode>(&mut &buf[..]).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge(_)), "{err}");
    }

    #[test]
    fn garbage_body_is_malformed() {
        let mut buf = 8u32.to_le_bytes().to_vec();
        buf.extend_from_slice(&[0xff; 8]);
        let err = read_frame::<_, ToNode>(&mut &buf[..]).unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)), "{err}");
    }

    #[test]
    fn truncated_body_is_an_io_error() {
        let mut buf = 100u32.to_le_bytes().to_vec();
        buf.extend_from_slice(&[1, 2, 3]);
        assert!(matches!(read_frame::<_, ToNode>(&mut &buf[..]), Err(FrameError::Io(_))));
    }
}
