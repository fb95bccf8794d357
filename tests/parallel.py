"""How `make test` runs the suite in parallel (pytest-xdist, `-n N --dist loadfile`).

Most of the suite waits (on Docker, containers starting, the fake Modal control
plane, subprocesses), so test files run side by side in N worker processes. Every
fixture is per worker already: FLEET_HOME is a temp dir per test, proxy ports come
from `free_port()`, fleet names are unique, the fake Modal server is one per worker
(its own port, containers and images labelled with its server id).

Two things this plugin adds to `--dist loadfile`:

- one work unit per *file*, except the directories in `ONE_WORKER`, which go to a
  single worker whole: tests/remote's session fixture `remote_engine` starts a
  second dockerd (with sshd in a netns) per pytest process, and one is enough;
- the longest files start first (`WEIGHTS`, seconds measured in a full run), so
  the run does not end with one worker alone on a long file. A file not listed
  runs after them, in collection order. Workers only: a serial run keeps the
  usual order.

tests/zz_engine_restart is not run here: `make test` runs it in a second pytest
invocation once the parallel one is over (it starts and stops dockerds).
"""

from __future__ import annotations

import pytest

# Directories whose files all run in one worker (one session fixture between them).
ONE_WORKER = ("tests/remote/",)

# Seconds per file (test-seconds in a full `make test` on the 2-vCPU VM, 4 workers, a
# busy machine; files over 40 s only): the order matters, not the figures. tests/remote
# is one unit (ONE_WORKER) and grows as remote-engine tests are added: it starts first.
WEIGHTS: dict[str, float] = {
    "tests/remote/": 400,
    "tests/gitops/test_gitops_docker.py": 382,
    "tests/modal/test_shared_host.py": 368,
    "tests/e2e/test_docker_apply.py": 310,
    "tests/modal/test_modal_join.py": 279,
    "tests/e2e/test_guides.py": 276,
    "tests/modal/test_agent_lifecycle.py": 256,
    "tests/modal/test_modal_grants.py": 249,
    "tests/e2e/test_agent_ops.py": 210,
    "tests/modal/test_verbs_modal.py": 135,
    "tests/verbs/test_cli_ux.py": 130,
    "tests/e2e/test_routing_apply.py": 128,
    "tests/e2e/test_shared_join.py": 125,
    "tests/grants/test_e2e.py": 120,
    "tests/modal/test_saved_restore.py": 120,
    "tests/verbs/test_stop_start.py": 113,
    "tests/faults/test_hand_changes.py": 100,
    "tests/security/test_names.py": 93,
    "tests/security/test_fleet_file_readonly.py": 93,
    "tests/faults/test_fleet_home.py": 87,
    "tests/modal/test_leave_shared_host.py": 83,
    "tests/faults/test_crash.py": 83,
    "tests/watch/test_watch.py": 69,
    "tests/routing/test_proxy_leftovers.py": 60,
    "tests/grants/test_cli.py": 60,
    "tests/modal/test_message_bytes.py": 52,
    "tests/security/test_ownership.py": 51,
    "tests/e2e/test_status_view.py": 49,
    "tests/e2e/test_attach.py": 48,
    "tests/watch/test_mass_destroy.py": 47,
    "tests/security/test_proxy_abuse.py": 46,
}


def _unit(path: str) -> str:
    for prefix in ONE_WORKER:
        if path.startswith(prefix):
            return prefix
    return path


def _weight(path: str) -> float:
    return WEIGHTS.get(_unit(path), 0.0)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class FileScheduling(LoadFileScheduling):
        """loadfile, with the ONE_WORKER directories as one unit each."""

        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid.split("::", 1)[0])

    config.option.loadscopereorder = False  # keep the order the workers collected (below)
    return FileScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    if not hasattr(config, "workerinput"):  # not an xdist worker: the usual order
        return
    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (-_weight(item.nodeid.split("::", 1)[0]), order[id(item)]))
