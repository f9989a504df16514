#!/usr/bin/env bash
# `make image`: builds the Dockerfile with buildah (no container engine here) into $IMAGE.
# Without BASE_IMAGE it first makes a local Debian bookworm base (base.sh). The CPU torch wheel
# comes from $TORCH_WHEELS, mounted into the build, so no CUDA build is ever downloaded.
set -euo pipefail
cd "$(dirname "$0")/../.."
buildah=deploy/image/buildah
image=${IMAGE:-localhost/graft:latest}
wheels=${TORCH_WHEELS:-/opt/wheels}
start=$SECONDS

if ! compgen -G "$wheels/torch-2.13.0+cpu-*.whl" >/dev/null; then
    echo "no CPU wheel of torch 2.13.0 in $wheels; fetch one with" >&2
    echo "  pip download torch==2.13.0 --no-deps --index-url https://download.pytorch.org/whl/cpu -d DIR" >&2
    echo "and run make image TORCH_WHEELS=DIR" >&2
    exit 1
fi

if [ -z "${BASE_IMAGE:-}" ]; then
    BASE_IMAGE=localhost/graft-base:bookworm
    deploy/image/base.sh "$BASE_IMAGE"
fi

# pip in the build checks TLS against the host's CA bundle (this machine's egress proxy has its own
# CA, which the base image's certificates do not know).
ca=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
ca_args=()
if [ -f "$ca" ]; then
    ca_args=(--volume "$ca:/run/host-ca.crt:ro" --build-arg PIP_CA_BUNDLE=/run/host-ca.crt)
fi

# --format docker: the OCI format has no HEALTHCHECK. --layers: reruns reuse unchanged steps.
mkdir -p .image
"$buildah" bud --isolation chroot --layers --format docker --pull=never \
    --build-arg BASE_IMAGE="$BASE_IMAGE" \
    --volume "$(realpath "$wheels"):/wheels:ro" --build-arg TORCH_FIND_LINKS=/wheels \
    "${ca_args[@]}" \
    --tag "$image" . 2>&1 | tee .image/build.log

# Under vfs every cached layer is a full copy (1.5 GB here), so the steps of earlier builds that
# this one did not reuse are removed: what stays is exactly the cache for the next build.
used=$(grep -oE '^(--> (Using cache )?)?[0-9a-f]{11,64}$' .image/build.log | grep -oE '[0-9a-f]+$')
stale=()
while read -r id name; do
    hex=${id#sha256:}
    if [ "$name" = "<none>" ] && ! grep -q "^${hex:0:11}" <<<"$used"; then
        stale+=("$id")
    fi
done < <("$buildah" images --all --no-trunc --format '{{.ID}} {{.Name}}')
if [ ${#stale[@]} -gt 0 ]; then
    echo "removing ${#stale[@]} cached steps of earlier builds"
    "$buildah" rmi "${stale[@]}" >/dev/null || true
fi
"$buildah" images --format '{{.Name}}:{{.Tag}} {{.ID}} {{.Size}}' "$image"
echo "make image: $image built in $((SECONDS - start)) s"
