"""Differential test of our BFCL matcher against bfcl-eval's own ast_checker (the oracle).

The oracle is run on exactly the same decoded outputs; verdict and error_type must agree.
"""

from __future__ import annotations

import collections

from toolrm_rl.core.calls import calls_to_bfcl
from toolrm_rl.core.match import GroundTruth
from toolrm_rl.data.bfcl import SINGLE_TURN_CATEGORIES
from toolrm_rl.data.mutate import mutate


def _oracle_verdict(oracle, rec, calls):
    try:
        out = oracle(rec.meta["functions"], calls_to_bfcl(calls), rec.answer, rec.category)
    except Exception as err:  # noqa: BLE001 - the oracle crashes on some malformed outputs
        return None, f"crash:{type(err).__name__}"
    return bool(out["valid"]), "" if out["valid"] else out["error_type"]


def test_every_record_covered(bfcl_records):
    counts = collections.Counter(r.category for r in bfcl_records)
    assert set(counts) == set(SINGLE_TURN_CATEGORIES)
    assert len(bfcl_records) >= 2400


def test_ground_truth_passes_in_both_checkers(bfcl_records, bfcl_oracle):
    disagreements, both_reject = [], []
    for rec in bfcl_records:
        calls = rec.gold
        ours = GroundTruth(rec.tools, rec.answer, rec.category).check(calls)
        valid, error_type = _oracle_verdict(bfcl_oracle, rec, calls)
        if (ours.valid, ours.error_type) != (valid, error_type):
            disagreements.append((rec.id, ours, valid, error_type))
        elif not ours.valid:
            both_reject.append((rec.id, error_type))
    print(f"\n{len(bfcl_records)} records; rejected by both checkers (BFCL answers no output can satisfy): {both_reject}")
    assert not disagreements, disagreements[:5]
    # A handful of BFCL answers are unsatisfiable under BFCL's own checker (a required parameter
    # absent from the answer, an answer parameter missing from the schema, ints expected from a
    # Java ArrayList<any>); everything else must pass.
    assert len(both_reject) / len(bfcl_records) < 0.005


def test_mutated_outputs_agree_with_oracle(bfcl_records, bfcl_oracle):
    n = agree_valid = agree_type = crashes = 0
    kinds: collections.Counter = collections.Counter()
    error_types: collections.Counter = collections.Counter()
    for k, rec in enumerate(bfcl_records):
        truth = GroundTruth(rec.tools, rec.answer, rec.category)
        for operator, calls in mutate(rec.gold, rec.tools, seed=k,
                                      literal_values=rec.language != "python"):
            valid, error_type = _oracle_verdict(bfcl_oracle, rec, calls)
            if valid is None:
                crashes += 1
                continue
            ours = truth.check(calls)
            n += 1
            error_types[error_type or "valid"] += 1
            agree_valid += ours.valid == valid
            if ours.valid == valid and ours.error_type == error_type:
                agree_type += 1
            else:
                kinds[(operator, ours.error_type, error_type)] += 1
    print(f"\n{n} mutated outputs ({crashes} oracle crashes skipped): verdict agreement {agree_valid / n:.4%}, "
          f"error_type agreement {agree_type / n:.4%}; disagreements {kinds.most_common(10)}")
    print(f"oracle error types: {dict(error_types.most_common())}")
    assert n >= 10_000
    assert len(error_types) >= 12  # the mutations reach most of BFCL's error families
    assert agree_valid / n >= 0.99
    assert agree_type / n >= 0.99
