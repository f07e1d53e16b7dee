//! Unit tests of the URL verdicts: encodings of loopback and metadata, and
//! allowlists.

use warden_config::guards::HostPattern;

use super::readers::*;

#[test]
fn every_encoding_of_loopback_and_metadata_is_refused() {
    for v in [
        "http://127.0.0.1/",
        "http://localhost/",
        "http://LOCALHOST./x",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0x7f.0x0.0x0.0x1/",
        "http://0177.0.0.1/",
        "http://017700000001/",
        "http://127.1/",
        "http://127.0.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[0:0:0:0:0:0:0:1]/",
        "http://[::127.0.0.1]/",
        "http://[2002:7f00:1::]/",
        "http://[64:ff9b::7f00:1]/",
        "http://[64:ff9b:1::7f00:1]/",
        "http://[::ffff:0:7f00:1]/",
        "http://[::ffff:0:a9fe:a9fe]/",
        "http://[fec0::1]/",
        // Teredo: client 127.0.0.1 inverted, then relay 10.0.0.1.
        "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
        "http://[2001:0:a00:1::]/",
        "http://kubernetes.default.svc/",
        // Wildcard DNS services answer with the address in the name.
        "http://127.0.0.1.nip.io/",
        "http://app.169.254.169.254.nip.io/",
        "http://app-10-0-0-1.sslip.io/",
        "http://10-0-0-1.traefik.me/",
        "http://app-7f000001.nip.io/",
        "http://--1.sslip.io/",
        "http://x-fe80--1.sslip.io/",
        "http://LOCALTEST.ME/",
        "http://api.lvh.me:8080/",
        "http://localho.st/",
        // Wherever the service finds the address in the name.
        "http://x-127.0.0.1.nip.io/",
        "http://127.0.0.1.foo.nip.io/",
        "http://10-0-0-1.8.8.8.8.nip.io/",
        "http://a9fea9fe.x.sslip.io/",
        "http://--ffff-127.0.0.1.sslip.io/",
        "http://93.184.216.34.nip.io/",
        "http://7f000001.c0a80001.rbndr.us/",
        "http://make-127.0.0.1-rr.1u.ms/",
        "http://foo.localhost.direct/",
        "http://app.local.gd/",
        // Names only a private resolver answers.
        "http://router.home.arpa/",
        "http://printer.lan:631/",
        "http://nas.home/",
        "http://intranet/",
        "http://redis:6379/",
        "https://wiki.corp/",
        "http://user:pw@127.0.0.1/",
        "http://api.example.com@127.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://10.0.0.1/",
        "http://172.31.255.255/",
        "http://192.168.1.1/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://0.0.0.0/",
        "http://0/",
        "HTTP://127.0.0.1/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:25/",
        "127.0.0.1:6379",
        "localhost",
    ] {
        assert!(check(v, &[]).is_err(), "{v} was allowed");
    }
    assert_eq!(check("http://0x7f.1/", &[]), Err("ssrf_loopback"));
    assert_eq!(check("http://169.254.169.254/", &[]), Err("ssrf_metadata"));
    for v in [
        "https://api.example.com/v1",
        "http://93.184.216.34/",
        "http://[2001:0:4136:e378:8000:63bf:a247:27dd]/",
        "http://nip.io/",
        "http://sslip.io/",
        "http://mynip.io/",
        "http://notlvh.me/",
        "example.org:443",
    ] {
        assert_eq!(check(v, &[]), Ok(()), "{v}");
    }
}

#[test]
fn allowlists() {
    let allow = [
        HostPattern::parse("*.example.com").expect("p"),
        HostPattern::parse("10.1.0.0/16").expect("p"),
    ];
    let refs: Vec<&HostPattern> = allow.iter().collect();
    assert_eq!(check("https://api.example.com/", &refs), Ok(()));
    assert_eq!(check("https://API.Example.COM./", &refs), Ok(()));
    assert_eq!(
        check("https://example.com/", &refs),
        Err("egress_not_allowlisted")
    );
    assert_eq!(
        check("https://evil.com/", &refs),
        Err("egress_not_allowlisted")
    );
    assert_eq!(
        check("http://10.1.2.3/", &refs),
        Ok(()),
        "an explicit CIDR overrides"
    );
    assert_eq!(check("http://10.2.0.1/", &refs), Err("ssrf_private"));
    assert_eq!(
        check("https://api.example.com.evil.com/", &refs),
        Err("egress_not_allowlisted")
    );
}

#[test]
fn a_string_start_is_read_as_a_whatwg_parser_reads_it() {
    use super::detect::lead;
    // Leading controls and spaces skipped, tabs and newlines deleted
    // (inside the scheme too), the scheme lower-cased.
    let l = lead(" \u{1}H\tT\nTps:\\\\/host/x");
    assert_eq!(l.scheme.as_deref(), Some("https"));
    assert_eq!(l.slashes, 3);
    assert!(l.host_like);
    // A drive letter is a scheme of one letter.
    let l = lead("C:\\dir");
    assert_eq!((l.scheme.as_deref(), l.slashes), (Some("c"), 1));
    // Prose, a word not ended by a colon, a scheme not starting with a
    // letter: no scheme and nothing after it.
    for s in ["deploy the billing service", "1http://x", "+a:b"] {
        let l = lead(s);
        assert_eq!((l.scheme, l.slashes, l.host_like), (None, 0, false), "{s}");
    }
    // No scheme at all: the slashes and the host after them.
    let l = lead("//host");
    assert_eq!((l.scheme, l.slashes, l.host_like), (None, 2, true));
    let l = lead("a b:");
    assert_eq!(l.scheme, None);
}
