use std::collections::BTreeSet;

use bytes::Bytes;
use futures_util::{StreamExt as _, stream};
use serde_json::{Value, json};

use super::*;
use crate::blob::{ByteStream, sha256};
use crate::manifest::media_type::{OCI_INDEX, OCI_MANIFEST};

/// `data` as a stream of `chunk`-byte pieces.
fn chunked(data: &Bytes, chunk: usize) -> ByteStream {
    let pieces: Vec<Result<Bytes>> = (0..data.len())
        .step_by(chunk)
        .map(|at| Ok(data.slice(at..(at + chunk).min(data.len()))))
        .collect();
    Box::pin(stream::iter(pieces))
}

/// Deterministic, non-repeating-looking content.
fn content(len: usize) -> Bytes {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// A distinct image manifest per `n`.
fn image(n: u32) -> Manifest {
    let config = sha256(n.to_string().as_bytes());
    let json = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{}}},"layers":[]}}"#,
        n.to_string().len()
    );
    Manifest::new(Bytes::from(json), Some(OCI_MANIFEST))
}

/// Every file under `dir`, as sorted `/`-separated relative paths.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).unwrap();
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn blob_files(root: &Path) -> Vec<String> {
    files_under(&root.join("blobs"))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test]
async fn blob_round_trip_streams_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    // A directory that does not exist yet: the first write creates it.
    let root = dir.path().join("layout");
    let layout = OciLayout::new(&root);
    let data = content(3 * 1024 * 1024 + 17);
    let digest = sha256(&data);
    let blob = Blob {
        size: Some(data.len() as u64),
        stream: chunked(&data, 64 * 1024),
    };
    layout.put_blob(&digest, blob).await.unwrap();
    assert_eq!(
        layout.blob_size(&digest).await.unwrap(),
        Some(data.len() as u64)
    );

    let mut blob = layout.get_blob(&digest).await.unwrap();
    assert_eq!(blob.size, Some(data.len() as u64));
    let (mut chunks, mut read) = (0, Vec::new());
    while let Some(chunk) = blob.stream.next().await {
        let chunk = chunk.unwrap();
        assert!(chunk.len() <= READ_CHUNK);
        read.extend_from_slice(&chunk);
        chunks += 1;
    }
    assert!(chunks > 1, "read in {chunks} chunk(s)");
    assert!(read == data, "bytes differ");

    // A valid (empty) layout around it, and no leftovers.
    assert_eq!(
        files_under(&root),
        [
            format!("blobs/sha256/{}", digest.encoded()),
            "index.json".to_owned(),
            "index.json.lock".to_owned(),
            "oci-layout".to_owned(),
        ]
    );
    assert_eq!(
        read_json(&root.join("oci-layout")),
        json!({"imageLayoutVersion": "1.0.0"})
    );
    assert_eq!(
        read_json(&root.join("index.json")),
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
    );

    // Size unknown up front works too.
    let small = content(1000);
    let small_digest = sha256(&small);
    let blob = Blob {
        size: None,
        stream: chunked(&small, 100),
    };
    layout.put_blob(&small_digest, blob).await.unwrap();
    assert_eq!(layout.blob_size(&small_digest).await.unwrap(), Some(1000));
}

#[tokio::test]
async fn bad_blobs_leave_no_file_behind() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::new(dir.path());
    let data = content(1024 * 1024 + 3);
    let digest = sha256(&data);

    let wrong_digest = sha256(b"something else");
    let blob = Blob {
        size: Some(data.len() as u64),
        stream: chunked(&data, 50_000),
    };
    let err = layout.put_blob(&wrong_digest, blob).await.unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");
    assert_eq!(layout.blob_size(&wrong_digest).await.unwrap(), None);

    for size in [data.len() as u64 + 1, data.len() as u64 - 1] {
        let blob = Blob {
            size: Some(size),
            stream: chunked(&data, 50_000),
        };
        let err = layout.put_blob(&digest, blob).await.unwrap_err();
        assert!(matches!(err, Error::SizeMismatch { .. }), "{err:?}");
    }

    let failing: ByteStream = Box::pin(stream::iter([
        Ok(data.slice(..1000)),
        Err(Error::Cancelled),
    ]));
    let err = layout
        .put_blob(
            &digest,
            Blob {
                size: None,
                stream: failing,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err:?}");

    assert_eq!(layout.blob_size(&digest).await.unwrap(), None);
    assert_eq!(
        blob_files(dir.path()),
        Vec::<String>::new(),
        "no blob, no temp file"
    );

    let unsupported = Digest::parse("blake3:abcd").unwrap();
    let err = layout
        .put_blob(&unsupported, Blob::from_bytes(Bytes::from_static(b"x")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnsupportedDigest { .. }), "{err:?}");
}

#[tokio::test]
async fn a_cancelled_put_removes_its_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::new(dir.path());
    let digest = sha256(b"partial and then forever nothing");
    let (reached, mut reached_rx) = tokio::sync::oneshot::channel::<()>();
    // One chunk, then a stall: the transfer hangs mid-blob.
    let stalling = stream::unfold((true, Some(reached)), |(first, tx)| async move {
        if first {
            return Some((Ok(Bytes::from_static(b"partial")), (false, tx)));
        }
        if let Some(tx) = tx {
            let _ = tx.send(());
        }
        std::future::pending::<Option<(Result<Bytes>, (bool, Option<_>))>>().await
    });
    let mut put = Box::pin(layout.put_blob(
        &digest,
        Blob {
            size: None,
            stream: Box::pin(stalling),
        },
    ));
    tokio::select! {
        r = put.as_mut() => panic!("put finished: {r:?}"),
        _ = &mut reached_rx => {}
    }
    let during = blob_files(dir.path());
    assert!(
        during.len() == 1 && during[0].ends_with(".tmp"),
        "{during:?}"
    );
    drop(put);
    assert_eq!(blob_files(dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn a_present_blob_is_not_read_again_and_a_wrong_sized_one_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::new(dir.path());
    let data = content(5000);
    let digest = sha256(&data);
    layout
        .put_blob(&digest, Blob::from_bytes(data.clone()))
        .await
        .unwrap();

    // Any read of this stream would fail the put.
    let untouchable = || Blob {
        size: Some(5000),
        stream: Box::pin(stream::iter([Err(Error::Cancelled)])),
    };
    layout.put_blob(&digest, untouchable()).await.unwrap();

    // A truncated file (another tool's crash) is rewritten, not trusted.
    let path = dir.path().join("blobs/sha256").join(digest.encoded());
    std::fs::write(&path, &data[..100]).unwrap();
    assert!(layout.put_blob(&digest, untouchable()).await.is_err());
    layout
        .put_blob(&digest, Blob::from_bytes(data.clone()))
        .await
        .unwrap();
    assert!(std::fs::read(&path).unwrap() == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_of_one_blob_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(1024 * 1024);
    let digest = sha256(&data);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let layout = OciLayout::new(dir.path());
        let (data, digest) = (data.clone(), digest.clone());
        tasks.spawn(async move {
            let blob = Blob {
                size: Some(data.len() as u64),
                stream: chunked(&data, 10_000 + i * 1000),
            };
            layout.put_blob(&digest, blob).await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(
        blob_files(dir.path()),
        [format!("sha256/{}", digest.encoded())]
    );
    let stored = std::fs::read(dir.path().join("blobs/sha256").join(digest.encoded())).unwrap();
    assert!(stored == data);
}

#[tokio::test]
async fn tagged_manifest_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::new(dir.path());
    let m = image(1);
    layout.put_manifest(Some("1.0"), &m).await.unwrap();

    let want = ManifestHead {
        digest: m.digest.clone(),
        media_type: OCI_MANIFEST.to_owned(),
        size: m.bytes.len() as u64,
    };
    assert_eq!(
        layout.head_manifest("1.0").await.unwrap(),
        Some(want.clone())
    );
    assert_eq!(
        layout.head_manifest(&m.digest.to_string()).await.unwrap(),
        Some(want)
    );
    let got = layout.get_manifest("1.0").await.unwrap();
    assert_eq!(got, m);
    assert_eq!(layout.list_tags().await.unwrap(), ["1.0"]);
    assert_eq!(layout.head_manifest("1.1").await.unwrap(), None);
    assert!(layout.get_manifest("1.1").await.unwrap_err().is_not_found());

    let index = read_json(&dir.path().join("index.json"));
    assert_eq!(
        index,
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{
                "mediaType": OCI_MANIFEST,
                "digest": m.digest.to_string(),
                "size": m.bytes.len(),
                "annotations": {"org.opencontainers.image.ref.name": "1.0"}
            }]
        })
    );
    let files = files_under(dir.path());
    assert!(!files.iter().any(|f| f.contains(".tmp")), "{files:?}");
}

#[tokio::test]
async fn retagging_replaces_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::new(dir.path());
    let (a, b) = (image(1), image(2));
    layout.put_manifest(Some("latest"), &a).await.unwrap();
    layout.put_manifest(Some("stable"), &a).await.unwrap();
    layout.put_manifest(Some("latest"), &b).await.unwrap();

    let head = layout.head_manifest("latest").await.unwrap().unwrap();
    assert_eq!(head.digest, b.digest);
    assert_eq!(
        layout
            .head_manifest("stable")
            .await
            .unwrap()
            .unwrap()
            .digest,
        a.digest
    );
    assert_eq!(layout.list_tags().await.unwrap(), ["latest", "stable"]);
    let index = read_json(&dir.path().join("index.json"));
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    // The old manifest is still there for whoever references it by digest.
    assert!(layout.blob_size(&a.digest).await.unwrap().is_some());

    // Putting the same tag and digest again changes nothing.
    let before = std::fs::read(dir.path().join("index.json")).unwrap();
    layout.put_manifest(Some("latest"), &b).await.unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("index.json")).unwrap(),
        before
    );
}

#[tokio::test]
async fn untagged_manifests_are_stored_but_not_listed() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::new(dir.path());
    let (a, b) = (image(1), image(2));
    layout.put_manifest(None, &a).await.unwrap();
    // A digest as the reference means the same as no tag.
    layout
        .put_manifest(Some(&b.digest.to_string()), &b)
        .await
        .unwrap();
    assert_eq!(layout.list_tags().await.unwrap(), Vec::<String>::new());
    assert_eq!(
        read_json(&dir.path().join("index.json"))["manifests"],
        json!([])
    );

    for m in [&a, &b] {
        let reference = m.digest.to_string();
        let head = layout.head_manifest(&reference).await.unwrap().unwrap();
        // No descriptor: the type is read from the manifest itself.
        assert_eq!(head.media_type, OCI_MANIFEST);
        assert_eq!(head.size, m.bytes.len() as u64);
        assert_eq!(&layout.get_manifest(&reference).await.unwrap(), m);
    }

    // A digest reference that does not match the bytes is refused, and nothing is stored.
    let other = sha256(b"not this manifest");
    let err = layout
        .put_manifest(Some(&other.to_string()), &a)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");
    assert_eq!(layout.blob_size(&other).await.unwrap(), None);

    let err = layout.put_manifest(Some("bad tag"), &a).await.unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
}

#[tokio::test]
async fn corrupt_manifest_blobs_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::new(dir.path());
    let m = image(7);
    layout.put_manifest(Some("v1"), &m).await.unwrap();
    let path = dir.path().join("blobs/sha256").join(m.digest.encoded());

    // Same length, one byte flipped.
    let mut bytes = m.bytes.to_vec();
    bytes[10] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let err = layout.get_manifest("v1").await.unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");
    let err = layout
        .get_manifest(&m.digest.to_string())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");

    // Truncated: the descriptor's size catches it; HEAD calls it absent so a sync rewrites it.
    std::fs::write(&path, &m.bytes[..20]).unwrap();
    let err = layout.get_manifest("v1").await.unwrap_err();
    assert!(
        matches!(err, Error::SizeMismatch { actual: 20, .. }),
        "{err:?}"
    );
    assert_eq!(layout.head_manifest("v1").await.unwrap(), None);
    layout.put_manifest(Some("v1"), &m).await.unwrap();
    assert_eq!(layout.get_manifest("v1").await.unwrap(), m);

    // Missing.
    std::fs::remove_file(&path).unwrap();
    assert_eq!(layout.head_manifest("v1").await.unwrap(), None);
    assert!(layout.get_manifest("v1").await.unwrap_err().is_not_found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_tagging_loses_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let shared = OciLayout::new(dir.path());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20u32 {
        // Half share one value (the in-process queue), half are separate values for the
        // same directory, as another process would be (only the file lock orders them).
        let layout = if i % 2 == 0 {
            shared.clone()
        } else {
            OciLayout::new(dir.path())
        };
        tasks.spawn(async move {
            layout
                .put_manifest(Some(&format!("t{i:02}")), &image(i))
                .await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let want: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
    assert_eq!(shared.list_tags().await.unwrap(), want);
    for i in 0..20 {
        let head = shared
            .head_manifest(&format!("t{i:02}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(head.digest, image(i).digest);
    }
    let files = files_under(dir.path());
    assert!(!files.iter().any(|f| f.contains(".tmp")), "{files:?}");
}

#[tokio::test]
async fn unknown_fields_and_annotations_survive_an_update() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::new(dir.path());
    let (a, b, c) = (image(1), image(2), image(3));
    layout.put_manifest(None, &a).await.unwrap();
    layout.put_manifest(None, &b).await.unwrap();
    let tagged = json!({
        "mediaType": OCI_MANIFEST,
        "digest": a.digest.to_string(),
        "size": a.bytes.len(),
        "platform": {"os": "linux", "architecture": "amd64"},
        "annotations": {
            "org.opencontainers.image.ref.name": "old",
            "com.example.note": "kept"
        },
        "x-entry": [1, 2, 3]
    });
    let untagged = json!({
        "mediaType": OCI_MANIFEST,
        "digest": b.digest.to_string(),
        "size": b.bytes.len()
    });
    let original = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "annotations": {"com.example.top": "kept"},
        "x-vendor": {"nested": [true, null]},
        "manifests": [tagged, untagged]
    });
    std::fs::write(dir.path().join("index.json"), original.to_string()).unwrap();

    layout.put_manifest(Some("new"), &c).await.unwrap();
    let index = read_json(&dir.path().join("index.json"));
    assert_eq!(index["annotations"], original["annotations"]);
    assert_eq!(index["x-vendor"], original["x-vendor"]);
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0], tagged);
    assert_eq!(entries[1], untagged);
    assert_eq!(
        entries[2]["annotations"]["org.opencontainers.image.ref.name"],
        "new"
    );
    // Re-tagging `old` with the digest it already has keeps its extra fields.
    layout.put_manifest(Some("old"), &a).await.unwrap();
    assert_eq!(
        read_json(&dir.path().join("index.json"))["manifests"][0],
        tagged
    );
    assert_eq!(layout.list_tags().await.unwrap(), ["new", "old"]);
}

#[tokio::test]
async fn reads_a_layout_written_by_another_tool() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (image_m, child) = (image(1), image(2));
    let idx_json = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{},"platform":{{"os":"linux","architecture":"arm64"}}}}]}}"#,
        child.digest,
        child.bytes.len()
    );
    let idx = Manifest::new(Bytes::from(idx_json), None);
    std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    for m in [&image_m, &child, &idx] {
        std::fs::write(root.join("blobs/sha256").join(m.digest.encoded()), &m.bytes).unwrap();
    }
    std::fs::write(
        root.join("oci-layout"),
        r#"{"imageLayoutVersion": "1.0.0"}"#,
    )
    .unwrap();
    // Full names in ref.name (as `ctr export` writes), a descriptor without a media type,
    // and one without a ref.name.
    let index = json!({
        "schemaVersion": 2,
        "manifests": [
            {
                "digest": image_m.digest.to_string(),
                "size": image_m.bytes.len(),
                "annotations": {
                    "org.opencontainers.image.ref.name": "docker.io/library/busybox:latest",
                    "io.containerd.image.name": "docker.io/library/busybox:latest"
                }
            },
            {"mediaType": OCI_INDEX, "digest": idx.digest.to_string(), "size": idx.bytes.len()}
        ]
    });
    std::fs::write(
        root.join("index.json"),
        serde_json::to_vec_pretty(&index).unwrap(),
    )
    .unwrap();

    let layout = OciLayout::new(root);
    assert_eq!(
        layout.list_tags().await.unwrap(),
        ["latest"],
        "listed by its tag"
    );
    let head = layout
        .head_manifest("docker.io/library/busybox:latest")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head.digest, image_m.digest);
    assert_eq!(head.media_type, OCI_MANIFEST, "sniffed from the manifest");
    // The short tag finds the full name, as in regclient.
    assert_eq!(layout.head_manifest("latest").await.unwrap(), Some(head));
    assert_eq!(layout.get_manifest("latest").await.unwrap(), image_m);

    let got = layout.get_manifest(&idx.digest.to_string()).await.unwrap();
    assert!(got.is_index());
    assert_eq!(got.bytes, idx.bytes);
    let got = layout
        .get_manifest(&child.digest.to_string())
        .await
        .unwrap();
    assert_eq!(got.media_type, OCI_MANIFEST);
    assert_eq!(layout.head_manifest("other").await.unwrap(), None);

    // Writing into it keeps what was there.
    layout.put_manifest(Some("2.0"), &image(3)).await.unwrap();
    let after = read_json(&root.join("index.json"));
    assert_eq!(after["manifests"][0], index["manifests"][0]);
    assert_eq!(after["manifests"][1], index["manifests"][1]);
    assert_eq!(layout.list_tags().await.unwrap(), ["2.0", "latest"]);
}

#[tokio::test]
async fn a_fresh_directory_is_an_empty_repository() {
    let dir = tempfile::tempdir().unwrap();
    for root in [dir.path().to_owned(), dir.path().join("not/yet")] {
        let layout = OciLayout::new(&root);
        assert_eq!(layout.root(), root);
        assert_eq!(layout.list_tags().await.unwrap(), Vec::<String>::new());
        assert_eq!(layout.head_manifest("latest").await.unwrap(), None);
        let digest = sha256(b"x");
        assert_eq!(
            layout.head_manifest(&digest.to_string()).await.unwrap(),
            None
        );
        assert!(
            layout
                .get_manifest("latest")
                .await
                .unwrap_err()
                .is_not_found()
        );
        assert!(
            layout
                .get_manifest(&digest.to_string())
                .await
                .unwrap_err()
                .is_not_found()
        );
        assert_eq!(layout.blob_size(&digest).await.unwrap(), None);
        assert!(layout.get_blob(&digest).await.unwrap_err().is_not_found());
    }
    // Reading created nothing.
    assert_eq!(files_under(dir.path()), Vec::<String>::new());
    assert!(!dir.path().join("not").exists());
}

#[tokio::test]
async fn corrupt_index_or_layout_version_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::new(dir.path());
    std::fs::write(dir.path().join("index.json"), b"{\"manifests\": [").unwrap();
    let err = layout.list_tags().await.unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    let err = layout.put_manifest(Some("x"), &image(1)).await.unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    // The corrupt index was left for a human to look at, not replaced.
    assert_eq!(
        std::fs::read(dir.path().join("index.json")).unwrap(),
        b"{\"manifests\": ["
    );

    std::fs::write(
        dir.path().join("index.json"),
        b"{\"schemaVersion\":2,\"manifests\":[]}",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("oci-layout"),
        br#"{"imageLayoutVersion":"2.0.0"}"#,
    )
    .unwrap();
    let err = layout.head_manifest("x").await.unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    let before = files_under(dir.path());
    let err = layout
        .put_blob(&sha256(b"x"), Blob::from_bytes(Bytes::from_static(b"x")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    assert_eq!(
        files_under(dir.path()),
        before,
        "nothing written into an unknown layout version"
    );
}

#[test]
fn set_tag_drops_duplicates_and_keeps_order() {
    let entry = |digest: &str, tag: Option<&str>| {
        let mut v = json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": 1});
        if let Some(t) = tag {
            v["annotations"] = json!({"org.opencontainers.image.ref.name": t});
        }
        serde_json::from_value::<Entry>(v).unwrap()
    };
    let (a, b, c) = (
        sha256(b"a").to_string(),
        sha256(b"b").to_string(),
        sha256(b"c").to_string(),
    );
    let mut index = index::Index::empty();
    index.manifests = vec![
        entry(&a, Some("t")),
        entry(&b, None),
        entry(&b, Some("t")),
        entry(&c, Some("u")),
    ];
    assert!(index.set_tag("t", Entry::tagged(OCI_MANIFEST, c.clone(), 1, "t")));
    let got: Vec<(String, Option<String>)> = index
        .manifests
        .iter()
        .map(|e| (e.digest.clone(), e.ref_name().map(str::to_owned)))
        .collect();
    assert_eq!(
        got,
        [
            (c.clone(), Some("t".to_owned())),
            (b.clone(), None),
            (c.clone(), Some("u".to_owned())),
        ]
    );
    assert!(!index.set_tag("t", Entry::tagged(OCI_MANIFEST, c.clone(), 1, "t")));
    // Full-name fallback only when the candidates agree.
    index.manifests.push(entry(&a, Some("example.com/app:v1")));
    assert_eq!(
        index.find_tag("v1").map(|e| e.digest.as_str()),
        Some(a.as_str())
    );
    index
        .manifests
        .push(entry(&b, Some("example.com/other:v1")));
    assert!(index.find_tag("v1").is_none());
    let tags: BTreeSet<_> = index.manifests.iter().filter_map(Entry::ref_name).collect();
    assert_eq!(tags.len(), 4);
}

#[tokio::test]
async fn ref_names_that_are_no_tag_are_skipped_from_the_listing() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::new(dir.path());
    let m = image(7);
    layout.put_manifest(Some("ok"), &m).await.unwrap();
    // What another tool (or a hostile archive) may leave in index.json.
    let path = dir.path().join("index.json");
    let mut index = read_json(&path);
    let entry = index["manifests"][0].clone();
    for name in [
        "../../victim/manifests/x",
        "example.com/app:..",
        "a b",
        "x:1:2",
    ] {
        let mut e = entry.clone();
        e["annotations"]["org.opencontainers.image.ref.name"] = json!(name);
        index["manifests"].as_array_mut().unwrap().push(e);
    }
    std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
    assert_eq!(layout.list_tags().await.unwrap(), ["ok"]);
}

/// Stores `data` as a blob and returns its descriptor.
async fn stored(layout: &OciLayout, media: &str, data: Bytes) -> Value {
    let digest = sha256(&data);
    layout
        .put_blob(&digest, Blob::from_bytes(data.clone()))
        .await
        .unwrap();
    json!({"mediaType": media, "digest": digest.to_string(), "size": data.len()})
}

#[tokio::test]
async fn a_deleted_tag_leaves_its_blobs_until_collected_and_shared_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::new(dir.path());
    let layer = "application/vnd.oci.image.layer.v1.tar";
    let config = "application/vnd.oci.image.config.v1+json";
    let shared = stored(&layout, layer, content(100)).await;
    let mut manifests = Vec::new();
    for n in 0..2u8 {
        let own = stored(&layout, layer, Bytes::from(vec![n; 50])).await;
        let cfg = stored(&layout, config, Bytes::from(format!("{{\"n\":{n}}}"))).await;
        let body = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": [shared, own]});
        manifests.push(Manifest::new(
            Bytes::from(body.to_string()),
            Some(OCI_MANIFEST),
        ));
    }
    layout.put_manifest(Some("a"), &manifests[0]).await.unwrap();
    layout.put_manifest(Some("b"), &manifests[1]).await.unwrap();
    // An index reaches `b`'s image as a child, untagged: collecting must follow it.
    let child = json!({"mediaType": OCI_MANIFEST, "digest": manifests[1].digest.to_string(), "size": manifests[1].bytes.len()});
    let idx = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child]});
    let idx = Manifest::new(Bytes::from(idx.to_string()), Some(OCI_INDEX));
    layout.put_manifest(Some("i"), &idx).await.unwrap();
    layout.put_manifest(Some("b"), &idx).await.unwrap();
    let before = blob_files(dir.path());
    assert_eq!(before.len(), 8, "{before:?}");

    assert!(layout.delete_tag("a").await.unwrap());
    assert!(!layout.delete_tag("a").await.unwrap(), "already gone");
    assert_eq!(layout.list_tags().await.unwrap(), ["b", "i"]);
    // Written just now: a younger blob is kept, whatever names it.
    let none = layout
        .collect_garbage(std::time::SystemTime::UNIX_EPOCH)
        .await
        .unwrap();
    assert_eq!(none, Collected::default());
    assert_eq!(blob_files(dir.path()), before);

    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    let got = layout.collect_garbage(later).await.unwrap();
    // `a`'s manifest, config and own layer; the shared layer and all of `b` stay.
    assert_eq!(got.blobs, 3, "{:?}", blob_files(dir.path()));
    let gone = manifests[0].digest.encoded().to_owned();
    assert!(!blob_files(dir.path()).iter().any(|f| f.ends_with(&gone)));
    let b = layout.get_manifest("b").await.unwrap();
    assert_eq!(b, idx);
    let kept = Digest::parse(shared["digest"].as_str().unwrap()).unwrap();
    assert!(layout.blob_size(&kept).await.unwrap().is_some());
    assert!(
        layout
            .get_manifest(&manifests[1].digest.to_string())
            .await
            .is_ok()
    );
    assert_eq!(
        layout.collect_garbage(later).await.unwrap(),
        Collected::default()
    );
}

#[tokio::test]
async fn deleting_a_tag_leaves_a_full_name_another_tool_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::new(dir.path());
    layout.put_manifest(Some("1.0"), &image(1)).await.unwrap();
    layout
        .put_manifest(Some("quay.io/x/y:1.0"), &image(2))
        .await
        .unwrap();
    assert!(layout.delete_tag("1.0").await.unwrap());
    let index = read_json(&dir.path().join("index.json"));
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .collect();
    assert_eq!(names, ["quay.io/x/y:1.0"]);
    // Nothing of this process's own is named `1.0` any more.
    assert!(!layout.delete_tag("1.0").await.unwrap());
}

#[tokio::test]
async fn a_reused_blob_is_young_again_for_the_collector() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::new(dir.path());
    layout.put_manifest(Some("other"), &image(5)).await.unwrap();
    let data = content(64);
    let digest = sha256(&data);
    layout
        .put_blob(&digest, Blob::from_bytes(data.clone()))
        .await
        .unwrap();
    let path = layout.blob_path(&digest);
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 86_400);
    let set_old = || {
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    };
    let age = || std::fs::metadata(&path).unwrap().modified().unwrap();
    set_old();
    // Stored again (a copy that finds it present), or reused after a size check: touched.
    layout
        .put_blob(&digest, Blob::from_bytes(data))
        .await
        .unwrap();
    assert!(age() > old + std::time::Duration::from_secs(86_400));
    set_old();
    layout.keep_blob(&digest).await;
    assert!(age() > old + std::time::Duration::from_secs(86_400));
    // Nothing in the index names it, yet it is younger than a day: kept; once old, not.
    let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
    assert_eq!(
        layout.collect_garbage(day_ago).await.unwrap(),
        Collected::default()
    );
    set_old();
    assert_eq!(layout.collect_garbage(day_ago).await.unwrap().blobs, 1);
    assert_eq!(layout.blob_size(&digest).await.unwrap(), None);
}

#[tokio::test]
async fn collecting_never_reads_outside_the_layout_for_a_digest_that_is_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("layout");
    let layout = OciLayout::new(&root);
    layout.put_manifest(Some("kept"), &image(7)).await.unwrap();
    // An unreferenced blob, and outside the layout a "manifest" that names it as a layer.
    let data = content(32);
    let orphan = sha256(&data);
    layout
        .put_blob(&orphan, Blob::from_bytes(data))
        .await
        .unwrap();
    let outside = json!({"layers": [{"mediaType": "x", "digest": orphan.to_string(), "size": 32}]});
    std::fs::write(dir.path().join("evil"), outside.to_string()).unwrap();
    // index.json names that file by a digest that is a relative path out of blobs/sha256.
    let mut index = read_json(&root.join("index.json"));
    index["manifests"].as_array_mut().unwrap().push(json!({
        "mediaType": OCI_MANIFEST, "digest": "sha256:../../../evil", "size": 1
    }));
    std::fs::write(root.join("index.json"), index.to_string()).unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    let got = layout.collect_garbage(later).await.unwrap();
    assert_eq!(
        got.blobs, 1,
        "the orphan goes: the file outside was never read"
    );
    assert_eq!(layout.blob_size(&orphan).await.unwrap(), None);
}
