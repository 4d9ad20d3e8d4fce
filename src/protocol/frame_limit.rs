//! The size of incoming WebSocket frames, checked from their headers
//! (RFC 6455 section 5.2) as the bytes pass, before any payload is buffered.
//!
//! actix-http checks a frame's size only once the whole frame is in its
//! buffer, and actix-ws reads into that buffer without bound, so a header
//! announcing 2^62 bytes would be believed until memory ran out. This scanner
//! sits on the raw byte stream in front of them: it keeps no payload, only
//! the header being read (at most 14 bytes) and two counters.

/// Where the stream broke the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge {
    /// Offset in the scanned chunk of the offending frame's header (0 when
    /// it began in an earlier chunk): what comes before it is whole frames.
    pub at: usize,
}

/// Follows the frame headers of one direction of a WebSocket connection.
#[derive(Debug, Clone)]
pub struct FrameLimit {
    max: u64,
    /// Payload bytes of the current frame still to pass.
    remaining: u64,
    header: [u8; 14],
    header_len: usize,
    /// Payload bytes so far of a fragmented data message.
    message: u64,
}

impl FrameLimit {
    /// A limit of `max` payload bytes per frame and per (reassembled) message.
    pub fn new(max: usize) -> Self {
        FrameLimit {
            max: max as u64,
            remaining: 0,
            header: [0; 14],
            header_len: 0,
            message: 0,
        }
    }

    /// Scans the next chunk of the stream. Once it has returned an error, the
    /// stream must end.
    #[inline]
    pub fn scan(&mut self, chunk: &[u8]) -> Result<(), TooLarge> {
        let mut i = 0;
        while i < chunk.len() {
            if self.remaining > 0 {
                let skip = self.remaining.min((chunk.len() - i) as u64);
                self.remaining -= skip;
                i += skip as usize;
                continue;
            }
            // Most headers arrive whole within one chunk: read in place.
            if self.header_len == 0 && chunk.len() - i >= 2 {
                let size = header_size(chunk[i + 1]);
                if chunk.len() - i >= size {
                    self.header[..size].copy_from_slice(&chunk[i..i + size]);
                    self.frame(i)?;
                    i += size;
                    continue;
                }
            }
            let header_start = i.saturating_sub(self.header_len);
            self.header[self.header_len] = chunk[i];
            self.header_len += 1;
            i += 1;
            if self.header_len >= 2 && self.header_len == header_size(self.header[1]) {
                self.header_len = 0;
                self.frame(header_start)?;
            }
        }
        Ok(())
    }

    fn frame(&mut self, at: usize) -> Result<(), TooLarge> {
        let h = &self.header;
        let fin = h[0] & 0x80 != 0;
        let opcode = h[0] & 0x0f;
        let length = match h[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
            short => u64::from(short),
        };
        // RFC 6455 allows 63 bits; the top one set is as bad as too long.
        if length > self.max || length >> 63 != 0 {
            return Err(TooLarge { at });
        }
        // Continuation (0), text (1) and binary (2) frames make up messages;
        // control frames may come between fragments and count for nothing.
        if opcode <= 2 {
            if opcode != 0 {
                self.message = 0;
            }
            self.message += length;
            if self.message > self.max {
                return Err(TooLarge { at });
            }
            if fin {
                self.message = 0;
            }
        }
        self.remaining = length;
        Ok(())
    }
}

/// The header's full size, known from its second byte.
#[inline]
fn header_size(second: u8) -> usize {
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame header announcing `length` bytes.
    fn header(fin: bool, opcode: u8, length: u64) -> Vec<u8> {
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        if length < 126 {
            out.push(0x80 | length as u8);
        } else if length <= u64::from(u16::MAX) {
            out.push(0x80 | 126);
            out.extend_from_slice(&(length as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&length.to_be_bytes());
        }
        out.extend_from_slice(&[1, 2, 3, 4]);
        out
    }

    fn frame(fin: bool, opcode: u8, length: usize) -> Vec<u8> {
        let mut out = header(fin, opcode, length as u64);
        out.resize(out.len() + length, b'x');
        out
    }

    #[test]
    fn frames_within_the_bound_pass_in_any_chunking() {
        let mut stream = Vec::new();
        for length in [0, 1, 125, 126, 1000, 65_535, 65_536, 100_000] {
            stream.extend(frame(true, 1, length));
        }
        stream.extend(frame(true, 9, 4)); // a ping
        for chunk_size in [1, 2, 3, 7, 14, 1000, stream.len()] {
            let mut limit = FrameLimit::new(100_000);
            for chunk in stream.chunks(chunk_size) {
                assert_eq!(limit.scan(chunk), Ok(()), "chunks of {chunk_size}");
            }
            assert_eq!((limit.remaining, limit.header_len), (0, 0));
        }
    }

    #[test]
    fn a_header_announcing_more_is_refused_before_its_payload() {
        for (length, max) in [(1u64 << 62, 1 << 20), (65_536, 65_535), (126, 125)] {
            let mut stream = frame(true, 1, 10);
            let at = stream.len();
            stream.extend(header(true, 2, length));
            let mut limit = FrameLimit::new(max);
            assert_eq!(
                limit.scan(&stream),
                Err(TooLarge { at }),
                "{length} > {max}"
            );
        }
        // Across chunks: the header began in an earlier one.
        let stream = header(true, 1, 1 << 40);
        let mut limit = FrameLimit::new(1 << 20);
        assert_eq!(limit.scan(&stream[..5]), Ok(()));
        assert_eq!(limit.scan(&stream[5..]), Err(TooLarge { at: 0 }));
    }

    #[test]
    fn a_header_whose_length_has_its_top_bit_set_is_refused() {
        let mut stream = vec![0x81, 0xff];
        stream.extend_from_slice(&u64::MAX.to_be_bytes());
        stream.extend_from_slice(&[0; 4]);
        assert_eq!(
            FrameLimit::new(usize::MAX).scan(&stream),
            Err(TooLarge { at: 0 })
        );
    }

    #[test]
    fn a_fragmented_message_is_bounded_as_a_whole() {
        let mut limit = FrameLimit::new(100);
        let mut stream = frame(false, 1, 40);
        stream.extend(frame(true, 9, 100)); // a ping between fragments counts for nothing
        stream.extend(frame(false, 0, 40));
        assert_eq!(limit.scan(&stream), Ok(()));
        assert_eq!(
            limit.scan(&frame(true, 0, 21)),
            Err(TooLarge { at: 0 }),
            "101 bytes in all"
        );

        let mut limit = FrameLimit::new(100);
        let mut stream = frame(false, 1, 50);
        stream.extend(frame(true, 0, 50));
        stream.extend(frame(true, 1, 100)); // a new message starts from zero
        assert_eq!(limit.scan(&stream), Ok(()));
    }

    /// Where scanning `stream` in chunks of `sizes` (cycled) stops, as an
    /// offset in the stream: the same wherever the chunks split it.
    fn stop_at(stream: &[u8], max: usize, sizes: &[usize]) -> Option<usize> {
        let mut limit = FrameLimit::new(max);
        let (mut offset, mut sizes) = (0, sizes.iter().cycle());
        while offset < stream.len() {
            let end = (offset + sizes.next().unwrap()).min(stream.len());
            if let Err(TooLarge { at }) = limit.scan(&stream[offset..end]) {
                return Some(offset + at);
            }
            offset = end;
        }
        None
    }

    #[test]
    fn every_chunking_stops_at_the_same_frame() {
        let mut stream = Vec::new();
        for (n, length) in [5, 0, 130, 70_000, 3, 126, 125, 200, 90_000]
            .iter()
            .enumerate()
        {
            stream.extend(frame(n % 3 != 1, if n % 3 == 0 { 1 } else { 0 }, *length));
        }
        for max in [100_000, 150_000, 1000, 125] {
            // In one chunk: the offending header's exact offset.
            let header = stop_at(&stream, max, &[stream.len()]);
            for sizes in [&[1][..], &[2], &[3, 11], &[6, 1, 14], &[13, 64, 2], &[4096]] {
                // Cut up: the same frame, reported at its header or, when the
                // header began in an earlier chunk, at the chunk it ends in.
                let got = stop_at(&stream, max, sizes);
                let same_frame = match (got, header) {
                    (None, None) => true,
                    (Some(got), Some(header)) => (header..header + 14).contains(&got),
                    _ => false,
                };
                assert!(same_frame, "max {max}, {sizes:?}: {got:?} for {header:?}");
            }
        }
    }

    #[test]
    fn a_never_ending_fragmented_message_is_cut() {
        let mut limit = FrameLimit::new(1 << 20);
        assert_eq!(limit.scan(&frame(false, 1, 1000)), Ok(()));
        let fragment = frame(false, 0, 1000);
        let fragments = (1..2000).find(|_| limit.scan(&fragment).is_err());
        assert_eq!(fragments, Some(1048), "1,049,000 bytes in all");
    }
}
