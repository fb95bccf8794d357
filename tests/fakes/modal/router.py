"""The fake task command router: exec, stdio, stdin and filesystem snapshots.

Real Modal serves these from the worker running the sandbox; the SDK gets the router's
URL and a JWT from `SandboxGetCommandRouterAccess`. Here the router shares the control
plane's port (plain http is accepted by the SDK because the server is on localhost)
and checks that the bearer JWT is one it minted for the task named in the request
(UNAUTHENTICATED otherwise, which makes the SDK refresh it).
"""

from __future__ import annotations

from typing import Any

from grpclib import GRPCError, Status
from grpclib.server import Stream

from modal_proto import task_command_router_pb2 as sr
from modal_proto.task_command_router_grpc import TaskCommandRouterBase

from .core import FakeModalCore, Sandbox
from .unimplemented import fill_unimplemented


@fill_unimplemented
class FakeCommandRouter(TaskCommandRouterBase):
    def __init__(self, core: FakeModalCore) -> None:
        self.core = core

    async def _recv(self, stream: Stream[Any, Any]) -> Any:
        request = await stream.recv_message()
        assert request is not None
        self._check(stream, getattr(request, "task_id", ""))
        return request

    def _check(self, stream: Stream[Any, Any], task_id: str) -> None:
        auth = str((stream.metadata or {}).get("authorization") or "")
        claims = self.core.signer.check(auth.removeprefix("Bearer ").strip()) if auth else None
        if claims is None or claims.get("kind") != "router" or (task_id and claims.get("task_id") != task_id):
            raise GRPCError(Status.UNAUTHENTICATED, "missing or invalid command router token")

    # ---- exec --------------------------------------------------------------------------

    async def TaskExecStart(self, stream: Stream[sr.TaskExecStartRequest, sr.TaskExecStartResponse]) -> None:
        req = await self._recv(stream)
        sb = self.core.running_by_task(req.task_id)
        if req.container_id:
            raise GRPCError(Status.UNIMPLEMENTED, "fake Modal has no sidecar containers")
        env: dict[str, str] = dict(req.env)
        for src in req.secret_sources:
            if src.HasField("env"):
                env.update(src.env.contents)
            elif src.secret_id:
                raise GRPCError(Status.UNIMPLEMENTED, "fake Modal has no named Secrets; pass env= instead")
        await self.core.exec_start(
            sb,
            req.exec_id,
            list(req.command_args),
            env,
            req.workdir if req.HasField("workdir") else None,
            req.pty_info if req.HasField("pty_info") else None,
            discard_stdout=req.stdout_config == sr.TaskExecStdoutConfig.TASK_EXEC_STDOUT_CONFIG_DEVNULL,
            discard_stderr=req.stderr_config == sr.TaskExecStderrConfig.TASK_EXEC_STDERR_CONFIG_DEVNULL,
        )
        await stream.send_message(sr.TaskExecStartResponse())

    async def TaskExecStdioRead(
        self, stream: Stream[sr.TaskExecStdioReadRequest, sr.TaskExecStdioReadResponse]
    ) -> None:
        req = await self._recv(stream)
        ex = self.core.exec(req.task_id, req.exec_id)
        if req.file_descriptor == sr.TASK_EXEC_STDIO_FILE_DESCRIPTOR_STDERR:
            buf = ex.process.stderr
        elif req.file_descriptor == sr.TASK_EXEC_STDIO_FILE_DESCRIPTOR_STDOUT:
            buf = ex.process.stdout
        else:
            raise GRPCError(Status.INVALID_ARGUMENT, f"bad file descriptor {req.file_descriptor}")
        async for _, chunk in buf.follow(req.offset):
            await stream.send_message(sr.TaskExecStdioReadResponse(data=chunk))

    async def TaskExecStdinWrite(
        self, stream: Stream[sr.TaskExecStdinWriteRequest, sr.TaskExecStdinWriteResponse]
    ) -> None:
        req = await self._recv(stream)
        ex = self.core.exec(req.task_id, req.exec_id)
        try:
            await ex.process.write_stdin(req.offset, req.data, req.eof)
        except ValueError as e:
            raise GRPCError(Status.OUT_OF_RANGE, str(e)) from e
        self.core.sandbox_by_task(req.task_id).touch()
        await stream.send_message(sr.TaskExecStdinWriteResponse())

    async def TaskExecStdinWriteStream(
        self, stream: Stream[sr.TaskExecStdinWriteStreamRequest, sr.TaskExecStdinWriteStreamResponse]
    ) -> None:
        first = await stream.recv_message()
        if first is None or not first.HasField("start"):
            raise GRPCError(Status.INVALID_ARGUMENT, "stdin stream must begin with `start`")
        self._check(stream, first.start.task_id)
        ex = self.core.exec(first.start.task_id, first.start.exec_id)
        offset = first.start.offset
        try:
            async for msg in stream:
                if msg.HasField("end"):
                    await ex.process.write_stdin(offset, b"", True)
                    break
                await ex.process.write_stdin(offset, msg.data, False)
                offset += len(msg.data)
        except ValueError as e:
            raise GRPCError(Status.OUT_OF_RANGE, str(e)) from e
        await stream.send_message(sr.TaskExecStdinWriteStreamResponse())

    async def TaskExecStdinStatus(
        self, stream: Stream[sr.TaskExecStdinStatusRequest, sr.TaskExecStdinStatusResponse]
    ) -> None:
        req = await self._recv(stream)
        p = self.core.exec(req.task_id, req.exec_id).process
        await stream.send_message(sr.TaskExecStdinStatusResponse(num_bytes_written=p.stdin_written, closed=p.stdin_closed))

    async def TaskExecPoll(self, stream: Stream[sr.TaskExecPollRequest, sr.TaskExecPollResponse]) -> None:
        req = await self._recv(stream)
        p = self.core.exec(req.task_id, req.exec_id).process
        resp = sr.TaskExecPollResponse()
        if p.exit_code is not None:
            resp.code = p.exit_code
        await stream.send_message(resp)

    async def TaskExecWait(self, stream: Stream[sr.TaskExecWaitRequest, sr.TaskExecWaitResponse]) -> None:
        req = await self._recv(stream)
        p = self.core.exec(req.task_id, req.exec_id).process
        await p.exited.wait()
        assert p.exit_code is not None
        await stream.send_message(sr.TaskExecWaitResponse(code=p.exit_code))

    # ---- the sandbox's own entrypoint ----------------------------------------------------

    async def SandboxStdioReadV2(
        self, stream: Stream[sr.SandboxStdioReadV2Request, sr.SandboxStdioReadV2Response]
    ) -> None:
        req = await self._recv(stream)
        sb = self.core.sandbox_by_task(req.task_id)
        main = self._main(sb)
        buf = main.stderr if req.file_descriptor == sr.SANDBOX_STDIO_FILE_DESCRIPTOR_STDERR else main.stdout
        async for start, chunk in buf.follow(req.offset):
            await stream.send_message(sr.SandboxStdioReadV2Response(data=chunk, starting_offset=start))

    async def SandboxStdinWriteV2(
        self, stream: Stream[sr.SandboxStdinWriteV2Request, sr.SandboxStdinWriteV2Response]
    ) -> None:
        req = await self._recv(stream)
        sb = self.core.running_by_task(req.task_id)
        try:
            await self._main(sb).write_stdin(req.offset, req.data, req.eof)
        except ValueError as e:
            raise GRPCError(Status.OUT_OF_RANGE, str(e)) from e
        await stream.send_message(sr.SandboxStdinWriteV2Response())

    async def SandboxWaitUntilReady(
        self, stream: Stream[sr.SandboxWaitUntilReadyTcrRequest, sr.SandboxWaitUntilReadyTcrResponse]
    ) -> None:
        # Readiness probes are not evaluated: a running sandbox is ready.
        req = await self._recv(stream)
        sb = self.core.running_by_task(req.task_id)
        await stream.send_message(sr.SandboxWaitUntilReadyTcrResponse(ready_at=sb.created_at))

    @staticmethod
    def _main(sb: Sandbox) -> Any:
        if sb.main is None:
            raise GRPCError(Status.FAILED_PRECONDITION, "sandbox has no main process")
        return sb.main

    # ---- filesystem ----------------------------------------------------------------------

    async def TaskSnapshotFilesystem(
        self, stream: Stream[sr.TaskSnapshotFilesystemRequest, sr.TaskSnapshotFilesystemResponse]
    ) -> None:
        req = await self._recv(stream)
        sb = self.core.running_by_task(req.task_id)
        if req.container_id:
            raise GRPCError(Status.UNIMPLEMENTED, "fake Modal has no sidecar containers")
        image_id = await self.core.snapshot(sb, req.snapshot_id)
        await stream.send_message(sr.TaskSnapshotFilesystemResponse(image_id=image_id))
