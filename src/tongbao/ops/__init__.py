"""Operations policy: versioned limits, risk policy and run-time configuration."""

from tongbao.ops.policies import validate_policy
from tongbao.ops.service import PolicySettings, PolicyVersion

__all__ = ["PolicySettings", "PolicyVersion", "validate_policy"]
