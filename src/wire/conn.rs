//! Framed packet IO on one leg (client or server).
//!
//! Frames are reassembled into logical packets; each leg keeps its own
//! sequence counter, so every packet thaw writes is renumbered for the leg it
//! goes to. Reads are cancel-safe (bytes stay in `rbuf` until a whole packet
//! is there), which lets the session `select!` over both legs.
//!
//! Memory: the packet limit is checked on every frame header as it arrives,
//! before the frame's body is read, so no packet is buffered past the limit.
//! A packet the session does not want to buffer is streamed instead:
//! [`PacketIo::begin_stream`] hands over its first bytes and
//! [`PacketIo::next_piece`] the rest, one frame header or read chunk at a time.
//!
//! Compression ([`PacketIo::start_compression`], after the login's OK) sits
//! between the transport and `rbuf`/`wbuf`: wire bytes are inflated into
//! `rbuf` one read chunk at a time, and what would be written is deflated
//! into frames, so framing, limits and streaming above work unchanged.
use super::compress::{Codec, CompressError, Framing, Tally};
use bytes::{Buf, Bytes, BytesMut};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest payload of one frame; a frame this long is always continued.
pub const MAX_FRAME: usize = 0xFF_FFFF;
/// Flush the write buffer once it holds this much.
const WRITE_HIGH_WATER: usize = 64 * 1024;
pub const READ_CHUNK: usize = 64 * 1024;
/// While the session waits (`closed`), at most this much is read ahead from the peer.
pub const CLOSED_READ_CAP: usize = 64 * 1024;

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
    #[error(transparent)]
    Compress(#[from] CompressError),
}

pub struct PacketIo<S> {
    stream: S,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    seq: u8,
    max_packet: usize,
    /// The packet being streamed (`begin_stream`), if any.
    streaming: Option<Streaming>,
    /// The compressed protocol, once negotiated.
    z: Option<Box<Codec>>,
    /// Body bytes of the frame begun by `start_frame` still to come (a
    /// [`Framing::Packets`] frame is closed and written at 0).
    writing: usize,
}

#[derive(Debug, Clone, Copy)]
struct Streaming {
    /// Body bytes of the current frame still to hand out.
    left: usize,
    /// The current frame is full, so another frame follows.
    more: bool,
    /// Payload announced so far, checked against the limit at each header.
    total: usize,
    last_seq: u8,
}

/// One piece of a streamed packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// A new frame of this payload length starts.
    Frame(usize),
    /// Body bytes of the current frame.
    Data(Bytes),
}

impl<S: AsyncRead + AsyncWrite + Unpin> PacketIo<S> {
    pub fn new(stream: S, max_packet: usize) -> Self {
        PacketIo {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: Vec::with_capacity(READ_CHUNK),
            seq: 0,
            max_packet,
            streaming: None,
            z: None,
            writing: 0,
        }
    }

    /// Switch this leg to the compressed protocol (after the login's OK,
    /// with everything written flushed). Bytes already read are wire bytes.
    pub fn start_compression(&mut self, level: u32, framing: Framing, tally: Option<Arc<dyn Tally>>) {
        debug_assert!(self.wbuf.is_empty() && self.streaming.is_none() && self.z.is_none());
        let mut z = Box::new(Codec::new(level, framing, tally));
        z.raw = self.rbuf.split();
        self.z = Some(z);
    }

    pub fn compressed(&self) -> bool {
        self.z.is_some()
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
            if self.fill().await? == 0 {
                return if self.rbuf.is_empty() { Ok(None) } else { Err(WireError::Truncated) };
            }
        }
    }

    /// Read more plain bytes into `rbuf`; 0 when the peer closed between frames.
    async fn fill(&mut self) -> Result<usize, WireError> {
        let Some(z) = self.z.as_mut() else {
            self.rbuf.reserve(READ_CHUNK);
            return Ok(self.stream.read_buf(&mut self.rbuf).await?);
        };
        loop {
            // No await between inflating and returning: cancel-safe like a read.
            let n = z.inflate(&mut self.rbuf, READ_CHUNK)?;
            if n > 0 {
                return Ok(n);
            }
            if z.raw.len() > 4 * READ_CHUNK {
                // zlib takes all the input it is given; this cannot be a frame.
                return Err(WireError::Malformed("compressed frame makes no progress"));
            }
            z.raw.reserve(READ_CHUNK);
            if self.stream.read_buf(&mut z.raw).await? == 0 {
                return if z.mid_frame() { Err(WireError::Truncated) } else { Ok(0) };
            }
        }
    }

    /// Returns once the peer has closed (or the connection failed). Bytes the
    /// peer sends meanwhile (pipelined commands) stay buffered for `read`, up
    /// to [`CLOSED_READ_CAP`]; past it nothing more is read (the peer is held
    /// back by TCP flow control) and this waits forever. Cancel-safe.
    pub async fn closed(&mut self) {
        loop {
            let held = self.buffered_len();
            if held >= CLOSED_READ_CAP {
                return std::future::pending().await;
            }
            let room = CLOSED_READ_CAP - held;
            // Compressed: wire bytes wait uninflated.
            let buf = match self.z.as_mut() {
                Some(z) => &mut z.raw,
                None => &mut self.rbuf,
            };
            buf.reserve(room);
            let mut limited = (&mut self.stream).take(room as u64);
            match limited.read_buf(buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// True when a whole packet is already buffered (no syscall needed to read it).
    pub fn has_buffered_packet(&self) -> bool {
        matches!(scan(&self.rbuf, self.max_packet), Some(Ok(_))) || self.z.as_ref().is_some_and(|z| z.ready())
    }

    /// Bytes read from the peer and not yet handed out.
    pub fn buffered_len(&self) -> usize {
        self.rbuf.len() + self.z.as_ref().map_or(0, |z| z.raw.len())
    }

    /// Payload length of the next packet's first frame, once its header has
    /// arrived; `None` when the peer closed cleanly before it. A frame over
    /// the limit is refused here, before its body is read. Cancel-safe.
    pub async fn next_frame_len(&mut self) -> Result<Option<usize>, WireError> {
        debug_assert!(self.streaming.is_none());
        loop {
            if self.rbuf.len() >= 4 {
                let len = frame_len(&self.rbuf);
                if len > self.max_packet {
                    self.seq = self.rbuf[3].wrapping_add(1);
                    return Err(WireError::TooLarge(len, self.max_packet));
                }
                return Ok(Some(len));
            }
            if self.fill().await? == 0 {
                return if self.rbuf.is_empty() { Ok(None) } else { Err(WireError::Truncated) };
            }
        }
    }

    /// Start streaming the next packet instead of buffering it: returns its
    /// first frame's length and up to `want` of its first payload bytes. The
    /// rest comes from [`next_piece`](Self::next_piece).
    pub async fn begin_stream(&mut self, want: usize) -> Result<(usize, Bytes), WireError> {
        let len = match self.next_frame_len().await? {
            Some(len) => len,
            None => return Err(WireError::Truncated),
        };
        let seq = self.rbuf[3];
        let want = want.min(len);
        while self.rbuf.len() < 4 + want {
            if self.fill().await? == 0 {
                return Err(WireError::Truncated);
            }
        }
        self.rbuf.advance(4);
        let prefix = Bytes::copy_from_slice(&self.rbuf[..want]);
        self.rbuf.advance(want);
        self.streaming = Some(Streaming { left: len - want, more: len == MAX_FRAME, total: len, last_seq: seq });
        Ok((len, prefix))
    }

    /// The next piece of the packet begun by `begin_stream`, or `None` once
    /// it has all been handed out. Each continuation frame's header is
    /// checked against the limit before any of its body is read.
    pub async fn next_piece(&mut self) -> Result<Option<Piece>, WireError> {
        let Some(mut st) = self.streaming else { return Ok(None) };
        if st.left > 0 {
            if self.rbuf.is_empty() && self.fill().await? == 0 {
                return Err(WireError::Truncated);
            }
            let n = st.left.min(self.rbuf.len());
            let data = self.rbuf.split_to(n).freeze();
            st.left -= n;
            self.streaming = Some(st);
            return Ok(Some(Piece::Data(data)));
        }
        if !st.more {
            self.streaming = None;
            self.seq = st.last_seq.wrapping_add(1);
            return Ok(None);
        }
        while self.rbuf.len() < 4 {
            if self.fill().await? == 0 {
                return Err(WireError::Truncated);
            }
        }
        let len = frame_len(&self.rbuf);
        st.last_seq = self.rbuf[3];
        st.total = st.total.saturating_add(len);
        if st.total > self.max_packet {
            self.streaming = None;
            self.seq = st.last_seq.wrapping_add(1);
            return Err(WireError::TooLarge(st.total, self.max_packet));
        }
        self.rbuf.advance(4);
        st.left = len;
        st.more = len == MAX_FRAME;
        self.streaming = Some(st);
        Ok(Some(Piece::Frame(len)))
    }

    /// Write a frame header numbered from this leg's counter; the body
    /// follows with [`write_raw`](Self::write_raw). For streamed packets.
    pub fn start_frame(&mut self, len: usize) {
        debug_assert!(len <= MAX_FRAME);
        let l = (len as u32).to_le_bytes();
        self.wbuf.extend_from_slice(&[l[0], l[1], l[2], self.seq]);
        self.seq = self.seq.wrapping_add(1);
        self.writing = len;
        if let Some(z) = self.z.as_mut().filter(|z| z.framing == Framing::Packets) {
            // Each plain frame starts a compressed one, as `send_direct` cuts
            // them (libmariadb misreads a large packet that starts inside a
            // compressed frame after other packets): what is buffered before
            // it goes first, then this frame is deflated as it streams.
            let at = self.wbuf.len() - 4;
            z.deflate(&[&self.wbuf[..at]]);
            z.feed(&[&self.wbuf[at..]]);
            self.wbuf.clear();
            if len == 0 {
                // The empty frame that ends a packet of a multiple of 16 MiB:
                // written with the next write or flush.
                z.close();
            }
        }
    }

    /// Write frame body bytes as they are (after `start_frame`).
    pub async fn write_raw(&mut self, data: &[u8]) -> Result<(), WireError> {
        self.writing = self.writing.saturating_sub(data.len());
        if let Some(z) = self.z.as_mut().filter(|z| z.framing == Framing::Packets) {
            z.feed(&[&self.wbuf, data]);
            self.wbuf.clear();
            if self.writing == 0 {
                // The plain frame is complete (at most 16 MiB held, deflated).
                z.close();
                self.stream.write_all(&z.wire).await?;
                z.wire.clear();
                z.shrink();
            }
            return Ok(());
        }
        put(&mut self.stream, &mut self.z, &[&self.wbuf, data]).await?;
        self.wbuf.clear();
        Ok(())
    }

    fn try_take(&mut self) -> Result<Option<Bytes>, WireError> {
        let Some(scanned) = scan(&self.rbuf, self.max_packet) else { return Ok(None) };
        let (end, frames, last_seq) = match scanned {
            Ok(s) => s,
            Err(TooLarge { announced, seq }) => {
                // The reply to a refused packet follows its last frame read.
                self.seq = seq.wrapping_add(1);
                return Err(WireError::TooLarge(announced, self.max_packet));
            }
        };
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
            // Compressed, one packet under 16 MiB is one frame (a few drivers
            // cannot reassemble a packet from more than two).
            put(&mut self.stream, &mut self.z, &[&[len[0], len[1], len[2], self.seq], &rest[..n]]).await?;
            self.seq = self.seq.wrapping_add(1);
            rest = &rest[n..];
            if n < MAX_FRAME {
                return Ok(());
            }
        }
    }

    pub async fn flush(&mut self) -> Result<(), WireError> {
        if self.z.as_ref().is_some_and(|z| !z.wire.is_empty()) || !self.wbuf.is_empty() {
            put(&mut self.stream, &mut self.z, &[&self.wbuf]).await?;
            self.wbuf.clear();
            if self.wbuf.capacity() > 4 * WRITE_HIGH_WATER {
                self.wbuf.shrink_to(WRITE_HIGH_WATER * 2);
            }
        }
        self.stream.flush().await?;
        Ok(())
    }

    /// Start of a new command: both directions count from 0 again (the
    /// compressed sequence too).
    pub fn reset_seq(&mut self) {
        self.set_seq(0);
    }
    pub fn seq(&self) -> u8 {
        self.seq
    }
    /// Compressed, the frame counter follows: the servers sync the two at each flush.
    pub fn set_seq(&mut self, seq: u8) {
        self.seq = seq;
        if let Some(z) = self.z.as_mut() {
            z.seq = seq;
        }
    }
    pub fn set_max_packet(&mut self, max: usize) {
        self.max_packet = max;
    }
    /// Bytes read from the stream but not yet taken as packets (before a transport swap).
    pub fn take_buffered(&mut self) -> Bytes {
        debug_assert!(self.z.is_none());
        self.rbuf.split().freeze()
    }
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Swap the transport (TLS upgrade). Only valid when nothing is buffered.
    pub fn replace_stream<T: AsyncRead + AsyncWrite + Unpin>(self, f: impl FnOnce(S) -> T) -> PacketIo<T> {
        debug_assert!(self.rbuf.is_empty() && self.wbuf.is_empty() && self.z.is_none());
        PacketIo {
            stream: f(self.stream),
            rbuf: self.rbuf,
            wbuf: self.wbuf,
            seq: self.seq,
            max_packet: self.max_packet,
            streaming: None,
            z: None,
            writing: 0,
        }
    }

    pub fn into_parts(self) -> (S, u8) {
        (self.stream, self.seq)
    }
}

/// Write plain bytes: as they are, or deflated into frames (`parts` joined).
async fn put<S: AsyncWrite + Unpin>(stream: &mut S, z: &mut Option<Box<Codec>>, parts: &[&[u8]]) -> std::io::Result<()> {
    let Some(z) = z else {
        for p in parts.iter().filter(|p| !p.is_empty()) {
            stream.write_all(p).await?;
        }
        return Ok(());
    };
    // An open frame (a packet streamed in pieces) is closed first: order kept.
    z.deflate(parts);
    stream.write_all(&z.wire).await?;
    z.wire.clear();
    z.shrink();
    Ok(())
}

fn frame_len(b: &[u8]) -> usize {
    b[0] as usize | (b[1] as usize) << 8 | (b[2] as usize) << 16
}

/// A frame header took the packet past the limit.
struct TooLarge {
    announced: usize,
    seq: u8,
}

/// Where the first complete logical packet ends: (end offset, frames, seq of
/// last frame). Each frame header is checked against `max` as soon as it is
/// buffered, before its body has arrived.
fn scan(buf: &[u8], max: usize) -> Option<Result<(usize, usize, u8), TooLarge>> {
    let mut off = 0;
    let mut frames = 0;
    let mut announced = 0usize;
    loop {
        if buf.len() < off + 4 {
            return None;
        }
        let len = frame_len(&buf[off..]);
        let seq = buf[off + 3];
        announced += len;
        if announced > max {
            return Some(Err(TooLarge { announced, seq }));
        }
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
    use crate::wire::compress::Framing;

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

    #[tokio::test]
    async fn limit_is_checked_on_the_frame_header_before_the_body() {
        let (mut a, b) = tokio::io::duplex(1 << 16);
        let mut r = PacketIo::new(b, 64 * 1024);
        // A 16 MiB frame header and only a few body bytes: refused at once.
        a.write_all(&[0xFF, 0xFF, 0xFF, 1, b'x', b'y']).await.unwrap();
        assert!(matches!(r.read().await, Err(WireError::TooLarge(MAX_FRAME, 65536))));
        assert_eq!(r.seq(), 2, "a reply to the refused packet follows its frame");
        let (mut a, b) = tokio::io::duplex(1 << 16);
        let mut r = PacketIo::new(b, 1 << 30);
        a.write_all(&[0xFF, 0xFF, 0xFF, 0]).await.unwrap();
        assert!(matches!(r.next_frame_len().await, Ok(Some(MAX_FRAME))));
        let mut r = PacketIo::new(tokio::io::duplex(64).1, 100);
        assert!(matches!(r.next_frame_len().await, Ok(None)));
    }

    #[tokio::test]
    async fn continuation_headers_count_toward_the_limit() {
        // Two full frames announced: 32 MiB against a 20 MiB limit. The first
        // frame's body is buffered (16 MiB), the second header is refused.
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut r = PacketIo::new(b, 20 << 20);
        let writer = tokio::spawn(async move {
            let mut a = a;
            let body = vec![7u8; MAX_FRAME];
            a.write_all(&[0xFF, 0xFF, 0xFF, 0]).await.unwrap();
            a.write_all(&body).await.unwrap();
            a.write_all(&[0xFF, 0xFF, 0xFF, 1]).await.unwrap();
            a
        });
        assert!(matches!(r.read().await, Err(WireError::TooLarge(n, _)) if n == 2 * MAX_FRAME));
        drop(writer.await.unwrap());
    }

    /// Stream a packet through `begin_stream`/`next_piece` onto another leg.
    async fn stream_through(payload: Vec<u8>, max: usize) -> Result<(Vec<u8>, u8), WireError> {
        stream_through_legs(payload, max, [None, None]).await.map(|(got, seq, _)| (got, seq))
    }

    /// `compressed`: [the leg read from, the leg written to]. Also returns
    /// the compressed frames the last leg read.
    async fn stream_through_legs(payload: Vec<u8>, max: usize, compressed: [Option<Framing>; 2]) -> Result<(Vec<u8>, u8, u8), WireError> {
        let (a, b) = tokio::io::duplex(1 << 20);
        let (c, d) = tokio::io::duplex(1 << 20);
        let mut w = PacketIo::new(a, 1 << 30);
        let mut from = PacketIo::new(b, max);
        let mut to = PacketIo::new(c, 1 << 30);
        let mut end = PacketIo::new(d, 1 << 30);
        if let Some(f) = compressed[0] {
            w.start_compression(1, Framing::Pieces, None);
            from.start_compression(1, f, None);
        }
        if let Some(f) = compressed[1] {
            to.start_compression(1, f, None);
            end.start_compression(1, Framing::Pieces, None);
        }
        let p2 = payload.clone();
        let writer = tokio::spawn(async move {
            w.send(&p2).await.unwrap();
            w.send(b"next").await.unwrap();
            w.flush().await.unwrap();
        });
        let reader = tokio::spawn(async move {
            let got = end.read().await.unwrap().unwrap().to_vec();
            (got, end.seq(), end.z.as_ref().map_or(0, |z| z.seq))
        });
        let (len, prefix) = from.begin_stream(16).await?;
        assert_eq!(prefix[..], payload[..16]);
        to.start_frame(len);
        to.write_raw(&prefix).await?;
        let mut biggest = 0;
        while let Some(piece) = from.next_piece().await? {
            match piece {
                Piece::Frame(n) => to.start_frame(n),
                Piece::Data(d) => {
                    biggest = biggest.max(d.len());
                    to.write_raw(&d).await?;
                }
            }
        }
        to.flush().await?;
        assert!(biggest <= 4 * READ_CHUNK, "pieces are read chunks, not frames ({biggest})");
        assert_eq!(&from.read().await?.unwrap()[..], b"next", "the next packet follows");
        writer.await.unwrap();
        Ok(reader.await.unwrap())
    }

    #[tokio::test]
    async fn streamed_packets_arrive_byte_identical_with_frames_renumbered() {
        for n in [100, MAX_FRAME - 1, MAX_FRAME, MAX_FRAME + 1, 2 * MAX_FRAME + 10] {
            let payload: Vec<u8> = (0..n).map(|i| (i % 253) as u8).collect();
            let (got, seq) = stream_through(payload.clone(), 1 << 30).await.unwrap();
            assert!(got == payload, "{n} bytes");
            assert_eq!(seq as usize, n / MAX_FRAME + 1, "{n} bytes");
        }
        let big = vec![1u8; 2 * MAX_FRAME + 10];
        assert!(matches!(stream_through(big, MAX_FRAME + 5).await, Err(WireError::TooLarge(_, _))));
    }

    #[tokio::test]
    async fn closed_reads_ahead_only_up_to_its_cap() {
        let (mut a, b) = tokio::io::duplex(1 << 20);
        let mut r = PacketIo::new(b, 1 << 30);
        a.write_all(&vec![0u8; 1 << 20]).await.unwrap();
        let waited = tokio::time::timeout(std::time::Duration::from_millis(100), r.closed()).await;
        assert!(waited.is_err(), "a flooding peer is not taken for a closed one");
        assert!(r.buffered_len() <= CLOSED_READ_CAP, "{}", r.buffered_len());
        let (a, b) = tokio::io::duplex(64);
        let mut r = PacketIo::new(b, 1 << 30);
        drop(a);
        r.closed().await;
    }

    fn rows(n: usize) -> Vec<u8> {
        (0..n).map(|i| b"0123456789,billing,EUR,"[i % 23] ^ ((i >> 12) as u8 & 3)).collect()
    }

    #[tokio::test]
    async fn compressed_legs_carry_packets_of_every_size() {
        for n in [0, 1, 60, 70_000, MAX_FRAME - 4, MAX_FRAME, 2 * MAX_FRAME + 10] {
            let (a, b) = tokio::io::duplex(1 << 20);
            let mut w = PacketIo::new(a, 1 << 30);
            let mut r = PacketIo::new(b, 1 << 30);
            w.start_compression(1, Framing::Pieces, None);
            r.start_compression(1, Framing::Pieces, None);
            assert!(w.compressed());
            let payload = rows(n);
            let p2 = payload.clone();
            let writer = tokio::spawn(async move {
                w.set_seq(3);
                for _ in 0..3 {
                    w.send(b"\x03SELECT 1").await.unwrap();
                }
                w.send(&p2).await.unwrap();
                w.send(b"next").await.unwrap();
                w.flush().await.unwrap();
                (w.seq(), w.z.as_ref().unwrap().seq)
            });
            for _ in 0..3 {
                assert_eq!(&r.read().await.unwrap().unwrap()[..], b"\x03SELECT 1");
            }
            let got = r.read().await.unwrap().unwrap();
            assert!(got[..] == payload[..], "{n} bytes");
            assert_eq!(&r.read().await.unwrap().unwrap()[..], b"next");
            let (seq, zseq) = writer.await.unwrap();
            assert_eq!(r.seq(), seq, "{n}: packet ids agree");
            assert_eq!(r.z.as_ref().unwrap().seq, zseq, "{n}: frame ids agree");
            assert!(r.read().await.unwrap().is_none(), "clean close between frames");
        }
    }

    #[tokio::test]
    async fn compressed_frame_ids_restart_with_the_command() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut w = PacketIo::new(a, 1 << 20);
        w.start_compression(6, Framing::Pieces, None);
        w.set_seq(7);
        w.send(b"x").await.unwrap();
        w.flush().await.unwrap();
        w.reset_seq();
        w.send(b"\x0e").await.unwrap();
        w.flush().await.unwrap();
        drop(w);
        let mut raw = Vec::new();
        let mut b = b;
        b.read_to_end(&mut raw).await.unwrap();
        // Two stored frames: ids 7 and 0, each holding a plain frame with the same id.
        assert_eq!(raw, b"\x05\x00\x00\x07\x00\x00\x00\x01\x00\x00\x07x\x05\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x0e");
        // The reader answers with the id after the last frame it read.
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut r = PacketIo::new(b, 1 << 20);
        r.start_compression(6, Framing::Pieces, None);
        let mut a = a;
        a.write_all(b"\x05\x00\x00\x04\x00\x00\x00\x01\x00\x00\x00\x0e").await.unwrap();
        r.read().await.unwrap().unwrap();
        assert_eq!((r.seq(), r.z.as_ref().unwrap().seq), (1, 5));
    }

    #[tokio::test]
    async fn streamed_packets_cross_compressed_legs_unchanged() {
        let (p, w) = (Some(Framing::Pieces), Some(Framing::Packets));
        for legs in [[p, None], [None, p], [p, p], [None, w], [p, w]] {
            for n in [100, 70_000, MAX_FRAME, 2 * MAX_FRAME + 10] {
                let payload = rows(n);
                let (got, seq, frames) = stream_through_legs(payload.clone(), 1 << 30, legs).await.unwrap();
                assert!(got == payload, "{legs:?} {n} bytes");
                assert_eq!(seq as usize, n / MAX_FRAME + 1, "{legs:?} {n} bytes");
                if legs[1] == w {
                    // Each plain frame (header included) starts a compressed one,
                    // cut at the 16 MiB a compressed frame holds.
                    let full = n / MAX_FRAME;
                    let want = full * (4 + MAX_FRAME).div_ceil(crate::wire::compress::OPEN_MAX_PLAIN) + 1;
                    assert_eq!(frames as usize, want, "{n} bytes");
                }
            }
        }
    }

    #[tokio::test]
    async fn limits_hold_inside_a_compressed_frame() {
        // One frame of 16 MiB of zeros in a few KiB: its first plain frame
        // header announces 16 MiB. Refused at that header, with the frame's
        // remaining 16 MiB never inflated or buffered.
        use std::io::Write;
        let mut plain = vec![0xFF, 0xFF, 0xFF, 0];
        plain.resize(crate::wire::compress::MAX_PLAIN, 0);
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&plain).unwrap();
        let body = e.finish().unwrap();
        let (mut a, b) = tokio::io::duplex(1 << 20);
        let mut r = PacketIo::new(b, 64 * 1024);
        r.start_compression(6, Framing::Pieces, None);
        let l = (body.len() as u32).to_le_bytes();
        a.write_all(&[l[0], l[1], l[2], 0, 0xFF, 0xFF, 0xFF]).await.unwrap();
        a.write_all(&body).await.unwrap();
        assert!(matches!(r.read().await, Err(WireError::TooLarge(MAX_FRAME, 65536))));
        assert!(r.rbuf.capacity() <= 4 * READ_CHUNK, "{}", r.rbuf.capacity());
        // A bomb that lies about its length is refused as such.
        let (mut a, b) = tokio::io::duplex(1 << 20);
        let mut r = PacketIo::new(b, 1 << 30);
        r.start_compression(6, Framing::Pieces, None);
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b"\x02\x00\x00\x00\x0e\x0e").unwrap();
        e.write_all(&[0; 10_000]).unwrap();
        let body = e.finish().unwrap();
        let l = (body.len() as u32).to_le_bytes();
        a.write_all(&[l[0], l[1], l[2], 0, 6, 0, 0]).await.unwrap();
        a.write_all(&body).await.unwrap();
        assert!(matches!(r.read().await, Err(WireError::Compress(CompressError::Overlong(6)))));
    }

    #[tokio::test]
    async fn compressed_closed_reads_ahead_only_up_to_its_cap() {
        let (mut a, b) = tokio::io::duplex(1 << 20);
        let mut r = PacketIo::new(b, 1 << 30);
        r.start_compression(6, Framing::Pieces, None);
        a.write_all(&vec![0u8; 1 << 20]).await.unwrap();
        let waited = tokio::time::timeout(std::time::Duration::from_millis(100), r.closed()).await;
        assert!(waited.is_err());
        assert!(r.buffered_len() <= CLOSED_READ_CAP, "{}", r.buffered_len());
        assert_eq!(r.rbuf.len(), 0, "wire bytes wait uninflated");
        // A peer that leaves in the middle of a frame cut it off.
        let (mut a, b) = tokio::io::duplex(64);
        let mut r = PacketIo::new(b, 1 << 30);
        r.start_compression(6, Framing::Pieces, None);
        a.write_all(&[9, 0, 0, 0, 0, 0, 0, 1]).await.unwrap();
        drop(a);
        assert!(matches!(r.read().await, Err(WireError::Truncated)));
    }
}
