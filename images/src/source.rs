//! Where an image's bytes come from: a local file or an HTTP(S) URL (the coordinator's image
//! store is one), read by offset.
//!
//! An HTTP source keeps one response body open and reads it forward; a read elsewhere, or a
//! connection that breaks, opens a new `Range` request at the offset needed, guarded by
//! `If-Range` so that an image replaced on the server is noticed instead of spliced. A qcow2
//! is therefore read in place over HTTP, never downloaded whole first.
//!
//! [`Hashed`] computes the digest of the source as supplied while the decoder reads it, in a
//! single forward pass (bytes the decoder skips are read and hashed on the way).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Random-access reads of an image.
pub trait Source: Send {
    /// Length of the image as supplied, in bytes.
    fn len(&self) -> u64;
    /// True when the image is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` with the bytes at `offset`; fails when they are not all there.
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// How many times a broken transfer was resumed.
    fn resumes(&self) -> u32 {
        0
    }
    /// Where bytes that may not be zero next start, at or after `offset`: every byte from
    /// `offset` up to the answer reads as zero (a hole of a sparse local file, which need not
    /// be read). `None` when the source cannot tell.
    fn data_from(&mut self, _offset: u64) -> Option<u64> {
        None
    }
}

/// Where to read an image from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A local file.
    File(PathBuf),
    /// An `http://` or `https://` URL.
    Url(String),
}

impl ImageSource {
    /// A URL when `s` starts with `http://` or `https://`, a path otherwise.
    pub fn parse(s: &str) -> ImageSource {
        if s.starts_with("http://") || s.starts_with("https://") {
            ImageSource::Url(s.to_string())
        } else {
            ImageSource::File(PathBuf::from(s))
        }
    }

    /// Opens the source for reading.
    pub fn open(&self) -> io::Result<Box<dyn Source>> {
        self.open_with(&HttpOptions::default())
    }

    /// Opens the source with these HTTP settings (see [`HttpOptions`]).
    pub fn open_with(&self, http: &HttpOptions) -> io::Result<Box<dyn Source>> {
        Ok(match self {
            ImageSource::File(p) => Box::new(FileSource::open(p)?),
            ImageSource::Url(u) => Box::new(HttpSource::open_with(u, http)?),
        })
    }
}

/// How an image is fetched over HTTP(S) beyond the URL: from a coordinator, with its CA and a
/// credential (an agent's client certificate, or an API token).
#[derive(Clone, Default)]
pub struct HttpOptions {
    /// CA certificates (DER) trusted for `https://` beside the system's.
    pub roots: Vec<Vec<u8>>,
    /// Trust only `roots`, not the system's CAs (a pinned coordinator).
    pub only_roots: bool,
    /// A client certificate and its private key (PEM), shown to a server that asks for one.
    pub identity_pem: Option<Vec<u8>>,
    /// An API token sent as `Authorization: Bearer`.
    pub bearer: Option<String>,
}

impl std::fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key and the token are secrets: only whether they are set is shown.
        f.debug_struct("HttpOptions")
            .field("roots", &self.roots.len())
            .field("only_roots", &self.only_roots)
            .field("identity", &self.identity_pem.is_some())
            .field("bearer", &self.bearer.is_some())
            .finish()
    }
}

impl std::fmt::Display for ImageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageSource::File(p) => write!(f, "{}", p.display()),
            ImageSource::Url(u) => f.write_str(u),
        }
    }
}

/// A local image file.
#[derive(Debug)]
pub struct FileSource {
    file: File,
    len: u64,
}

impl FileSource {
    /// Opens `path`.
    pub fn open(path: &Path) -> io::Result<FileSource> {
        let file = File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
        let len = file.metadata()?.len();
        Ok(FileSource { file, len })
    }
}

impl Source for FileSource {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn data_from(&mut self, offset: u64) -> Option<u64> {
        use nix::unistd::{Whence, lseek};
        let at = i64::try_from(offset).ok()?;
        match lseek(&self.file, at, Whence::SeekData) {
            Ok(pos) => u64::try_from(pos).ok(),
            // No data past `offset`: a hole to the end.
            Err(nix::errno::Errno::ENXIO) => Some(self.len),
            // A filesystem without SEEK_DATA: it cannot tell.
            Err(_) => None,
        }
    }
}

/// A forward skip shorter than this reads through the open body instead of a new request.
const SKIP_MAX: u64 = 8 << 20;
/// Attempts to resume a broken transfer before giving up.
pub const MAX_RESUMES: u32 = 10;

/// An image served over HTTP(S).
pub struct HttpSource {
    client: reqwest::blocking::Client,
    url: String,
    len: u64,
    /// `ETag` (strong) or `Last-Modified` of the first response: sent as `If-Range`.
    validator: Option<String>,
    ranges: bool,
    body: Option<(u64, reqwest::blocking::Response)>,
    resumes: u32,
    /// Failures since the last byte was read (reset by progress).
    failures: u32,
}

impl std::fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSource")
            .field("url", &self.url)
            .field("len", &self.len)
            .field("ranges", &self.ranges)
            .field("resumes", &self.resumes)
            .finish()
    }
}

fn http_err(url: &str, what: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{url}: {what}"))
}

/// An error with its causes (reqwest's own message hides them: "error sending request").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let c_s = c.to_string();
        if !out.contains(&c_s) {
            out.push_str(": ");
            out.push_str(&c_s);
        }
        cur = c.source();
    }
    out
}

/// An answer that retrying cannot fix (the image changed, the server misbehaves).
fn fatal(url: &str, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{url}: {what}"))
}

fn install_crypto() {
    // reqwest is built without a default TLS provider; Ferric uses ring everywhere.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl HttpSource {
    /// Opens `url`: its length and whether the server takes `Range` requests.
    pub fn open(url: &str) -> io::Result<HttpSource> {
        Self::open_trusting(url, &[])
    }

    /// [`HttpSource::open`], trusting these CA certificates (DER) for `https://` beside the
    /// system's.
    pub fn open_trusting(url: &str, roots: &[Vec<u8>]) -> io::Result<HttpSource> {
        Self::open_with(
            url,
            &HttpOptions {
                roots: roots.to_vec(),
                ..HttpOptions::default()
            },
        )
    }

    /// [`HttpSource::open`] with these settings.
    pub fn open_with(url: &str, http: &HttpOptions) -> io::Result<HttpSource> {
        install_crypto();
        let mut builder = Self::builder();
        if let Some(pem) = &http.identity_pem {
            // The error names the part, never the key's bytes.
            let id = reqwest::Identity::from_pem(pem)
                .map_err(|e| http_err(url, format!("client certificate: {}", chain(&e))))?;
            builder = builder.identity(id);
        }
        if let Some(token) = &http.bearer {
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| http_err(url, "the API token holds characters a header cannot"))?;
            v.set_sensitive(true);
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, v);
            builder = builder.default_headers(headers);
        }
        let mut certs = Vec::new();
        for der in &http.roots {
            certs.push(reqwest::Certificate::from_der(der).map_err(|e| http_err(url, chain(&e)))?);
        }
        if http.only_roots || (url.starts_with("http://") && certs.is_empty()) {
            // Plain HTTP needs no roots, and a deploy ramdisk has no system ones to load.
            builder = builder.tls_certs_only(certs);
        } else {
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        Self::start(url, builder)
    }

    fn builder() -> reqwest::blocking::ClientBuilder {
        reqwest::blocking::Client::builder()
            // Per read in the blocking client: a transfer that stalls is resumed.
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .tcp_keepalive(Duration::from_secs(10))
            .tcp_user_timeout(Duration::from_secs(30))
            .no_gzip()
            .no_zstd()
    }

    /// Builds the client and opens `url`.
    fn start(url: &str, builder: reqwest::blocking::ClientBuilder) -> io::Result<HttpSource> {
        let client = builder.build().map_err(|e| http_err(url, chain(&e)))?;
        let mut s = HttpSource {
            client,
            url: url.to_owned(),
            len: 0,
            validator: None,
            ranges: false,
            body: None,
            resumes: 0,
            failures: 0,
        };
        let mut last = None;
        for attempt in 0..3u32 {
            match s.request(0, true) {
                Ok(()) => return Ok(s),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(200 << attempt));
        }
        Err(last.unwrap_or_else(|| http_err(url, "cannot be opened")))
    }

    /// Starts a response body at `offset`.
    fn request(&mut self, offset: u64, first: bool) -> io::Result<()> {
        use reqwest::header;
        self.body = None;
        let mut req = self
            .client
            .get(&self.url)
            .header(header::RANGE, format!("bytes={offset}-"));
        if let Some(v) = &self.validator {
            req = req.header(header::IF_RANGE, v);
        }
        let resp = req.send().map_err(|e| http_err(&self.url, chain(&e)))?;
        let status = resp.status();
        match status.as_u16() {
            206 => {
                let cr = resp
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| http_err(&self.url, "206 without a Content-Range"))?;
                let ContentRange { start, total, .. } = parse_content_range(cr)
                    .ok_or_else(|| http_err(&self.url, format!("bad Content-Range {cr:?}")))?;
                if start != offset {
                    return Err(fatal(
                        &self.url,
                        format!("asked for bytes from {offset}, the server sent from {start}"),
                    ));
                }
                if first {
                    self.len = total;
                    self.ranges = true;
                    self.validator = validator(resp.headers());
                } else if total != self.len {
                    return Err(fatal(
                        &self.url,
                        format!(
                            "the image changed on the server: it was {} bytes, now {total}",
                            self.len
                        ),
                    ));
                }
            }
            200 => {
                if first {
                    self.len = resp.content_length().ok_or_else(|| {
                        http_err(&self.url, "the server gives neither a length nor ranges")
                    })?;
                    self.validator = validator(resp.headers());
                } else if self.ranges {
                    // If-Range failed: what the server has now is not what was being read.
                    return Err(fatal(
                        &self.url,
                        "the image changed on the server during the transfer",
                    ));
                } else if offset != 0 {
                    // No ranges: start over and read forward to the offset.
                    self.body = Some((0, resp));
                    return Ok(());
                }
            }
            404 => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{}: not found (404)", self.url),
                ));
            }
            416 if offset >= self.len && !first => {}
            _ => return Err(http_err(&self.url, format!("the server answered {status}"))),
        }
        self.body = Some((if status.as_u16() == 200 { 0 } else { offset }, resp));
        Ok(())
    }

    /// Counts a failure and waits before the next attempt; gives up after [`MAX_RESUMES`]
    /// failures in a row.
    fn failed(&mut self, at: u64, e: io::Error) -> io::Result<()> {
        self.body = None;
        self.failures += 1;
        if self.failures > MAX_RESUMES {
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "{}: transfer broke at byte {at} and did not resume after {MAX_RESUMES} attempts: {e}",
                    self.url
                ),
            ));
        }
        self.resumes += 1;
        // The first retry is immediate (a cut connection); then back off up to 3 s.
        if self.failures > 1 {
            std::thread::sleep(Duration::from_millis(
                (50u64 << self.failures.min(6)).min(3000),
            ));
        }
        Ok(())
    }
}

fn validator(h: &reqwest::header::HeaderMap) -> Option<String> {
    let strong_etag = h
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .filter(|e| !e.starts_with("W/"));
    strong_etag
        .or_else(|| {
            h.get(reqwest::header::LAST_MODIFIED)
                .and_then(|v| v.to_str().ok())
        })
        .map(str::to_string)
}

/// A byte range a `206 Partial Content` answer says it carries (RFC 9110, 14.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// First byte sent.
    pub start: u64,
    /// Last byte sent (inclusive).
    pub end: u64,
    /// The whole representation's length.
    pub total: u64,
}

/// Parses `Content-Range: bytes START-END/TOTAL`, the header value a server sent: `None`
/// unless the numbers are decimal digits that fit a `u64` and `START <= END < TOTAL`
/// (an unsatisfied-range form `bytes */TOTAL` or an unknown total `/*` is no range to read).
pub fn parse_content_range(v: &str) -> Option<ContentRange> {
    fn digits(s: &str) -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    }
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.trim().split_once('-')?;
    let r = ContentRange {
        start: digits(start)?,
        end: digits(end)?,
        total: digits(total.trim())?,
    };
    (r.start <= r.end && r.end < r.total).then_some(r)
}

impl Source for HttpSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset + buf.len() as u64;
        if end > self.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: bytes {offset}..{end} asked, the image has {}",
                    self.url, self.len
                ),
            ));
        }
        let mut filled = 0usize;
        let mut skip = [0u8; 64 << 10];
        while filled < buf.len() {
            let want = offset + filled as u64;
            let usable = match &self.body {
                Some((pos, _)) => {
                    *pos <= want && (want - *pos <= SKIP_MAX || !self.ranges) && *pos < self.len
                }
                None => false,
            };
            if !usable {
                let from = if self.ranges { want } else { 0 };
                if let Err(e) = self.request(from, false) {
                    if matches!(
                        e.kind(),
                        io::ErrorKind::InvalidData | io::ErrorKind::NotFound
                    ) {
                        return Err(e);
                    }
                    self.failed(want, e)?;
                    continue;
                }
            }
            let Some((pos, body)) = self.body.as_mut() else {
                continue;
            };
            let res = if *pos < want {
                let n = ((want - *pos) as usize).min(skip.len());
                body.read(&mut skip[..n])
            } else {
                body.read(&mut buf[filled..])
            };
            match res {
                Ok(0) => {
                    let at = *pos;
                    self.failed(at, io::Error::other("the connection closed early"))?;
                }
                Ok(n) => {
                    self.failures = 0;
                    if *pos >= want {
                        filled += n;
                    }
                    *pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let at = *pos;
                    self.failed(at, e)?;
                }
            }
        }
        Ok(())
    }

    fn resumes(&self) -> u32 {
        self.resumes
    }
}

/// Digest algorithms for image checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algo {
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Algo {
    /// Name as in `sha256:…`.
    pub fn name(self) -> &'static str {
        match self {
            Algo::Sha256 => "sha256",
            Algo::Sha512 => "sha512",
        }
    }
}

/// A checksum that is not `sha256:HEX` or `sha512:HEX`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    /// Another algorithm, no `:`, or a digest of the wrong length or with a non-hex digit.
    #[error("checksum `{0}` is not sha256:HEX (64 digits) or sha512:HEX (128 digits)")]
    Malformed(String),
}

/// Parses `sha256:HEX` or `sha512:HEX` into the algorithm and the digest in lower case; the
/// error says what is expected.
pub fn parse_checksum(s: &str) -> Result<(Algo, String), ChecksumError> {
    let bad = || ChecksumError::Malformed(s.to_owned());
    let (algo, hex) = s.split_once(':').ok_or_else(bad)?;
    let (algo, want) = match algo {
        "sha256" => (Algo::Sha256, 64),
        "sha512" => (Algo::Sha512, 128),
        _ => return Err(bad()),
    };
    if hex.len() == want && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok((algo, hex.to_ascii_lowercase()))
    } else {
        Err(bad())
    }
}

/// A running digest.
#[derive(Debug, Clone)]
pub enum Hasher {
    /// SHA-256.
    Sha256(sha2::Sha256),
    /// SHA-512.
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// A new digest.
    pub fn new(algo: Algo) -> Hasher {
        use sha2::Digest;
        match algo {
            Algo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algo::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
    /// Adds bytes.
    pub fn update(&mut self, b: &[u8]) {
        use sha2::Digest;
        match self {
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }
    /// The digest, hex.
    pub fn finish(self) -> String {
        use sha2::Digest;
        match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// A source whose digest is computed as it is read, in one forward pass: a read past the
/// bytes hashed so far first reads (and hashes) the gap; a read behind them is not hashed
/// again. [`Hashed::finish`] reads and hashes whatever is left.
pub struct Hashed<'a> {
    inner: &'a mut dyn Source,
    upto: u64,
    hasher: Option<Hasher>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Hashed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hashed").field("upto", &self.upto).finish()
    }
}

impl<'a> Hashed<'a> {
    /// Wraps `inner`; without an algorithm, reads pass through.
    pub fn new(inner: &'a mut dyn Source, algo: Option<Algo>) -> Hashed<'a> {
        Hashed {
            inner,
            upto: 0,
            hasher: algo.map(Hasher::new),
            scratch: Vec::new(),
        }
    }

    fn fill_to(&mut self, to: u64) -> io::Result<()> {
        if self.hasher.is_none() {
            return Ok(());
        }
        while self.upto < to {
            if self.scratch.is_empty() {
                self.scratch = vec![0u8; 1 << 20];
            }
            let n = ((to - self.upto) as usize).min(self.scratch.len());
            self.inner.read_at(&mut self.scratch[..n], self.upto)?;
            if let Some(h) = self.hasher.as_mut() {
                h.update(&self.scratch[..n]);
            }
            self.upto += n as u64;
        }
        Ok(())
    }

    /// Reads the rest and returns the digest (None without an algorithm).
    pub fn finish(mut self) -> io::Result<Option<String>> {
        let len = self.inner.len();
        self.fill_to(len)?;
        Ok(self.hasher.map(Hasher::finish))
    }
}

impl Source for Hashed<'_> {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.fill_to(offset)?;
        self.inner.read_at(buf, offset)?;
        let end = offset + buf.len() as u64;
        if let Some(h) = self.hasher.as_mut()
            && end > self.upto
        {
            h.update(&buf[(self.upto - offset) as usize..]);
            self.upto = end;
        }
        Ok(())
    }
    fn resumes(&self) -> u32 {
        self.inner.resumes()
    }
    fn data_from(&mut self, offset: u64) -> Option<u64> {
        // A checksum covers every byte, holes too: they are read then.
        if self.hasher.is_some() {
            return None;
        }
        self.inner.data_from(offset)
    }
}

/// A [`Source`] as `Read + Seek`.
pub struct SourceReader<'a> {
    src: &'a mut dyn Source,
    pos: u64,
}

impl std::fmt::Debug for SourceReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceReader")
            .field("pos", &self.pos)
            .finish()
    }
}

impl<'a> SourceReader<'a> {
    /// Reads `src` from its start.
    pub fn new(src: &'a mut dyn Source) -> SourceReader<'a> {
        SourceReader { src, pos: 0 }
    }
}

impl Read for SourceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.src.len().saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.src.read_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for SourceReader<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let len = self.src.len() as i128;
        let new = match to {
            SeekFrom::Start(o) => o as i128,
            SeekFrom::End(d) => len + d as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
        };
        if new < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start",
            ));
        }
        self.pos = new as u64;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_is_parsed() {
        let r = |start, end, total| Some(ContentRange { start, end, total });
        assert_eq!(parse_content_range("bytes 10-99/100"), r(10, 99, 100));
        assert_eq!(parse_content_range("bytes 0-0/1"), r(0, 0, 1));
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("bytes 0-9/*"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(
            parse_content_range("bytes 5-4/10"),
            None,
            "end before start"
        );
        assert_eq!(parse_content_range("bytes 0-10/10"), None, "past the total");
        assert_eq!(parse_content_range("bytes +1-2/3"), None, "not digits");
        assert_eq!(parse_content_range("bytes 0-1/99999999999999999999"), None);
    }

    #[test]
    fn checksums_are_parsed_strictly() {
        let h = "a".repeat(64);
        assert_eq!(
            parse_checksum(&format!("sha256:{h}")),
            Ok((Algo::Sha256, h.clone()))
        );
        assert_eq!(
            parse_checksum(&format!("sha256:{}", h.to_uppercase())),
            Ok((Algo::Sha256, h.clone()))
        );
        assert!(parse_checksum(&format!("sha512:{h}")).is_err());
        assert!(parse_checksum(&format!("md5:{h}")).is_err());
        let said = "checksum `sha256:zz` is not sha256:HEX (64 digits) or sha512:HEX (128 digits)";
        assert_eq!(parse_checksum("sha256:zz").unwrap_err().to_string(), said);
    }

    struct Mem(Vec<u8>);
    impl Source for Mem {
        fn len(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            let o = offset as usize;
            let src = self
                .0
                .get(o..o + buf.len())
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            buf.copy_from_slice(src);
            Ok(())
        }
    }

    #[test]
    fn hashed_reads_in_any_order_digest_the_whole_source_once() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut want = Hasher::new(Algo::Sha256);
        want.update(&data);
        let want = want.finish();
        let mut mem = Mem(data.clone());
        let mut h = Hashed::new(&mut mem, Some(Algo::Sha256));
        let mut b = vec![0u8; 1000];
        // Forward with a gap, backward, overlapping, then the rest by finish().
        h.read_at(&mut b, 2_000_000).expect("read");
        assert_eq!(&b[..], &data[2_000_000..2_001_000]);
        h.read_at(&mut b, 10).expect("read");
        h.read_at(&mut b, 2_000_500).expect("read");
        assert_eq!(h.finish().expect("finish"), Some(want));
    }
}
