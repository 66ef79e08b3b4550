"""Who is calling and what they may do: customer API tokens, staff accounts
with password + TOTP sessions, roles and permissions (SEC-4, SEC-5), dual
control (SEC-6), offboarding and permission review (SEC-7), behaviour
alerts (SEC-8)."""

from tongbao.auth.dual_control import DualControlRequest, RequestState
from tongbao.auth.dual_control_service import DualControl
from tongbao.auth.model import Principal, PrincipalType
from tongbao.auth.monitor import BehaviourMonitor, StaffAlert
from tongbao.auth.service import Auth
from tongbao.auth.staff import StaffMember, StaffService

__all__ = [
    "Auth",
    "BehaviourMonitor",
    "DualControl",
    "DualControlRequest",
    "Principal",
    "PrincipalType",
    "RequestState",
    "StaffAlert",
    "StaffMember",
    "StaffService",
]
