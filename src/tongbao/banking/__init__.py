"""Bank channels: the adapter interface and the simulated bank."""

from tongbao.banking.channel import (
    BankChannel,
    BankStatementLine,
    CardAgreement,
    CardVerification,
    Instruction,
    InstructionDirection,
    InstructionReceipt,
    InstructionStatus,
    SignedInstruction,
)

__all__ = [
    "BankChannel",
    "BankStatementLine",
    "CardAgreement",
    "CardVerification",
    "Instruction",
    "InstructionDirection",
    "InstructionReceipt",
    "InstructionStatus",
    "SignedInstruction",
]
