//! An incremental HTTP/1.1 request framer, just enough for a "Hello, World!" responder: it
//! finds where each request ends (request line, headers, a `Content-Length` body), whether the
//! connection stays open after it, and rejects what it cannot frame safely. The request line
//! and the header lines are parsed by [`httparse`]; this module does the framing around it.
//!
//! Bytes arrive in whatever pieces the socket gives: a request split anywhere (even one byte
//! per read), or several requests in one read (pipelining). [`Parser::feed`] takes each piece
//! and reports every request completed by it, in order. A request head that is whole inside
//! one piece is parsed in place; only a head split across pieces is copied, into a buffer that
//! never grows past [`MAX_HEAD`]. The head is handed to `httparse` once its empty line has
//! arrived (a cheap scan that resumes where it stopped, so a head sent byte by byte is not
//! parsed again for every byte). Bodies are counted and skipped, never stored.
//!
//! What it accepts (RFC 9112, as `httparse` reads it): `METHOD SP TARGET SP HTTP/1.x` and
//! `name: value` header lines, ended by CRLF or a bare LF; empty lines before a request line
//! are skipped. What it refuses: anything else in the request line or a header line (`400`),
//! obsolete line folding (`400`), an invalid or conflicting `Content-Length` (`400`), a head
//! longer than [`MAX_HEAD`] bytes or with more than [`MAX_HEADERS`] header lines (`431`), any
//! `Transfer-Encoding` (`501`: the responder does not decode chunked bodies, and guessing the
//! framing is how requests get smuggled), an HTTP version other than 1.0 and 1.1 (`505`). Each
//! refusal ends the connection after its response, as framing is lost.

use std::fmt;

/// Longest request head (request line and headers, with the empty line that ends them)
/// accepted, in bytes. It also bounds the memory one connection's parser holds.
pub const MAX_HEAD: usize = 8 * 1024;

/// One complete request, as much as the responder needs of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// `HEAD`: the response carries the headers of a `GET` response but no body.
    pub head_only: bool,
    /// HTTP/1.0 (`false` for HTTP/1.1).
    pub http10: bool,
    /// The connection stays open after the response: HTTP/1.1 unless `Connection: close`,
    /// HTTP/1.0 only with `Connection: keep-alive`.
    pub keep_alive: bool,
    /// The body's length (`Content-Length`, 0 without it); the parser skips it.
    pub body_len: u64,
}

/// Why a request was refused. Each maps to a status code; the connection closes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not a well-formed HTTP/1.x request head: `400 Bad Request`. The text says what.
    Malformed(&'static str),
    /// The head is longer than [`MAX_HEAD`]: `431 Request Header Fields Too Large`.
    HeadTooLarge,
    /// A `Transfer-Encoding` header: `501 Not Implemented`.
    TransferEncoding,
    /// `HTTP/` followed by a version other than 1.0 and 1.1: `505 HTTP Version Not Supported`.
    Version,
}

impl ParseError {
    /// The status line's code and reason phrase for this refusal.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            ParseError::Malformed(_) => (400, "Bad Request"),
            ParseError::HeadTooLarge => (431, "Request Header Fields Too Large"),
            ParseError::TransferEncoding => (501, "Not Implemented"),
            ParseError::Version => (505, "HTTP Version Not Supported"),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Malformed(what) => write!(f, "malformed request: {what}"),
            ParseError::HeadTooLarge => write!(f, "request head over {MAX_HEAD} bytes"),
            ParseError::TransferEncoding => f.write_str("Transfer-Encoding is not supported"),
            ParseError::Version => f.write_str("HTTP version not supported"),
        }
    }
}

/// What the connection does after a [`Parser::feed`] that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Keep reading: the last request wanted the connection kept open (or none completed).
    Read,
    /// Close once the responses are written: a request asked for it. Bytes after that request
    /// were ignored, and the parser must not be fed again.
    Close,
}

/// The state of one connection's request stream, carried from one read to the next.
#[derive(Debug, Default)]
pub struct Parser {
    /// The start of a request head that did not end within the bytes fed so far (at most
    /// [`MAX_HEAD`] bytes; empty between requests).
    head: Vec<u8>,
    /// Where to resume the search for the head's end in `head` (everything before it has
    /// been scanned; a line end there may still need the next bytes to decide).
    scanned: usize,
    /// The request whose body is being skipped, and how many body bytes are still to come.
    in_body: Option<(Request, u64)>,
}

impl Parser {
    /// A parser at the start of a connection.
    pub fn new() -> Parser {
        Parser::default()
    }

    /// True between requests: no partial head or body is pending.
    pub fn is_idle(&self) -> bool {
        self.head.is_empty() && self.in_body.is_none()
    }

    /// Bytes of an incomplete head held from earlier pieces.
    pub fn buffered(&self) -> usize {
        self.head.len()
    }

    /// Takes the next piece of the byte stream and calls `on_request` for every request it
    /// completes (a request is complete once its whole body has arrived), in order. Returns
    /// [`Next::Close`] right after a request that does not keep the connection open (the rest
    /// of `data` is not looked at), and the first [`ParseError`] otherwise; the requests
    /// completed before the error have been reported. After an error or `Close`, the parser's
    /// state is meaningless: the connection ends.
    pub fn feed(
        &mut self,
        data: &[u8],
        mut on_request: impl FnMut(Request),
    ) -> Result<Next, ParseError> {
        let mut i = 0;
        while i < data.len() {
            // Skipping a body.
            if let Some((req, left)) = &mut self.in_body {
                let n = (*left).min((data.len() - i) as u64);
                *left -= n;
                i += n as usize;
                if *left > 0 {
                    break;
                }
                let req = *req;
                self.in_body = None;
                on_request(req);
                if !req.keep_alive {
                    return Ok(Next::Close);
                }
                continue;
            }
            // Between requests: skip empty lines before the request line.
            if self.head.is_empty() {
                while i < data.len() && matches!(data[i], b'\r' | b'\n') {
                    i += 1;
                }
                if i == data.len() {
                    break;
                }
            }
            let req = if self.head.is_empty() {
                // The whole head may be in this piece: parse it in place.
                let window = &data[i..data.len().min(i + MAX_HEAD)];
                match head_end(window, 0) {
                    End::At(end) => {
                        let req = parse_head(&data[i..i + end])?;
                        i += end;
                        req
                    }
                    End::NotYet(scanned) => {
                        if window.len() == MAX_HEAD {
                            return Err(ParseError::HeadTooLarge);
                        }
                        // Keep the start of the head for the next piece.
                        self.head.extend_from_slice(window);
                        // All of `data` is consumed.
                        self.scanned = scanned;
                        break;
                    }
                }
            } else {
                // Continue a head held from earlier pieces: append at most up to the limit.
                let held = self.head.len();
                let take = (MAX_HEAD - held).min(data.len() - i);
                self.head.extend_from_slice(&data[i..i + take]);
                match head_end(&self.head, self.scanned) {
                    End::At(end) => {
                        let req = parse_head(&self.head[..end])?;
                        // Bytes past the head's end belong to the body or the next request.
                        i += end - held;
                        self.head.clear();
                        self.scanned = 0;
                        req
                    }
                    End::NotYet(scanned) => {
                        if self.head.len() == MAX_HEAD {
                            return Err(ParseError::HeadTooLarge);
                        }
                        // All of `data` is consumed (`take` was the rest of it).
                        self.scanned = scanned;
                        break;
                    }
                }
            };
            if req.body_len > 0 {
                self.in_body = Some((req, req.body_len));
                continue;
            }
            on_request(req);
            if !req.keep_alive {
                return Ok(Next::Close);
            }
        }
        Ok(Next::Read)
    }
}

/// Where a request head ends.
enum End {
    /// Just past the empty line that ends it.
    At(usize),
    /// Not in these bytes; resume the search here when more arrive.
    NotYet(usize),
}

/// Finds the end of a head in `buf` (a line end followed by an empty line: `\n\n` or
/// `\n\r\n`), searching from `from`.
fn head_end(buf: &[u8], from: usize) -> End {
    let mut p = from;
    while let Some(off) = buf[p..].iter().position(|&b| b == b'\n') {
        let nl = p + off;
        match (buf.get(nl + 1), buf.get(nl + 2)) {
            (Some(b'\n'), _) => return End::At(nl + 2),
            (Some(b'\r'), Some(b'\n')) => return End::At(nl + 3),
            // Too few bytes after this line end to tell: look at it again next time.
            (None, _) | (Some(b'\r'), None) => return End::NotYet(nl),
            _ => p = nl + 1,
        }
    }
    End::NotYet(buf.len())
}

/// Most header lines a request may carry; more is refused like an oversize head (`431`).
pub const MAX_HEADERS: usize = 64;

/// Parses a complete head (request line, header lines, the empty line) with `httparse`, then
/// reads what the responder needs from it: the version, `HEAD`, `Content-Length`,
/// `Transfer-Encoding` and `Connection`.
fn parse_head(head: &[u8]) -> Result<Request, ParseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        // `head_end` found the empty line, so a well-formed head is complete here.
        Ok(httparse::Status::Partial) => return Err(ParseError::Malformed("incomplete head")),
        Err(e) => return Err(refusal(e, head)),
    }
    let http10 = req.version == Some(0);

    let mut content_length: Option<u64> = None;
    let (mut close, mut keep_alive) = (false, false);
    for h in req.headers.iter() {
        let (name, value) = (h.name, trim_ows(h.value));
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(value)?;
            if content_length.is_some_and(|m| m != n) {
                return Err(ParseError::Malformed("conflicting Content-Length"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ParseError::TransferEncoding);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',').map(trim_ows) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    Ok(Request {
        head_only: req.method == Some("HEAD"),
        http10,
        keep_alive: !close && (!http10 || keep_alive),
        body_len: content_length.unwrap_or(0),
    })
}

/// The refusal for an `httparse` error. `httparse` accepts only HTTP/1.0 and 1.1 and reports
/// any other version token as `Version`: a well-formed `HTTP/x.y` of another version is a
/// `505`, anything else in that place a `400`.
fn refusal(e: httparse::Error, head: &[u8]) -> ParseError {
    match e {
        httparse::Error::TooManyHeaders => ParseError::HeadTooLarge,
        httparse::Error::Version if is_other_version(head) => ParseError::Version,
        httparse::Error::Version => ParseError::Malformed("bad HTTP version"),
        httparse::Error::Token => ParseError::Malformed("bad method or request target"),
        httparse::Error::HeaderName => ParseError::Malformed("bad header line"),
        httparse::Error::HeaderValue => ParseError::Malformed("bad header value"),
        httparse::Error::NewLine => ParseError::Malformed("bad line end"),
        _ => ParseError::Malformed("not an HTTP/1.x request"),
    }
}

/// True when the request line (after any empty lines before it) is `METHOD SP TARGET SP
/// HTTP/d.d`: a version token of the right shape.
fn is_other_version(head: &[u8]) -> bool {
    let start = head
        .iter()
        .position(|&b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(0);
    let line = &head[start..];
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(m), Some(t), Some([b'H', b'T', b'T', b'P', b'/', major, b'.', minor]), None)
            if !m.is_empty() && !t.is_empty() && major.is_ascii_digit() && minor.is_ascii_digit()
    )
}

/// A `Content-Length` value: decimal digits only (no sign, no list), fitting in a u64.
fn parse_length(v: &[u8]) -> Result<u64, ParseError> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::Malformed("bad Content-Length"));
    }
    v.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(ParseError::Malformed("Content-Length too large"))
    })
}

/// Strips optional whitespace (spaces and tabs) from both ends.
fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` one after another; returns the requests and how the stream ended.
    fn run(pieces: &[&[u8]]) -> (Vec<Request>, Result<Next, ParseError>) {
        let mut p = Parser::new();
        let mut got = Vec::new();
        let mut last = Ok(Next::Read);
        for piece in pieces {
            last = p.feed(piece, |r| got.push(r));
            if last != Ok(Next::Read) {
                break;
            }
        }
        (got, last)
    }

    /// Feeds `stream` cut at every position in `cuts` (sorted), returning what `run` returns.
    fn run_cut(stream: &[u8], cuts: &[usize]) -> (Vec<Request>, Result<Next, ParseError>) {
        let mut pieces = Vec::new();
        let mut from = 0;
        for &c in cuts.iter().chain(std::iter::once(&stream.len())) {
            pieces.push(&stream[from..c]);
            from = c;
        }
        run(&pieces)
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    fn get11() -> Request {
        Request {
            head_only: false,
            http10: false,
            keep_alive: true,
            body_len: 0,
        }
    }

    #[test]
    fn one_request_in_one_piece() {
        assert_eq!(run(&[GET]), (vec![get11()], Ok(Next::Read)));
    }

    #[test]
    fn split_at_every_position() {
        // Two requests, the second with a body, cut once anywhere.
        let stream = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /c HTTP/1.1\r\n\r\n";
        let post = Request {
            body_len: 5,
            ..get11()
        };
        for cut in 0..=stream.len() {
            let (got, end) = run_cut(stream, &[cut]);
            assert_eq!(end, Ok(Next::Read), "cut at {cut}");
            assert_eq!(got, vec![get11(), post, get11()], "cut at {cut}");
        }
        // And cut twice anywhere.
        for a in 0..=stream.len() {
            for b in a..=stream.len() {
                let (got, _) = run_cut(stream, &[a, b]);
                assert_eq!(got.len(), 3, "cuts at {a}, {b}");
            }
        }
    }

    #[test]
    fn byte_by_byte() {
        let stream: Vec<u8> = GET.repeat(3);
        let pieces: Vec<&[u8]> = stream.chunks(1).collect();
        let (got, end) = run(&pieces);
        assert_eq!((got.len(), end), (3, Ok(Next::Read)));
    }

    #[test]
    fn pipelined_in_one_piece() {
        let stream = GET.repeat(16);
        let (got, end) = run(&[&stream]);
        assert_eq!(got, vec![get11(); 16]);
        assert_eq!(end, Ok(Next::Read));
    }

    #[test]
    fn request_completes_only_with_its_body() {
        let mut p = Parser::new();
        let mut n = 0;
        let head = b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234";
        assert_eq!(p.feed(head, |_| n += 1), Ok(Next::Read));
        assert_eq!(n, 0, "reported before its body arrived");
        assert!(!p.is_idle());
        assert_eq!(p.feed(b"5678", |_| n += 1), Ok(Next::Read));
        assert_eq!(n, 0);
        assert_eq!(
            p.feed(b"9GET / HTTP/1.1\r\n\r\n", |_| n += 1),
            Ok(Next::Read)
        );
        assert_eq!(n, 2);
        assert!(p.is_idle());
    }

    #[test]
    fn body_bytes_are_not_parsed() {
        // A body that looks like a request is skipped, not answered.
        let body = GET;
        let mut stream =
            format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        stream.extend_from_slice(body);
        let (got, _) = run(&[&stream]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body_len, body.len() as u64);
    }

    #[test]
    fn large_body_is_skipped_without_buffering() {
        let mut p = Parser::new();
        let mut n = 0;
        let head = b"PUT / HTTP/1.1\r\nContent-Length: 10000000\r\n\r\n";
        p.feed(head, |_| n += 1).unwrap();
        let chunk = vec![b'x'; 100_000];
        for _ in 0..100 {
            assert_eq!(p.buffered(), 0);
            p.feed(&chunk, |_| n += 1).unwrap();
        }
        assert_eq!(n, 1);
        assert!(p.is_idle());
    }

    #[test]
    fn connection_close_and_http10() {
        let close = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        let (got, end) = run(&[close]);
        assert_eq!(end, Ok(Next::Close));
        assert_eq!(got.len(), 1, "bytes after a closing request are ignored");
        assert!(!got[0].keep_alive);

        let (got, end) = run(&[b"GET / HTTP/1.0\r\n\r\n"]);
        assert_eq!(end, Ok(Next::Close));
        assert!(got[0].http10 && !got[0].keep_alive);

        let (got, end) = run(&[b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"]);
        assert_eq!(end, Ok(Next::Read));
        assert!(got[0].http10 && got[0].keep_alive);

        let (got, end) = run(&[b"GET / HTTP/1.1\r\nConnection: upgrade, CLOSE\r\n\r\n"]);
        assert_eq!(end, Ok(Next::Close));
        assert!(!got[0].keep_alive);
    }

    #[test]
    fn closing_request_with_body_closes_after_the_body() {
        let stream = b"POST / HTTP/1.1\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc";
        let (got, end) = run_cut(stream, &[stream.len() - 1]);
        assert_eq!((got.len(), end), (1, Ok(Next::Close)));
    }

    #[test]
    fn head_method_and_bare_lf_and_leading_empty_lines() {
        let (got, end) = run(&[b"\r\n\nHEAD /x HTTP/1.1\nHost: y\n\n"]);
        assert_eq!(end, Ok(Next::Read));
        assert_eq!(got.len(), 1);
        assert!(got[0].head_only);
    }

    #[test]
    fn malformed_requests() {
        let cases: &[&[u8]] = &[
            b"GET /\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET / HTTX/1.1\r\n\r\n",
            b"GET / http/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nNo colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\n: empty name\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
        ];
        for case in cases {
            let (got, end) = run(&[case]);
            assert!(
                matches!(end, Err(ParseError::Malformed(_))),
                "{:?}: {end:?}",
                String::from_utf8_lossy(case)
            );
            assert!(got.is_empty());
            // The same, split byte by byte, is refused the same way.
            let pieces: Vec<&[u8]> = case.chunks(1).collect();
            assert_eq!(run(&pieces).1, end, "{:?}", String::from_utf8_lossy(case));
        }
    }

    #[test]
    fn requests_before_an_error_are_reported() {
        let mut stream = GET.repeat(2);
        stream.extend_from_slice(b"BAD\r\n\r\n");
        let (got, end) = run(&[&stream]);
        assert_eq!(got.len(), 2);
        assert_eq!(end.unwrap_err().status().0, 400);
    }

    #[test]
    fn other_versions_and_transfer_encoding() {
        let (_, end) = run(&[b"GET / HTTP/2.0\r\n\r\n"]);
        assert_eq!(end, Err(ParseError::Version));
        let (_, end) = run(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"]);
        assert_eq!(end, Err(ParseError::TransferEncoding));
        assert_eq!(ParseError::TransferEncoding.status().0, 501);
    }

    #[test]
    fn oversize_head() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD + 100, b'a');
        // In one piece, in pieces of 1000, and byte by byte: refused once the limit is hit,
        // without holding more than MAX_HEAD bytes.
        for size in [big.len(), 1000, 1] {
            let mut p = Parser::new();
            let mut end = Ok(Next::Read);
            for piece in big.chunks(size) {
                end = p.feed(piece, |_| panic!("no request here"));
                assert!(p.buffered() <= MAX_HEAD);
                if end.is_err() {
                    break;
                }
            }
            assert_eq!(end, Err(ParseError::HeadTooLarge), "pieces of {size}");
            assert_eq!(ParseError::HeadTooLarge.status().0, 431);
        }
        // A head of exactly MAX_HEAD bytes is fine.
        let mut exact = b"GET / HTTP/1.1\r\nX: ".to_vec();
        exact.resize(MAX_HEAD - 4, b'a');
        exact.extend_from_slice(b"\r\n\r\n");
        assert_eq!(exact.len(), MAX_HEAD);
        assert_eq!(run(&[&exact]).0.len(), 1);
        let pieces: Vec<&[u8]> = exact.chunks(7).collect();
        assert_eq!(run(&pieces).0.len(), 1);
    }

    #[test]
    fn too_many_header_lines() {
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(run(&[&many]).1, Err(ParseError::HeadTooLarge));
        let mut fine = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            fine.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        fine.extend_from_slice(b"\r\n");
        assert_eq!(run(&[&fine]).0.len(), 1);
    }

    #[test]
    fn held_head_does_not_swallow_the_next_request() {
        // The first head is split; its second piece also carries the next request whole.
        let (a, b) = GET.split_at(10);
        let mut second = b.to_vec();
        second.extend_from_slice(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        let (got, end) = run(&[a, &second]);
        assert_eq!(got.len(), 2);
        assert_eq!(end, Ok(Next::Close));
    }
}
