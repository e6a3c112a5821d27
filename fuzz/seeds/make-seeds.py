#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets (run from fuzz/):

seeds/tar_reader/   a small layer tar (run it with crates/oci/tests/data too)
seeds/oci_archive/  tiny oci-archive and docker-archive files

Docker-archive seeds name their config "config.json" and their layers
"<id>/layer.tar", which carry no digest in their names, so the fuzzer can
mutate the JSON and layer bytes and still reach config parsing and layer
decompression (only the diff_id check at the end of a layer needs a match).
"""
import gzip
import hashlib
import io
import json
import os
import tarfile

tarfile.RECORDSIZE = 512  # no 10 KiB padding


def tar_bytes(members):
    """members: list of (name, bytes) -> an uncompressed tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1700000000
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def config(diff_ids):
    return json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/sh"], "Env": ["A=1"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }).encode()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


layer = tar_bytes([("etc/hello", b"hello\n"), ("bin/x", b"\x7fELF")])
layer_gz = gzip.compress(layer, mtime=0)

os.makedirs("seeds/tar_reader", exist_ok=True)
os.makedirs("seeds/oci_archive", exist_ok=True)
write("seeds/tar_reader/layer.tar", layer)

# oci-archive: one gzip layer.
cfg = config([sha(layer)])
manifest = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(cfg), "size": len(cfg)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(layer_gz), "size": len(layer_gz)}],
}).encode()
index = json.dumps({"schemaVersion": 2, "manifests": [{
    "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(manifest), "size": len(manifest),
    "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}).encode()
blobs = [(f"blobs/sha256/{sha(b)[7:]}", b) for b in (cfg, manifest, layer_gz)]
write("seeds/oci_archive/oci.tar", tar_bytes(
    [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)] + blobs))

# docker-archives: uncompressed and gzip layers.
for name, blob in (("docker.tar", layer), ("docker-gzip.tar", layer_gz)):
    dm = json.dumps([{"Config": "config.json", "RepoTags": ["x:1"], "Layers": ["abc/layer.tar"]}]).encode()
    write("seeds/oci_archive/" + name, tar_bytes(
        [("manifest.json", dm), ("config.json", config([sha(layer)])), ("abc/layer.tar", blob)]))
