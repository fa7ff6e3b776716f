"""SCRAM users and ACL bindings (docs/DESIGN.md §11): stored here, enforced by the proxies from the view."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, Field

from fedkafka.controller.api.common import NulFree, stored_length
from fedkafka.controller.models import AclRow, ScramCredentialRow
from fedkafka.controller.service import Controller


class CredentialBody(BaseModel):
    mechanism: NulFree = Field(max_length=stored_length(ScramCredentialRow.mechanism))
    salt: NulFree = Field(max_length=stored_length(ScramCredentialRow.salt))
    iterations: int
    stored_key: NulFree = Field(max_length=stored_length(ScramCredentialRow.stored_key))
    server_key: NulFree = Field(max_length=stored_length(ScramCredentialRow.server_key))


class UserBody(BaseModel):
    """SCRAM credentials only (RFC 5802 StoredKey/ServerKey): a password never reaches the controller."""

    credentials: list[CredentialBody] = Field(max_length=2)


class AclBody(BaseModel):
    resource_type: NulFree = Field(max_length=stored_length(AclRow.resource_type))
    name: NulFree = Field(max_length=stored_length(AclRow.name))
    pattern_type: NulFree = Field("LITERAL", max_length=stored_length(AclRow.pattern_type))
    principal: NulFree = Field(max_length=stored_length(AclRow.principal))
    host: NulFree = Field("*", max_length=stored_length(AclRow.host))
    operation: NulFree = Field(max_length=stored_length(AclRow.operation))
    permission: NulFree = Field("ALLOW", max_length=stored_length(AclRow.permission))


class AclsBody(BaseModel):
    acls: list[AclBody] = Field(max_length=1000)


class AclFilterBody(BaseModel):
    resource_type: str | None = None
    name: str | None = None
    pattern_type: str | None = None
    principal: str | None = None
    host: str | None = None
    operation: str | None = None
    permission: str | None = None


def router(controller: Controller, api: Any) -> APIRouter:
    router = APIRouter(dependencies=[api])

    @router.put("/v1/users/{name}")
    def put_user(name: str, body: UserBody):
        user, changed = controller.put_user(name, [c.model_dump() for c in body.credentials])
        return {"user": user, "changed": changed}

    @router.get("/v1/users")
    def users():
        return controller.list_users()

    @router.get("/v1/users/{name}")
    def user(name: str):
        return controller.get_user(name)

    @router.delete("/v1/users/{name}", status_code=204)
    def delete_user(name: str):
        controller.delete_user(name)
        return Response(status_code=204)

    @router.post("/v1/acls")
    def create_acls(body: AclsBody):
        return controller.create_acls([a.model_dump() for a in body.acls])

    @router.get("/v1/acls")
    def list_acls(resource_type: str | None = None, name: str | None = None, pattern_type: str | None = None,
                  principal: str | None = None, host: str | None = None, operation: str | None = None,
                  permission: str | None = None):
        given = {"resource_type": resource_type, "name": name, "pattern_type": pattern_type, "principal": principal,
                 "host": host, "operation": operation, "permission": permission}
        return controller.list_acls({k: v for k, v in given.items() if v is not None})

    @router.post("/v1/acls/delete")
    def delete_acls(body: AclFilterBody):
        """Deletes every binding the filter matches (an empty filter matches all of them)."""
        return controller.delete_acls(body.model_dump(exclude_none=True))

    return router
