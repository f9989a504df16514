"""`make image-test`: the built image, run with buildah as a user would run the container.

Checks the image's configuration and contents, then starts it (host network, on loopback) with a
host directory as its GRAFT_HOME volume: creates a tenant key with the admin key, trains a
banking77 head, predicts, stops the container, starts a new one from the image on the same volume
and checks that the key and the head survived. Prints each check; exits non-zero on the first
failure. Run from the repository root with the project's venv (the Makefile does).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.server import ROOT, Server

BUILDAH = str(ROOT / "deploy" / "image" / "buildah")
IMAGE = os.environ.get("IMAGE", "localhost/graft:latest")
EXAMPLES = ROOT / "examples" / "banking77-10shot.jsonl"
VOLUME = "/var/lib/graft"
UID = 10001  # the image's graft user, which must be able to write the volume
# Messages of banking77's test split and the labels the 10-shot head gives them (README).
PROBES = {
    "I transferred the wrong amount and would like to cancel the transaction.": "cancel_transfer",
    "Can I verify the source of my funds?": "verify_source_of_funds",
}
checks = 0


def check(condition: bool, what: str, detail: Any = "") -> None:
    global checks
    if not condition:
        print(f"FAIL  {what}  {detail}", flush=True)
        raise SystemExit(1)
    checks += 1
    print(f"ok    {what}", flush=True)


def buildah(*args: str) -> str:
    done = subprocess.run([BUILDAH, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"buildah {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def image_config() -> dict[str, Any]:
    return json.loads(buildah("inspect", "--type", "image", IMAGE))["Docker"]["config"]


def check_config(config: dict[str, Any]) -> None:
    env = dict(item.split("=", 1) for item in config["Env"])
    check(config["User"] == "graft", "runs as the non-root user graft", config["User"])
    check("3000/tcp" in config["ExposedPorts"], "EXPOSE 3000", config["ExposedPorts"])
    check(VOLUME in config["Volumes"], f"VOLUME {VOLUME}", config["Volumes"])
    check(env.get("GRAFT_HOME") == VOLUME, "GRAFT_HOME is the volume", env.get("GRAFT_HOME"))
    check(env.get("GRAFT_AUTH") == "required", "GRAFT_AUTH=required by default")
    test = " ".join(config["Healthcheck"]["Test"])
    check("/readyz" in test, "HEALTHCHECK asks /readyz", test)


def in_container(container: str, script: str) -> str:
    return buildah("run", "--isolation", "chroot", container, "--", "sh", "-c", script)


def check_contents(container: str) -> None:
    compilers = in_container(container, "for c in gcc cc c++ g++ clang; do command -v $c; done; :")
    check(compilers.strip() == "", "no compilers", compilers)
    found = in_container(
        container,
        "find /opt/graft /src /root/.cache /home/graft/.cache "
        "\\( -name tests -o -name '*.whl' -o -name pip -o -name .cache \\) 2>/dev/null | head; :",
    )
    check(found.strip() == "", "no test suites, wheels, pip or caches, no /src", found)
    torch = in_container(container, "python3 -c 'import torch; print(torch.__version__)'")
    check(torch.strip() == "2.13.0+cpu", "torch is the CPU build 2.13.0", torch)


def start(container: str, home: Path, logs: Path, admin_key: str, entrypoint: list[str]) -> Server:
    # The image's own entrypoint (`graft serve`), on loopback and a free port instead of the
    # default 0.0.0.0:3000; Server appends --port and waits for /readyz.
    command = [BUILDAH, "run", "--isolation", "chroot", "--network", "host"]
    command += ["--volume", f"{home}:{VOLUME}", "--env", f"GRAFT_ADMIN_KEY={admin_key}"]
    command += [container, "--", *entrypoint, "--host", "127.0.0.1"]
    begun = time.monotonic()
    server = Server(logs, command=command).start(timeout=300)
    check(True, f"container ready on {server.url} in {time.monotonic() - begun:.0f} s")
    return server


def stop(server: Server) -> None:
    """What `docker stop` does: SIGTERM to the container's main process, the `graft serve` that
    became `bentoml serve`, not to buildah; then every process of the container must be gone."""
    assert server.process is not None
    tree = psutil.Process(server.process.pid).children(recursive=True)
    main = [p for p in tree if "serve" in p.cmdline() and "/opt/graft/bin/bentoml" in p.cmdline()]
    check(len(main) == 1, "the container's main process is bentoml serve", tree)
    begun = time.monotonic()
    main[0].send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=60)
    check(not alive, f"the container stopped on SIGTERM in {time.monotonic() - begun:.0f} s", alive)
    server.process.wait(timeout=30)


def check_healthcheck(container: str, server: Server, healthcheck: list[str]) -> None:
    # The HEALTHCHECK command as written, run inside the container, pointed at this port.
    command = [part.replace(":3000/", f":{server.port}/") for part in healthcheck[1:]]
    if healthcheck[0] == "CMD-SHELL":
        command = ["sh", "-c", command[0]]
    done = subprocess.run(
        [BUILDAH, "run", "--isolation", "chroot", "--network", "host", container, "--", *command],
        capture_output=True,
        text=True,
        check=False,
    )
    check(done.returncode == 0, "the HEALTHCHECK command passes once ready", done.stderr[-500:])


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def predict(server: Server, key: str) -> dict[str, Any]:
    response = server.post(
        "/v1/predict", {"head": "intents", "inputs": list(PROBES)}, headers=bearer(key)
    )
    check(response.status_code == 200, "predict answers 200", response.text[:300])
    labels = [p["label"] for p in response.json()["predictions"]]
    check(labels == list(PROBES.values()), f"predicted {labels}", response.text[:300])
    return dict(response.json())


def first_run(server: Server, admin_key: str) -> tuple[str, int]:
    examples = [json.loads(line) for line in EXAMPLES.read_text().splitlines()]
    anonymous = server.post("/v1/heads/train", {"head": "intents", "examples": examples})
    check(anonymous.status_code == 401, "a call without a key is refused (401)", anonymous.text)
    created = server.post("/v1/admin/keys/create", {"tenant": "acme"}, headers=bearer(admin_key))
    check(created.status_code == 200, "the admin key creates a tenant key", created.text)
    key = created.json()["key"]
    trained = server.post(
        "/v1/heads/train", {"head": "intents", "examples": examples}, headers=bearer(key)
    )
    check(trained.status_code == 200, "train answers 200", trained.text[:300])
    body = trained.json()
    check(len(body["labels"]) == 77, "the head has banking77's 77 labels", len(body["labels"]))
    version = predict(server, key)["version"]
    check(version == body["version"], f"predict uses the trained version {version}")
    return key, int(version)


def second_run(server: Server, key: str, version: int) -> None:
    heads = server.post("/v1/heads/list", {}, headers=bearer(key))
    check(heads.status_code == 200, "the tenant key still works after the restart", heads.text)
    listed = {h["head"]: [v["version"] for v in h["versions"]] for h in heads.json()["heads"]}
    check(listed == {"intents": [version]}, f"the head survived the restart: {listed}")
    again = predict(server, key)["version"]
    check(again == version, f"predict after the restart uses the same version {again}")


def main() -> None:
    config = image_config()
    check_config(config)
    entrypoint, healthcheck = config["Entrypoint"], config["Healthcheck"]["Test"]
    admin_key = secrets.token_hex(32)
    containers: list[str] = []
    servers: list[Server] = []

    def run_container(home: Path, logs: Path) -> tuple[str, Server]:
        # Each run is a new container from the image, as `docker run` makes one.
        container = buildah("from", "--pull=never", IMAGE).strip()
        containers.append(container)
        servers.append(start(container, home, logs, admin_key, entrypoint))
        return container, servers[-1]

    with tempfile.TemporaryDirectory(prefix="graft-image-test-") as tmp:
        home, logs = Path(tmp, "home"), Path(tmp, "logs")
        home.mkdir()
        os.chown(home, UID, UID)
        try:
            container, server = run_container(home, logs)
            check_contents(container)
            check_healthcheck(container, server, healthcheck)
            key, version = first_run(server, admin_key)
            stop(server)
            check((home / "graft.db").exists(), "the registry is on the volume")

            container, server = run_container(home, logs)
            second_run(server, key, version)
            stop(server)
            owners = {path.stat().st_uid for path in home.iterdir()}
            check(owners == {UID}, "the files on the volume belong to the image's user", owners)
        except BaseException:
            for server in servers:  # what the container said, for the failure above
                print(f"--- {server.log_path.name}\n{server.log_path.read_text()[-3000:]}")
            raise
        finally:
            for server in servers:
                server.kill()  # only does something when a check failed before stop()
            for container in containers:
                buildah("rm", container)
    print(f"image-test: {IMAGE}: all {checks} checks passed")


if __name__ == "__main__":
    main()
