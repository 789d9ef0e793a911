//! Round trips and failure modes of every codec combination.

use super::compression::*;
use super::decode::*;
use super::encode::*;
use super::encryption::*;
use super::*;
use crate::failure::{Failure, Kind};
use age::secrecy::ExposeSecret;
use anyhow::Result;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncReadExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// ~compressible text with random runs, so every codec has work to do.
fn sample(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::with_capacity(len + 128);
    let mut row = 0u64;
    while out.len() < len {
        let r = next();
        if r.is_multiple_of(5) {
            for _ in 0..8 {
                out.extend_from_slice(&next().to_le_bytes());
            }
        } else {
            row += 1;
            out.extend_from_slice(
                format!(
                    "{row}\tcustomer-{}\t{}.{:02}\tshipped\n",
                    r % 10_000,
                    r % 997,
                    r % 100
                )
                .as_bytes(),
            );
        }
    }
    out.truncate(len);
    out
}

/// An upload that takes a few bytes at a time, is sometimes not ready,
/// and remembers whether it was shut down.
struct Trickle {
    data: Vec<u8>,
    max: usize,
    tick: usize,
    shut_down: bool,
}

impl Trickle {
    fn new(max: usize) -> Self {
        Trickle {
            data: Vec::new(),
            max,
            tick: 0,
            shut_down: false,
        }
    }
}

impl AsyncWrite for Trickle {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.tick += 1;
        if self.tick.is_multiple_of(3) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let n = buf.len().min(self.max);
        self.data.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shut_down = true;
        Poll::Ready(Ok(()))
    }
}

/// A download that gives a few bytes at a time, is sometimes not ready,
/// and can fail like a dropped connection.
struct Dribble {
    data: Vec<u8>,
    pos: usize,
    max: usize,
    tick: usize,
    fail_at: Option<usize>,
}

impl Dribble {
    fn new(data: Vec<u8>, max: usize) -> Self {
        Dribble {
            data,
            pos: 0,
            max,
            tick: 0,
            fail_at: None,
        }
    }
}

impl AsyncRead for Dribble {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.tick += 1;
        if self.tick.is_multiple_of(4) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if self.fail_at.is_some_and(|at| self.pos >= at) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "store connection reset by peer",
            )));
        }
        let mut end = (self.pos + self.max.min(buf.remaining())).min(self.data.len());
        if let Some(at) = self.fail_at {
            end = end.min(at.max(self.pos));
        }
        buf.put_slice(&self.data[self.pos..end]);
        self.pos = end;
        Poll::Ready(Ok(()))
    }
}

const WRITE_SIZES: [usize; 6] = [1, 7, 4093, 65_537, 100_003, 13];
const READ_SIZES: [usize; 4] = [3, 8191, 65_536, 17];

async fn encode(data: &[u8], codec: &Codec) -> Vec<u8> {
    let mut writer = encode_writer_over(Trickle::new(997), codec).unwrap();
    let mut rest = data;
    for size in WRITE_SIZES.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let n = (*size).min(rest.len());
        writer.write_all(&rest[..n]).await.unwrap();
        rest = &rest[n..];
    }
    let inner = writer.finish().await.unwrap();
    assert!(!inner.shut_down, "the inner writer must stay open");
    inner.data
}

async fn read_all(mut reader: Box<dyn AsyncRead + Send + Unpin>) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    for size in READ_SIZES.iter().cycle() {
        let n = reader.read(&mut buf[..*size]).await?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    Ok(out)
}

async fn decode(stored: Vec<u8>, codec: &Codec, ids: &Identities) -> Result<Vec<u8>> {
    let reader = decode_reader(Dribble::new(stored, 1531), codec, ids, "db/a.dump").await?;
    Ok(read_all(reader).await?)
}

struct Keys {
    _dir: tempfile::TempDir,
    recipient: String,
    identity_file: PathBuf,
    other_file: PathBuf,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, id: &age::x25519::Identity| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "# created: 2026-01-01T00:00:00Z\n# public key: {}\n{}\n",
                id.to_public(),
                id.to_string().expose_secret()
            ),
        )
        .unwrap();
        path
    };
    let ours = age::x25519::Identity::generate();
    let theirs = age::x25519::Identity::generate();
    Keys {
        recipient: ours.to_public().to_string(),
        identity_file: write("key.txt", &ours),
        other_file: write("other.txt", &theirs),
        _dir: dir,
    }
}

fn all_codecs(recipient: &str) -> Vec<Codec> {
    let mut codecs = Vec::new();
    for compression in [Compression::None, Compression::zstd(), Compression::gzip()] {
        for encrypted in [false, true] {
            codecs.push(Codec {
                compression,
                encryption: encrypted.then(|| Encryption::new([recipient.to_string()]).unwrap()),
            });
        }
    }
    codecs
}

#[tokio::test]
async fn codec_round_trips_every_combination() {
    let keys = keys();
    let ids = load_identities(std::slice::from_ref(&keys.identity_file)).unwrap();
    let data = sample(5 * 1024 * 1024 + 12_345, 7);
    for codec in all_codecs(&keys.recipient) {
        let stored = encode(&data, &codec).await;
        match (&codec.compression, codec.is_encrypted()) {
            (_, true) => assert!(stored.starts_with(b"age-encryption.org/v1\n"), "{codec:?}"),
            (Compression::Zstd { .. }, false) => {
                assert!(stored.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]))
            }
            (Compression::Gzip { .. }, false) => assert!(stored.starts_with(&[0x1f, 0x8b])),
            (Compression::None, false) => assert_eq!(stored, data),
        }
        if codec.compression != Compression::None {
            assert!(
                stored.len() < data.len() * 3 / 4,
                "{codec:?} did not compress"
            );
        }
        // The manifest round trip gives a codec that decodes it.
        let restored = Codec::from_manifest(
            codec.compression_manifest_name(),
            codec.encryption_manifest_name(),
        )
        .unwrap();
        let back = decode(stored, &restored, &ids).await.unwrap();
        assert!(back == data, "{codec:?}: round trip differs");
    }
}

#[tokio::test]
async fn codec_concatenated_frames_decode_whole() {
    // As `cat a.zst b.zst | zstd -d` (and gzip) do.
    for compression in [Compression::zstd(), Compression::gzip()] {
        let codec = Codec {
            compression,
            encryption: None,
        };
        let mut stored = encode(b"first part\n", &codec).await;
        stored.extend(encode(b"second part\n", &codec).await);
        let back = decode(stored, &codec, &Identities::none()).await.unwrap();
        assert_eq!(back, b"first part\nsecond part\n", "{compression}");
    }
}

#[tokio::test]
async fn codec_empty_input_round_trips() {
    let keys = keys();
    let ids = load_identities(std::slice::from_ref(&keys.identity_file)).unwrap();
    for codec in all_codecs(&keys.recipient) {
        let stored = encode(b"", &codec).await;
        assert_eq!(stored.is_empty(), codec == Codec::plain(), "{codec:?}");
        let back = decode(stored, &codec, &ids).await.unwrap();
        assert!(back.is_empty(), "{codec:?}");
    }
}

#[tokio::test]
async fn codec_streams_without_buffering_everything() {
    let keys = keys();
    // Random bytes do not compress: most of them must reach the upload
    // before the end.
    let data = sample(4 * 1024 * 1024, 3)
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ (i as u8).wrapping_mul(151))
        .collect::<Vec<_>>();
    for codec in all_codecs(&keys.recipient) {
        let bottom_probe = Arc::new(Mutex::new(0usize));
        struct Probe(Arc<Mutex<usize>>);
        impl AsyncWrite for Probe {
            fn poll_write(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                *self.0.lock().unwrap() += buf.len();
                Poll::Ready(Ok(buf.len()))
            }
            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
        }
        let mut writer = encode_writer_over(Probe(bottom_probe.clone()), &codec).unwrap();
        writer.write_all(&data).await.unwrap();
        let before_finish = *bottom_probe.lock().unwrap();
        assert!(
            before_finish > data.len() / 2,
            "{codec:?}: only {before_finish} bytes reached the upload before finish"
        );
        writer.finish().await.unwrap();
    }
}

#[tokio::test]
async fn codec_shutdown_then_finish_keeps_inner_open() {
    let keys = keys();
    let ids = load_identities(std::slice::from_ref(&keys.identity_file)).unwrap();
    let codec = Codec {
        compression: Compression::zstd(),
        encryption: Some(Encryption::new([keys.recipient.clone()]).unwrap()),
    };
    // The default type parameter: a boxed writer in, a boxed writer out.
    let inner: Box<dyn AsyncWrite + Send + Unpin> = Box::new(Vec::<u8>::new());
    let mut writer: EncodeWriter = encode_writer(inner, &codec).unwrap();
    writer.write_all(b"hello, world\n").await.unwrap();
    writer.shutdown().await.unwrap();
    writer.shutdown().await.unwrap();
    let err = writer.write_all(b"more").await.unwrap_err();
    assert!(err.to_string().contains("already finished"), "{err}");
    let _ = writer.finish().await.unwrap();

    // Same chain over a Vec we can read back.
    let mut writer = encode_writer_over(Trickle::new(5), &codec).unwrap();
    writer.write_all(b"hello, world\n").await.unwrap();
    writer.shutdown().await.unwrap();
    let inner = writer.finish().await.unwrap();
    assert!(!inner.shut_down);
    let back = decode(inner.data, &codec, &ids).await.unwrap();
    assert_eq!(back, b"hello, world\n");
}

#[tokio::test]
async fn codec_two_recipients_either_identity_decrypts() {
    let keys = keys();
    let other = age::x25519::Identity::generate();
    let codec = Codec {
        compression: Compression::gzip(),
        encryption: Some(
            Encryption::new([keys.recipient.clone(), other.to_public().to_string()]).unwrap(),
        ),
    };
    let data = sample(300_000, 11);
    let stored = encode(&data, &codec).await;
    // One wrong file and one right file: the right one is found.
    let ids = load_identities(&[keys.other_file.clone(), keys.identity_file.clone()]).unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(decode(stored.clone(), &codec, &ids).await.unwrap(), data);
    let mut only_other = Identities::none();
    only_other.files.push(PathBuf::from("mem"));
    only_other.keys.push(Box::new(other));
    assert_eq!(decode(stored, &codec, &only_other).await.unwrap(), data);
}

#[tokio::test]
async fn codec_wrong_identity_is_a_clear_error() {
    let keys = keys();
    let codec = Codec {
        compression: Compression::zstd(),
        encryption: Some(Encryption::new([keys.recipient.clone()]).unwrap()),
    };
    let stored = encode(&sample(10_000, 1), &codec).await;
    let wrong = load_identities(std::slice::from_ref(&keys.other_file)).unwrap();
    let err = decode(stored, &codec, &wrong).await.unwrap_err();
    let text = format!("{err:#}");
    assert_eq!(
        text,
        format!(
            "artifact db/a.dump is encrypted to other recipients: none of the identities in {} \
             can decrypt it; pass the right --identity",
            keys.other_file.display()
        )
    );
    // The artifact cannot be used with what was given: rejected (exit 5).
    assert_eq!(
        err.downcast_ref::<Failure>().unwrap().kind,
        Kind::ArtifactRejected
    );
}

#[tokio::test]
async fn codec_missing_identity_is_a_clear_error() {
    let keys = keys();
    let codec = Codec {
        compression: Compression::None,
        encryption: Some(Encryption::new([keys.recipient.clone()]).unwrap()),
    };
    let stored = encode(b"secret rows", &codec).await;
    let err = decode(stored, &codec, &Identities::none())
        .await
        .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "artifact db/a.dump is encrypted; pass --identity FILE with an age identity"
    );

    let missing = keys.identity_file.with_file_name("nope.txt");
    let err = load_identities(std::slice::from_ref(&missing)).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        format!(
            "cannot read identity file {}: it does not exist",
            missing.display()
        )
    );
}

#[tokio::test]
async fn codec_identity_file_with_a_recipient_is_refused() {
    let keys = keys();
    let path = keys
        .identity_file
        .with_file_name("recipients-by-mistake.txt");
    std::fs::write(&path, format!("# comment\n{}\n", keys.recipient)).unwrap();
    let err = load_identities(&[path]).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("line 2"), "{text}");
    assert!(text.contains("not identities"), "{text}");
    let empty = keys.identity_file.with_file_name("empty.txt");
    std::fs::write(&empty, "# nothing here\n\n").unwrap();
    let err = load_identities(&[empty]).unwrap_err();
    assert!(
        format!("{err:#}").contains("holds no age identity"),
        "{err:#}"
    );
}

#[tokio::test]
async fn codec_truncated_ciphertext_is_an_error() {
    let keys = keys();
    let ids = load_identities(std::slice::from_ref(&keys.identity_file)).unwrap();
    for compression in [Compression::None, Compression::zstd()] {
        let codec = Codec {
            compression,
            encryption: Some(Encryption::new([keys.recipient.clone()]).unwrap()),
        };
        let data = sample(200_000, 5);
        let stored = encode(&data, &codec).await;
        // Cut at a chunk boundary too: age must notice the missing final chunk.
        for cut in [stored.len() - 100, stored.len() - 1, 250] {
            let err = decode(stored[..cut].to_vec(), &codec, &ids)
                .await
                .unwrap_err();
            let text = format!("{err:#}");
            assert!(text.contains("artifact db/a.dump"), "{text}");
            assert!(text.contains("age"), "{text}");
        }
        // The header itself truncated.
        let err = decode(stored[..20].to_vec(), &codec, &ids)
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("age"), "{err:#}");
        assert_eq!(
            err.downcast_ref::<Failure>().unwrap().kind,
            Kind::ArtifactRejected
        );
        // A flipped bit in the payload.
        let mut flipped = stored.clone();
        let at = flipped.len() / 2;
        flipped[at] ^= 0x40;
        let err = decode(flipped, &codec, &ids).await.unwrap_err();
        assert!(
            format!("{err:#}").contains("age-encrypted data is damaged"),
            "{err:#}"
        );
    }
}

#[tokio::test]
async fn codec_corrupt_or_truncated_compression_names_the_format() {
    let data = sample(500_000, 9);
    for (compression, name) in [(Compression::zstd(), "zstd"), (Compression::gzip(), "gzip")] {
        let codec = Codec {
            compression,
            encryption: None,
        };
        let stored = encode(&data, &codec).await;
        let mut corrupt = stored.clone();
        for i in (corrupt.len() / 3..corrupt.len() / 3 + 64).step_by(7) {
            corrupt[i] ^= 0xa5;
        }
        let truncated = stored[..stored.len() - 3].to_vec();
        let mut trailing = stored.clone();
        trailing.extend_from_slice(b"garbage after the frame");
        let garbage = b"this was never compressed at all, not even a little".to_vec();
        for (case, bytes) in [
            ("corrupt", corrupt),
            ("truncated", truncated),
            ("trailing", trailing),
            ("garbage", garbage),
        ] {
            let Err(err) = decode(bytes, &codec, &Identities::none()).await else {
                panic!("{name} {case}: decoded without an error");
            };
            let text = format!("{err:#}");
            assert!(
                text.starts_with(&format!(
                    "artifact db/a.dump: its {name}-compressed data is corrupt or truncated"
                )),
                "{name} {case}: {text}"
            );
        }
    }
}

#[tokio::test]
async fn codec_store_errors_pass_through_unchanged() {
    let keys = keys();
    let ids = load_identities(std::slice::from_ref(&keys.identity_file)).unwrap();
    let data = sample(400_000, 13);
    for codec in all_codecs(&keys.recipient) {
        let stored = encode(&data, &codec).await;
        let mut source = Dribble::new(stored, 4096);
        source.fail_at = Some(100_000);
        // read_to_end also checks (in debug builds) that an error
        // comes with no bytes.
        let result = match decode_reader(source, &codec, &ids, "db/a.dump").await {
            Ok(mut reader) => reader
                .read_to_end(&mut Vec::new())
                .await
                .map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        let err = result.unwrap_err();
        let io = err.downcast_ref::<io::Error>().unwrap();
        assert_eq!(io.kind(), io::ErrorKind::ConnectionReset, "{codec:?}");
        assert_eq!(
            io.to_string(),
            "store connection reset by peer",
            "{codec:?}"
        );
    }
}

#[test]
fn codec_recipients_file_with_comments() {
    let keys = keys();
    let second = age::x25519::Identity::generate().to_public().to_string();
    let path = keys.identity_file.with_file_name("recipients.txt");
    std::fs::write(
        &path,
        format!(
            "# ops team\n\n{}\n   # laptop\n  {second}  \n",
            keys.recipient
        ),
    )
    .unwrap();
    let recipients = read_recipients_file(&path).unwrap();
    assert_eq!(recipients, vec![keys.recipient.clone(), second.clone()]);
    let enc = Encryption::from_args(
        std::slice::from_ref(&keys.recipient),
        std::slice::from_ref(&path),
    )
    .unwrap();
    assert_eq!(enc.recipients.len(), 3);

    std::fs::write(&path, format!("# ok\n{second}\nage1nope\n")).unwrap();
    let err = read_recipients_file(&path).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("line 3"), "{text}");
    assert!(
        text.contains("not an age recipient: \"age1nope\""),
        "{text}"
    );

    std::fs::write(&path, "# only comments\n").unwrap();
    assert!(
        format!("{:#}", read_recipients_file(&path).unwrap_err())
            .contains("lists no age recipient")
    );
}

#[test]
fn codec_recipients_are_checked_up_front() {
    let err = Encryption::new(["ssh-ed25519 AAAA".to_string()]).unwrap_err();
    assert!(
        format!("{err:#}").starts_with("not an age recipient: \"ssh-ed25519 AAAA\""),
        "{err:#}"
    );
    let secret = age::x25519::Identity::generate()
        .to_string()
        .expose_secret()
        .to_string();
    let err = Encryption::new([secret.clone()]).unwrap_err();
    let text = format!("{err:#}");
    assert!(!text.contains(&secret[15..]), "the secret leaked: {text}");
    assert!(text.contains("age-keygen -y"), "{text}");
    assert!(Encryption::new(Vec::<String>::new()).is_err());
    // encode_writer checks them too.
    let bad = Codec {
        compression: Compression::None,
        encryption: Some(Encryption {
            recipients: vec!["age1bad".into()],
        }),
    };
    assert!(encode_writer_over(Vec::<u8>::new(), &bad).is_err());
}

#[test]
fn codec_names_suffixes_and_parsing() {
    let age = || Some(Encryption { recipients: vec![] });
    let cases = [
        (Compression::None, None, ""),
        (Compression::zstd(), None, ".zst"),
        (Compression::gzip(), None, ".gz"),
        (Compression::zstd(), age(), ".zst.age"),
        (Compression::gzip(), age(), ".gz.age"),
        (Compression::None, age(), ".age"),
    ];
    for (compression, encryption, suffix) in cases {
        let codec = Codec {
            compression,
            encryption,
        };
        assert_eq!(codec.extension_suffix(), suffix);
        let back = Codec::from_manifest(
            codec.compression_manifest_name(),
            codec.encryption_manifest_name(),
        )
        .unwrap();
        assert_eq!(back, codec);
    }
    assert_eq!(
        Codec::from_manifest("none", Some("none")).unwrap(),
        Codec::plain()
    );
    assert!(Codec::from_manifest("brotli", None).is_err());
    assert!(Codec::from_manifest("zstd", Some("gpg")).is_err());

    assert_eq!("zstd".parse::<Compression>().unwrap(), Compression::zstd());
    assert_eq!(
        "zstd:19".parse::<Compression>().unwrap(),
        Compression::Zstd { level: 19 }
    );
    assert_eq!(
        "GZIP:9".parse::<Compression>().unwrap(),
        Compression::Gzip { level: 9 }
    );
    assert_eq!("none".parse::<Compression>().unwrap(), Compression::None);
    assert_eq!(
        "zstd:-7".parse::<Compression>().unwrap(),
        Compression::Zstd { level: -7 }
    );
    assert_eq!(
        "gzip:0".parse::<Compression>().unwrap(),
        Compression::Gzip { level: 0 }
    );
    for bad in [
        "zstd:0", "zstd:23", "zstd:-8", "gzip:10", "gzip:-1", "gzip:x", "lz4", "none:1",
    ] {
        assert!(bad.parse::<Compression>().is_err(), "{bad}");
    }
    // The parts as the command line and the config give them.
    assert_eq!(Compression::parse(None, None), Ok(None));
    assert_eq!(
        Compression::parse(Some("zstd"), None),
        Ok(Some(Compression::Zstd { level: 1 }))
    );
    let err = Compression::parse(None, Some(3)).unwrap_err();
    assert!(err.contains("needs a compression"), "{err}");
    let err = Compression::parse(Some("gzip"), Some(12)).unwrap_err();
    assert_eq!(
        err,
        "gzip compression level must be between 0 and 9, not 12"
    );
    assert_eq!(Compression::Zstd { level: 7 }.to_string(), "zstd:7");
}

#[test]
fn codec_choose_compression_never_double_compresses() {
    assert_eq!(choose_compression(None, false), (Compression::zstd(), None));
    assert_eq!(choose_compression(None, true), (Compression::None, None));
    assert_eq!(
        choose_compression(Some(Compression::gzip()), false),
        (Compression::gzip(), None)
    );
    assert_eq!(
        choose_compression(Some(Compression::None), false),
        (Compression::None, None)
    );
    assert_eq!(
        choose_compression(Some(Compression::None), true),
        (Compression::None, None)
    );
    let (chosen, warning) = choose_compression(Some(Compression::zstd()), true);
    assert_eq!(chosen, Compression::None);
    assert!(warning.unwrap().contains("never double-compress"));
}

/// Throughput of the encode and decode chains, for the decision record:
/// `cargo test --release -p envsync-host codec_throughput -- --ignored --nocapture`
#[tokio::test]
#[ignore]
async fn codec_throughput() {
    let keys = keys();
    let ids = load_identities(std::slice::from_ref(&keys.identity_file)).unwrap();
    // Mixed: text rows with one random run in five (hard to compress);
    // text: rows only, like a plain-text dump.
    let mixed = sample(128 * 1024 * 1024, 17);
    let text: Vec<u8> = (0u64..)
        .flat_map(|row| {
            let r = row.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
            format!(
                "{row}\tcustomer-{}\t{}.{:02}\tshipped\n",
                r % 10_000,
                r % 997,
                r % 100
            )
            .into_bytes()
        })
        .take(mixed.len())
        .collect();
    for (name, data) in [("mixed", mixed), ("text", text)] {
        throughput(name, &data, &keys.recipient, &ids).await;
    }
}

async fn throughput(name: &str, data: &[u8], recipient: &str, ids: &Identities) {
    let mib = data.len() as f64 / (1024.0 * 1024.0);
    for codec in all_codecs(recipient) {
        let start = std::time::Instant::now();
        let mut writer = encode_writer_over(Vec::with_capacity(data.len()), &codec).unwrap();
        for chunk in data.chunks(1 << 20) {
            writer.write_all(chunk).await.unwrap();
        }
        let stored = writer.finish().await.unwrap();
        let encode = start.elapsed().as_secs_f64();
        let size = stored.len();
        let start = std::time::Instant::now();
        let mut reader = decode_reader(io::Cursor::new(stored), &codec, ids, "bench")
            .await
            .unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0;
        loop {
            let n = reader.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            total += n;
        }
        let decode = start.elapsed().as_secs_f64();
        assert_eq!(total, data.len());
        println!(
            "{name:<6} {:<20} encode {:>6.0} MiB/s  decode {:>6.0} MiB/s  ratio {:.3}",
            format!("{}{}", codec.compression, codec.extension_suffix()),
            mib / encode,
            mib / decode,
            size as f64 / data.len() as f64
        );
    }
}
