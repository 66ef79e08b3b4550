"""``tongbao bank``: the platform's instruction signing key and proof of what was sent
(SEC-12 non-repudiation, PAY-6).

``public-key`` prints the Ed25519 public key a bank verifies our instructions
with (PEM on standard output, its key id on standard error), to hand to a
bank when the channel is set up. ``verify-instruction ID`` takes the
instruction as the simulated bank stored it and checks its signature with
the key the bank holds: exit 0 if it verifies, 1 if it does not (or the bank
holds no signed instruction with that id).
"""

from __future__ import annotations

from typing import Annotated

import typer

from tongbao import errors
from tongbao.banking import signing
from tongbao.cli import err, out, platform_for, refusals
from tongbao.money import format_yuan

bank_app = typer.Typer(
    help="Signed bank instructions: public key, verification (SEC-12).", no_args_is_help=True
)


@bank_app.command("public-key")
@refusals
def bank_public_key() -> None:
    """Print the platform's instruction signing public key (PEM)."""
    with platform_for() as platform:
        signer = platform.instruction_signer
        pem = signing.public_key_pem(signer.public_key)
        key_id = signer.key_id
    typer.echo(pem, nl=False)
    err.print(f"key id {key_id} (ed25519)", markup=False, highlight=False)


@bank_app.command("verify-instruction")
@refusals
def bank_verify_instruction(
    instruction_id: Annotated[str, typer.Argument(help="The instruction (payment) id")],
) -> None:
    """Check the signature of an instruction the simulated bank holds; exit 1 if it fails."""
    with platform_for() as platform:
        try:
            bank = platform.simulated_bank()
        except LookupError:
            raise errors.ConfigurationError(
                "this platform runs without the simulated bank, whose book this reads"
            ) from None
        signed = bank.signed_instruction(instruction_id)
        if signed is None:
            raise errors.InstructionNotFound(
                f"the bank holds no signed instruction {instruction_id}"
            )
        public_key = bank.platform_key(signed.key_id)
        ours = platform.instruction_signer.key_id
    ins = signed.instruction
    what = (
        f"{ins.direction} {format_yuan(ins.amount)} yuan, agreement {ins.agreement_id} "
        f"to {ins.bank_code or '?'}, memo {ins.memo!r}, signed at "
        f"{signing.instant_text(signed.signed_at)} by key {signed.key_id}"
    )
    broken = None
    if public_key is None:
        broken = f"key {signed.key_id} is not registered with the bank"
    elif not signing.verify(public_key, signed):
        broken = "the stored instruction is not what the registered key signed"
    if broken is not None:
        err.print(
            f"instruction {instruction_id} signature BROKEN: {broken} ({what})",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(1)
    whose = "the platform's current key" if signed.key_id == ours else "a key no longer in use"
    out.print(
        f"instruction {instruction_id} signature OK: {what} ({whose})",
        markup=False,
        highlight=False,
    )
