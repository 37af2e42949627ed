//! Tests of the harness itself, against real registry processes and skopeo.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::client::basic;
use crate::image::{self, ImageBuilder, OCI_INDEX, Platform, referrers_index, referrers_tag};
use crate::wait::timed;
use crate::*;

const REPO: &str = "x/y";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A GET over a raw socket, for telling a short read (EOF) from a reset: the bytes received
/// after the headers, the announced `Content-Length`, and how reading ended.
fn raw_get(host: &str, path: &str) -> (Vec<u8>, usize, std::io::Result<()>) {
    let mut s = TcpStream::connect(host).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        match s.read(&mut chunk) {
            Ok(0) => break Ok(()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => break Err(e),
        }
    };
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response headers arrived");
    let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("content-length header");
    (buf[split + 4..].to_vec(), length, end)
}

#[test]
fn plain_registry_round_trips_a_multi_arch_index_through_skopeo() {
    let reg = TestRegistry::start();
    let index = ImageBuilder::new(1).layers(2, 4096).build_index(&[
        Platform::linux_amd64(),
        Platform::linux_arm64(),
        Platform::new("linux", "arm").with_variant("v7"),
    ]);

    let dir = temp_dir();
    let mut layout = OciLayout::create(dir.path());
    layout.add(&index, Some("v1"));
    push_layout(layout.dir(), "v1", &reg, &format!("{REPO}:v1"));

    let raw = skopeo_inspect_raw(&reg, &format!("{REPO}:v1"));
    assert_eq!(
        String::from_utf8_lossy(&raw),
        String::from_utf8_lossy(&index.manifest.bytes),
        "the registry serves the index byte for byte"
    );
    assert_eq!(skopeo_digest(&reg, &format!("{REPO}:v1")), index.digest());
    let arm = index.child(&Platform::linux_arm64()).expect("arm64 child");
    assert_eq!(
        skopeo_inspect_raw(&reg, &format!("{REPO}@{}", arm.digest())),
        arm.manifest.bytes
    );
    assert_eq!(skopeo_list_tags(&reg, REPO), vec!["v1".to_owned()]);

    let log = reg.access_log();
    assert!(
        log.iter().any(|e| e.method == "PUT"
            && e.path == format!("/v2/{REPO}/manifests/v1")
            && e.status == 201),
        "the tag PUT is in the access log: {log:#?}"
    );
    assert!(reg.storage_dir().join("docker").is_dir());
}

#[test]
fn access_log_counts_exactly_the_writes_of_a_push() {
    let reg = TestRegistry::start();
    assert_eq!(reg.writes(), 0, "the readiness probe is a GET");
    let img = image::image(2, 1, 1000);
    RawClient::for_registry(&reg).push(REPO, Some("1"), &img);
    // Two blobs (config, layer): POST + PUT each; then one manifest PUT.
    assert_eq!(reg.writes(), 5, "{:#?}", reg.access_log());
    let del = RawClient::for_registry(&reg)
        .request(
            "DELETE",
            &format!("/v2/{REPO}/manifests/{}", img.digest()),
            &[],
            &[],
        )
        .expect("delete");
    assert_eq!(del.status, 202, "delete is enabled: {}", del.text());
    assert_eq!(reg.writes(), 6);
}

#[test]
fn registry_process_is_gone_after_drop() {
    let reg = TestRegistry::start();
    let pid = reg.pid();
    let dir = reg.dir().to_owned();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(reg);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "killed and reaped, not a zombie"
    );
    assert!(!dir.exists(), "storage removed");
}

#[test]
fn htpasswd_registry_refuses_anonymous_and_accepts_the_user() {
    let reg = TestRegistry::start_with(RegistryOptions {
        auth: Auth::Htpasswd {
            user: "alice",
            pass: "wonderland",
        },
        ..Default::default()
    });
    let anon = RawClient::new(&reg.url());
    let r = anon.get("/v2/");
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|c| c.starts_with("Basic")),
        "{:?}",
        r.headers
    );
    let wrong = anon
        .send(
            "GET",
            "/v2/",
            &[("Authorization", &basic("alice", "nope"))],
            &[],
        )
        .expect("request");
    assert_eq!(wrong.status, 401);
    let ok = anon
        .send(
            "GET",
            "/v2/",
            &[("Authorization", &basic("alice", "wonderland"))],
            &[],
        )
        .expect("request");
    assert_eq!(ok.status, 200);

    // skopeo with the registry's credentials.
    let img = image::image(3, 1, 256);
    skopeo_push(&reg, "auth/img:1", &img);
    assert_eq!(skopeo_digest(&reg, "auth/img:1"), img.digest());
    let log = reg.access_log();
    assert!(
        log.iter().any(|e| e.method == "PUT"
            && e.path == "/v2/auth/img/manifests/1"
            && e.status == 201
            && e.user_agent.contains("skopeo")),
        "{log:#?}"
    );
}

#[test]
fn token_registry_accepts_scoped_bearer_tokens_only_for_their_repository() {
    let issuer = TokenIssuer::start();
    let reg = TestRegistry::start_with(RegistryOptions {
        auth: Auth::Token { issuer: &issuer },
        ..Default::default()
    });
    let (user, pass) = issuer.user().expect("default user");
    let http = RawClient::new(&reg.url());

    let challenge = http.get("/v2/");
    assert_eq!(challenge.status, 401);
    let c = challenge.header("www-authenticate").expect("challenge");
    assert!(c.starts_with("Bearer "), "{c}");
    assert!(c.contains(&issuer.realm()), "{c}");

    // A token for x/y (GET with Basic, as docker and skopeo ask).
    let scope = format!("repository:{REPO}:pull,push");
    let url = format!(
        "{}?service={}&scope={}",
        issuer.realm(),
        issuer.service(),
        scope
    );
    let resp = http
        .send("GET", &url, &[("Authorization", &basic(user, pass))], &[])
        .expect("token request");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let json: serde_json::Value = serde_json::from_slice(&resp.body).expect("token JSON");
    assert_eq!(json["expires_in"], 300);
    assert!(json["issued_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    let token = json["token"].as_str().expect("token").to_owned();
    assert_eq!(json["access_token"], json["token"]);
    assert!(issuer.fetched_scope(&scope));
    let bearer = bearer(&token);

    // Upload a blob with it: POST, then PUT to the Location, then GET it back.
    let data = b"hello through a token".to_vec();
    let digest = image::sha256_digest(&data);
    let start = http
        .send(
            "POST",
            &format!("/v2/{REPO}/blobs/uploads/"),
            &[("Authorization", &bearer)],
            &[],
        )
        .expect("post");
    assert_eq!(start.status, 202, "{}", start.text());
    let location = start.header("location").expect("location").to_owned();
    let put = http
        .send(
            "PUT",
            &format!("{location}&digest={digest}"),
            &[("Authorization", &bearer)],
            &data,
        )
        .expect("put");
    assert_eq!(put.status, 201, "{}", put.text());
    let get = http
        .send(
            "GET",
            &format!("/v2/{REPO}/blobs/{digest}"),
            &[("Authorization", &bearer)],
            &[],
        )
        .expect("get");
    assert_eq!((get.status, get.body), (200, data));

    // The same token does not open another repository.
    let other = http
        .send(
            "POST",
            "/v2/a/b/blobs/uploads/",
            &[("Authorization", &bearer)],
            &[],
        )
        .expect("post");
    assert_eq!(other.status, 401, "{}", other.text());
    assert!(other.text().contains("insufficient_scope") || other.text().contains("UNAUTHORIZED"));

    // Neither does a token of another issuer's key, even with the right claims shape.
    let foreign = TokenIssuer::start().mint(user, &[&scope]);
    let refused = http
        .send(
            "GET",
            &format!("/v2/{REPO}/blobs/{digest}"),
            &[("Authorization", &format!("Bearer {foreign}"))],
            &[],
        )
        .expect("get");
    assert_eq!(refused.status, 401);

    // Wrong password and anonymous are refused by the issuer.
    let bad = http
        .send("GET", &url, &[("Authorization", &basic(user, "nope"))], &[])
        .expect("token request");
    assert_eq!(bad.status, 401);
    assert_eq!(http.send("GET", &url, &[], &[]).expect("req").status, 401);

    // OAuth2 password grant gives a refresh token; the refresh grant gives a working token.
    let form = |pairs: &[(&str, &str)]| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            s.append_pair(k, v);
        }
        s.finish()
    };
    let ctype = [("Content-Type", "application/x-www-form-urlencoded")];
    let pw = http
        .send(
            "POST",
            &issuer.realm(),
            &ctype,
            form(&[
                ("grant_type", "password"),
                ("username", user),
                ("password", pass),
                ("service", issuer.service()),
                ("scope", &format!("repository:{REPO}:pull")),
                ("client_id", "regferry-testkit"),
            ])
            .as_bytes(),
        )
        .expect("password grant");
    assert_eq!(pw.status, 200, "{}", pw.text());
    let pw: serde_json::Value = serde_json::from_slice(&pw.body).expect("json");
    let refresh = pw["refresh_token"].as_str().expect("refresh_token");
    let rt = http
        .send(
            "POST",
            &issuer.realm(),
            &ctype,
            form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("service", issuer.service()),
                ("scope", &format!("repository:{REPO}:pull")),
            ])
            .as_bytes(),
        )
        .expect("refresh grant");
    assert_eq!(rt.status, 200, "{}", rt.text());
    let rt: serde_json::Value = serde_json::from_slice(&rt.body).expect("json");
    let refreshed = rt["access_token"].as_str().expect("access_token");
    let get = http
        .send(
            "HEAD",
            &format!("/v2/{REPO}/blobs/{digest}"),
            &[("Authorization", &format!("Bearer {refreshed}"))],
            &[],
        )
        .expect("head");
    assert_eq!(get.status, 200);
    let requests = issuer.requests();
    assert!(requests.iter().any(|r| r.method == "POST"
        && r.grant_type.as_deref() == Some("refresh_token")
        && r.user.as_deref() == Some(user)
        && r.status == 200));

    // skopeo follows the challenge with the registry's credentials.
    let img = image::image(4, 1, 128);
    skopeo_push(&reg, "tok/img:1", &img);
    assert_eq!(skopeo_digest(&reg, "tok/img:1"), img.digest());
    assert!(issuer.fetched_scope("repository:tok/img:pull,push"));
}

#[test]
fn pull_only_and_anonymous_users_cannot_push() {
    let issuer = TokenIssuer::start_with(TokenOptions {
        users: vec![
            TokenUser::new("writer", "w"),
            TokenUser::new("reader", "r").pull_only(),
        ],
        anonymous_pull: true,
        ..Default::default()
    });
    let reg = TestRegistry::start_with(RegistryOptions {
        auth: Auth::Token { issuer: &issuer },
        ..Default::default()
    });
    let writer = RawClient::for_registry(&reg);
    let img = image::image(5, 1, 64);
    writer.push(REPO, Some("1"), &img);

    let reader = RawClient::new(&reg.url()).with_credentials("reader", "r");
    assert_eq!(reader.get_manifest(REPO, "1").body, img.manifest.bytes);
    let denied = reader
        .request("POST", &format!("/v2/{REPO}/blobs/uploads/"), &[], &[])
        .expect("post");
    assert_eq!(denied.status, 401);

    let anon = RawClient::new(&reg.url());
    assert_eq!(anon.get_manifest(REPO, "1").status, 200);
    let denied = anon
        .request("POST", &format!("/v2/{REPO}/blobs/uploads/"), &[], &[])
        .expect("post");
    assert_eq!(denied.status, 401);
    assert!(
        issuer
            .requests()
            .iter()
            .any(|r| r.user.is_none() && r.status == 200)
    );
}

#[test]
fn artifacts_with_a_subject_and_the_referrers_fallback_tag_can_be_pushed() {
    let reg = TestRegistry::start();
    let client = RawClient::for_registry(&reg);
    let img = image::image(6, 1, 256);
    client.push(REPO, Some("app"), &img);
    let sbom = image::sbom(&img.descriptor(), 1);
    let sbom_digest = client.push(REPO, None, &sbom);
    let tag = referrers_tag(&img.digest());
    client.push_manifest(REPO, &tag, &referrers_index(&[&sbom]));

    assert_eq!(
        skopeo_inspect_raw(&reg, &format!("{REPO}@{sbom_digest}")),
        sbom.manifest.bytes,
        "distribution 2.8 keeps subject and artifactType as pushed"
    );
    let fallback = client.get_manifest(REPO, &tag);
    assert_eq!(fallback.status, 200);
    assert_eq!(fallback.header("content-type"), Some(OCI_INDEX));
    let listed: serde_json::Value = serde_json::from_slice(&fallback.body).expect("json");
    assert_eq!(listed["manifests"][0]["digest"], sbom_digest.as_str());
    assert_eq!(
        client
            .get(&format!("/v2/{REPO}/referrers/{}", img.digest()))
            .status,
        404,
        "2.8 has no referrers API: clients must use the fallback tag"
    );
}

#[test]
fn referrers_api_emulation_confirms_subjects_and_pages_listings() {
    let reg = TestRegistry::start();
    let api = ReferrersApi::start(&reg);
    let through = RawClient::new(&api.url());
    let img = image::image(7, 1, 256);
    through.push(REPO, Some("app"), &img);
    let sboms: Vec<_> = (1..=3).map(|i| image::sbom(&img.descriptor(), i)).collect();
    let vex = image::artifact(
        &img.descriptor(),
        "application/vnd.openvex+json",
        b"{}",
        &[],
    );
    for s in &sboms {
        through.push_blob(REPO, &s.layers[0].data);
        through.push_blob(REPO, &s.config.data);
        let put = through
            .request(
                "PUT",
                &format!("/v2/{REPO}/manifests/{}", s.digest()),
                &[("Content-Type", image::OCI_MANIFEST)],
                &s.manifest.bytes,
            )
            .expect("PUT");
        assert_eq!(put.status, 201, "{}", put.text());
        assert_eq!(put.header("oci-subject"), Some(img.digest().as_str()));
    }
    through.push(REPO, None, &vex);
    // A manifest without a subject gets no OCI-Subject.
    let plain = image::image(8, 1, 64);
    through.push_blob(REPO, &plain.layers[0].data);
    through.push_blob(REPO, &plain.config.data);
    let put = through
        .request(
            "PUT",
            &format!("/v2/{REPO}/manifests/plain"),
            &[("Content-Type", image::OCI_MANIFEST)],
            &plain.manifest.bytes,
        )
        .expect("PUT");
    assert_eq!((put.status, put.header("oci-subject")), (201, None));

    api.set_page_size(2);
    let mut path = format!("/v2/{REPO}/referrers/{}", img.digest());
    let mut listed = Vec::new();
    let mut pages = 0;
    loop {
        let page = through.get(&path);
        pages += 1;
        assert_eq!(page.status, 200);
        assert_eq!(page.header("content-type"), Some(OCI_INDEX));
        let v: serde_json::Value = serde_json::from_slice(&page.body).expect("json");
        for m in v["manifests"].as_array().expect("manifests") {
            listed.push(m["digest"].as_str().expect("digest").to_owned());
            assert!(m["artifactType"].is_string(), "{m}");
        }
        let Some(link) = page.header("link") else {
            break;
        };
        path = link
            .trim_start_matches('<')
            .split('>')
            .next()
            .expect("link target")
            .to_owned();
    }
    let mut expected: Vec<String> = sboms.iter().map(image::Image::digest).collect();
    expected.push(vex.digest());
    assert_eq!((listed, pages), (expected, 2));

    let filtered = through.get(&format!(
        "/v2/{REPO}/referrers/{}?artifactType=application%2Fvnd.openvex%2Bjson",
        img.digest()
    ));
    assert_eq!(filtered.header("oci-filters-applied"), Some("artifactType"));
    let v: serde_json::Value = serde_json::from_slice(&filtered.body).expect("json");
    assert_eq!(v["manifests"][0]["digest"], vex.digest().as_str());
    assert_eq!(v["manifests"].as_array().map(Vec::len), Some(1));
    // An unknown subject lists nothing (not 404: the API exists).
    let none = through.get(&format!("/v2/{REPO}/referrers/{}", plain.digest()));
    let v: serde_json::Value = serde_json::from_slice(&none.body).expect("json");
    assert_eq!(
        (none.status, v),
        (
            200,
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
        )
    );
    // The registry behind it still has no API, and no fallback tag was written by anyone.
    let direct = RawClient::for_registry(&reg);
    assert_eq!(
        direct
            .get(&format!("/v2/{REPO}/referrers/{}", img.digest()))
            .status,
        404
    );
    assert_eq!(skopeo_list_tags(&reg, REPO), vec!["app", "plain"]);
}

#[test]
fn docker_media_types_push_and_read_back() {
    let reg = TestRegistry::start();
    let list = ImageBuilder::new(8).docker().build_multi_arch();
    RawClient::for_registry(&reg).push(REPO, Some("d"), &list);
    assert_eq!(
        skopeo_inspect_raw(&reg, &format!("{REPO}:d")),
        list.manifest.bytes
    );
}

#[test]
fn proxy_forwards_byte_exact_and_rewrites_upload_locations() {
    let reg = TestRegistry::start();
    let proxy = FaultProxy::start(&reg);
    let via = RawClient::new(&proxy.url());

    // A push through the proxy: uploads follow the rewritten Location (8 MiB streams through).
    let img = ImageBuilder::new(9).layers(1, 8 << 20).build();
    via.push(REPO, Some("1"), &img);
    let post = proxy
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .expect("upload started through the proxy");
    assert_eq!(post.status, 202);
    assert_eq!(
        proxy.count("PUT", "/blobs/uploads/"),
        2,
        "both blob PUTs went to the proxy: {:#?}",
        proxy.requests()
    );
    let start = via
        .send("POST", &format!("/v2/{REPO}/blobs/uploads/"), &[], &[])
        .expect("post");
    let loc = start.header("location").expect("location");
    assert!(loc.starts_with(&proxy.url()), "{loc}");

    let m = via.get_manifest(REPO, "1");
    assert_eq!(m.status, 200);
    assert_eq!(m.body, img.manifest.bytes);
    assert_eq!(
        m.header("docker-content-digest"),
        Some(img.digest().as_str())
    );
    let blob = via.get(&format!("/v2/{REPO}/blobs/{}", img.layers[0].digest()));
    assert!(blob.body == img.layers[0].data, "8 MiB blob intact");
}

#[test]
fn proxy_status_rule_fires_n_times_then_stops() {
    let reg = TestRegistry::start();
    let proxy = FaultProxy::start(&reg);
    proxy.add_rule(
        Rule::new(
            "GET",
            "/manifests/",
            Action::respond(429, &[("Retry-After", "1")]),
        )
        .times(2),
    );
    let img = image::image(10, 1, 64);
    RawClient::for_registry(&reg).push(REPO, Some("1"), &img);
    let via = RawClient::new(&proxy.url());
    for _ in 0..2 {
        let r = via.get_manifest(REPO, "1");
        assert_eq!(r.status, 429);
        assert_eq!(r.header("retry-after"), Some("1"));
        assert!(r.text().contains("TOOMANYREQUESTS"));
    }
    assert_eq!(via.get_manifest(REPO, "1").status, 200);
    assert_eq!(proxy.count("GET", "/manifests/1"), 3);
    let faults: Vec<_> = proxy.requests().iter().map(|r| r.fault).collect();
    assert_eq!(
        faults,
        vec![Some(FaultKind::Respond), Some(FaultKind::Respond), None]
    );
    // Not the upstream: the registry saw only the last GET.
    let upstream_gets = reg
        .access_log()
        .iter()
        .filter(|e| e.method == "GET" && e.path.contains("/manifests/1"))
        .count();
    assert_eq!(upstream_gets, 1);
}

#[test]
fn proxy_truncate_reset_corrupt_and_delay_reach_the_client() {
    let reg = TestRegistry::start();
    let proxy = FaultProxy::start(&reg);
    let img = image::image(11, 1, 200_000);
    RawClient::for_registry(&reg).push(REPO, Some("1"), &img);
    let layer = &img.layers[0];
    let path = format!("/v2/{REPO}/blobs/{}", layer.digest());

    // Truncate: Content-Length kept, the connection closes early (EOF) after 1000 bytes.
    proxy.add_rule(Rule::new("GET", &path, Action::TruncateAfter(1000)).times(1));
    let (body, length, end) = raw_get(&proxy.host(), &path);
    assert_eq!(length, 200_000);
    assert_eq!(body.len(), 1000, "exactly the bytes before the cut");
    assert!(end.is_ok(), "an orderly close, not a reset: {end:?}");
    assert_eq!(body[..], layer.data[..1000]);

    // The same as an ordinary client sees it: an error, not a short success.
    proxy.add_rule(Rule::new("GET", &path, Action::TruncateAfter(1000)).times(1));
    let err = RawClient::new(&proxy.url()).send("GET", &path, &[], &[]);
    assert!(err.is_err(), "a short read is an error: {err:?}");

    // Reset: the client's read fails with ECONNRESET.
    proxy.add_rule(Rule::new("GET", &path, Action::ResetAfter(1000)).times(1));
    let (body, _, end) = raw_get(&proxy.host(), &path);
    assert!(body.len() <= 1000);
    let err = end.expect_err("reset");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");

    // Corrupt: same length, exactly one byte differs.
    proxy.add_rule(Rule::new("GET", &path, Action::CorruptAt(4242)).times(1));
    let r = RawClient::new(&proxy.url()).get(&path);
    assert_eq!(r.body.len(), layer.data.len());
    let diffs: Vec<usize> = (0..r.body.len())
        .filter(|i| r.body[*i] != layer.data[*i])
        .collect();
    assert_eq!(diffs, vec![4242]);

    // Delay, then the real answer.
    proxy.add_rule(
        Rule::regex(
            "HEAD",
            r"/blobs/sha256:[0-9a-f]{64}$",
            Action::Delay(Duration::from_millis(300)),
        )
        .times(1),
    );
    let (r, took) = timed(|| RawClient::new(&proxy.url()).request("HEAD", &path, &[], &[]));
    assert_eq!(r.expect("head").status, 200);
    assert!(took >= Duration::from_millis(300), "{took:?}");

    // Rules used up: a clean pass.
    let r = RawClient::new(&proxy.url()).get(&path);
    assert!(r.body == layer.data);
    let faults: Vec<_> = proxy.requests().iter().filter_map(|r| r.fault).collect();
    assert_eq!(
        faults,
        vec![
            FaultKind::Truncate,
            FaultKind::Truncate,
            FaultKind::Reset,
            FaultKind::Corrupt,
            FaultKind::Delay
        ]
    );
    proxy.add_rule(Rule::new("*", "", Action::respond(503, &[])));
    assert_eq!(RawClient::new(&proxy.url()).get("/v2/").status, 503);
    proxy.clear_rules();
    assert_eq!(RawClient::new(&proxy.url()).get("/v2/").status, 200);
}

#[test]
fn token_fetches_can_be_faulted_through_a_proxy_realm() {
    let issuer = TokenIssuer::start();
    let proxy = FaultProxy::start_for(&issuer.host());
    let realm = format!("{}/token", proxy.url());
    let reg = TestRegistry::start_with(RegistryOptions {
        auth: Auth::Token { issuer: &issuer },
        token_realm: Some(&realm),
        ..Default::default()
    });
    let client = RawClient::for_registry(&reg);
    proxy.add_rule(Rule::new("GET", "/token", Action::respond(503, &[])).times(1));
    assert_eq!(
        client.get("/v2/").status,
        401,
        "no token while the issuer is unavailable"
    );
    assert_eq!(client.get("/v2/").status, 200);
    assert_eq!(proxy.count("GET", "/token?"), 2);
    assert_eq!(
        issuer.requests().len(),
        1,
        "the first fetch never reached it"
    );
}

#[tokio::test]
async fn works_from_a_tokio_test_and_drops_cleanly_there() {
    let issuer = TokenIssuer::start();
    let reg = TestRegistry::start_with(RegistryOptions {
        auth: Auth::Token { issuer: &issuer },
        ..Default::default()
    });
    let proxy = FaultProxy::start(&reg);
    // Blocking helpers on the test's own thread: fine while nothing under test needs this
    // runtime meanwhile (otherwise use spawn_blocking or the multi-thread flavour).
    let r = RawClient::new(&proxy.url())
        .with_credentials("regferry", "regferry-secret")
        .get("/v2/");
    assert_eq!(r.status, 200);
    drop(proxy);
    drop(reg);
    drop(issuer);
}

/// `curl … https://NAME:PORT/v2/` with `NAME` pinned to 127.0.0.1 (so `localhost` checks the
/// DNS name without leaving loopback): the HTTP status, or curl's error.
fn curl_v2(reg: &TestRegistry, name: &str, extra: &[&str]) -> Result<u16, String> {
    let port = reg.port();
    let out = std::process::Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--noproxy",
            "*",
            "--max-time",
            "5",
        ])
        .args(["--output", "/dev/null", "--write-out", "%{http_code}"])
        .arg("--resolve")
        .arg(format!("{name}:{port}:127.0.0.1"))
        .args(extra)
        .arg(format!("https://{name}:{port}/v2/"))
        .output()
        .expect("run curl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("status"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn https_registry_is_trusted_through_its_own_ca_only_and_skopeo_round_trips() {
    let reg = TestRegistry::start_with(RegistryOptions {
        tls: Tls::Https,
        ..Default::default()
    });
    assert_eq!(reg.url(), format!("https://{}", reg.host()));
    let tls = reg.tls().expect("tls material");
    assert!(tls.client().is_none() && tls.client_ca().is_none());
    let ca = tls.ca_path().to_str().unwrap();
    for name in ["127.0.0.1", "localhost"] {
        assert_eq!(curl_v2(&reg, name, &["--cacert", ca]), Ok(200), "{name}");
    }
    // Another CA, or the system's roots only: the certificate is not trusted.
    let other = temp_dir();
    let other_ca = other.path().join("other.crt");
    std::fs::write(&other_ca, TestCa::new("other").cert_pem()).unwrap();
    let refused = curl_v2(&reg, "127.0.0.1", &["--cacert", other_ca.to_str().unwrap()]);
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("certificate")),
        "{refused:?}"
    );
    assert!(curl_v2(&reg, "127.0.0.1", &[]).is_err());
    // A name the certificate does not have.
    let wrong = curl_v2(&reg, "registry.test", &["--cacert", ca]);
    assert!(wrong.is_err(), "{wrong:?}");

    let img = image::image(50, 2, 3000);
    skopeo_push(&reg, "x/tls:1", &img);
    assert_eq!(skopeo_digest(&reg, "x/tls:1"), img.digest());
    assert_eq!(skopeo_list_tags(&reg, "x/tls"), vec!["1"]);
    assert!(
        reg.writes() > 0,
        "pushed over HTTPS: {:?}",
        reg.access_log()
    );
}

#[test]
fn mutual_tls_registry_requires_a_client_certificate_from_its_client_ca() {
    let reg = TestRegistry::start_with(RegistryOptions {
        tls: Tls::Mutual,
        ..Default::default()
    });
    let tls = reg.tls().expect("tls material");
    let ca = tls.ca_path().to_str().unwrap();
    let (cert, key) = tls.client_paths().expect("client certificate");
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    assert_eq!(
        curl_v2(
            &reg,
            "127.0.0.1",
            &["--cacert", ca, "--cert", cert, "--key", key]
        ),
        Ok(200)
    );
    assert!(curl_v2(&reg, "127.0.0.1", &["--cacert", ca]).is_err());
    // A client certificate from a CA the registry does not trust.
    let stranger = TestCa::new("stranger").issue_client("stranger");
    let dir = temp_dir();
    let (scert, skey) = (dir.path().join("s.cert"), dir.path().join("s.key"));
    std::fs::write(&scert, &stranger.cert_pem).unwrap();
    std::fs::write(&skey, &stranger.key_pem).unwrap();
    let refused = curl_v2(
        &reg,
        "127.0.0.1",
        &[
            "--cacert",
            ca,
            "--cert",
            scert.to_str().unwrap(),
            "--key",
            skey.to_str().unwrap(),
        ],
    );
    assert!(refused.is_err(), "{refused:?}");
    // Another certificate from the registry's client CA is accepted.
    let more = tls.client_ca().unwrap().issue_client("another");
    std::fs::write(&scert, &more.cert_pem).unwrap();
    std::fs::write(&skey, &more.key_pem).unwrap();
    assert_eq!(
        curl_v2(
            &reg,
            "127.0.0.1",
            &[
                "--cacert",
                ca,
                "--cert",
                scert.to_str().unwrap(),
                "--key",
                skey.to_str().unwrap()
            ]
        ),
        Ok(200)
    );

    // skopeo gets the client certificate through --cert-dir.
    let img = image::image(51, 1, 1000);
    skopeo_push(&reg, "x/mtls:1", &img);
    assert_eq!(skopeo_digest(&reg, "x/mtls:1"), img.digest());
    let log = reg.access_log();
    assert!(
        log.iter()
            .any(|e| e.method == "PUT" && e.user_agent.contains("skopeo")),
        "{log:?}"
    );
}

#[test]
#[should_panic(expected = "plain HTTP only")]
fn raw_client_refuses_https_registries_clearly() {
    let reg = TestRegistry::start_with(RegistryOptions {
        tls: Tls::Https,
        ..Default::default()
    });
    let _ = RawClient::for_registry(&reg);
}
