"""The admin API: the CLI's admin commands over HTTP (docs/api.md, "Admin API").

Every call acts as the admin the token belongs to, with the core's role checks (R02) and
two-step confirmations (R03), audited with adapter `api`. One rule is the service's own:
granting the `billing` role through the API needs the billing role, so an admin token cannot
mint a way around R02.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from pam_unified_mfa.core import MFA, RequestContext, UserView
from pam_unified_mfa.core.accounts import AdminView
from pam_unified_mfa.core.policy import PolicyView
from pam_unified_mfa.errors import PermissionDenied
from pam_unified_mfa.service.clients import AdminName
from pam_unified_mfa.service.errors import errors
from pam_unified_mfa.service.runtime import Runtime, peer, runtime
from pam_unified_mfa.settings import parse_duration

router = APIRouter(prefix="/v1/admin", tags=["admin"])

Enforcement = Literal["required", "enroll_at_login", "exempt"]
Name = Annotated[str, Field(min_length=1, max_length=128)]


# -- models -----------------------------------------------------------------------------------


class Factor(BaseModel):
    id: str
    kind: str = Field(description="protect_push | protect_totp | third_party_totp | bypass")
    state: str
    unified: bool
    enrollment: str
    created_at: float
    confirmed_at: float | None
    expires_at: float | None
    used: bool


class User(BaseModel):
    name: str
    kind: str
    enforcement: str
    groups: list[str]
    locked: bool
    must_enroll: bool
    on_unified: bool
    suggest_unified: bool
    factors: list[Factor]


class UserList(BaseModel):
    users: list[User]


class NewUser(BaseModel):
    name: Name
    groups: list[Name] = []


class EnforcementRequest(BaseModel):
    enforcement: Enforcement | Literal["inherit"] | None = Field(
        description="null or `inherit`: follow the groups and the organisation default")


class EnrollRequest(BaseModel):
    kind: str | None = Field(None, description="unified | push | totp | third_party_totp; "
                             "default: what the policy gives new enrollments")


class Enrollment(BaseModel):
    account: str
    kind: str
    uri: str = Field(description="The enrollment URI (show it as a QR code); it carries the "
                     "secret, so it is returned only here, once")
    factor_ids: list[str]
    expires_at: float


class ResetRequest(BaseModel):
    factor: str | None = Field(None, description="Separated mode: reset only this factor")


class FactorIds(BaseModel):
    factors: list[str]


class BypassRequest(BaseModel):
    count: int = Field(1, ge=1, le=20)
    ttl: str | None = Field(None, description="A duration such as 1h or 2d; default from "
                            "the settings")


class BypassCodes(BaseModel):
    codes: list[str] = Field(description="Single-use codes, shown once")


class Admin(BaseModel):
    name: str
    roles: list[str]
    linked_user: str | None


class AdminList(BaseModel):
    admins: list[Admin]


class NewAdmin(BaseModel):
    name: Name
    roles: list[Literal["admin", "billing"]] = []
    linked_user: str | None = None


class Policy(BaseModel):
    mode: str = Field(description="separated | unified")
    totp_source: str = Field(description="protect | third_party")
    methods: list[str]
    default_enforcement: str
    version: int


class PreviewRequest(BaseModel):
    action: Literal["merge", "separate", "totp-source"]
    argument: str = Field("", max_length=64, description="totp-source: protect | third_party")


class Preview(BaseModel):
    action: str
    argument: str
    confirmation: str = Field(description="Pass to /v1/admin/policy/confirm to apply")
    changes: dict[str, str]
    counts: dict[str, int]
    warnings: list[str]
    expires_at: float


class ConfirmRequest(BaseModel):
    confirmation: str = Field(max_length=256)


class Applied(BaseModel):
    counts: dict[str, int]
    policy: Policy


class MethodRequest(BaseModel):
    enabled: bool


class DefaultEnforcement(BaseModel):
    enforcement: Enforcement


class AuditEntry(BaseModel):
    at: float
    actor: str
    action: str
    subject: str
    outcome: str
    adapter: str
    client: str
    detail: dict[str, Any]


class AuditList(BaseModel):
    entries: list[AuditEntry]


# -- helpers ----------------------------------------------------------------------------------


Rt = Annotated[Runtime, Depends(runtime)]
READ = errors(401)
WRITE = errors(400, 401, 403, 404, 409)


def _ctx(request: Request) -> RequestContext:
    return RequestContext(adapter="api", client=peer(request))


def _user(view: UserView) -> User:
    return User(name=view.name, kind=view.kind, enforcement=view.enforcement,
                groups=list(view.groups), locked=view.locked, must_enroll=view.must_enroll,
                on_unified=view.on_unified, suggest_unified=view.suggest_unified,
                factors=[Factor(**asdict(f)) for f in view.factors])


def _admin(view: AdminView) -> Admin:
    return Admin(name=view.name, roles=list(view.roles), linked_user=view.linked_user)


def _policy(view: PolicyView) -> Policy:
    return Policy(mode=view.mode, totp_source=view.totp_source, methods=list(view.methods),
                  default_enforcement=view.default_enforcement, version=view.version)


def _check_grant(mfa: MFA, actor: str, roles: list[str]) -> None:
    if "billing" not in roles:
        return
    acting = next((a for a in mfa.list_admins() if a.name == actor), None)
    if acting is None or "billing" not in acting.roles:
        raise PermissionDenied(f"refused: granting the billing role needs the billing role, "
                               f"which {actor} does not hold (R02)")


# -- users ------------------------------------------------------------------------------------


@router.get("/users", response_model=UserList, responses=READ)
async def list_users(admin: AdminName, rt: Rt) -> UserList:
    return UserList(users=[_user(u) for u in await run_in_threadpool(rt.mfa.list_users)])


@router.post("/users", response_model=User, status_code=201, responses=WRITE)
async def add_user(body: NewUser, request: Request, admin: AdminName, rt: Rt) -> User:
    view = await run_in_threadpool(rt.mfa.add_user, body.name, tuple(body.groups), admin,
                                   _ctx(request))
    return _user(view)


@router.get("/users/{name}", response_model=User, responses=errors(401, 404))
async def show_user(name: str, admin: AdminName, rt: Rt) -> User:
    return _user(await run_in_threadpool(rt.mfa.show_user, name))


@router.put("/users/{name}/enforcement", response_model=User, responses=WRITE)
async def set_enforcement(name: str, body: EnforcementRequest, request: Request,
                          admin: AdminName, rt: Rt) -> User:
    value = None if body.enforcement in (None, "inherit") else body.enforcement

    def run() -> UserView:
        rt.mfa.set_enforcement(name, value, actor=admin, ctx=_ctx(request))
        return rt.mfa.show_user(name)

    return _user(await run_in_threadpool(run))


@router.post("/users/{name}/enroll", response_model=Enrollment, status_code=201,
             responses=WRITE)
async def enroll(name: str, body: EnrollRequest, request: Request, admin: AdminName,
                 rt: Rt) -> Enrollment:
    def run() -> Enrollment:
        result = rt.mfa.enroll(name, body.kind, actor=admin, ctx=_ctx(request))
        return Enrollment(account=result.account, kind=result.kind, uri=result.uri,
                          factor_ids=list(result.factor_ids), expires_at=result.expires_at)

    return await run_in_threadpool(run)


@router.post("/users/{name}/reset", response_model=FactorIds, responses=WRITE)
async def reset(name: str, body: ResetRequest, request: Request, admin: AdminName,
                rt: Rt) -> FactorIds:
    """Retire the user's Protect enrollment now; they enroll again at their next login (R12)."""
    def run() -> list[str]:
        return rt.mfa.reset_by_admin(name, admin, body.factor, ctx=_ctx(request))

    return FactorIds(factors=await run_in_threadpool(run))


@router.delete("/users/{name}/factors/{factor_id}", response_model=FactorIds, responses=WRITE)
async def delete_factor(name: str, factor_id: str, request: Request, admin: AdminName,
                        rt: Rt) -> FactorIds:
    """Never the user's last working factor (R12): that is refused with 409."""
    def run() -> list[str]:
        return rt.mfa.delete_factor(name, factor_id, actor=admin, ctx=_ctx(request))

    return FactorIds(factors=await run_in_threadpool(run))


@router.post("/users/{name}/bypass", response_model=BypassCodes, status_code=201,
             responses=WRITE)
async def bypass(name: str, body: BypassRequest, request: Request, admin: AdminName,
                 rt: Rt) -> BypassCodes:
    ttl = parse_duration(body.ttl) if body.ttl else None

    def run() -> list[str]:
        return rt.mfa.issue_bypass(name, admin, body.count, ttl, ctx=_ctx(request))

    return BypassCodes(codes=await run_in_threadpool(run))


# -- admins -----------------------------------------------------------------------------------


@router.get("/admins", response_model=AdminList, responses=READ)
async def list_admins(admin: AdminName, rt: Rt) -> AdminList:
    return AdminList(admins=[_admin(a) for a in await run_in_threadpool(rt.mfa.list_admins)])


@router.post("/admins", response_model=Admin, status_code=201, responses=WRITE)
async def add_admin(body: NewAdmin, request: Request, admin: AdminName, rt: Rt) -> Admin:
    def run() -> AdminView:
        _check_grant(rt.mfa, admin, list(body.roles))
        return rt.mfa.add_admin(body.name, tuple(body.roles), body.linked_user, actor=admin,
                                ctx=_ctx(request))

    return _admin(await run_in_threadpool(run))


# -- organisation policy ----------------------------------------------------------------------


@router.get("/policy", response_model=Policy, responses=READ)
async def show_policy(admin: AdminName, rt: Rt) -> Policy:
    return _policy(await run_in_threadpool(rt.mfa.policy))


@router.post("/policy/preview", response_model=Preview, responses=WRITE)
async def preview(body: PreviewRequest, request: Request, admin: AdminName, rt: Rt) -> Preview:
    """Step one of merge, separate or totp-source (R03): what will change; nothing changes yet.
    Merge and separate need the billing role (R02)."""
    result = await run_in_threadpool(rt.mfa.preview, admin, body.action, body.argument,
                                     _ctx(request))
    return Preview(**result.as_dict())


@router.post("/policy/confirm", response_model=Applied, responses=WRITE)
async def confirm(body: ConfirmRequest, request: Request, admin: AdminName, rt: Rt) -> Applied:
    """Step two (R03): apply a previewed change with its confirmation."""
    def run() -> Applied:
        counts = rt.mfa.confirm(admin, body.confirmation, ctx=_ctx(request))
        return Applied(counts=counts, policy=_policy(rt.mfa.policy()))

    return await run_in_threadpool(run)


@router.put("/policy/methods/{method}", response_model=Policy, responses=WRITE)
async def set_method(method: Literal["push", "totp"], body: MethodRequest, request: Request,
                     admin: AdminName, rt: Rt) -> Policy:
    """Enable or disable a method for new enrollments; never the last one (R01)."""
    view = await run_in_threadpool(rt.mfa.set_method, admin, method, body.enabled,
                                   _ctx(request))
    return _policy(view)


@router.put("/policy/enforcement", response_model=Policy, responses=WRITE)
async def set_default_enforcement(body: DefaultEnforcement, request: Request, admin: AdminName,
                                  rt: Rt) -> Policy:
    view = await run_in_threadpool(rt.mfa.set_default_enforcement, admin, body.enforcement,
                                   _ctx(request))
    return _policy(view)


# -- audit ------------------------------------------------------------------------------------


@router.get("/audit", response_model=AuditList, responses=READ)
async def audit_tail(admin: AdminName, rt: Rt,
                     n: Annotated[int, Query(ge=1, le=1000)] = 20) -> AuditList:
    entries = await run_in_threadpool(rt.mfa.audit_tail, n)
    return AuditList(entries=[AuditEntry(**asdict(e)) for e in entries])
