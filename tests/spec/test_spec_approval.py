"""Specifications: canonical bytes, two-role approvals, and every way an approval must fail."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from spec_support import SIGNERS, TAMPERED, Approvers, spec_doc, tampered, write_spec

from blackbox.seal import key_id
from blackbox.spec.approval import ApprovalError, KeyRing, SignatureFile, statement
from blackbox.spec.canonical import NotCanonical, canonical_bytes, canonical_sha256
from blackbox.spec.diff import diff
from blackbox.spec.model import SpecError, approve, load_approved, parse_spec, parse_spec_data


def ring(a: Approvers) -> KeyRing:
    return KeyRing([("qa", a.qa.public_key()), ("regulator", a.regulator.public_key())])


def test_canonical_bytes_of_a_hand_written_vector() -> None:
    doc = {"version": 4, "id": "FC-050", "parameters": {"T": [{"hh": 85.0, "l": -0.09, "phases": ["émulsion"]}]},
           "x": [True, None, 1e-05]}
    expected = ('{"id":"FC-050","parameters":{"T":[{"hh":85.0,"l":-0.09,"phases":["émulsion"]}]},'
                '"version":4,"x":[true,null,1e-05]}').encode()
    assert canonical_bytes(doc) == expected
    assert canonical_sha256(doc) == hashlib.sha256(expected).hexdigest()


@pytest.mark.parametrize(("text", "message"), [
    ("id: FC-050\ndate: 2026-12-01\n", "not a JSON type"),
    ("id: FC-050\n1: x\n", "not a string"),
    ("id: FC-050\nx: .nan\n", "NaN"),
])
def test_values_without_a_canonical_form_are_refused(text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec(text)


def test_the_statement_signed_is_canonical_json_of_role_signer_time_and_hash() -> None:
    got = statement("specification", "ab" * 32, "qa", "0123456789abcdef", "Li Wei", "2026-12-04T16:40:00Z")
    assert got == ('{"key_id":"0123456789abcdef","kind":"specification","purpose":"blackbox-approval-v1",'
                   '"role":"qa","sha256":"' + "ab" * 32 + '","signed_at":"2026-12-04T16:40:00Z","signer":"Li Wei"}'
                   ).encode()


def test_both_approvals_verify(tmp_path: Path) -> None:
    a = Approvers()
    doc = spec_doc()
    path = write_spec(tmp_path / "s.yaml", doc, a.signatures(doc))
    approved = load_approved(path, ring(a))
    assert {(x.role, x.signer, x.key_id) for x in approved.approvals} == {
        ("qa", SIGNERS["qa"], key_id(a.qa)), ("regulator", SIGNERS["regulator"], key_id(a.regulator))}
    # the signature is plain Ed25519 over the statement: checked here with the key alone
    sig = next(s for s in approved.signatures.signatures if s.role == "regulator")
    a.regulator.public_key().verify(base64.b64decode(sig.signature), statement(
        "specification", canonical_sha256(doc), "regulator", sig.key_id, sig.signer, sig.signed_at))


@pytest.mark.parametrize("how", TAMPERED)
def test_a_spoilt_approval_is_refused(tmp_path: Path, how: str) -> None:
    a = Approvers()
    doc, sigs = tampered(a, how, spec_doc())
    path = write_spec(tmp_path / "s.yaml", doc, sigs)
    expected = {"one_signature": "no valid regulator signature", "wrong_key": "not a known regulator key",
                "one_byte_changed": "changed after it was signed"}[how]
    with pytest.raises(ApprovalError, match=expected):
        load_approved(path, ring(a))


def test_relabelled_role_or_edited_time_or_signer_does_not_verify() -> None:
    a = Approvers()
    doc = parse_spec_data(spec_doc())
    sigs = a.signatures(doc.data)
    qa_sig, reg_sig = sigs.signatures
    for spoilt in (replace(reg_sig, signed_at="2020-01-01T00:00:00Z"), replace(reg_sig, signer="Somebody Else")):
        with pytest.raises(ApprovalError, match="does not verify"):
            approve(doc, SignatureFile("specification", doc.sha256, (qa_sig, spoilt)), ring(a))
    # the QA signing twice, once calling itself the regulator: its key is not a regulator key
    fake = replace(qa_sig, role="regulator")
    with pytest.raises(ApprovalError, match="is a factory QA key"):
        approve(doc, SignatureFile("specification", doc.sha256, (qa_sig, fake)), ring(a))


def test_one_key_cannot_hold_both_roles() -> None:
    key = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(ApprovalError, match="different keys"):
        KeyRing([("qa", key), ("regulator", key)])


def test_a_specification_is_validated_with_its_lines() -> None:
    with pytest.raises(SpecError, match=r"<specification>:4: parameters.T.0.*out of order"):
        parse_spec("id: S\nproduct: P\nversion: 1\nparameters: {T: [{l: 5, h: 4}]}\nreason: r\n")
    with pytest.raises(SpecError, match="needs limits for it under parameters"):
        parse_spec("id: S\nproduct: P\nversion: 1\nreason: r\nrules: [{type: threshold, tag: T}]\n")


def test_diff_names_each_changed_parameter_with_old_and_new_value() -> None:
    old = spec_doc()
    new = spec_doc(version=2, hh=84.0, reason="HH 85 -> 84")
    new["materials"]["RM-001"] = {"tolerance_pct": 0.4}
    new["rules"][0]["deadband"] = 0.3
    new["parameters"]["EM-01.vacuum"] = [{"phases": ["emulsify"], "l": -0.09}]
    assert [(c.path, c.old, c.new) for c in diff(old, new)] == [
        ("materials.RM-001.tolerance_pct", 0.5, 0.4),
        ("parameters.EM-01.temperature[emulsify].hh", 85.0, 84.0),
        ("parameters.EM-01.vacuum[emulsify].l", None, -0.09),
        ("rules.threshold:EM-01.temperature.deadband", 0.2, 0.3),
    ]


def test_canonical_form_needs_a_json_value() -> None:
    with pytest.raises(NotCanonical):
        canonical_bytes({"a": {1, 2}})
