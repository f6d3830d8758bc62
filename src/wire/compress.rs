//! The compressed protocol (CLIENT_COMPRESS), as a layer below
//! [`PacketIo`](super::PacketIo): everything above keeps seeing plain packets.
//!
//! On the wire, each compressed frame is a 7-byte header (3 bytes compressed
//! length, 1 byte compressed sequence id, 3 bytes uncompressed length, 0 for
//! "sent as is") and a zlib stream whose output is a piece of the plain
//! packet stream (frame headers included): several packets, or part of one.
//! The compressed sequence id counts frames; it restarts with each command
//! like the packet sequence id, and is otherwise one past the last frame read.
//!
//! Sans-IO: [`Codec::inflate`] turns buffered wire bytes into plain bytes,
//! at most `max` at a time, so a frame that inflates to 16 MiB is never held
//! whole (a zip bomb costs at most one read chunk of memory), and the stated
//! length is enforced both ways. [`Codec::deflate`] turns plain bytes into
//! frames.
use bytes::{Buf, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::sync::Arc;

pub const HEADER: usize = 7;
/// Largest plain payload of one compressed frame (a 3-byte length).
pub const MAX_PLAIN: usize = 0xFF_FFFF;
/// Largest plain payload of a frame deflated as it streams ([`Codec::feed`]):
/// its compressed length must fit the same 3 bytes whatever the data, and
/// zlib's worst case adds n/4096 + n/16384 + 13 bytes (deflateBound), so
/// 8 KiB below [`MAX_PLAIN`]. (A whole frame that zlib cannot shrink goes as
/// it is instead; a streamed one is gone by the time that is known.)
pub const OPEN_MAX_PLAIN: usize = MAX_PLAIN - 8192;
/// Shorter frames go uncompressed, as MySQL and MariaDB send them
/// (MIN_COMPRESS_LENGTH): zlib would make them longer.
const MIN_COMPRESS: usize = 50;
/// zlib's level as the servers use it by default (Z_DEFAULT_COMPRESSION).
pub const DEFAULT_LEVEL: u32 = 6;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompressError {
    #[error("compressed frame inflates past its stated length of {0} bytes")]
    Overlong(usize),
    #[error("compressed frame inflates to {got} bytes, its header says {stated}")]
    Short { got: usize, stated: usize },
    #[error("compressed frame has {0} bytes after the end of its zlib stream")]
    Trailing(usize),
    #[error("compressed frame is not valid zlib data: {0}")]
    Corrupt(String),
}

/// Where a compressed leg reports its traffic, per frame: bytes on the wire
/// (headers included) and the plain bytes they carry.
pub trait Tally: Send + Sync {
    fn read(&self, wire: u64, plain: u64);
    fn wrote(&self, wire: u64, plain: u64);
}

/// What one step of inflating did.
struct Step {
    made: usize,
    /// Input was consumed or output produced: another step may do more.
    moved: bool,
    ended: bool,
}

/// How a packet streamed through [`PacketIo`](super::PacketIo) (its
/// pieces written one by one) is cut into compressed frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Each piece is a frame: memory stays at one read chunk. For the
    /// server's leg: MariaDB and MySQL reassemble a packet from any frames.
    Pieces,
    /// One frame per packet (per 16 MiB of it), as the servers send them:
    /// mysql-connector-python reads a packet from at most two frames. The
    /// packet is deflated as it streams and held, compressed, until it ends.
    Packets,
}

/// A frame being deflated piece by piece ([`Framing::Packets`]).
#[derive(Debug, Clone, Copy)]
struct Open {
    /// Where its header is in `wire`.
    at: usize,
    plain: usize,
}

/// The frame being inflated.
#[derive(Debug, Clone, Copy)]
struct Frame {
    /// Wire bytes of its body not yet consumed.
    comp_left: usize,
    /// Plain bytes its header promises and not yet produced.
    plain_left: usize,
    stated: usize,
    /// Sent as is (uncompressed length 0): the body is plain bytes.
    stored: bool,
}

pub struct Codec {
    /// Compressed sequence id of the next frame written.
    pub seq: u8,
    /// Wire bytes read from the peer, not yet inflated.
    pub raw: BytesMut,
    /// Frames deflated and not yet written.
    pub wire: Vec<u8>,
    frame: Option<Frame>,
    open: Option<Open>,
    pub framing: Framing,
    inflater: Decompress,
    deflater: Compress,
    tally: Option<Arc<dyn Tally>>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").field("seq", &self.seq).field("raw", &self.raw.len()).field("frame", &self.frame).finish()
    }
}

fn u24(b: &[u8]) -> usize {
    b[0] as usize | (b[1] as usize) << 8 | (b[2] as usize) << 16
}

fn header(wire: &mut Vec<u8>, comp: usize, seq: u8, plain: usize) {
    let c = (comp as u32).to_le_bytes();
    let p = (plain as u32).to_le_bytes();
    wire.extend_from_slice(&[c[0], c[1], c[2], seq, p[0], p[1], p[2]]);
}

impl Codec {
    /// `level`: zlib 1 (fastest) to 9 (smallest).
    pub fn new(level: u32, framing: Framing, tally: Option<Arc<dyn Tally>>) -> Self {
        Codec {
            seq: 0,
            raw: BytesMut::new(),
            wire: Vec::new(),
            frame: None,
            open: None,
            framing,
            inflater: Decompress::new(true),
            deflater: Compress::new(Compression::new(level.clamp(1, 9)), true),
            tally,
        }
    }

    /// A frame is partly read: the peer closing now cut it off.
    pub fn mid_frame(&self) -> bool {
        self.frame.is_some() || !self.raw.is_empty()
    }

    /// Plain bytes can be produced without reading from the peer: the rest
    /// of the current frame, or a whole next frame, is buffered.
    pub fn ready(&self) -> bool {
        match self.frame {
            Some(f) => self.raw.len() >= f.comp_left,
            None => self.raw.len() >= HEADER && self.raw.len() >= HEADER + u24(&self.raw),
        }
    }

    /// Inflate buffered wire bytes into `out`, at most `max` plain bytes.
    /// Returns how many were produced; 0 means more wire bytes are needed.
    pub fn inflate(&mut self, out: &mut BytesMut, max: usize) -> Result<usize, CompressError> {
        let mut produced = 0;
        while produced < max {
            let Some(mut f) = self.frame else {
                if self.raw.len() < HEADER {
                    break;
                }
                let (comp, seq, plain) = (u24(&self.raw), self.raw[3], u24(&self.raw[4..]));
                self.raw.advance(HEADER);
                self.seq = seq.wrapping_add(1);
                let stored = plain == 0;
                if let Some(t) = &self.tally {
                    t.read((HEADER + comp) as u64, if stored { comp } else { plain } as u64);
                }
                if !stored {
                    self.inflater.reset(true);
                }
                let plain = if stored { comp } else { plain };
                self.frame = Some(Frame { comp_left: comp, plain_left: plain, stated: plain, stored });
                continue;
            };
            let step =
                if f.stored { self.copy_stored(&mut f, out, max - produced) } else { self.inflate_some(&mut f, out, max - produced)? };
            produced += step.made;
            self.frame = if step.ended { None } else { Some(f) };
            if !step.ended && !step.moved {
                break;
            }
        }
        Ok(produced)
    }

    fn copy_stored(&mut self, f: &mut Frame, out: &mut BytesMut, room: usize) -> Step {
        let n = f.comp_left.min(self.raw.len()).min(room);
        out.extend_from_slice(&self.raw[..n]);
        self.raw.advance(n);
        f.comp_left -= n;
        f.plain_left -= n;
        Step { made: n, moved: n > 0, ended: f.comp_left == 0 }
    }

    /// One zlib call. The frame ends only at the zlib stream's end, which
    /// must coincide with both lengths of its header.
    fn inflate_some(&mut self, f: &mut Frame, out: &mut BytesMut, room: usize) -> Result<Step, CompressError> {
        // Once every promised byte is out, only the stream's end may follow:
        // one byte of room shows whether the data goes on (a zip bomb whose
        // header understates it).
        let probing = f.plain_left == 0;
        let room = if probing { 1 } else { room.min(f.plain_left) };
        let avail = f.comp_left.min(self.raw.len());
        let start = out.len();
        out.resize(start + room, 0);
        let (in0, out0) = (self.inflater.total_in(), self.inflater.total_out());
        let status = self.inflater.decompress(&self.raw[..avail], &mut out[start..], FlushDecompress::None);
        let used = (self.inflater.total_in() - in0) as usize;
        let made = (self.inflater.total_out() - out0) as usize;
        out.truncate(start + made);
        self.raw.advance(used);
        f.comp_left -= used;
        let status = status.map_err(|e| CompressError::Corrupt(e.to_string()))?;
        if probing && made > 0 {
            return Err(CompressError::Overlong(f.stated));
        }
        f.plain_left -= made;
        let short = |f: &Frame| CompressError::Short { got: f.stated - f.plain_left, stated: f.stated };
        if status == Status::StreamEnd {
            if f.plain_left != 0 {
                return Err(short(f));
            }
            if f.comp_left != 0 {
                return Err(CompressError::Trailing(f.comp_left));
            }
            return Ok(Step { made, moved: true, ended: true });
        }
        let moved = used > 0 || made > 0;
        if !moved && f.comp_left == 0 {
            // The whole body is in and the stream has not ended.
            return Err(short(f));
        }
        Ok(Step { made, moved, ended: false })
    }

    /// Deflate `parts` (one run of plain bytes, in pieces) into frames in
    /// [`wire`](Self::wire), numbered from [`seq`](Self::seq). Frames carry
    /// at most [`MAX_PLAIN`] bytes; short ones, and ones zlib cannot shrink,
    /// go as they are.
    pub fn deflate(&mut self, parts: &[&[u8]]) {
        self.close();
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut chunks = Chunks { parts, at: (0, 0) };
        let mut left = total;
        while left > 0 {
            let n = left.min(MAX_PLAIN);
            self.deflate_frame(&mut chunks, n);
            left -= n;
        }
    }

    fn deflate_frame(&mut self, chunks: &mut Chunks<'_>, n: usize) {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let at = self.wire.len();
        if n >= MIN_COMPRESS {
            header(&mut self.wire, 0, seq, n);
            self.deflater.reset();
            let mark = *chunks;
            let mut left = n;
            while left > 0 {
                let piece = chunks.take(left);
                left -= piece.len();
                let flush = if left == 0 { FlushCompress::Finish } else { FlushCompress::None };
                self.compress_all(piece, flush);
            }
            let comp = self.wire.len() - at - HEADER;
            if comp < n {
                let c = (comp as u32).to_le_bytes();
                self.wire[at..at + 3].copy_from_slice(&c[..3]);
                self.tallied((HEADER + comp) as u64, n as u64);
                return;
            }
            // zlib made it longer: send the bytes as they are instead.
            self.wire.truncate(at);
            *chunks = mark;
        }
        header(&mut self.wire, n, seq, 0);
        let mut left = n;
        while left > 0 {
            let piece = chunks.take(left);
            left -= piece.len();
            self.wire.extend_from_slice(piece);
        }
        self.tallied((HEADER + n) as u64, n as u64);
    }

    /// Deflate `parts` into the open frame (opening one first), which is
    /// closed when it holds [`OPEN_MAX_PLAIN`] bytes; a new one takes the rest.
    pub fn feed(&mut self, parts: &[&[u8]]) {
        for mut part in parts.iter().copied() {
            while !part.is_empty() {
                let open = match self.open {
                    Some(o) => o,
                    None => {
                        let o = Open { at: self.wire.len(), plain: 0 };
                        header(&mut self.wire, 0, self.seq, 0);
                        self.seq = self.seq.wrapping_add(1);
                        self.deflater.reset();
                        o
                    }
                };
                let n = part.len().min(OPEN_MAX_PLAIN - open.plain);
                self.compress_all(&part[..n], FlushCompress::None);
                part = &part[n..];
                self.open = Some(Open { plain: open.plain + n, ..open });
                if open.plain + n == OPEN_MAX_PLAIN {
                    self.close();
                }
            }
        }
    }

    /// End the open frame, if any: its lengths go into its header. (It stays
    /// deflated even where zlib did not shrink it: the bytes are gone.)
    pub fn close(&mut self) {
        let Some(open) = self.open.take() else { return };
        self.compress_all(&[], FlushCompress::Finish);
        let comp = self.wire.len() - open.at - HEADER;
        debug_assert!(comp <= MAX_PLAIN, "deflateBound({}) fits 3 bytes", open.plain);
        let (c, p) = ((comp as u32).to_le_bytes(), (open.plain as u32).to_le_bytes());
        self.wire[open.at..open.at + 3].copy_from_slice(&c[..3]);
        self.wire[open.at + 4..open.at + 7].copy_from_slice(&p[..3]);
        self.tallied((HEADER + comp) as u64, open.plain as u64);
    }

    fn compress_all(&mut self, mut input: &[u8], flush: FlushCompress) {
        loop {
            self.wire.reserve((input.len() / 2).max(16 << 10));
            let before = self.deflater.total_in();
            let status = self.deflater.compress_vec(input, &mut self.wire, flush).expect("zlib deflate with valid arguments");
            input = &input[(self.deflater.total_in() - before) as usize..];
            let done = match flush {
                FlushCompress::Finish => status == Status::StreamEnd,
                // zlib keeps what it has not written yet for the next call.
                _ => input.is_empty(),
            };
            if done {
                return;
            }
        }
    }

    fn tallied(&self, wire: u64, plain: u64) {
        if let Some(t) = &self.tally {
            t.wrote(wire, plain);
        }
    }

    /// Give back buffers grown by a large frame.
    pub fn shrink(&mut self) {
        if self.wire.capacity() > 4 * super::conn::READ_CHUNK {
            self.wire = Vec::new();
        }
        if self.raw.is_empty() && self.raw.capacity() > 4 * super::conn::READ_CHUNK {
            self.raw = BytesMut::new();
        }
    }
}

/// A cursor over a list of byte slices read as one run.
#[derive(Clone, Copy)]
struct Chunks<'a> {
    parts: &'a [&'a [u8]],
    /// (part index, offset in it)
    at: (usize, usize),
}

impl<'a> Chunks<'a> {
    /// The next contiguous piece, at most `max` bytes (never empty while bytes remain).
    fn take(&mut self, max: usize) -> &'a [u8] {
        while let Some(p) = self.parts.get(self.at.0) {
            let rest = &p[self.at.1..];
            if rest.is_empty() {
                self.at = (self.at.0 + 1, 0);
                continue;
            }
            let n = rest.len().min(max);
            self.at.1 += n;
            return &rest[..n];
        }
        &[]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::ZlibEncoder;
    use std::io::Write;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// A frame as a hostile peer may write it: any stated length, any body.
    fn frame(seq: u8, stated: usize, body: &[u8]) -> Vec<u8> {
        let mut w = Vec::new();
        header(&mut w, body.len(), seq, stated);
        w.extend_from_slice(body);
        w
    }

    /// Inflate everything buffered, `max` at a time; the largest single output is checked.
    fn inflate_all(z: &mut Codec, max: usize) -> Result<Vec<u8>, CompressError> {
        let mut got = Vec::new();
        loop {
            let mut out = BytesMut::new();
            let n = z.inflate(&mut out, max)?;
            assert!(out.len() <= max, "at most max bytes per call ({} > {max})", out.len());
            if n == 0 {
                return Ok(got);
            }
            got.extend_from_slice(&out);
        }
    }

    fn sample(n: usize) -> Vec<u8> {
        // Compressible like rows are: repeated text with a counter.
        (0..n).map(|i| b"row-0123456789-abcdef;"[i % 22] ^ ((i / 997) as u8 & 1)).collect()
    }

    #[test]
    fn round_trip_in_pieces_and_sizes() {
        for n in [1, 49, 50, 51, 1000, 70_000, MAX_PLAIN, MAX_PLAIN + 10] {
            let data = sample(n);
            let mut w = Codec::new(DEFAULT_LEVEL, Framing::Pieces, None);
            w.seq = 250;
            let (a, b) = data.split_at(n / 3);
            w.deflate(&[a, &[], b]);
            let frames = n.div_ceil(MAX_PLAIN) as u8;
            assert_eq!(w.seq, 250u8.wrapping_add(frames), "{n}: one id per frame");
            let mut r = Codec::new(DEFAULT_LEVEL, Framing::Pieces, None);
            r.raw.extend_from_slice(&w.wire);
            assert!(r.ready());
            let got = inflate_all(&mut r, READ).unwrap();
            assert!(got == data, "{n} bytes come back as sent");
            assert!(!r.mid_frame());
            assert_eq!(r.seq, w.seq, "{n}: the reader answers after the last frame");
        }
    }

    const READ: usize = 64 << 10;

    #[test]
    fn short_and_incompressible_frames_go_as_they_are() {
        let mut w = Codec::new(DEFAULT_LEVEL, Framing::Pieces, None);
        w.deflate(&[b"\x01\x00\x00\x00\x0e"]);
        assert_eq!(&w.wire[..], b"\x05\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x0e", "COM_PING: stored, uncompressed length 0");
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let noise: Vec<u8> = (0..5000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        let mut w = Codec::new(DEFAULT_LEVEL, Framing::Pieces, None);
        w.deflate(&[&noise]);
        assert_eq!(&w.wire[4..7], &[0, 0, 0], "zlib cannot shrink it: stored");
        assert_eq!(w.wire.len(), HEADER + noise.len());
        let mut w = Codec::new(DEFAULT_LEVEL, Framing::Pieces, None);
        w.deflate(&[&sample(5000)]);
        assert!(w.wire.len() < 1000, "compressible data is compressed ({} bytes)", w.wire.len());
    }

    #[test]
    fn bytes_arriving_one_at_a_time_inflate_the_same() {
        let data = sample(300_000);
        let mut w = Codec::new(1, Framing::Pieces, None);
        w.deflate(&[&data[..100]]);
        w.deflate(&[&data[100..]]);
        let mut r = Codec::new(1, Framing::Pieces, None);
        let mut got = BytesMut::new();
        for (i, b) in w.wire.iter().enumerate() {
            r.raw.extend_from_slice(&[*b]);
            while r.inflate(&mut got, 1000).unwrap() > 0 {}
            assert!(r.mid_frame() || i == w.wire.len() - 1 || got.len() == 100);
        }
        assert!(got[..] == data[..]);
    }

    #[test]
    fn a_zip_bomb_is_refused_within_its_stated_length_and_one_chunk() {
        // 64 MiB of zeros in about 64 KiB, stated as 16 MiB (the most a header can say).
        let bomb = zlib(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 100 << 10);
        let mut r = Codec::new(DEFAULT_LEVEL, Framing::Pieces, None);
        r.raw.extend_from_slice(&frame(0, MAX_PLAIN, &bomb));
        let mut total = 0;
        let err = loop {
            let mut out = BytesMut::new();
            match r.inflate(&mut out, READ) {
                Ok(n) => {
                    assert!(out.len() <= READ && n > 0);
                    total += n;
                }
                Err(e) => break e,
            }
        };
        assert_eq!(err, CompressError::Overlong(MAX_PLAIN));
        assert!(total <= MAX_PLAIN && total + READ >= MAX_PLAIN, "up to the stated length, never past it ({total})");
        // Stated small, inflating large: refused after the stated bytes.
        let mut r = Codec::new(DEFAULT_LEVEL, Framing::Pieces, None);
        r.raw.extend_from_slice(&frame(0, 100, &bomb));
        assert_eq!(inflate_all(&mut r, READ), Err(CompressError::Overlong(100)));
    }

    #[test]
    fn lengths_that_do_not_match_the_stream_are_refused() {
        let z = zlib(&sample(1000));
        let mut r = Codec::new(DEFAULT_LEVEL, Framing::Pieces, None);
        r.raw.extend_from_slice(&frame(0, 2000, &z));
        assert_eq!(inflate_all(&mut r, READ), Err(CompressError::Short { got: 1000, stated: 2000 }));
        let mut body = z.clone();
        body.extend_from_slice(b"junk");
        let mut r = Codec::new(DEFAULT_LEVEL, Framing::Pieces, None);
        r.raw.extend_from_slice(&frame(0, 1000, &body));
        assert_eq!(inflate_all(&mut r, READ), Err(CompressError::Trailing(4)));
        // The body ends before the stream does.
        let mut r = Codec::new(DEFAULT_LEVEL, Framing::Pieces, None);
        r.raw.extend_from_slice(&frame(0, 1000, &z[..z.len() - 6]));
        r.raw.extend_from_slice(&frame(1, 0, b"next"));
        assert!(matches!(inflate_all(&mut r, READ), Err(CompressError::Short { .. })));
        let mut r = Codec::new(DEFAULT_LEVEL, Framing::Pieces, None);
        r.raw.extend_from_slice(&frame(0, 1000, b"this is not zlib data at all"));
        assert!(matches!(inflate_all(&mut r, READ), Err(CompressError::Corrupt(_))));
        // Stated plain bytes but no body at all.
        let mut r = Codec::new(DEFAULT_LEVEL, Framing::Pieces, None);
        r.raw.extend_from_slice(&frame(0, 1000, b""));
        assert!(matches!(inflate_all(&mut r, READ), Err(CompressError::Short { got: 0, stated: 1000 })));
    }

    #[test]
    fn a_partial_frame_waits_for_more() {
        let mut w = Codec::new(DEFAULT_LEVEL, Framing::Pieces, None);
        w.deflate(&[&sample(10_000)]);
        let mut r = Codec::new(DEFAULT_LEVEL, Framing::Pieces, None);
        r.raw.extend_from_slice(&w.wire[..5]);
        assert!(!r.ready());
        assert_eq!(inflate_all(&mut r, READ).unwrap(), b"");
        assert!(r.mid_frame(), "a closed peer now cut a frame off");
        r.raw.extend_from_slice(&w.wire[5..]);
        assert!(r.ready());
        assert_eq!(inflate_all(&mut r, READ).unwrap().len(), 10_000);
    }

    #[test]
    fn traffic_is_tallied_per_frame() {
        #[derive(Default)]
        struct Count(std::sync::Mutex<[u64; 4]>);
        impl Tally for Count {
            fn read(&self, wire: u64, plain: u64) {
                let mut c = self.0.lock().unwrap();
                c[0] += wire;
                c[1] += plain;
            }
            fn wrote(&self, wire: u64, plain: u64) {
                let mut c = self.0.lock().unwrap();
                c[2] += wire;
                c[3] += plain;
            }
        }
        let count = Arc::new(Count::default());
        let mut w = Codec::new(DEFAULT_LEVEL, Framing::Pieces, Some(count.clone()));
        w.deflate(&[&sample(10_000)]);
        w.deflate(&[b"tiny"]);
        let mut r = Codec::new(DEFAULT_LEVEL, Framing::Pieces, Some(count.clone()));
        r.raw.extend_from_slice(&w.wire);
        inflate_all(&mut r, READ).unwrap();
        let c = *count.0.lock().unwrap();
        assert_eq!(c, [w.wire.len() as u64, 10_004, w.wire.len() as u64, 10_004]);
    }

    #[test]
    fn a_streamed_frame_of_incompressible_bytes_still_fits_its_length_field() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..MAX_PLAIN + 10)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let mut w = Codec::new(1, Framing::Packets, None);
        for piece in noise.chunks(65_536) {
            w.feed(&[piece]);
        }
        w.close();
        let first = u24(&w.wire);
        assert!(first > OPEN_MAX_PLAIN && first <= MAX_PLAIN, "grown by zlib, within 3 bytes: {first}");
        let mut r = Codec::new(1, Framing::Pieces, None);
        r.raw.extend_from_slice(&w.wire);
        assert!(inflate_all(&mut r, READ).unwrap() == noise);
    }

    #[test]
    fn fed_pieces_make_one_frame_per_16_mib() {
        let data = sample(MAX_PLAIN + 70_000);
        let mut w = Codec::new(1, Framing::Packets, None);
        w.seq = 4;
        for piece in data.chunks(65_536) {
            w.feed(&[&piece[..10], &piece[10..]]);
        }
        w.close();
        w.close();
        assert_eq!(w.seq, 6, "two frames: 16 MiB and the rest");
        let mut r = Codec::new(1, Framing::Pieces, None);
        r.raw.extend_from_slice(&w.wire);
        assert_eq!(u24(&r.raw[4..]), OPEN_MAX_PLAIN, "the first frame holds the most a streamed frame may");
        assert!(inflate_all(&mut r, READ).unwrap() == data);
        assert_eq!(r.seq, 6);
        // A whole write closes the open frame first: bytes stay in order.
        let mut w = Codec::new(6, Framing::Packets, None);
        w.feed(&[b"first "]);
        w.deflate(&[b"then second"]);
        let mut r = Codec::new(6, Framing::Pieces, None);
        r.raw.extend_from_slice(&w.wire);
        assert_eq!(inflate_all(&mut r, READ).unwrap(), b"first then second");
    }
}
