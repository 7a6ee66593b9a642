"""The schema gate against BFCL's own verdicts: it must pass every answer BFCL accepts.

Evaluation-only use of the BFCL single-turn data shipped in bfcl-eval (skipped when it is absent).
Each gold answer is written as one concrete output (``concrete_calls``: the first acceptable value of
every parameter) and checked with the question's possible answer (``check_calls(..., answer=...)``).

Classes of gold answers our schema rules alone rejected (83 of 2,501 before the answer was taken
into account), and what BFCL does with each:

* a value outside the parameter's ``enum`` ('N/A', 'dontcare', 'all levels', 'Reggaeton', 'horror'
  for 'Horror', ...): BFCL never checks enums, its answer decides;
* a value of another type than the schema's (``True`` for a string, ``"dontcare"`` for an integer,
  ``"data['sales']"`` for an array, strings in an integer array): BFCL accepts a value of the type of
  its answer's first option (a "variable");
* an ``enum`` of scalars on an array (``metrics: []``): read as the allowed items.

Exceptions that remain, rejected by BFCL's checker just as by ours (the possible answer cannot be
satisfied as written: a required parameter with no acceptable value, a parameter missing from the
schema), so our gate must reject them too (and does):
``live_simple_106-63-0``, ``live_simple_112-68-0`` (required parameters whose acceptable values are
``[]``), ``live_multiple_507-149-4`` (required ``origin_airport`` only omittable),
``live_multiple_862-181-3`` (``journey_start_time`` is not in the schema), ``live_multiple_964-207-0``
(the answer names ``question``, the schema ``statement``).
"""

from __future__ import annotations

import collections

from toolrm_rl.core.calls import calls_to_bfcl
from toolrm_rl.core.match import GroundTruth
from toolrm_rl.core.schema import check_calls
from toolrm_rl.data.mutate import mutate

BFCL_REJECTS_ITS_OWN_ANSWER = {"live_simple_106-63-0", "live_simple_112-68-0", "live_multiple_507-149-4",
                               "live_multiple_862-181-3", "live_multiple_964-207-0"}


def _oracle_error(oracle, rec, calls) -> str | None:
    """BFCL's error_type ("" when valid), None when its checker crashes."""
    try:
        verdict = oracle(rec.meta["functions"], calls_to_bfcl(calls), rec.answer, rec.category)
    except Exception:  # noqa: BLE001 - BFCL's checker crashes on some outputs
        return None
    return "" if verdict["valid"] else verdict["error_type"]


def test_every_gold_answer_bfcl_accepts_passes_the_gate(bfcl_records, bfcl_oracle):
    gate_rejects, oracle_rejects = set(), {}
    for rec in bfcl_records:
        calls = rec.gold
        truth = GroundTruth(rec.tools, rec.answer, rec.category)
        report = check_calls(calls, rec.tools, language=rec.language, answer=truth)
        if not report.ok:
            gate_rejects.add(rec.id)
        error = _oracle_error(bfcl_oracle, rec, calls)
        if error:
            oracle_rejects[rec.id] = error
    print(f"\n{len(bfcl_records) - len(gate_rejects)}/{len(bfcl_records)} gold answers pass the gate; "
          f"rejected: {sorted(gate_rejects)}; BFCL rejects: {oracle_rejects}")
    assert gate_rejects <= set(oracle_rejects)  # nothing BFCL accepts is rejected
    assert gate_rejects == BFCL_REJECTS_ITS_OWN_ANSWER  # the documented exceptions, and only those
    # BFCL also rejects three Java answers for their values (simple_java_36, _64, _65: its decoder reads
    # the answer's own literals back as other values): the matcher's business, not the gate's.
    assert all(error.startswith("value_error") for rid, error in oracle_rejects.items() if rid not in gate_rejects)


def test_without_the_answer_every_rejection_is_a_value_the_answer_holds(bfcl_records):
    """Without a possible answer the gate is the schema alone: the gold answers it rejects are exactly
    those whose offending values BFCL's answer vouches for (or that BFCL rejects as well)."""
    rejected = collections.Counter()
    for rec in bfcl_records:
        calls = rec.gold
        report = check_calls(calls, rec.tools, language=rec.language)
        if report.ok or rec.id in BFCL_REJECTS_ITS_OWN_ANSWER:
            continue
        truth = GroundTruth(rec.tools, rec.answer, rec.category)
        for v in report.violations:
            assert v.category in ("type", "nested_type", "enum"), (rec.id, v)
            param = v.param.split("[")[0].split(".")[0]
            assert truth.accepts(v.function, param, calls[v.call_index].arguments[param]), (rec.id, v)
            rejected[v.category] += 1
    print(f"\nschema-only rejections of gold values BFCL's answers accept: {dict(rejected)}")


def test_mutated_outputs_bfcl_accepts_pass_the_gate(bfcl_records, bfcl_oracle):
    """Over ~40,000 mutated outputs: every output BFCL accepts passes the gate with its answer, and
    every one BFCL rejects as a wrong type in Java/JavaScript (a value that is not a source literal),
    a missing required parameter or a nested type error is rejected by the gate as well."""
    n = valid = 0
    schema_families = ("type_error:java", "type_error:js", "type_error:nested", "simple_function_checker:missing_required")
    missed = collections.Counter()
    for k, rec in enumerate(bfcl_records):
        truth = GroundTruth(rec.tools, rec.answer, rec.category)
        for operator, calls in mutate(rec.gold, rec.tools, seed=k,
                                      literal_values=rec.language != "python"):
            try:
                verdict = bfcl_oracle(rec.meta["functions"], calls_to_bfcl(calls), rec.answer, rec.category)
            except Exception:  # noqa: BLE001 - BFCL's checker crashes on some outputs
                continue
            n += 1
            ok = check_calls(calls, rec.tools, language=rec.language, answer=truth).ok
            if verdict["valid"]:
                valid += 1
                assert ok, (rec.id, operator, calls)
            elif verdict["error_type"] in schema_families and ok:
                missed[(rec.id, operator, verdict["error_type"])] += 1
    print(f"\n{n} mutated outputs, {valid} valid for BFCL")
    assert n >= 10_000 and valid >= 1_000
    assert not missed, missed.most_common(5)
