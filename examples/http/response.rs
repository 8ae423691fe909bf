//! The responses the "Hello, World!" responder sends: one fixed 200 per request, and one
//! error response per refusal. Shared by the gaio server and the tokio peer in `benches/`, so
//! both send the very same bytes.

use super::parse::{ParseError, Request};

/// The body of every 200 response.
pub const BODY: &[u8] = b"Hello, World!";

/// The response to an HTTP/1.1 request that keeps the connection open: the common case, and
/// exactly the bytes a benchmark client sees per request.
pub const OK_KEEP_ALIVE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, World!";

/// The 200 response's head when the connection closes after it.
const OK_HEAD_CLOSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n";
/// The 200 response's head to an HTTP/1.0 request that asked for keep-alive (an HTTP/1.0
/// client closes unless it is told otherwise).
const OK_HEAD_KEEP_ALIVE_10: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\n\r\n";

/// Appends the response to `req` to `out`.
pub fn append_ok(out: &mut Vec<u8>, req: &Request) {
    let head = match (req.keep_alive, req.http10) {
        (true, false) => &OK_KEEP_ALIVE[..OK_KEEP_ALIVE.len() - BODY.len()],
        (true, true) => OK_HEAD_KEEP_ALIVE_10,
        (false, _) => OK_HEAD_CLOSE,
    };
    out.extend_from_slice(head);
    if !req.head_only {
        out.extend_from_slice(BODY);
    }
}

/// Appends the error response for `err` to `out` (the connection closes after it).
pub fn append_error(out: &mut Vec<u8>, err: ParseError) {
    let (code, reason) = err.status();
    let body = format!("{err}\n");
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body.as_bytes());
}

#[cfg(test)]
mod tests {
    // `super::` paths rather than a `use`: bench targets (harness = false) compile this
    // module with cfg(test) but without its #[test] functions, which leaves a `use` unused.

    #[test]
    fn keep_alive_response_is_the_fixed_one() {
        let mut out = Vec::new();
        let req = super::Request {
            head_only: false,
            http10: false,
            keep_alive: true,
            body_len: 0,
        };
        super::append_ok(&mut out, &req);
        assert_eq!(out, super::OK_KEEP_ALIVE);
        out.clear();
        super::append_ok(
            &mut out,
            &super::Request {
                head_only: true,
                ..req
            },
        );
        assert_eq!(
            out,
            &super::OK_KEEP_ALIVE[..super::OK_KEEP_ALIVE.len() - super::BODY.len()]
        );
    }

    #[test]
    fn error_response_is_well_framed() {
        let mut out = Vec::new();
        super::append_error(&mut out, super::ParseError::HeadTooLarge);
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "));
        assert!(head.contains("Connection: close"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
