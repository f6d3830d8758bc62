//! Framed packet IO on one leg (client or server).
//!
//! Frames are reassembled into logical packets; each leg keeps its own
//! sequence counter, so every packet thaw writes is renumbered for the leg it
//! goes to. Reads are cancel-safe (bytes stay in `rbuf` until a whole packet
//! is there), which lets the session `select!` over both legs.
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest payload of one frame; a frame this long is always continued.
pub const MAX_FRAME: usize = 0xFF_FFFF;
/// Flush the write buffer once it holds this much.
const WRITE_HIGH_WATER: usize = 64 * 1024;
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer closed the connection in the middle of a packet")]
    Truncated,
    #[error("packet of {0} bytes exceeds the limit of {1} bytes")]
    TooLarge(usize, usize),
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
}

pub struct PacketIo<S> {
    stream: S,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    seq: u8,
    max_packet: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> PacketIo<S> {
    pub fn new(stream: S, max_packet: usize) -> Self {
        PacketIo { stream, rbuf: BytesMut::with_capacity(READ_CHUNK), wbuf: Vec::with_capacity(READ_CHUNK), seq: 0, max_packet }
    }

    /// Next logical packet, or `None` when the peer closed cleanly between packets.
    pub async fn read(&mut self) -> Result<Option<Bytes>, WireError> {
        loop {
            if let Some(p) = self.try_take()? {
                return Ok(Some(p));
            }
            if self.rbuf.is_empty() && self.rbuf.capacity() > 4 * READ_CHUNK {
                // A large packet passed: give its buffer back instead of keeping it per connection.
                self.rbuf = BytesMut::with_capacity(READ_CHUNK);
            }
            self.rbuf.reserve(READ_CHUNK);
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return if self.rbuf.is_empty() { Ok(None) } else { Err(WireError::Truncated) };
            }
        }
    }

    /// Returns once the peer has closed (or the connection failed). Bytes the
    /// peer sends meanwhile (pipelined commands) stay buffered for `read`.
    /// Cancel-safe.
    pub async fn closed(&mut self) {
        loop {
            self.rbuf.reserve(READ_CHUNK);
            match self.stream.read_buf(&mut self.rbuf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// True when a whole packet is already buffered (no syscall needed to read it).
    pub fn has_buffered_packet(&self) -> bool {
        matches!(scan(&self.rbuf), Some(Ok(_)))
    }

    fn try_take(&mut self) -> Result<Option<Bytes>, WireError> {
        let Some(scanned) = scan(&self.rbuf) else { return Ok(None) };
        let (end, frames, last_seq) = scanned?;
        let payload_len = end - 4 * frames;
        if payload_len > self.max_packet {
            return Err(WireError::TooLarge(payload_len, self.max_packet));
        }
        self.seq = last_seq.wrapping_add(1);
        let mut raw = self.rbuf.split_to(end);
        if frames == 1 {
            raw.advance(4);
            return Ok(Some(raw.freeze()));
        }
        // Drop the frame headers in place: no second buffer of the packet's size.
        let (mut from, mut to) = (0, 0);
        while from < raw.len() {
            let len = frame_len(&raw[from..]);
            raw.copy_within(from + 4..from + 4 + len, to);
            to += len;
            from += 4 + len;
        }
        raw.truncate(to);
        Ok(Some(raw.freeze()))
    }

    /// Buffer one logical packet, split into frames numbered from this leg's counter.
    pub async fn send(&mut self, payload: &[u8]) -> Result<(), WireError> {
        if payload.len() >= WRITE_HIGH_WATER {
            return self.send_direct(payload).await;
        }
        let mut rest = payload;
        loop {
            let n = rest.len().min(MAX_FRAME);
            let len = (n as u32).to_le_bytes();
            self.wbuf.extend_from_slice(&[len[0], len[1], len[2], self.seq]);
            self.wbuf.extend_from_slice(&rest[..n]);
            self.seq = self.seq.wrapping_add(1);
            rest = &rest[n..];
            if self.wbuf.len() >= WRITE_HIGH_WATER {
                self.flush().await?;
            }
            if n < MAX_FRAME {
                return Ok(());
            }
        }
    }

    /// Large packets are written frame by frame from the caller's buffer
    /// rather than copied into the write buffer.
    async fn send_direct(&mut self, payload: &[u8]) -> Result<(), WireError> {
        self.flush().await?;
        let mut rest = payload;
        loop {
            let n = rest.len().min(MAX_FRAME);
            let len = (n as u32).to_le_bytes();
            self.stream.write_all(&[len[0], len[1], len[2], self.seq]).await?;
            self.stream.write_all(&rest[..n]).await?;
            self.seq = self.seq.wrapping_add(1);
            rest = &rest[n..];
            if n < MAX_FRAME {
                return Ok(());
            }
        }
    }

    pub async fn flush(&mut self) -> Result<(), WireError> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
            if self.wbuf.capacity() > 4 * WRITE_HIGH_WATER {
                self.wbuf.shrink_to(WRITE_HIGH_WATER * 2);
            }
        }
        self.stream.flush().await?;
        Ok(())
    }

    /// Start of a new command: both directions count from 0 again.
    pub fn reset_seq(&mut self) {
        self.seq = 0;
    }
    pub fn seq(&self) -> u8 {
        self.seq
    }
    pub fn set_seq(&mut self, seq: u8) {
        self.seq = seq;
    }
    pub fn set_max_packet(&mut self, max: usize) {
        self.max_packet = max;
    }
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Swap the transport (TLS upgrade). Only valid when nothing is buffered.
    pub fn replace_stream<T: AsyncRead + AsyncWrite + Unpin>(self, f: impl FnOnce(S) -> T) -> PacketIo<T> {
        debug_assert!(self.rbuf.is_empty() && self.wbuf.is_empty());
        PacketIo { stream: f(self.stream), rbuf: self.rbuf, wbuf: self.wbuf, seq: self.seq, max_packet: self.max_packet }
    }

    pub fn into_parts(self) -> (S, u8) {
        (self.stream, self.seq)
    }
}

fn frame_len(b: &[u8]) -> usize {
    b[0] as usize | (b[1] as usize) << 8 | (b[2] as usize) << 16
}

/// Where the first complete logical packet ends: (end offset, frames, seq of last frame).
fn scan(buf: &[u8]) -> Option<Result<(usize, usize, u8), WireError>> {
    let mut off = 0;
    let mut frames = 0;
    loop {
        if buf.len() < off + 4 {
            return None;
        }
        let len = frame_len(&buf[off..]);
        let seq = buf[off + 3];
        if buf.len() < off + 4 + len {
            return None;
        }
        off += 4 + len;
        frames += 1;
        if len < MAX_FRAME {
            return Some(Ok((off, frames, seq)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn roundtrip(payload: Vec<u8>) -> (Vec<u8>, usize) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut w = PacketIo::new(a, 1 << 30);
        let mut r = PacketIo::new(b, 1 << 30);
        let p2 = payload.clone();
        let writer = tokio::spawn(async move {
            w.send(&p2).await.unwrap();
            w.send(b"next").await.unwrap();
            w.flush().await.unwrap();
            w.seq()
        });
        let got = r.read().await.unwrap().unwrap().to_vec();
        let next = r.read().await.unwrap().unwrap();
        assert_eq!(&next[..], b"next");
        let wseq = writer.await.unwrap();
        assert_eq!(r.seq(), wseq, "both legs agree on the next sequence id");
        (got, wseq as usize)
    }

    #[tokio::test]
    async fn small_packet() {
        let (got, seq) = roundtrip(b"\x03SELECT 1".to_vec()).await;
        assert_eq!(got, b"\x03SELECT 1");
        assert_eq!(seq, 2);
    }

    #[tokio::test]
    async fn exact_multiple_of_max_frame_ends_with_empty_frame() {
        let payload = vec![0xAB; MAX_FRAME];
        let (got, seq) = roundtrip(payload.clone()).await;
        assert_eq!(got, payload);
        assert_eq!(seq, 3, "full frame + empty frame + next packet");
    }

    #[tokio::test]
    async fn large_packet_spans_frames() {
        let payload: Vec<u8> = (0..(2 * MAX_FRAME + 10)).map(|i| (i % 251) as u8).collect();
        let (got, seq) = roundtrip(payload.clone()).await;
        assert_eq!(got, payload);
        assert_eq!(seq, 4);
    }

    #[tokio::test]
    async fn sequence_wraps() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut w = PacketIo::new(a, 1 << 20);
        let mut r = PacketIo::new(b, 1 << 20);
        w.set_seq(255);
        w.send(b"x").await.unwrap();
        w.flush().await.unwrap();
        assert_eq!(w.seq(), 0);
        r.read().await.unwrap().unwrap();
        assert_eq!(r.seq(), 0);
    }

    #[tokio::test]
    async fn truncated_packet_is_an_error_and_clean_close_is_none() {
        let (mut a, b) = tokio::io::duplex(64);
        let mut r = PacketIo::new(b, 1 << 20);
        a.write_all(&[5, 0, 0, 0, 1, 2]).await.unwrap();
        drop(a);
        assert!(matches!(r.read().await, Err(WireError::Truncated)));
        let (a, b) = tokio::io::duplex(64);
        drop(a);
        let mut r = PacketIo::new(b, 1 << 20);
        assert!(r.read().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_packet_is_refused() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut w = PacketIo::new(a, 1 << 20);
        let mut r = PacketIo::new(b, 100);
        w.send(&[0u8; 200]).await.unwrap();
        w.flush().await.unwrap();
        assert!(matches!(r.read().await, Err(WireError::TooLarge(200, 100))));
    }
}
