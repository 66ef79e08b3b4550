"""Authentication: API tokens and the principals they stand for."""

from tongbao.auth.model import Principal, PrincipalType
from tongbao.auth.service import Auth

__all__ = ["Auth", "Principal", "PrincipalType"]
