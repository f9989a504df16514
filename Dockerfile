# The Graft container: the service, CPU PyTorch and the packaged backbone, run as a non-root user.
# Here `make image` builds it with buildah (deploy/image/build.sh); elsewhere `docker build .`.
# Configuration is only GRAFT_* variables (README, "Configuration"); nothing is fetched at run time.

# Any image with Python 3.11 as `python3` and a working `python3 -m venv`. `make image` passes a
# local Debian bookworm made with debootstrap, since no registry of base images is reachable here.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder
# Where pip finds the CPU build of torch 2.13.0: a directory (make image mounts one at /wheels) or
# a page of wheel links. torch is installed from there alone, with no index, so a missing wheel
# fails the build instead of pulling the multi-GB CUDA build from PyPI.
ARG TORCH_FIND_LINKS=https://download.pytorch.org/whl/cpu/torch/
# A CA bundle for pip, for builds behind a TLS-inspecting proxy (make image mounts the host's).
ARG PIP_CA_BUNDLE=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Few steps, because every step's layer is a full copy of the file tree under vfs storage. The
# dependencies come before the code, so that a change to the code reuses this slow layer.
COPY pyproject.toml /src/
RUN if [ -n "$PIP_CA_BUNDLE" ]; then printf '[global]\ncert = %s\n' "$PIP_CA_BUNDLE" >/etc/pip.conf; fi \
 && python3 -m venv /opt/graft \
 && /opt/graft/bin/pip install --quiet --no-index --no-deps --find-links "$TORCH_FIND_LINKS" \
        torch==2.13.0 \
 && /opt/graft/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"]))' >/tmp/requirements.txt \
 && /opt/graft/bin/pip install --quiet -r /tmp/requirements.txt \
 && /opt/graft/bin/python -c 'import torch; assert torch.version.cuda is None, torch.__version__'
# The context is only pyproject.toml, README.md, service/ and adapters/ (.dockerignore).
COPY . /src/
# Not editable: the code goes into site-packages, /src stays behind in this stage. Then what a
# server never uses goes: the bundled test suites, C++ headers (nothing compiles here), pip itself.
RUN /opt/graft/bin/pip install --quiet --no-deps /src \
 && find /opt/graft/lib -depth -type d -name tests -exec rm -rf {} + \
 && rm -rf /opt/graft/lib/python3*/site-packages/torch/include \
 && /opt/graft/bin/pip uninstall --quiet --yes pip setuptools

FROM ${BASE_IMAGE}
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/graft graft \
 && mkdir -p /var/lib/graft && chown graft:graft /var/lib/graft
# HF_*_OFFLINE: the backbone comes from its installed package, never from a model hub.
ENV PATH=/opt/graft/bin:$PATH \
    GRAFT_HOME=/var/lib/graft \
    GRAFT_AUTH=required \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# The SQLite registry lives here unless GRAFT_DATABASE_URL points at PostgreSQL.
VOLUME /var/lib/graft
EXPOSE 3000
# /readyz answers 200 once the backbone is loaded and warm (15 to 40 s after start, measured).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/readyz', timeout=4)"]
WORKDIR /home/graft
USER graft
ENTRYPOINT ["graft", "serve"]
CMD ["--host", "0.0.0.0", "--port", "3000"]
# Last, because each step above is committed by walking the whole file tree: over the small base
# that takes a second, over the 1.5 GB of Python packages it takes ten.
COPY --from=builder /opt/graft /opt/graft
