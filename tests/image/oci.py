#!/usr/bin/env python3
"""Write a one-layer OCI image archive, deterministically, with the standard library only.

The archive is a tar of an OCI image layout (`oci-layout`, `index.json`,
`blobs/sha256/...`): one layer tar, the image config and the manifest. `index.json`
carries `io.containerd.image.name` (the full reference, as containerd and kubelet spell
it: `docker.io/routemeter/routemeter:0.1.0`) and `org.opencontainers.image.ref.name` (the
tag), so `ctr -n k8s.io images import FILE` names the image, and it can be pushed with
`skopeo copy oci-archive:FILE docker://...`.

The same inputs give a byte-identical archive: entries are sorted, every mtime is
`--mtime` (default 0, or SOURCE_DATE_EPOCH), owners are 0:0 with no names, the gzip
header has no name and no time, and JSON is written with sorted keys.

  oci.py --name docker.io/routemeter/routemeter:0.1.0 --out target/images/routemeter.tar \
    --entrypoint /routemeter --user 65532:65532 \
    --add target/release/routemeter:/routemeter:0755 \
    --file /etc/passwd=@passwd.txt --mkdir /tmp:1777

Files: `--add SRC:DEST[:MODE]` copies a file (symlinks followed, so a library lands as a
regular file at the path the loader looks for); `--file DEST[:MODE]=TEXT` writes TEXT,
`=@PATH` the content of PATH, `=@-` standard input; `--mkdir DEST[:MODE]` an empty
directory. Parent directories are added with mode 0755. Modes are octal; a file's
default is its source's permission bits (0644 for `--file`), a directory's 0755.
"""

import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import stat
import sys
import tarfile

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def fail(msg):
    print(f"oci.py: {msg}", file=sys.stderr)
    sys.exit(2)


def image_path(dest):
    """`/etc/passwd` -> `etc/passwd`; rejects what would escape the root."""
    if not dest.startswith("/"):
        fail(f"{dest!r}: image paths are absolute")
    parts = [p for p in dest.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        fail(f"{dest!r}: not a file path inside the image")
    return "/".join(parts)


def mode_of(text, what):
    try:
        mode = int(text, 8)
    except ValueError:
        fail(f"{what}: mode {text!r} is not octal")
    if mode > 0o7777:
        fail(f"{what}: mode {text!r} out of range")
    return mode


class Layer:
    """The layer's entries: path -> (kind, mode, data)."""

    def __init__(self):
        self.entries = {}

    def _put(self, path, kind, mode, data, what):
        if path in self.entries:
            fail(f"{what}: {'/' + path} is already in the image")
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            have = self.entries.get(parent)
            if have is None:
                self.entries[parent] = ("dir", 0o755, b"")
            elif have[0] != "dir":
                fail(f"{what}: {'/' + parent} is a file, not a directory")
        self.entries[path] = (kind, mode, data)

    def add(self, spec):
        bits = spec.split(":")
        if len(bits) not in (2, 3):
            fail(f"--add {spec!r}: expected SRC:DEST[:MODE]")
        src, dest = bits[0], bits[1]
        try:
            st = os.stat(src)
            if not stat.S_ISREG(st.st_mode):
                fail(f"--add {spec!r}: {src} is not a regular file")
            with open(src, "rb") as f:
                data = f.read()
        except OSError as e:
            fail(f"--add {spec!r}: {e}")
        mode = mode_of(bits[2], f"--add {spec!r}") if len(bits) == 3 else stat.S_IMODE(st.st_mode)
        self._put(image_path(dest), "file", mode, data, f"--add {spec!r}")

    def file(self, spec):
        target, sep, content = spec.partition("=")
        if not sep:
            fail(f"--file {spec!r}: expected DEST[:MODE]=TEXT, =@PATH or =@-")
        dest, _, mode = target.partition(":")
        mode = mode_of(mode, f"--file {target!r}") if mode else 0o644
        if content == "@-":
            data = sys.stdin.buffer.read()
        elif content.startswith("@"):
            try:
                with open(content[1:], "rb") as f:
                    data = f.read()
            except OSError as e:
                fail(f"--file {target!r}: {e}")
        else:
            data = content.encode()
        self._put(image_path(dest), "file", mode, data, f"--file {target!r}")

    def mkdir(self, spec):
        dest, _, mode = spec.partition(":")
        mode = mode_of(mode, f"--mkdir {spec!r}") if mode else 0o755
        path = image_path(dest)
        have = self.entries.get(path)
        if have is not None and have[0] == "dir":
            self.entries[path] = ("dir", mode, b"")  # an implied parent, now given a mode
            return
        self._put(path, "dir", mode, b"", f"--mkdir {spec!r}")


def write_tar(entries, mtime=0):
    """A tar of (path, kind, mode, data), in the given order, every field fixed."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, kind, mode, data in entries:
            info = tarfile.TarInfo(path)
            info.mode = mode
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def dumps(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def split_name(name):
    """`docker.io/routemeter/routemeter:0.1.0` -> the tag, `0.1.0`."""
    last = name.rsplit("/", 1)[-1]
    if "@" in name or ":" not in last:
        fail(f"--name {name!r}: give a full reference with a tag, e.g. docker.io/org/app:1.0")
    registry = name.split("/", 1)[0] if "/" in name else ""
    if not ("." in registry or ":" in registry or registry == "localhost"):
        full = f"docker.io/{name}" if "/" in name else f"docker.io/library/{name}"
        fail(
            f"--name {name!r}: give the normalised name containerd and kubelet use "
            f"({full} for an image referred to as {name})"
        )
    return last.rsplit(":", 1)[1]


def main():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    p.add_argument("--name", required=True, help="full reference, e.g. docker.io/routemeter/routemeter:0.1.0")
    p.add_argument("--out", required=True, help="the archive to write")
    p.add_argument("--entrypoint", action="append", default=[], metavar="ARG",
                   help="entrypoint argument (repeat for more)")
    p.add_argument("--cmd", action="append", default=[], metavar="ARG",
                   help="default command argument (repeat for more)")
    p.add_argument("--user", default="", help="UID[:GID] the container runs as")
    p.add_argument("--env", action="append", default=[], metavar="K=V",
                   help=f"environment (PATH defaults to {DEFAULT_PATH})")
    p.add_argument("--workdir", default="/")
    p.add_argument("--label", action="append", default=[], metavar="K=V", help="config label")
    p.add_argument("--add", action="append", default=[], metavar="SRC:DEST[:MODE]")
    p.add_argument("--file", action="append", default=[], metavar="DEST[:MODE]=TEXT|@PATH|@-")
    p.add_argument("--mkdir", action="append", default=[], metavar="DEST[:MODE]")
    p.add_argument("--arch", default="amd64")
    p.add_argument("--no-gzip", action="store_true", help="store the layer uncompressed")
    p.add_argument("--mtime", type=int, default=int(os.environ.get("SOURCE_DATE_EPOCH", "0")),
                   help="every file's time and the image's creation time (default SOURCE_DATE_EPOCH or 0)")
    args = p.parse_args()

    tag = split_name(args.name)
    layer = Layer()
    for spec in args.add:
        layer.add(spec)
    for spec in args.file:
        layer.file(spec)
    for spec in args.mkdir:
        layer.mkdir(spec)
    if not layer.entries:
        fail("the image would be empty: give --add, --file or --mkdir")

    layer_tar = write_tar(
        ((path, kind, mode, data) for path, (kind, mode, data) in sorted(layer.entries.items())),
        args.mtime,
    )
    if args.no_gzip:
        layer_blob, layer_type = layer_tar, LAYER_TAR
    else:
        out = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
            gz.write(layer_tar)
        layer_blob, layer_type = out.getvalue(), LAYER_GZIP

    env = {}
    for kv in ["PATH=" + DEFAULT_PATH] + args.env:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            fail(f"--env {kv!r}: expected K=V")
        env[k] = v  # later wins, order of first appearance kept
    labels = {}
    for kv in args.label:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            fail(f"--label {kv!r}: expected K=V")
        labels[k] = v

    created = datetime.datetime.fromtimestamp(args.mtime, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = {"Env": [f"{k}={v}" for k, v in env.items()], "WorkingDir": args.workdir}
    if args.user:
        config["User"] = args.user
    if args.entrypoint:
        config["Entrypoint"] = args.entrypoint
    if args.cmd:
        config["Cmd"] = args.cmd
    if labels:
        config["Labels"] = labels
    config_blob = dumps({
        "architecture": args.arch,
        "os": "linux",
        "created": created,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer_tar)]},
        "history": [{"created": created, "created_by": "tests/image/oci.py"}],
    })
    manifest_blob = dumps({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": sha256(config_blob), "size": len(config_blob)},
        "layers": [{"mediaType": layer_type, "digest": sha256(layer_blob), "size": len(layer_blob)}],
    })
    index_blob = dumps({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [{
            "mediaType": MANIFEST,
            "digest": sha256(manifest_blob),
            "size": len(manifest_blob),
            "platform": {"architecture": args.arch, "os": "linux"},
            "annotations": {
                "io.containerd.image.name": args.name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    })

    blobs = {sha256(b)[7:]: b for b in (layer_blob, config_blob, manifest_blob)}
    entries = [("blobs", "dir", 0o755, b""), ("blobs/sha256", "dir", 0o755, b"")]
    entries += [(f"blobs/sha256/{h}", "file", 0o644, b) for h, b in sorted(blobs.items())]
    entries += [
        ("index.json", "file", 0o644, index_blob),
        ("oci-layout", "file", 0o644, dumps({"imageLayoutVersion": "1.0.0"})),
    ]
    archive = write_tar(entries, args.mtime)
    tmp = args.out + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(tmp, "wb") as f:
        f.write(archive)
    os.replace(tmp, args.out)
    # One line on stdout for the caller: the manifest digest (what `ctr images ls` shows).
    print(sha256(manifest_blob))


if __name__ == "__main__":
    main()
