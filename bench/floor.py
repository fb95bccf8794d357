"""The floor for a cold apply: the Docker SDK creating and starting N containers
concurrently, with no reconciler, no file, no plan.

`bench/run.py` runs this as a subprocess (like `fleet apply` and
`docker-compose up -d`), so all three pay for an interpreter and a client; it
also prints the time spent on the engine alone. The containers get the same
settings fleet gives a private agent without ports or workspace (labels of the
same size, env, restart policy, init, tty, extra host), so the only difference
left is fleet's own work.

    .venv/bin/python bench/floor.py --image fleet-bench-tiny --prefix NAME --n 10 --parallel 8 --label k=v
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--prefix", required=True, help="containers are named <prefix>-a<i>")
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--label", action="append", default=[], help="k=v, repeatable")
    args = ap.parse_args()
    t0 = time.perf_counter()

    import docker

    api = docker.from_env(max_pool_size=max(args.parallel + 2, 10), timeout=120).api
    api.ping()
    extra = dict(kv.split("=", 1) for kv in args.label)

    def one(i: int) -> None:
        name = f"a{i}"
        env = {"FLEET_NAME": args.prefix, "FLEET_AGENT": name, "FLEET_HOST": name}
        spec = {"host": None, "provider": "docker", "image": args.image, "workspace": None,
                "command": ["sleep", "infinity"], "env": env, "ports": {}, "grants": [], "restart": "always"}
        labels = {
            "dev.fleet.kind": "agent", "dev.fleet.agent": name, "dev.fleet.spec-hash": "0" * 64,
            "dev.fleet.spec": json.dumps(spec, sort_keys=True, separators=(",", ":")),
            "dev.fleet.ports": "{}", "dev.fleet.message": "none", **extra,
        }
        hc = api.create_host_config(restart_policy={"Name": "always"}, init=True,
                                    extra_hosts={"fleet-proxy": "host-gateway"})
        c = api.create_container(image=args.image, command=["sleep", "infinity"], name=f"{args.prefix}-{name}",
                                 labels=labels, environment=env, host_config=hc, tty=True, stdin_open=True,
                                 hostname=name)
        api.start(c["Id"])

    t1 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        list(pool.map(one, range(args.n)))  # re-raises the first failure
    t2 = time.perf_counter()
    print(json.dumps({"engine_s": t2 - t1, "setup_s": t1 - t0}))


if __name__ == "__main__":
    main()
