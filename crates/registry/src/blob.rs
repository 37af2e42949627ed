//! Blob streams, and the check every blob passes on its way: its size and digest are
//! verified while it streams, and a mismatch ends the stream with an error before the
//! last byte is handed on, so a writer never commits corrupt content.
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use sha2::{Digest as _, Sha256, Sha512};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// A stream of blob bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send + 'static>>;

/// A blob being read: its size when known, and its bytes.
pub struct Blob {
    /// The size in bytes, when the source said.
    pub size: Option<u64>,
    /// The content.
    pub stream: ByteStream,
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blob")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Blob {
    /// A blob from bytes in memory (manifests, configs, tests).
    pub fn from_bytes(bytes: Bytes) -> Blob {
        Blob {
            size: Some(bytes.len() as u64),
            stream: Box::pin(futures_util::stream::once(async move { Ok(bytes) })),
        }
    }
}

/// A running hash for one of the digest algorithms we can verify.
#[derive(Clone)]
pub enum Hasher {
    /// sha256.
    Sha256(Sha256),
    /// sha512.
    Sha512(Sha512),
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Hasher::Sha256(_) => "Hasher(sha256)",
            Hasher::Sha512(_) => "Hasher(sha512)",
        })
    }
}

impl Hasher {
    /// A hasher for the algorithm of `digest`.
    pub fn for_digest(digest: &Digest) -> Result<Hasher> {
        match digest.algorithm() {
            "sha256" => Ok(Hasher::Sha256(Sha256::new())),
            "sha512" => Ok(Hasher::Sha512(Sha512::new())),
            other => Err(Error::UnsupportedDigest {
                algorithm: other.to_owned(),
            }),
        }
    }

    /// Adds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything added.
    pub fn finish(self) -> Digest {
        let (alg, hex) = match self {
            Hasher::Sha256(h) => ("sha256", hex::encode(h.finalize())),
            Hasher::Sha512(h) => ("sha512", hex::encode(h.finalize())),
        };
        Digest::from_hash(alg, hex)
    }
}

/// The sha256 digest of bytes in memory.
pub fn sha256(data: &[u8]) -> Digest {
    let mut h = Hasher::Sha256(Sha256::new());
    h.update(data);
    h.finish()
}

/// Wraps `stream` so that it checks the size (when `expected_size` is given) and the digest
/// as bytes pass. The final chunk is held back until the check passes, so a consumer that
/// stops at the first error (an HTTP upload, a file writer) never sees all of a bad blob.
pub fn verify(
    digest: &Digest,
    expected_size: Option<u64>,
    stream: ByteStream,
) -> Result<ByteStream> {
    let hasher = Hasher::for_digest(digest)?;
    Ok(Box::pin(Verify {
        inner: stream,
        hasher: Some(hasher),
        digest: digest.clone(),
        expected_size,
        seen: 0,
        held: None,
        done: false,
    }))
}

struct Verify {
    inner: ByteStream,
    hasher: Option<Hasher>,
    digest: Digest,
    expected_size: Option<u64>,
    seen: u64,
    held: Option<Bytes>,
    done: bool,
}

impl Stream for Verify {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match this.inner.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    if chunk.is_empty() {
                        continue;
                    }
                    this.seen += chunk.len() as u64;
                    if let Some(expected) = this.expected_size
                        && this.seen > expected
                    {
                        this.done = true;
                        return Poll::Ready(Some(Err(Error::SizeMismatch {
                            digest: this.digest.clone(),
                            expected,
                            actual: this.seen,
                        })));
                    }
                    if let Some(h) = this.hasher.as_mut() {
                        h.update(&chunk);
                    }
                    // Hand on the previous chunk; keep this one until we know it is not the last.
                    if let Some(prev) = this.held.replace(chunk) {
                        return Poll::Ready(Some(Ok(prev)));
                    }
                }
                Poll::Ready(None) => {
                    this.done = true;
                    if let Some(expected) = this.expected_size
                        && this.seen != expected
                    {
                        return Poll::Ready(Some(Err(Error::SizeMismatch {
                            digest: this.digest.clone(),
                            expected,
                            actual: this.seen,
                        })));
                    }
                    let actual = match this.hasher.take() {
                        Some(h) => h.finish(),
                        None => return Poll::Ready(None),
                    };
                    if actual != this.digest {
                        return Poll::Ready(Some(Err(Error::DigestMismatch {
                            expected: this.digest.clone(),
                            actual,
                        })));
                    }
                    return Poll::Ready(this.held.take().map(Ok));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn chunks(parts: &[&'static [u8]]) -> ByteStream {
        let v: Vec<Result<Bytes>> = parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(futures_util::stream::iter(v))
    }

    async fn collect(s: ByteStream) -> (Vec<u8>, Option<Error>) {
        let mut out = Vec::new();
        let mut s = s;
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn good_content_passes_whole() {
        let d = sha256(b"hello world");
        let (out, err) =
            collect(verify(&d, Some(11), chunks(&[b"hello", b" ", b"world"])).unwrap()).await;
        assert_eq!(out, b"hello world");
        assert!(err.is_none());
    }

    #[tokio::test]
    async fn corrupt_content_never_delivers_its_last_chunk() {
        let d = sha256(b"hello world");
        let (out, err) =
            collect(verify(&d, None, chunks(&[b"hello", b" ", b"w0rld"])).unwrap()).await;
        assert!(matches!(err, Some(Error::DigestMismatch { .. })), "{err:?}");
        assert_eq!(out, b"hello ", "the final chunk is held back");
    }

    #[tokio::test]
    async fn short_and_long_content_fail_on_size() {
        let d = sha256(b"hello world");
        let (_, err) = collect(verify(&d, Some(11), chunks(&[b"hello"])).unwrap()).await;
        assert!(
            matches!(err, Some(Error::SizeMismatch { actual: 5, .. })),
            "{err:?}"
        );
        let (_, err) = collect(verify(&d, Some(3), chunks(&[b"hello"])).unwrap()).await;
        assert!(matches!(err, Some(Error::SizeMismatch { .. })), "{err:?}");
        assert!(err.unwrap().is_retryable());
    }

    #[test]
    fn unsupported_algorithms_are_refused() {
        let d = Digest::parse("blake3:abcd").unwrap();
        assert!(matches!(
            verify(&d, None, chunks(&[])),
            Err(Error::UnsupportedDigest { .. })
        ));
        assert_eq!(
            sha256(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
