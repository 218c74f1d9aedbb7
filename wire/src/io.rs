//! Reading one frame from a QUIC stream, check before parse (PROTOCOL.md §3): the 12-byte header
//! first; its `payload_length` checked against the frame type's limit and the reader's own
//! `frame_bytes_max` before one byte of payload is read or allocated; then exactly that many
//! bytes into one buffer; then the stream's FIN (anything after the frame is malformed).
//!
//! Used by both sides: the server reads HELLO and BATCH frames, the client SDK ACCEPTED/REFUSED
//! and ACK frames. The returned buffer holds the whole frame (header included) for the codec's
//! decoders.

use quinn::{ReadError, ReadExactError, RecvStream, SendStream, VarInt};

use crate::{Error, FrameHeader, FrameType, HEADER_BYTES, StreamErrorCode};

/// Why no frame could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadFrameError {
    /// The bytes break the protocol: answer with [`Error::disposition`].
    #[error(transparent)]
    Frame(#[from] Error),
    /// The peer reset the stream with this application code.
    #[error("peer reset the stream with code {0:#x}")]
    Reset(u64),
    /// The connection ended.
    #[error("connection lost: {0}")]
    ConnectionLost(#[from] quinn::ConnectionError),
    /// The stream cannot be read for a local reason (already stopped, 0-RTT rejected).
    #[error("stream closed: {0}")]
    Closed(String),
}

impl From<ReadError> for ReadFrameError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Reset(code) => Self::Reset(code.into_inner()),
            ReadError::ConnectionLost(e) => Self::ConnectionLost(e),
            other => Self::Closed(other.to_string()),
        }
    }
}

/// Reads exactly one frame of type `expected`, then the stream's FIN.
///
/// `frame_bytes_max` (header included) is the reader's own limit, at most
/// [`crate::FRAME_BYTES_MAX`]; the type's protocol limit applies too. A header above either is
/// [`Error::FrameTooLarge`] and its payload is never read. Other outcomes: a frame of another
/// type is [`Error::UnexpectedFrameType`], a stream that ends early [`Error::Truncated`], bytes
/// after the frame [`Error::TrailingBytes`]. The caller bounds the time (the stream deadline).
pub async fn read_frame(
    recv: &mut RecvStream,
    expected: FrameType,
    frame_bytes_max: usize,
) -> Result<Vec<u8>, ReadFrameError> {
    let mut header_bytes = [0u8; HEADER_BYTES];
    read_exact(recv, &mut header_bytes, 0).await?;
    let header = FrameHeader::decode(&header_bytes)?;
    if header.frame_type != expected {
        return Err(Error::UnexpectedFrameType { expected, found: header.frame_type }.into());
    }
    let frame_len = header.frame_len();
    if frame_len > frame_bytes_max {
        return Err(Error::FrameTooLarge {
            frame_type: header.frame_type,
            payload_len: header.payload_len,
            payload_bytes_max: frame_bytes_max.saturating_sub(HEADER_BYTES),
        }
        .into());
    }
    // One buffer per frame, sized from the checked header.
    let mut frame = vec![0u8; frame_len];
    if let Some(head) = frame.get_mut(..HEADER_BYTES) {
        head.copy_from_slice(&header_bytes);
    }
    if let Some(payload) = frame.get_mut(HEADER_BYTES..) {
        read_exact(recv, payload, HEADER_BYTES).await?;
    }
    let mut probe = [0u8; 1];
    match recv.read(&mut probe).await? {
        None => Ok(frame),
        Some(0) => Ok(frame),
        Some(extra) => Err(Error::TrailingBytes { extra }.into()),
    }
}

/// `read_exact` with a stream that ends early reported as [`Error::Truncated`]; `before` is how
/// many bytes of the frame were read before `buf`.
async fn read_exact(recv: &mut RecvStream, buf: &mut [u8], before: usize) -> Result<(), ReadFrameError> {
    match recv.read_exact(buf).await {
        Ok(()) => Ok(()),
        Err(ReadExactError::FinishedEarly(read)) => {
            Err(Error::Truncated { needed: before + buf.len(), available: before + read }.into())
        }
        Err(ReadExactError::ReadError(e)) => Err(e.into()),
    }
}

/// Writes one whole encoded frame and finishes the stream (the sender's FIN).
pub async fn write_frame(send: &mut SendStream, frame: &[u8]) -> Result<(), quinn::WriteError> {
    send.write_all(frame).await?;
    // Finishing a stream the peer already stopped only fails locally; the write reported it.
    let _ = send.finish();
    Ok(())
}

/// Ends both directions of a stream with `code`: `RESET_STREAM` on the send side and
/// `STOP_SENDING` on the receive side (PROTOCOL.md §6.1).
pub fn reset_stream(send: &mut SendStream, recv: &mut RecvStream, code: StreamErrorCode) {
    let code = VarInt::from_u32(code as u32);
    // Either side may already be closed by the peer; there is nothing left to tell it then.
    let _ = send.reset(code);
    let _ = recv.stop(code);
}
