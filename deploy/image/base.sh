#!/usr/bin/env bash
# Makes the local base image for `make image`: Debian bookworm with its Python 3.11, built with
# debootstrap and imported into buildah, because no registry of base images is reachable here.
# The result plays the part of python:3.11-slim (python3 on PATH, venv works); it is cached as
# .image/bookworm-python3.tar and as the buildah image named by $1, so a rerun takes a second.
set -euo pipefail
cd "$(dirname "$0")/../.."
buildah=deploy/image/buildah
base=${1:?usage: base.sh IMAGE_NAME}
tarball=.image/bookworm-python3.tar

if "$buildah" inspect --type image "$base" >/dev/null 2>&1; then
    echo "base image $base is already there"
    exit 0
fi

if [ ! -f "$tarball" ]; then
    rootfs=.image/rootfs
    rm -rf "$rootfs"
    mkdir -p .image
    echo "debootstrap: Debian bookworm minbase + python3 into $rootfs (a minute or two)"
    # python3-venv brings ensurepip, so `python3 -m venv` works as it does on python:3.11-slim.
    debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" \
        http://deb.debian.org/debian >.image/debootstrap.log 2>&1 ||
        { tail -20 .image/debootstrap.log; exit 1; }
    # Package lists, downloaded .debs, manuals and translations are not needed in a server image
    # (what Debian's slim images leave out too); the copyright files stay.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/* \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
    find "$rootfs"/usr/share/doc -type f ! -name copyright -delete
    tar -C "$rootfs" -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
    rm -rf "$rootfs"
fi

echo "importing $tarball as $base"
container=$("$buildah" from scratch)
"$buildah" add --quiet "$container" "$tarball" /
"$buildah" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 "$container"
"$buildah" commit --quiet --rm "$container" "$base" >/dev/null
echo "base image $base made"
