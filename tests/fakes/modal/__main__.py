"""Run a fake Modal server from a shell so a person can try `provider: modal` without an account.

    python -m tests.fakes.modal --port 8765 --image fleet-base:bookworm

prints the variables to export, serves until SIGINT/SIGTERM, then removes every container,
image and volume it created. `--cleanup` removes what any earlier fake left behind.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .server import DEFAULT_IMAGE, FakeModal


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.fakes.modal", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="port to listen on (0: any free port)")
    p.add_argument("--image", default=DEFAULT_IMAGE, help="local Docker image every registry image maps to")
    p.add_argument("--token-id", default="ak-fleet-fake")
    p.add_argument("--token-secret", default="as-fleet-fake")
    p.add_argument("--state-dir", default=None, help="where the tunnel CA is written (default: a temp dir)")
    p.add_argument("--no-timeouts", action="store_true", help="do not enforce sandbox timeout/idle_timeout")
    p.add_argument("--keep-images", action="store_true", help="keep snapshot/build images at exit")
    p.add_argument("--cleanup", action="store_true", help="remove everything any fake Modal left, then exit")
    args = p.parse_args(argv)

    if args.cleanup:
        import docker

        from .docker_ops import cleanup

        counts = cleanup(docker.from_env(), None)
        print(f"removed {counts['containers']} containers, {counts['images']} images, {counts['volumes']} volumes")
        return 0

    fake = FakeModal(
        args.image,
        host=args.host,
        port=args.port,
        token_id=args.token_id,
        token_secret=args.token_secret,
        state_dir=args.state_dir,
        enforce_timeouts=not args.no_timeouts,
        keep_images=args.keep_images,
    )
    try:
        fake.start()
    except Exception as e:  # noqa: BLE001 - one clear line for a person at a shell
        print(f"error: {e}", file=sys.stderr)
        return 1
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    for key, value in fake.env().items():
        print(f"export {key}={value}")
    print(f"# fake Modal {fake.server_id} serving on {fake.url} with image {args.image}; Ctrl-C to stop",
          file=sys.stderr)
    sys.stdout.flush()
    while not done.wait(1):
        pass
    print("# stopping: removing sandboxes", file=sys.stderr)
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
