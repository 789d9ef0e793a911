//! Bandwidth limiting for one direction of one proxied connection: a token
//! bucket behind a [`Write`], so `io::copy` and `write_all` through it are
//! held to the rate.
//!
//! Hand-written rather than `governor`: that crate meters cells per call
//! (a burst limit on each request, async waiting) while here a blocking
//! thread only needs "how long until N bytes may go" — a dozen lines.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Bytes a bucket may send at once after an idle spell: a tenth of a second
/// of the rate, at least 16 KiB, so small protocol messages are never split
/// and a long stream still keeps to the rate within 100 ms.
fn burst_of(rate: u64) -> u64 {
    (rate / 10).max(16 * 1024)
}

/// A token bucket: `rate` bytes per second, at most `burst` banked.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    /// Tokens in hand; negative while a send taken on credit is paid off.
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket for `rate` bytes per second (`rate` > 0).
    pub fn new(rate: u64) -> TokenBucket {
        let burst = burst_of(rate) as f64;
        TokenBucket {
            rate: rate as f64,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// The largest piece [`TokenBucket::take`] should be asked for at once.
    pub fn max_piece(&self) -> usize {
        self.burst as usize
    }

    /// Takes `n` tokens and says how long to wait before sending them; the
    /// debt is paid off by the wait, so the long-run rate is exact.
    pub fn take(&mut self, n: usize) -> Duration {
        let now = Instant::now();
        let earned = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.last = now;
        self.tokens = (self.tokens + earned).min(self.burst) - n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// A writer held to a rate by a [`TokenBucket`], or unlimited. The rate is
/// shared, so a test can change it while connections run (0: no limit).
pub struct Throttled<W> {
    inner: W,
    rate: Arc<AtomicU64>,
    bucket: Option<TokenBucket>,
}

impl<W: Write> Throttled<W> {
    /// `rate`: bytes per second, read before every write.
    pub fn new(inner: W, rate: Arc<AtomicU64>) -> Throttled<W> {
        Throttled {
            inner,
            rate,
            bucket: None,
        }
    }

    /// The bucket for the current rate (a new one when the rate changed).
    fn bucket(&mut self) -> Option<&mut TokenBucket> {
        let rate = self.rate.load(Ordering::SeqCst);
        if rate == 0 {
            self.bucket = None;
        } else if self.bucket.as_ref().is_none_or(|b| b.rate != rate as f64) {
            self.bucket = Some(TokenBucket::new(rate));
        }
        self.bucket.as_mut()
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for Throttled<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(bucket) = self.bucket() else {
            return self.inner.write(buf);
        };
        let len = buf.len().min(bucket.max_piece());
        // Wait before sending: the bytes leave at the rate, as on a slow link.
        let wait = bucket.take(len);
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        let written = self.inner.write(&buf[..len])?;
        if let Some(bucket) = self.bucket.as_mut().filter(|_| written < len) {
            // Refund what did not go, so a short write is not charged twice.
            bucket.tokens += (len - written) as f64;
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Parses a rate such as `10MiB`, `512KiB`, `1GiB`, `800k`, `1000000`
/// (bytes per second; `/s` allowed at the end; SI letters k/M/G are powers of
/// 1000, the IEC forms KiB/MiB/GiB powers of 1024), with `parse-size`.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let rate = parse_size::parse_size(t).map_err(|e| {
        format!("rate `{text}`: {e}; expected bytes per second such as 10MiB, 512KiB or 800k")
    })?;
    if rate == 0 {
        return Err(format!("rate `{text}`: must be at least 1 byte per second"));
    }
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_in_both_unit_systems() {
        assert_eq!(parse_rate("10MiB").unwrap(), 10 * 1024 * 1024);
        assert_eq!(parse_rate("10MiB/s").unwrap(), 10 * 1024 * 1024);
        assert_eq!(parse_rate("512KiB").unwrap(), 512 * 1024);
        assert_eq!(parse_rate("800k").unwrap(), 800_000);
        assert_eq!(parse_rate("1.5M").unwrap(), 1_500_000);
        assert_eq!(parse_rate("4096").unwrap(), 4096);
        for bad in ["fast", "10 parsecs"] {
            let error = parse_rate(bad).unwrap_err();
            assert!(error.contains("expected bytes per second"), "{error}");
        }
        assert!(parse_rate("0").unwrap_err().contains("at least 1 byte"));
    }

    #[test]
    fn the_bucket_holds_a_stream_to_its_rate() {
        // 4 MiB at 8 MiB/s: the burst goes at once, the rest at the rate.
        let rate = 8 * 1024 * 1024;
        let mut bucket = TokenBucket::new(rate);
        let mut waited = Duration::ZERO;
        let piece = bucket.max_piece();
        let mut sent = 0;
        while sent < 4 * 1024 * 1024 {
            let wait = bucket.take(piece);
            std::thread::sleep(wait);
            waited += wait;
            sent += piece;
        }
        let expected = (sent - piece) as f64 / rate as f64;
        let got = waited.as_secs_f64();
        assert!(
            (got - expected).abs() < 0.1,
            "waited {got:.3} s for 4 MiB at 8 MiB/s, expected about {expected:.3} s"
        );
    }
}
