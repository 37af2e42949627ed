//! `regferry once` against HTTPS registries (Debian's distribution with a throwaway CA, and
//! with client certificates required), verified with skopeo. The per-registry TLS settings
//! under test are `tls`, `regcert`, `clientCert` and `clientKey` (docs/configuration.md).
use regferry_testkit::cli::{ConfigFile, RunOutput, run_regferry, yaml_block};
use regferry_testkit::image::{self, Index};
use regferry_testkit::{
    Action, Auth, FaultProxy, HostileServer, RawClient, RegistryOptions, Reply, Rule, TestCa,
    TestRegistry, Tls, TlsMaterial, TokenIssuer, assert_same_manifests, skopeo_digest,
};

const BIN: &str = env!("CARGO_BIN_EXE_regferry");

fn once(c: &ConfigFile) -> RunOutput {
    run_regferry(BIN, &["once"], c)
}

fn start(tls: Tls) -> TestRegistry {
    TestRegistry::start_with(RegistryOptions {
        tls,
        ..RegistryOptions::default()
    })
}

/// A plain source registry holding `app:1`, a two-platform index.
fn source() -> (TestRegistry, Index) {
    let src = TestRegistry::start();
    let idx = image::multi_arch(200, 1, 3000);
    RawClient::for_registry(&src).push("app", Some("1"), &idx);
    (src, idx)
}

/// A config copying `src/app:1` to `dst/<dst_repo>:1`; `dst_creds` are the target's `creds`
/// lines after `registry:` (indented by four spaces).
fn config(src: &TestRegistry, dst: &TestRegistry, dst_creds: &str, dst_repo: &str) -> ConfigFile {
    ConfigFile::new(&format!(
        "defaults:\n  skipDockerConfig: true\n  parallel: 2\ncreds:\n  - registry: {s}\n    tls: disabled\n  - registry: {d}\n{dst_creds}sync:\n  - source: {s}/app:1\n    target: {d}/{dst_repo}:1\n    type: image\n",
        s = src.host(),
        d = dst.host(),
    ))
}

/// A config copying `<src_host>/app:1` to a plain `dst`, the source with `tls: <src_tls>`,
/// and `tls`'s CA as its `regcert` and a client certificate of `tls`'s client CA.
fn source_config(
    src_host: &str,
    src_tls: &str,
    tls: &TlsMaterial,
    dst: &TestRegistry,
) -> ConfigFile {
    let client = tls.client().unwrap();
    ConfigFile::new(&format!(
        "defaults:\n  skipDockerConfig: true\ncreds:\n  - registry: {src_host}\n    tls: {src_tls}\n{}{}{}  - registry: {d}\n    tls: disabled\nsync:\n  - source: {src_host}/app:1\n    target: {d}/app:1\n    type: image\n",
        pem_line("regcert", tls.ca_pem()),
        pem_line("clientCert", &client.cert_pem),
        pem_line("clientKey", &client.key_pem),
        d = dst.host(),
    ))
}

/// The run failed because `reg` ended every handshake for want of a client certificate:
/// the output names `reg`, no request of regferry's got through, and `reg`'s log says why.
fn refused_for_want_of_a_certificate(o: &RunOutput, reg: &TestRegistry) {
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.all().contains(&reg.host()), "{}", o.all());
    assert_eq!(
        regferry_requests(reg),
        vec![],
        "no request got past the handshake"
    );
    let log = reg.registry_log();
    assert!(log.contains("client didn't provide a certificate"), "{log}");
}

/// `    key: |` followed by the PEM, as a creds line.
fn pem_line(key: &str, pem: &str) -> String {
    format!("    {key}: {}", yaml_block(pem, 6))
}

/// Requests regferry sent to `reg` (its user agent starts with `regferry/`).
fn regferry_requests(reg: &TestRegistry) -> Vec<regferry_testkit::AccessLogEntry> {
    reg.access_log()
        .into_iter()
        .filter(|e| e.user_agent.starts_with("regferry"))
        .collect()
}

#[test]
fn regcert_trusts_a_private_ca_as_a_block_scalar_and_through_a_file_template() {
    let (src, idx) = source();
    let dst = start(Tls::Https);
    let ca = dst.tls().unwrap().ca_pem();

    let inline = format!("    tls: enabled\n{}", pem_line("regcert", ca));
    let c = config(&src, &dst, &inline, "inline/app");
    let o = once(&c);
    assert_eq!(o.code, 0, "{}", o.all());
    assert_same_manifests(&src, &dst, "app:1", "inline/app:1");
    assert!(
        regferry_requests(&dst).iter().any(|e| e.is_write()),
        "regferry wrote over HTTPS: {:?}",
        dst.access_log()
    );
    let o = run_regferry(BIN, &["check"], &c);
    assert_eq!(o.code, 0, "in sync over HTTPS\n{}", o.all());

    // The same CA through `{{ file "…" }}`, as a mounted secret would be.
    let holder = regferry_testkit::temp_dir();
    let ca_file = holder.path().join("registry-ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let templated = format!(
        "    tls: enabled\n    regcert: '{{{{ file \"{}\" }}}}'\n",
        ca_file.display()
    );
    let c = config(&src, &dst, &templated, "file/app");
    let o = once(&c);
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(skopeo_digest(&dst, "file/app:1"), idx.digest());
}

#[test]
fn without_regcert_an_unknown_ca_fails_the_run_and_nothing_is_written() {
    let (src, _) = source();
    let dst = start(Tls::Https);
    let c = config(&src, &dst, "    tls: enabled\n", "app");
    let o = once(&c);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(
        o.all().to_lowercase().contains("certificate"),
        "the error names the certificate problem:\n{}",
        o.all()
    );
    assert!(!o.all().contains("panicked"), "{}", o.all());
    assert_eq!(dst.writes(), 0, "{:?}", dst.access_log());
    assert_eq!(
        regferry_requests(&dst),
        vec![],
        "no request got past the handshake"
    );
    // regferry did connect, and refused the certificate (Go logs the client's alert).
    let log = dst.registry_log();
    assert!(log.contains("TLS handshake error"), "{log}");
}

#[test]
fn insecure_copies_without_verifying_the_certificate() {
    let (src, _) = source();
    let dst = start(Tls::Https);
    let c = config(&src, &dst, "    tls: insecure\n", "app");
    let o = once(&c);
    assert_eq!(o.code, 0, "{}", o.all());
    assert_same_manifests(&src, &dst, "app:1", "app:1");
}

#[test]
fn mutual_tls_target_needs_the_client_certificate() {
    let (src, _) = source();
    let dst = start(Tls::Mutual);
    let tls = dst.tls().unwrap();
    let client = tls.client().unwrap();
    let server_only = format!("    tls: enabled\n{}", pem_line("regcert", tls.ca_pem()));

    // Without a client certificate the registry ends every handshake. In TLS 1.3 it does so
    // after the client has finished its side, so what regferry reports varies between the
    // registry's alert and a closed connection; the registry's log says why, every time.
    let c = config(&src, &dst, &server_only, "app");
    let o = once(&c);
    refused_for_want_of_a_certificate(&o, &dst);
    assert_eq!(dst.writes(), 0, "{:?}", dst.access_log());

    // With the registry's client certificate and key, the copy goes through.
    let c = config(
        &src,
        &dst,
        &format!(
            "{server_only}{}{}",
            pem_line("clientCert", &client.cert_pem),
            pem_line("clientKey", &client.key_pem)
        ),
        "app",
    );
    let o = once(&c);
    assert_eq!(o.code, 0, "{}", o.all());
    assert_same_manifests(&src, &dst, "app:1", "app:1");
    assert!(
        !o.all().contains("PRIVATE KEY"),
        "the key is never printed:\n{}",
        o.all()
    );
}

/// Blob bodies go over connections of their own (a client apart from the one for HEADs and
/// manifests, so that few connections grow hyper's large read buffers): that client presents
/// the certificate too.
#[test]
fn a_mutual_tls_source_gets_the_client_certificate_on_blob_reads_too() {
    let src = start(Tls::Mutual);
    let dst = TestRegistry::start();
    let img = image::multi_arch(201, 2, 3000);
    regferry_testkit::skopeo_push(&src, "app:1", &img);
    let tls = src.tls().unwrap();
    let c = source_config(&src.host(), "enabled", tls, &dst);
    let o = once(&c);
    assert_eq!(o.code, 0, "{}", o.all());
    assert_same_manifests(&src, &dst, "app:1", "app:1");
    let blob_reads = regferry_requests(&src)
        .into_iter()
        .filter(|e| e.method == "GET" && e.path.contains("/blobs/") && e.status == 200)
        .count();
    // Two platforms of two layers and a config each.
    assert_eq!(blob_reads, 6, "{:?}", src.access_log());
    assert!(
        !src.registry_log()
            .contains("client didn't provide a certificate"),
        "{}",
        src.registry_log()
    );
}

#[test]
fn mutual_tls_refuses_a_client_certificate_from_another_ca() {
    let (src, _) = source();
    let dst = start(Tls::Mutual);
    let server_only = format!(
        "    tls: enabled\n{}",
        pem_line("regcert", dst.tls().unwrap().ca_pem())
    );
    let stranger = TestCa::new("stranger").issue_client("stranger");
    let c = config(
        &src,
        &dst,
        &format!(
            "{server_only}{}{}",
            pem_line("clientCert", &stranger.cert_pem),
            pem_line("clientKey", &stranger.key_pem)
        ),
        "app",
    );
    let o = once(&c);
    assert_eq!(o.code, 1, "{}", o.all());
    assert_eq!(dst.writes(), 0, "{:?}", dst.access_log());
    assert_eq!(regferry_requests(&dst), vec![]);
    // regferry presented the certificate; the registry could not verify it.
    let log = dst.registry_log();
    assert!(
        log.contains("certificate signed by unknown authority"),
        "{log}"
    );
}

#[test]
fn a_bad_client_key_is_refused_naming_tls_and_the_registry() {
    let (src, _) = source();
    let dst = start(Tls::Mutual);
    let tls = dst.tls().unwrap();
    let client = tls.client().unwrap();
    let other_key = TestCa::new("other").issue_client("other").key_pem;
    let bad_keys = [
        ("not PEM at all", "this is not a key".to_owned()),
        (
            "PEM armour around garbage",
            "-----BEGIN PRIVATE KEY-----\nAAECAwQFBgcICQ==\n-----END PRIVATE KEY-----\n".to_owned(),
        ),
        ("the certificate again", client.cert_pem.clone()),
        ("another certificate's key", other_key),
    ];
    for (what, key) in bad_keys {
        let c = config(
            &src,
            &dst,
            &format!(
                "    tls: enabled\n{}{}{}",
                pem_line("regcert", tls.ca_pem()),
                pem_line("clientCert", &client.cert_pem),
                pem_line("clientKey", &key)
            ),
            "app",
        );
        let o = once(&c);
        let all = o.all();
        assert!(matches!(o.code, 1 | 2), "{what}: exit {}\n{all}", o.code);
        assert!(!all.contains("panicked"), "{what}: {all}");
        assert!(
            !all.contains("PRIVATE KEY"),
            "{what}: the key is masked: {all}"
        );
        // `TLS settings for HOST: <why>`, where the why says more than reqwest's bare
        // "builder error".
        let prefix = format!("TLS settings for {}: ", dst.host());
        let why = all
            .lines()
            .find_map(|l| l.split_once(&prefix).map(|(_, why)| why.to_owned()))
            .unwrap_or_else(|| panic!("{what}: the error names TLS and the registry:\n{all}"));
        assert!(
            why.to_lowercase().contains("key") && why.trim() != "builder error",
            "{what}: the reason is given: {why:?}"
        );
        assert_eq!(regferry_requests(&dst), vec![], "{what}: nothing was sent");
    }
}

/// An HTTPS registry that names a token realm over plain HTTP: the login is never sent
/// there (it would cross the network in clear), and the run fails saying why.
#[test]
fn credentials_never_go_to_a_plain_http_token_realm_under_an_https_registry() {
    let (src, _) = source();
    let issuer = TokenIssuer::for_user("bob", "s3cret-bob");
    let realm = HostileServer::start(|_, _| Reply::json(&serde_json::json!({"token": "t"})));
    let realm_url = format!("{}/token", realm.url());
    let dst = TestRegistry::start_with(RegistryOptions {
        tls: Tls::Https,
        auth: Auth::Token { issuer: &issuer },
        token_realm: Some(&realm_url),
        ..RegistryOptions::default()
    });
    let creds = format!(
        "    tls: enabled\n    user: bob\n    pass: s3cret-bob\n{}",
        pem_line("regcert", dst.tls().unwrap().ca_pem())
    );
    let o = once(&config(&src, &dst, &creds, "app"));
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(
        realm.received().is_empty(),
        "the plain-HTTP realm was asked: {:?}",
        realm.received()
    );
    assert!(o.all().contains("not https"), "{}", o.all());
    assert!(!o.all().contains("s3cret-bob"));
}

/// Blob bodies behind a redirect go over connections of their own too (see
/// `a_mutual_tls_source_gets_the_client_certificate_on_blob_reads_too`): those present no
/// certificate either. The storage host here would accept the source's certificate, so a
/// certificate presented would show as a request it logged.
#[test]
fn a_blob_redirect_to_another_https_host_gets_no_client_certificate() {
    let (src, idx) = source();
    let storage = start(Tls::Mutual);
    let storage_tls = storage.tls().unwrap();
    let proxy = FaultProxy::start(&src);
    let layer = idx.children[0].layers[0].digest();
    proxy.add_rule(Rule::new(
        "GET",
        &format!("/blobs/{layer}"),
        Action::Respond {
            status: 307,
            headers: vec![(
                "Location".into(),
                format!("https://{}/v2/app/blobs/{layer}", storage.host()),
            )],
            body: Vec::new(),
        },
    ));
    let dst = TestRegistry::start();
    let c = source_config(&proxy.host(), "disabled", storage_tls, &dst);
    refused_for_want_of_a_certificate(&once(&c), &storage);
}

/// The client certificate is for the registry's own origin. Another HTTPS host the registry
/// names (here its token realm; object storage behind a redirect is the same) is asked with
/// no certificate: a second registry that requests one logs that none came, where a
/// presented certificate from another CA would be logged as refused.
#[test]
fn the_client_certificate_is_never_presented_to_another_host() {
    let (src, _) = source();
    let issuer = TokenIssuer::for_user("bob", "s3cret-bob");
    let other = start(Tls::Mutual);
    let realm = format!("https://{}/token", other.host());
    let dst = TestRegistry::start_with(RegistryOptions {
        tls: Tls::Mutual,
        auth: Auth::Token { issuer: &issuer },
        token_realm: Some(&realm),
        ..RegistryOptions::default()
    });
    let tls = dst.tls().unwrap();
    let client = tls.client().unwrap();
    // Both servers' CAs are trusted, so the only thing the other host can refuse is what
    // regferry presents as a client.
    let cas = format!("{}\n{}", tls.ca_pem(), other.tls().unwrap().ca_pem());
    let creds = format!(
        "    tls: enabled\n    user: bob\n    pass: s3cret-bob\n{}{}{}",
        pem_line("regcert", &cas),
        pem_line("clientCert", &client.cert_pem),
        pem_line("clientKey", &client.key_pem)
    );
    let o = once(&config(&src, &dst, &creds, "app"));
    assert_eq!(o.code, 1, "the other host is no token server: {}", o.all());
    let log = other.registry_log();
    assert!(
        log.contains("client didn't provide a certificate"),
        "the other host saw a client certificate:\n{log}"
    );
    assert!(!log.contains("unknown certificate authority"), "{log}");
    // The registry itself got the certificate: it answered with its challenge.
    assert!(
        !regferry_requests(&dst).is_empty(),
        "{:?}",
        dst.access_log()
    );
}

/// distribution offers HTTP/2 over TLS, and there a response's header list is bounded by
/// hyper's 16 KiB. h2 refuses a larger one in three ways: it resets the stream (up to 64
/// KiB), closes the connection when one field alone is over 64 KiB, and closes it when, the
/// list already over, one field runs on across CONTINUATION frames past the bound. A registry whose every answer is so
/// is refused at once, without retries (it would send the same again), and the message says
/// why; with less the same image copies, over HTTP/2.
#[test]
fn an_http2_header_list_over_the_bound_is_refused_without_retries() {
    let mut runs_on = vec![1 << 10; 20];
    runs_on.push(40 << 10);
    let over: [&[usize]; 3] = [&[24 << 10], &[80 << 10], &runs_on];
    let under: &[usize] = &[1 << 10; 8];
    for (padding, refused) in over.iter().map(|p| (*p, true)).chain([(under, false)]) {
        let src = TestRegistry::start_with(RegistryOptions {
            tls: Tls::Https,
            header_padding: padding,
            ..RegistryOptions::default()
        });
        let dst = TestRegistry::start();
        let img = image::image(202, 1, 100);
        regferry_testkit::skopeo_push(&src, "app:1", &img);
        let c = ConfigFile::new(&format!(
            "defaults:\n  skipDockerConfig: true\ncreds:\n  - registry: {s}\n    tls: enabled\n{}  - registry: {d}\n    tls: disabled\nsync:\n  - source: {s}/app:1\n    target: {d}/app:1\n    type: image\n",
            pem_line("regcert", src.tls().unwrap().ca_pem()),
            s = src.host(),
            d = dst.host(),
        ));
        let o = once(&c);
        let log = std::fs::read_to_string(src.dir().join("access.log")).unwrap();
        let ours: Vec<&str> = log.lines().filter(|l| l.contains("regferry/")).collect();
        assert!(
            !ours.is_empty() && ours.iter().all(|l| l.contains("HTTP/2.0")),
            "regferry spoke HTTP/2: {log}"
        );
        if refused {
            let what = format!(
                "{} KiB in {} fields",
                padding.iter().sum::<usize>() >> 10,
                padding.len()
            );
            assert_eq!(o.code, 1, "{what}: {}", o.all());
            assert!(
                o.all()
                    .contains("response head is too large or malformed (HTTP/2: more than 16 KiB")
                    && !o.all().contains("Retrying"),
                "{what}: {}",
                o.all()
            );
            // One request, not one per try: the registry logged each answer it sent.
            assert_eq!(regferry_requests(&src).len(), 1, "{what}: {log}");
            assert_eq!(dst.writes(), 0, "{what}: {:?}", dst.access_log());
        } else {
            assert_eq!(o.code, 0, "{}", o.all());
            assert_same_manifests(&src, &dst, "app:1", "app:1");
        }
    }
}
