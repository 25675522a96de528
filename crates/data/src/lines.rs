//! Reading lines with a length cap.
//!
//! `BufRead::read_until` grows its buffer to the length of the line, so one multi-gigabyte
//! line would allocate that much. [`LineReader`] stops buffering at the cap and skips the
//! rest of the line, so memory stays bounded whatever the input.

use std::io::{self, BufRead};

/// What [`LineReader::next_line`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LineInfo {
    /// 1-based line number.
    pub number: u64,
    /// Byte offset of the line's first byte in the stream.
    pub offset: u64,
    /// Whether the line ended with `\n` (false only for the last line of a stream).
    pub terminated: bool,
    /// Whether the line was longer than the cap; the buffer then holds only its first
    /// `cap` bytes.
    pub too_long: bool,
    /// Whether a `\r` before the `\n` was removed.
    pub crlf: bool,
}

pub(crate) struct LineReader<R> {
    inner: R,
    cap: usize,
    line: u64,
    offset: u64,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R, cap: usize) -> Self {
        LineReader {
            inner,
            cap,
            line: 0,
            offset: 0,
        }
    }

    /// Reads the next line into `buf` (cleared first), without the `\n` or `\r\n`.
    /// Returns `None` at end of stream.
    pub fn next_line(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<LineInfo>> {
        buf.clear();
        let start = self.offset;
        let mut too_long = false;
        let mut terminated = false;
        let mut any = false;
        loop {
            let chunk = match self.inner.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                break;
            }
            any = true;
            let (take, done) = match memchr::memchr(b'\n', chunk) {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            let content = if done { &chunk[..take - 1] } else { chunk };
            let room = self.cap.saturating_sub(buf.len());
            if content.len() > room {
                too_long = true;
            }
            buf.extend_from_slice(&content[..content.len().min(room)]);
            self.inner.consume(take);
            self.offset += take as u64;
            if done {
                terminated = true;
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        let crlf = terminated && !too_long && buf.last() == Some(&b'\r');
        if crlf {
            buf.pop();
        }
        self.line += 1;
        Ok(Some(LineInfo {
            number: self.line,
            offset: start,
            terminated,
            too_long,
            crlf,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8], cap: usize) -> Vec<(Vec<u8>, LineInfo)> {
        // A tiny BufReader capacity exercises lines that span several fills.
        let mut r = LineReader::new(io::BufReader::with_capacity(3, input), cap);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while let Some(info) = r.next_line(&mut buf).unwrap() {
            out.push((buf.clone(), info));
        }
        out
    }

    #[test]
    fn splits_lines_and_tracks_offsets() {
        let got = all(b"ab\r\ncd\n\nlast", 100);
        let texts: Vec<&[u8]> = got.iter().map(|(b, _)| b.as_slice()).collect();
        assert_eq!(texts, vec![&b"ab"[..], b"cd", b"", b"last"]);
        assert_eq!(got[1].1.offset, 4);
        assert_eq!(
            got[3].1,
            LineInfo {
                number: 4,
                offset: 8,
                terminated: false,
                too_long: false,
                crlf: false,
            }
        );
        assert!(got[0].1.terminated);
        assert!(got[0].1.crlf && !got[1].1.crlf);
    }

    #[test]
    fn caps_long_lines_without_buffering_them() {
        let mut input = vec![b'x'; 1000];
        input.extend_from_slice(b"\nok\n");
        let got = all(&input, 10);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0.len(), 10);
        assert!(got[0].1.too_long);
        assert_eq!(got[1].0, b"ok");
        assert_eq!(got[1].1.offset, 1001);
    }

    #[test]
    fn empty_stream_has_no_lines() {
        assert!(all(b"", 10).is_empty());
    }
}
