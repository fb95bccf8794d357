"""The fake control plane: `modal.client.ModalClient` RPCs the SDK needs for apps,
images, volumes and V2 sandboxes, translated onto `FakeModalCore`.

Credentials are checked (`x-modal-token-id`/`x-modal-token-secret` must be the
server's; a wrong pair answers UNAUTHENTICATED, which the SDK raises as AuthError).
`SandboxCreateV2` honours the client's `x-idempotency-key`, so a retried create does
not start a second container. Every RPC not defined here answers UNIMPLEMENTED.
"""

from __future__ import annotations

import asyncio
from typing import Any

from google.protobuf import empty_pb2
from grpclib import GRPCError, Status
from grpclib.server import Stream

from modal_proto import api_pb2
from modal_proto.api_grpc import ModalClientBase

from .core import IMAGE_BUILDER_VERSION, FakeModalCore, Sandbox
from .unimplemented import fill_unimplemented

GS = api_pb2.GenericResult


@fill_unimplemented
class FakeControlPlane(ModalClientBase):
    def __init__(self, core: FakeModalCore, token_id: str, token_secret: str) -> None:
        self.core = core
        self.token_id = token_id
        self.token_secret = token_secret
        self._create_by_key: dict[str, asyncio.Future[api_pb2.SandboxCreateV2Response]] = {}

    # ---- helpers -----------------------------------------------------------------------

    async def _recv(self, stream: Stream[Any, Any]) -> Any:
        md = stream.metadata or {}
        if md.get("x-modal-token-id") != self.token_id or md.get("x-modal-token-secret") != self.token_secret:
            raise GRPCError(
                Status.UNAUTHENTICATED,
                "Token ID / secret not recognised by the fake Modal server (use the values it printed)",
            )
        auth = md.get("x-modal-auth-token")
        if auth and self.core.signer.check(str(auth)) is None:
            raise GRPCError(Status.UNAUTHENTICATED, "invalid or expired auth token")
        request = await stream.recv_message()
        assert request is not None
        return request

    def _router_access(self, sb: Sandbox) -> api_pb2.CommandRouterAccess:
        jwt = self.core.signer.mint({"task_id": sb.task_id, "sandbox_id": sb.id, "kind": "router"})
        return api_pb2.CommandRouterAccess(url=self.core.router_url, jwt=jwt)

    # ---- client, auth, environments, apps ------------------------------------------------

    async def ClientHello(self, stream: Stream[empty_pb2.Empty, api_pb2.ClientHelloResponse]) -> None:
        await self._recv(stream)
        await stream.send_message(api_pb2.ClientHelloResponse(image_builder_version=IMAGE_BUILDER_VERSION))

    async def AuthTokenGet(self, stream: Stream[api_pb2.AuthTokenGetRequest, api_pb2.AuthTokenGetResponse]) -> None:
        await self._recv(stream)
        token = self.core.signer.mint({"sub": self.token_id, "kind": "auth"})
        await stream.send_message(api_pb2.AuthTokenGetResponse(token=token))

    async def EnvironmentGetOrCreate(
        self, stream: Stream[api_pb2.EnvironmentGetOrCreateRequest, api_pb2.EnvironmentGetOrCreateResponse]
    ) -> None:
        req = await self._recv(stream)
        name, env_id = self.core.environment(req.deployment_name)
        await stream.send_message(
            api_pb2.EnvironmentGetOrCreateResponse(
                environment_id=env_id,
                metadata=api_pb2.EnvironmentMetadata(
                    name=name,
                    settings=api_pb2.EnvironmentSettings(
                        image_builder_version=IMAGE_BUILDER_VERSION, webhook_suffix="fake-modal.localhost"
                    ),
                ),
            )
        )

    async def AppGetOrCreate(
        self, stream: Stream[api_pb2.AppGetOrCreateRequest, api_pb2.AppGetOrCreateResponse]
    ) -> None:
        req = await self._recv(stream)
        create = req.object_creation_type == api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING
        app = self.core.app_get_or_create(req.app_name, req.environment_name, create)
        await stream.send_message(
            api_pb2.AppGetOrCreateResponse(
                app_id=app.id,
                handle_metadata=api_pb2.AppHandleMetadata(app_id=app.id, environment_name=app.environment),
            )
        )

    async def AppStop(self, stream: Stream[api_pb2.AppStopRequest, empty_pb2.Empty]) -> None:
        req = await self._recv(stream)
        self.core.app(req.app_id)
        for sb in list(self.core.sandboxes.values()):
            if sb.app_id == req.app_id and sb.running:
                await self.core.terminate(sb, GS.GENERIC_STATUS_TERMINATED, "App stopped")
        await stream.send_message(empty_pb2.Empty())

    # ---- images and volumes ----------------------------------------------------------------

    async def ImageGetOrCreate(
        self, stream: Stream[api_pb2.ImageGetOrCreateRequest, api_pb2.ImageGetOrCreateResponse]
    ) -> None:
        req = await self._recv(stream)
        image_id, result = await self.core.image_get_or_create(req.image)
        await stream.send_message(
            api_pb2.ImageGetOrCreateResponse(
                image_id=image_id,
                result=result,
                metadata=api_pb2.ImageMetadata(image_builder_version=req.builder_version or IMAGE_BUILDER_VERSION),
            )
        )

    async def ImageFromId(self, stream: Stream[api_pb2.ImageFromIdRequest, api_pb2.ImageFromIdResponse]) -> None:
        req = await self._recv(stream)
        image = await self.core.image(req.image_id)
        await stream.send_message(
            api_pb2.ImageFromIdResponse(
                image_id=image.id, metadata=api_pb2.ImageMetadata(image_builder_version=IMAGE_BUILDER_VERSION)
            )
        )

    async def VolumeGetOrCreate(
        self, stream: Stream[api_pb2.VolumeGetOrCreateRequest, api_pb2.VolumeGetOrCreateResponse]
    ) -> None:
        req = await self._recv(stream)
        vol = self.core.volume_get_or_create(req.deployment_name, req.environment_name, req.object_creation_type)
        await stream.send_message(
            api_pb2.VolumeGetOrCreateResponse(
                volume_id=vol.id,
                version=req.version,
                metadata=api_pb2.VolumeMetadata(name=vol.name, version=req.version),
            )
        )

    async def VolumeHeartbeat(self, stream: Stream[api_pb2.VolumeHeartbeatRequest, empty_pb2.Empty]) -> None:
        await self._recv(stream)
        await stream.send_message(empty_pb2.Empty())

    # ---- mounts: local files (`add_local_*`, Dockerfile contexts) -------------------------
    # Files travel inline (up to 2 MiB each); larger ones need blob upload (BlobCreate),
    # which the fake does not serve.

    async def MountBatchedCheckExistence(
        self,
        stream: Stream[api_pb2.MountBatchedCheckExistenceRequest, api_pb2.MountBatchedCheckExistenceResponse],
    ) -> None:
        req = await self._recv(stream)
        missing = self.core.missing_blobs(list(req.sha256_hex_hashes))
        await stream.send_message(api_pb2.MountBatchedCheckExistenceResponse(missing_sha256_hex_hashes=missing))

    async def MountPutFile(self, stream: Stream[api_pb2.MountPutFileRequest, api_pb2.MountPutFileResponse]) -> None:
        req = await self._recv(stream)
        if req.data_blob_id:
            raise GRPCError(Status.UNIMPLEMENTED, "fake Modal takes files up to 2 MiB only (no blob uploads)")
        self.core.put_blob(req.sha256_hex, req.data)
        await stream.send_message(api_pb2.MountPutFileResponse(exists=True))

    async def MountGetOrCreate(
        self, stream: Stream[api_pb2.MountGetOrCreateRequest, api_pb2.MountGetOrCreateResponse]
    ) -> None:
        req = await self._recv(stream)
        mount_id, checksum = self.core.mount_get_or_create(
            list(req.files), req.deployment_name, req.environment_name, req.object_creation_type
        )
        await stream.send_message(
            api_pb2.MountGetOrCreateResponse(
                mount_id=mount_id, handle_metadata=api_pb2.MountHandleMetadata(content_checksum_sha256_hex=checksum)
            )
        )

    # ---- sandboxes (V2) --------------------------------------------------------------------

    async def SandboxCreateV2(
        self, stream: Stream[api_pb2.SandboxCreateV2Request, api_pb2.SandboxCreateV2Response]
    ) -> None:
        req = await self._recv(stream)
        key = str((stream.metadata or {}).get("x-idempotency-key") or "")
        if key and key in self._create_by_key:
            await stream.send_message(await asyncio.shield(self._create_by_key[key]))
            return
        fut: asyncio.Future[api_pb2.SandboxCreateV2Response] = asyncio.get_running_loop().create_future()
        if key:
            self._create_by_key[key] = fut
        try:
            env: dict[str, str] = {}
            for src in req.secret_sources:
                if src.HasField("env"):
                    env.update(src.env.contents)
                elif src.secret_id:
                    raise GRPCError(Status.UNIMPLEMENTED, "fake Modal has no named Secrets; pass env= instead")
            env.update(req.ephemeral_secrets.contents)
            tags = {t.tag_name: t.tag_value for t in req.tags}
            sb = await self.core.create_sandbox(req.app_id, req.definition, tags, env)
            resp = api_pb2.SandboxCreateV2Response(
                sandbox_id=sb.id,
                task_id=sb.task_id,
                tunnels=[t.proto() for t in sb.tunnels.values()],
                metadata=sb.handle_metadata(),
                command_router_access=self._router_access(sb),
            )
            fut.set_result(resp)
        except BaseException as e:
            self._create_by_key.pop(key, None)
            fut.cancel()
            raise e
        await stream.send_message(resp)

    async def SandboxListV2(self, stream: Stream[api_pb2.SandboxListRequest, api_pb2.SandboxListResponse]) -> None:
        req = await self._recv(stream)
        tags = {t.tag_name: t.tag_value for t in req.tags}
        page = self.core.list_sandboxes(
            req.app_id, req.environment_name, tags, req.before_timestamp, req.include_finished
        )
        await stream.send_message(api_pb2.SandboxListResponse(sandboxes=[sb.info() for sb in page]))

    async def SandboxGetFromNameV2(
        self, stream: Stream[api_pb2.SandboxGetFromNameRequest, api_pb2.SandboxGetFromNameResponse]
    ) -> None:
        req = await self._recv(stream)
        sb = self.core.sandbox_by_name(req.app_name, req.environment_name, req.sandbox_name, req.include_terminated)
        await stream.send_message(api_pb2.SandboxGetFromNameResponse(sandbox_id=sb.id, metadata=sb.handle_metadata()))

    async def SandboxGetFromName(
        self, stream: Stream[api_pb2.SandboxGetFromNameRequest, api_pb2.SandboxGetFromNameResponse]
    ) -> None:
        # The SDK falls back to this V1 RPC when the V2 lookup says NOT_FOUND; the fake
        # has one namespace, so the answer is the same.
        await self.SandboxGetFromNameV2(stream)

    async def SandboxWaitV2(self, stream: Stream[api_pb2.SandboxWaitRequest, api_pb2.SandboxWaitResponse]) -> None:
        req = await self._recv(stream)
        sb = self.core.sandbox(req.sandbox_id)
        await self.core.wait(sb, req.timeout)
        resp = api_pb2.SandboxWaitResponse(metadata=sb.handle_metadata())
        if sb.result is not None:
            resp.result.CopyFrom(sb.result)
        await stream.send_message(resp)

    async def SandboxTagsGetV2(
        self, stream: Stream[api_pb2.SandboxTagsGetRequest, api_pb2.SandboxTagsGetResponse]
    ) -> None:
        req = await self._recv(stream)
        sb = self.core.sandbox(req.sandbox_id)
        await stream.send_message(
            api_pb2.SandboxTagsGetResponse(
                tags=[api_pb2.SandboxTag(tag_name=k, tag_value=v) for k, v in sorted(sb.tags.items())]
            )
        )

    async def SandboxTagsSetV2(self, stream: Stream[api_pb2.SandboxTagsSetRequest, empty_pb2.Empty]) -> None:
        req = await self._recv(stream)
        sb = self.core.sandbox(req.sandbox_id)
        sb.tags = {t.tag_name: t.tag_value for t in req.tags}  # replaces the whole set, as Modal does
        await stream.send_message(empty_pb2.Empty())

    async def SandboxGetTunnelsV2(
        self, stream: Stream[api_pb2.SandboxGetTunnelsRequest, api_pb2.SandboxGetTunnelsResponse]
    ) -> None:
        req = await self._recv(stream)
        sb = self.core.sandbox(req.sandbox_id)
        resp = api_pb2.SandboxGetTunnelsResponse(tunnels=[t.proto() for t in sb.tunnels.values()])
        if sb.result is not None:
            resp.result.CopyFrom(sb.result)
            del resp.tunnels[:]
        await stream.send_message(resp)

    async def SandboxGetTaskIdV2(
        self, stream: Stream[api_pb2.SandboxGetTaskIdRequest, api_pb2.SandboxGetTaskIdResponse]
    ) -> None:
        req = await self._recv(stream)
        sb = self.core.sandbox(req.sandbox_id)
        resp = api_pb2.SandboxGetTaskIdResponse()
        if sb.running:
            resp.task_id = sb.task_id
        elif sb.result is not None:
            resp.task_result.CopyFrom(sb.result)
        await stream.send_message(resp)

    async def SandboxGetCommandRouterAccess(
        self,
        stream: Stream[api_pb2.SandboxGetCommandRouterAccessRequest, api_pb2.SandboxGetCommandRouterAccessResponse],
    ) -> None:
        req = await self._recv(stream)
        sb = self.core.sandbox(req.sandbox_id) if req.sandbox_id else self.core.sandbox_by_task(req.task_id)
        if not sb.running:
            raise GRPCError(Status.FAILED_PRECONDITION, f"Sandbox {sb.id} has already finished")
        access = self._router_access(sb)
        await stream.send_message(
            api_pb2.SandboxGetCommandRouterAccessResponse(
                url=access.url, jwt=access.jwt, worker_ipv4_address="127.0.0.1"
            )
        )

    async def SandboxTerminateV2(
        self, stream: Stream[api_pb2.SandboxTerminateRequest, api_pb2.SandboxTerminateResponse]
    ) -> None:
        req = await self._recv(stream)
        sb = self.core.sandbox(req.sandbox_id)
        resp = api_pb2.SandboxTerminateResponse()
        if sb.result is not None:
            resp.existing_result.CopyFrom(sb.result)
        else:
            await self.core.terminate(sb)
        await stream.send_message(resp)
