//! A read buffer of its own for a WebSocket that only a client sending without pause gets.
//!
//! tungstenite reads at most [`TransportOptions::websocket_read_buffer`] bytes per system call
//! (1 KiB by default, small because every idle connection holds that buffer for its whole
//! life). A client that floods its socket then costs one `recv` per handful of messages.
//! [`ReadAhead`] sits under tungstenite: once a read fills all that tungstenite asked for (so
//! more is probably waiting), it reads up to [`READ_AHEAD`] bytes at a time into a buffer of
//! its own and hands them out from memory; once such a read comes back short (the socket is
//! drained), it hands out what it holds and then frees the buffer, so a connection that is
//! not flooding holds nothing more than before.
//!
//! [`TransportOptions::websocket_read_buffer`]: super::TransportOptions::websocket_read_buffer

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes one read takes from the socket while a client floods it.
pub(super) const READ_AHEAD: usize = 64 * 1024;

/// A byte stream whose reads take up to [`READ_AHEAD`] bytes at a time while its peer floods
/// it; writes pass straight through.
#[derive(Debug)]
pub(super) struct ReadAhead<S> {
    inner: S,
    /// Read from the socket and not yet handed out; no allocation unless flooding.
    buffer: BytesMut,
    /// The last read from the socket filled all the room it was given.
    flooding: bool,
}

impl<S> ReadAhead<S> {
    pub(super) fn new(inner: S) -> Self {
        ReadAhead {
            inner,
            buffer: BytesMut::new(),
            flooding: false,
        }
    }

    /// Back to reading straight through, holding nothing.
    fn release(&mut self) {
        self.buffer = BytesMut::new();
        self.flooding = false;
    }

    #[cfg(test)]
    fn holds_memory(&self) -> bool {
        self.buffer.capacity() > 0
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buffer.is_empty() && !this.flooding {
            // Straight into the caller's buffer, as without this layer.
            let asked = out.remaining();
            let before = out.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, out))?;
            this.flooding = asked > 0 && out.filled().len() - before == asked;
            return Poll::Ready(Ok(()));
        }
        if this.buffer.is_empty() {
            this.buffer.reserve(READ_AHEAD);
            let room = this.buffer.capacity();
            let read = match tokio_util::io::poll_read_buf(
                Pin::new(&mut this.inner),
                cx,
                &mut this.buffer,
            ) {
                Poll::Ready(Ok(read)) => read,
                // Nothing waiting: the flood is over, and a connection that goes idle here
                // must not keep the buffer it just reserved.
                Poll::Pending => {
                    this.release();
                    return Poll::Pending;
                }
                Poll::Ready(Err(error)) => {
                    this.release();
                    return Poll::Ready(Err(error));
                }
            };
            // A short read drained the socket: back to reading straight through once what
            // was read is handed out. (0 is the end of the stream: nothing to hand out.)
            this.flooding = read == room;
            if read == 0 {
                this.release();
                return Poll::Ready(Ok(()));
            }
        }
        let n = out.remaining().min(this.buffer.len());
        out.put_slice(&this.buffer[..n]);
        this.buffer.advance(n);
        if this.buffer.is_empty() && !this.flooding {
            this.release();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Reads `total` bytes in reads of at most `chunk`, as tungstenite does.
    async fn read_exactly<S: AsyncRead + Unpin>(
        stream: &mut ReadAhead<S>,
        total: usize,
        chunk: usize,
    ) -> (Vec<u8>, usize) {
        let mut got = Vec::with_capacity(total);
        let mut reads = 0;
        let mut buf = vec![0u8; chunk];
        while got.len() < total {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "the stream ended after {} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
            reads += 1;
        }
        (got, reads)
    }

    #[tokio::test]
    async fn a_flood_is_read_in_large_pieces_in_order_and_the_buffer_is_freed_after() {
        let (client, server) = tokio::io::duplex(4 * READ_AHEAD);
        let mut client = client;
        let mut server = ReadAhead::new(server);
        let data: Vec<u8> = (0..3 * READ_AHEAD).map(|i| (i % 251) as u8).collect();
        client.write_all(&data).await.expect("write");

        let (got, _) = read_exactly(&mut server, data.len(), 1024).await;
        assert_eq!(got, data, "bytes out of order or lost");
        // The flood was read ahead while it lasted; nothing is held once it is handed out
        // and a read has found the socket drained.
        client.write_all(b"tail").await.expect("write");
        let (got, _) = read_exactly(&mut server, 4, 1024).await;
        assert_eq!(got, b"tail");
        assert!(
            !server.holds_memory(),
            "a drained connection kept its read-ahead buffer"
        );
    }

    #[tokio::test]
    async fn a_trickle_is_read_straight_through_without_a_buffer() {
        let (mut client, server) = tokio::io::duplex(4096);
        let mut server = ReadAhead::new(server);
        for i in 0..20u8 {
            client.write_all(&[i; 100]).await.expect("write");
            let (got, reads) = read_exactly(&mut server, 100, 1024).await;
            assert_eq!(got, [i; 100]);
            assert_eq!(reads, 1);
            assert!(
                !server.holds_memory(),
                "read {i} allocated a read-ahead buffer"
            );
        }
    }

    #[tokio::test]
    async fn reads_that_fill_the_callers_room_switch_to_reading_ahead() {
        let (mut client, server) = tokio::io::duplex(4 * READ_AHEAD);
        let mut server = ReadAhead::new(server);
        client
            .write_all(&vec![7u8; 2 * READ_AHEAD])
            .await
            .expect("write");
        // The first read fills its 1 KiB; the next one takes a large piece from the socket.
        let (_, _) = read_exactly(&mut server, 1024, 1024).await;
        let (_, _) = read_exactly(&mut server, 1024, 1024).await;
        assert!(server.holds_memory(), "a flood was not read ahead");
    }

    #[tokio::test]
    async fn a_flood_that_stops_on_a_full_read_leaves_nothing_held_while_idle() {
        use futures::FutureExt;

        let (mut client, server) = tokio::io::duplex(4 * READ_AHEAD);
        let mut server = ReadAhead::new(server);
        // One full direct read, then one full read ahead: still flooding when it is drained.
        let total = 1024 + READ_AHEAD;
        client.write_all(&vec![3u8; total]).await.expect("write");
        let (got, _) = read_exactly(&mut server, total, 1024).await;
        assert_eq!(got.len(), total);
        let mut buf = [0u8; 1024];
        assert!(
            server.read(&mut buf).now_or_never().is_none(),
            "a read of a drained socket did not wait"
        );
        assert!(!server.holds_memory(), "an idle connection kept 64 KiB");
        // And it reads straight through again afterwards.
        client.write_all(b"next").await.expect("write");
        let (got, reads) = read_exactly(&mut server, 4, 1024).await;
        assert_eq!((got.as_slice(), reads), (&b"next"[..], 1));
    }

    #[tokio::test]
    async fn the_end_of_the_stream_is_passed_on() {
        let (mut client, server) = tokio::io::duplex(4 * READ_AHEAD);
        let mut server = ReadAhead::new(server);
        client.write_all(&[1u8; 2048]).await.expect("write");
        client.shutdown().await.expect("shutdown");
        drop(client);
        let (got, _) = read_exactly(&mut server, 2048, 1024).await;
        assert_eq!(got.len(), 2048);
        let mut buf = [0u8; 16];
        assert_eq!(server.read(&mut buf).await.expect("read"), 0);
        assert!(!server.holds_memory());
    }
}
