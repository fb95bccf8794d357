"""A fake Modal service for testing fleet's Modal provider with the real `modal` SDK, offline.

`FakeModal` serves the control plane (`modal_proto.api_grpc.ModalClientBase`) and the task
command router (`modal_proto.task_command_router_grpc.TaskCommandRouterBase`) on 127.0.0.1
with grpclib. Every sandbox is a real Docker container of a local image; exec runs real
processes in it; encrypted ports are real published ports behind a TLS forwarder whose CA
is `FakeModal.ca_path`. See README.md next to this file for what is faked and what is real.

In-process:   `FakeModal(image="fleet-base:bookworm").start()` -> `.url`, `.env()`, `.stop()`
From a shell: `python -m tests.fakes.modal --port 8765 --image fleet-base:bookworm`
Pytest:       fixtures in `tests.fakes.modal.fixtures` (`fake_modal`, `modal_env`, `modal_client`).
"""

from .server import DEFAULT_IMAGE, FakeModal

__all__ = ["DEFAULT_IMAGE", "FakeModal"]
