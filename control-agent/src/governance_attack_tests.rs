//! A hostile tenant admin's requests: what the routes must refuse.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};

use crate::store::layer_tests::{layer, rego};

/// A layer's tar.gz whose gzip stream goes on with `zeros` bytes after the
/// tar's end (gzip packs them about a thousand to one).
fn bomb(zeros: usize) -> Vec<u8> {
    let packed =
        warden_config::archive::pack(&layer("finance", &rego("finance", "decision := {}")));
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&packed[..])
        .read_to_end(&mut tar)
        .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&tar).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut left = zeros;
    while left > 0 {
        let n = left.min(chunk.len());
        gz.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    gz.finish().unwrap()
}

/// The body of a layer publish is bounded unpacked, not only packed.
#[test]
fn a_layer_whose_gzip_unpacks_past_the_bound_is_refused() {
    let small = bomb(0);
    assert!(super::unpack_layer(&small).is_ok());
    let b = bomb(64 << 20);
    assert!(b.len() < 1 << 20, "{} bytes of gzip", b.len());
    let err = super::unpack_layer(&b).expect_err("64 MiB of zeros after the tar");
    assert!(err.contains("unpacks to more than"), "{err}");
}
