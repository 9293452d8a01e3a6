//! SPDY/3.1 framing, as much of it as a port-forward server needs: the frames kubectl sends
//! and the ones it must get back, and header blocks (zlib streams with SPDY's preset
//! dictionary, one stream per direction for the whole connection).
//!
//! Frame header (8 bytes): a control frame is `1 | version(15) | type(16) | flags(8) |
//! length(24)`, a data frame `0 | stream-id(31) | flags(8) | length(24)`.

use bytes::{BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use std::sync::OnceLock;
use tokio::io::{AsyncRead, AsyncReadExt};

pub const FLAG_FIN: u8 = 0x01;
const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;
/// RST_STREAM status codes.
pub const PROTOCOL_ERROR: u32 = 1;
pub const REFUSED_STREAM: u32 = 3;
/// Largest frame payload read (the format allows 16 MiB; kubectl writes 32 KiB at most).
const MAX_FRAME: usize = 1 << 20;
/// Largest header block once decompressed, and most headers in one.
const MAX_HEADER_BLOCK: usize = 64 << 10;
const MAX_HEADERS: usize = 256;

pub type Headers = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        fin: bool,
        data: Bytes,
    },
    SynStream {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    SynReply {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last: u32,
        status: u32,
    },
    /// SETTINGS, HEADERS, WINDOW_UPDATE and unknown types: nothing this server acts on.
    Ignored,
}

/// The preset dictionary of SPDY/3 header compression: HTTP's common header names, each
/// with a 4-byte big-endian length before it, then a run of common values.
pub fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
            "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
            "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
            "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
            "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
            "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
            "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut d = Vec::with_capacity(1423);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

/// Header-block compression state of one connection: what we read, what we write.
pub struct Codec {
    inflate: Decompress,
    deflate: Compress,
}

impl Default for Codec {
    fn default() -> Self {
        Self::new()
    }
}

impl Codec {
    pub fn new() -> Codec {
        let mut deflate = Compress::new(Compression::default(), true);
        // A fresh compressor always takes a dictionary.
        let _ = deflate.set_dictionary(dictionary());
        Codec { inflate: Decompress::new(true), deflate }
    }

    /// The next piece of the peer's header stream, decompressed.
    fn inflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity((input.len() * 4).clamp(256, MAX_HEADER_BLOCK));
        loop {
            let before = self.inflate.total_in();
            let r = self.inflate.decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.inflate.total_in() - before) as usize;
            input = &input[used..];
            match r {
                Ok(_) if input.is_empty() && out.len() < out.capacity() => return Ok(out),
                Ok(_) if out.len() >= MAX_HEADER_BLOCK => return Err("header block too large".into()),
                Ok(_) => out.reserve(out.capacity().max(256)),
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(dictionary()).map_err(|e| format!("header dictionary: {e}"))?;
                }
                Err(e) => return Err(format!("header block: {e}")),
            }
        }
    }

    /// Our next header block, compressed (and flushed, so the peer can read it at once).
    fn deflate(&mut self, mut input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len() + 64);
        loop {
            let before = self.deflate.total_in();
            let _ = self.deflate.compress_vec(input, &mut out, FlushCompress::Sync);
            input = &input[(self.deflate.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
            out.reserve(out.capacity().max(64));
        }
    }

    pub fn decode_headers(&mut self, block: &[u8]) -> Result<Headers, String> {
        parse_headers(&self.inflate(block)?)
    }

    pub fn encode_headers(&mut self, headers: &[(String, String)]) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (k, v) in headers {
            for s in [k, v] {
                raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        self.deflate(&raw)
    }

    /// A SYN_REPLY frame for `stream` with `headers`.
    pub fn syn_reply(&mut self, stream: u32, headers: &[(String, String)]) -> Bytes {
        let block = self.encode_headers(headers);
        let mut payload = BytesMut::with_capacity(4 + block.len());
        payload.put_u32(stream & 0x7fff_ffff);
        payload.extend_from_slice(&block);
        control(SYN_REPLY, 0, &payload)
    }

    /// Read one frame; `Ok(None)` at a clean end of the connection.
    pub async fn read(&mut self, r: &mut (impl AsyncRead + Unpin)) -> Result<Option<Frame>, String> {
        let mut head = [0u8; 8];
        match r.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.to_string()),
        }
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if len > MAX_FRAME {
            return Err(format!("frame of {len} bytes is larger than {MAX_FRAME}"));
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await.map_err(|e| e.to_string())?;
        self.decode(head, payload).map(Some)
    }

    /// One frame from its header and payload.
    pub fn decode(&mut self, head: [u8; 8], payload: Vec<u8>) -> Result<Frame, String> {
        let flags = head[4];
        let fin = flags & FLAG_FIN != 0;
        let word = |b: &[u8], at: usize| -> Result<u32, String> {
            b.get(at..at + 4)
                .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
                .ok_or_else(|| "frame too short".to_string())
        };
        if head[0] & 0x80 == 0 {
            let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
            return Ok(Frame::Data { stream, fin, data: Bytes::from(payload) });
        }
        let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
        if version != VERSION {
            return Err(format!("SPDY version {version} is not served (3 is)"));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        Ok(match kind {
            SYN_STREAM => {
                let stream = word(&payload, 0)? & 0x7fff_ffff;
                let block = payload.get(10..).ok_or("SYN_STREAM too short")?;
                Frame::SynStream { stream, fin, headers: self.decode_headers(block)? }
            }
            SYN_REPLY => {
                let stream = word(&payload, 0)? & 0x7fff_ffff;
                Frame::SynReply { stream, fin, headers: self.decode_headers(&payload[4..])? }
            }
            HEADERS => {
                // Read to keep the header stream in step; nothing here uses them.
                self.decode_headers(payload.get(4..).ok_or("HEADERS too short")?)?;
                Frame::Ignored
            }
            RST_STREAM => Frame::RstStream { stream: word(&payload, 0)? & 0x7fff_ffff, status: word(&payload, 4)? },
            PING => Frame::Ping { id: word(&payload, 0)? },
            GOAWAY => Frame::GoAway { last: word(&payload, 0)? & 0x7fff_ffff, status: word(&payload, 4).unwrap_or(0) },
            SETTINGS | WINDOW_UPDATE => Frame::Ignored,
            _ => Frame::Ignored,
        })
    }
}

fn parse_headers(raw: &[u8]) -> Result<Headers, String> {
    let mut at = 0usize;
    let mut next = |n: usize| -> Result<&[u8], String> {
        let s = raw.get(at..at + n).ok_or("header block ends early")?;
        at += n;
        Ok(s)
    };
    let count = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let n = count(next(4)?);
    if n > MAX_HEADERS {
        return Err(format!("{n} headers in one block"));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let kl = count(next(4)?);
        let k = String::from_utf8_lossy(next(kl)?).into_owned();
        let vl = count(next(4)?);
        let v = String::from_utf8_lossy(next(vl)?).into_owned();
        out.push((k, v));
    }
    Ok(out)
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + payload.len());
    b.put_u16(0x8000 | VERSION);
    b.put_u16(kind);
    b.put_u32(((flags as u32) << 24) | payload.len() as u32);
    b.extend_from_slice(payload);
    b.freeze()
}

/// A data frame (at most 16 MiB − 1 of `data`; callers send far less).
pub fn data(stream: u32, fin: bool, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + data.len());
    b.put_u32(stream & 0x7fff_ffff);
    b.put_u32(((if fin { FLAG_FIN } else { 0 } as u32) << 24) | data.len() as u32);
    b.extend_from_slice(data);
    b.freeze()
}

pub fn rst_stream(stream: u32, status: u32) -> Bytes {
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    p[4..].copy_from_slice(&status.to_be_bytes());
    control(RST_STREAM, 0, &p)
}

pub fn ping(id: u32) -> Bytes {
    control(PING, 0, &id.to_be_bytes())
}

pub fn goaway(last: u32) -> Bytes {
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&(last & 0x7fff_ffff).to_be_bytes());
    control(GOAWAY, 0, &p)
}

/// A SYN_STREAM frame (what a client sends; for tests).
pub fn syn_stream(codec: &mut Codec, stream: u32, fin: bool, headers: &[(String, String)]) -> Bytes {
    let block = codec.encode_headers(headers);
    let mut p = BytesMut::with_capacity(10 + block.len());
    p.put_u32(stream & 0x7fff_ffff);
    p.put_u32(0);
    p.put_u16(0);
    p.extend_from_slice(&block);
    control(SYN_STREAM, if fin { FLAG_FIN } else { 0 }, &p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    async fn read_all(codec: &mut Codec, mut bytes: &[u8]) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(f) = codec.read(&mut bytes).await.unwrap() {
            out.push(f);
        }
        out
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        // The Adler-32 that a SPDY/3 peer's zlib header names as its dictionary id.
        let mut z = Decompress::new(true);
        let mut c = Compress::new(Compression::default(), true);
        let id = c.set_dictionary(d).unwrap();
        assert_eq!(id, 0xe3c6_a7c2);
        let _ = z.set_dictionary(d);
    }

    #[tokio::test]
    async fn frames_round_trip_through_one_header_stream_per_direction() {
        // The client's compressor and our decompressor share one stream across frames.
        let mut client = Codec::new();
        let mut server = Codec::new();
        let mut wire = Vec::new();
        let error = h(&[("streamtype", "error"), ("port", "8080"), ("requestid", "0")]);
        let data = h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]);
        wire.extend_from_slice(&syn_stream(&mut client, 1, true, &error));
        wire.extend_from_slice(&syn_stream(&mut client, 3, false, &data));
        wire.extend_from_slice(&super::data(3, false, b"GET / HTTP/1.1\r\n\r\n"));
        wire.extend_from_slice(&ping(7));
        wire.extend_from_slice(&rst_stream(3, 5));
        let frames = read_all(&mut server, &wire).await;
        assert_eq!(
            frames,
            vec![
                Frame::SynStream { stream: 1, fin: true, headers: error },
                Frame::SynStream { stream: 3, fin: false, headers: data },
                Frame::Data { stream: 3, fin: false, data: Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n") },
                Frame::Ping { id: 7 },
                Frame::RstStream { stream: 3, status: 5 },
            ]
        );
        // Our replies decode on the client's side, one after another.
        let mut back = Vec::new();
        back.extend_from_slice(&server.syn_reply(1, &[]));
        back.extend_from_slice(&server.syn_reply(3, &h(&[("x", "y")])));
        back.extend_from_slice(&super::data(3, true, b""));
        let frames = read_all(&mut client, &back).await;
        assert_eq!(
            frames,
            vec![
                Frame::SynReply { stream: 1, fin: false, headers: vec![] },
                Frame::SynReply { stream: 3, fin: false, headers: h(&[("x", "y")]) },
                Frame::Data { stream: 3, fin: true, data: Bytes::new() },
            ]
        );
    }

    #[tokio::test]
    async fn bad_input_is_an_error_not_a_panic() {
        let mut c = Codec::new();
        // Version 2.
        let mut f = control(SYN_STREAM, 0, &[0; 12]).to_vec();
        f[1] = 2;
        assert!(c.read(&mut &f[..]).await.is_err());
        // Garbage where a header block should be.
        let f = control(SYN_STREAM, 0, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
        assert!(Codec::new().read(&mut &f[..]).await.is_err());
        // Too short for its type.
        let f = control(RST_STREAM, 0, &[0, 0]);
        assert!(Codec::new().read(&mut &f[..]).await.is_err());
        // Larger than we read.
        let mut f = data(1, false, b"").to_vec();
        f[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
        assert!(Codec::new().read(&mut &f[..]).await.is_err());
        // A header count that does not fit.
        assert!(parse_headers(&[0, 0, 0, 2, 0, 0, 0, 1, b'a']).is_err());
        // Cut in the middle of a frame.
        let f = ping(1);
        assert!(Codec::new().read(&mut &f[..5]).await.unwrap().is_none());
        assert!(Codec::new().read(&mut &f[..10]).await.is_err());
    }
}
