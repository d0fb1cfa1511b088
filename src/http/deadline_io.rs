//! A socket whose writes may not stall: a client that sends requests and never reads its
//! responses fills its receive window, our write then waits for it, and without a bound
//! it holds its slot forever (issue 18: 32 such clients held every slot). A write that
//! makes no progress for `write_timeout` fails with `TimedOut`, which ends the connection.
//! It also hands hyper the request headers `serve` read before giving it the socket.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::slots::ConnProgress;

pub(crate) struct DeadlineIo<T> {
    inner: T,
    /// Bytes read before hyper took over (the first request's headers), served first.
    prefix: Vec<u8>,
    prefix_at: usize,
    write_timeout: Duration,
    /// Armed when a write first returns Pending; cleared when one makes progress.
    stalled: Option<Pin<Box<Sleep>>>,
    progress: Arc<ConnProgress>,
    epoch: Instant,
}

impl<T> DeadlineIo<T> {
    pub(crate) fn new(
        inner: T,
        prefix: Vec<u8>,
        write_timeout: Duration,
        progress: Arc<ConnProgress>,
        epoch: Instant,
    ) -> Self {
        DeadlineIo {
            inner,
            prefix,
            prefix_at: 0,
            write_timeout,
            stalled: None,
            progress,
            epoch,
        }
    }

    /// Wraps one write-side poll: resets the deadline on progress, arms it on Pending, and
    /// turns a deadline that passed into an error.
    fn guard<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match r {
            Poll::Ready(v) => {
                if self.stalled.take().is_some() {
                    self.progress.write_unblocked();
                }
                Poll::Ready(v)
            }
            Poll::Pending => {
                if self.stalled.is_none() {
                    self.progress.write_blocked(self.epoch.elapsed());
                }
                let timeout = self.write_timeout;
                let sleep = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(sleep.as_mut().poll(cx));
                self.progress.write_timed_out.store(true, Ordering::Relaxed);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client read nothing for {timeout:?}"),
                )))
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DeadlineIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix_at < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.prefix_at);
            let at = self.prefix_at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.prefix_at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.guard(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.guard(cx, r)
    }
}
