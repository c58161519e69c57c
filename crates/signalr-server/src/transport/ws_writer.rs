//! Writes outbound WebSocket data messages straight to the socket: the message's header and
//! its payload go out in one vectored write.
//!
//! tungstenite would first copy each message into its own write buffer, which grows to the
//! largest message the connection was ever sent and is never given back: with 64 KiB batches
//! to 10 k connections that is 640 MB, faulted in page by page the first time a server is
//! overloaded (BENCHMARKS.md, W5). Here the outbox's [`Payload`] is written: a lone frame as
//! it is (a broadcast's `Bytes`, shared by every connection it reaches), several copied
//! together once into a buffer the connection keeps only while it is busy. Several frames
//! are copied rather than handed to the kernel as one slice each: at W2's saturation, a
//! hundred slices of 90 bytes cost the kernel more than the copy, and a message took several
//! writes.
//!
//! tungstenite keeps the read half and its control replies (Pong, Close). Its read writes a
//! pending reply before reading, so the socket task must not read while a message is half
//! written ([`MessageWriter::is_writing`]), and flushes tungstenite before starting one.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::AsyncWrite;

use super::Payload;

/// One data message being written, and the payload it is taken into.
#[derive(Debug, Default)]
pub(super) struct MessageWriter {
    header: [u8; 10],
    header_len: u8,
    header_written: u8,
    payload: Payload,
    /// Bytes of the payload written.
    offset: usize,
    writing: bool,
}

impl MessageWriter {
    /// A message is started and not completely written.
    pub(super) fn is_writing(&self) -> bool {
        self.writing
    }

    /// Where the next message's frames are taken (only while not writing; empty).
    pub(super) fn payload_mut(&mut self) -> &mut Payload {
        debug_assert!(!self.writing);
        &mut self.payload
    }

    /// Starts a message of the payload taken, as one text or binary message; returns its
    /// length.
    pub(super) fn start(&mut self, binary: bool) -> usize {
        let len = self.payload.bytes().len();
        self.header_len = encode_header(&mut self.header, binary, len);
        self.header_written = 0;
        self.offset = 0;
        self.writing = true;
        len
    }

    /// Frees the payload's buffer, so that an idle connection keeps none.
    pub(super) fn release(&mut self) {
        debug_assert!(!self.writing);
        self.payload.release();
    }

    /// Writes until the started message is completely written.
    pub(super) fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.writing {
            let header =
                &self.header[usize::from(self.header_written)..usize::from(self.header_len)];
            let payload = &self.payload.bytes()[self.offset..];
            let slices = [IoSlice::new(header), IoSlice::new(payload)];
            let written = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let from_header = written.min(header.len());
            // At most 10.
            self.header_written += from_header as u8;
            self.offset += written - from_header;
            if self.header_written == self.header_len && self.offset == self.payload.bytes().len() {
                // Written: let go of a lone frame now (a broadcast's frame is freed once every
                // connection has written it); a copy buffer stays for the next message.
                self.payload.clear();
                self.writing = false;
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// A server's (unmasked) header of a final data frame of `len` bytes; returns its length.
fn encode_header(header: &mut [u8; 10], binary: bool, len: usize) -> u8 {
    header[0] = if binary { 0x82 } else { 0x81 };
    if len < 126 {
        header[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        header[1] = 126;
        header[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{Batch, Outbox};
    use bytes::Bytes;
    use std::task::Waker;

    /// Accepts at most `step` bytes per write.
    struct Trickle {
        written: Vec<u8>,
        step: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.written.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(self.step - n);
                self.written.extend_from_slice(&buf[..take]);
                n += take;
                if n == self.step {
                    break;
                }
            }
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn write(frames: Vec<Bytes>, binary: bool, step: usize) -> Vec<u8> {
        let outbox = Outbox::new(usize::MAX);
        for frame in frames {
            outbox.push(frame).unwrap();
        }
        let mut writer = MessageWriter::default();
        assert_eq!(
            outbox.try_next_payload(writer.payload_mut(), usize::MAX),
            Some(Batch::Frames)
        );
        writer.start(binary);
        let mut io = Trickle {
            written: Vec::new(),
            step,
        };
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(
            writer.poll_write(&mut io, &mut cx),
            Poll::Ready(Ok(()))
        ));
        assert!(!writer.is_writing());
        assert!(writer.payload_mut().bytes().is_empty());
        io.written
    }

    #[test]
    fn headers_follow_rfc_6455_length_encodings() {
        let mut header = [0; 10];
        assert_eq!(encode_header(&mut header, false, 125), 2);
        assert_eq!(header[..2], [0x81, 125]);
        assert_eq!(encode_header(&mut header, true, 126), 4);
        assert_eq!(header[..4], [0x82, 126, 0, 126]);
        assert_eq!(encode_header(&mut header, true, 65_535), 4);
        assert_eq!(header[..4], [0x82, 126, 0xff, 0xff]);
        assert_eq!(encode_header(&mut header, false, 65_536), 10);
        assert_eq!(header, [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let frames: Vec<Bytes> = (0..200)
            .map(|i| Bytes::from(format!("frame {i};").repeat(i % 7)))
            .collect();
        let payload: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
        let whole = write(frames.clone(), true, usize::MAX);
        assert_eq!(
            whole[..4],
            [0x82, 126, (payload.len() >> 8) as u8, payload.len() as u8]
        );
        assert_eq!(whole[4..], payload);
        // One byte at a time and odd steps that split the header and frames anywhere.
        for step in [1, 3, 7, 100] {
            assert_eq!(write(frames.clone(), true, step), whole, "step {step}");
        }
    }
}
