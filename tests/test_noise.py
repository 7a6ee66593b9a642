"""Noise robustness: deterministic perturbations, identity at level 0, correctness kept under renaming."""

from __future__ import annotations

import json
import random

import pytest
from typer.testing import CliRunner

from toolrm_rl.cli import app
from toolrm_rl.core.calls import ToolCall, ToolCatalog
from toolrm_rl.core.match import GroundTruth
from toolrm_rl.core.schema import check_calls
from toolrm_rl.data.records import PairRecord, load_pairs, save_pairs
from toolrm_rl.eval.noise import (PERTURBATIONS, NoiseConfig, evaluate_noise, perturb, perturb_all, rename_params,
                                  run_noise, typo_text)
from toolrm_rl.scoring import RulesScorer

FLIGHT = {"name": "book_flight", "description": "Book a flight between two cities on a date.",
          "parameters": {"type": "dict", "properties": {
              "origin": {"type": "string", "description": "City the flight leaves from."},
              "destination": {"type": "string", "description": "City the flight arrives in."},
              "date": {"type": "string", "description": "Departure date as YYYY-MM-DD."},
              "seats": {"type": "integer", "description": "Number of seats to book."}},
              "required": ["origin", "destination", "date"]}}
HOTEL = {"name": "book_hotel", "description": "Reserve a hotel room in a city for some nights.",
         "parameters": {"type": "dict", "properties": {
             "city": {"type": "string", "description": "City of the hotel."},
             "nights": {"type": "integer", "description": "How many nights to stay."}},
             "required": ["city", "nights"]}}
WEATHER = {"name": "get_weather", "description": "Current weather for a city.",
           "parameters": {"type": "dict", "properties": {"city": {"type": "string", "description": "The city name."}},
                          "required": ["city"]}}
CONV = [{"role": "system", "content": "You book travel."},
        {"role": "user", "content": "Please book two seats from Paris to Rome on 2024-05-01 and a hotel in Rome for three nights"}]
GOOD = [ToolCall("book_flight", {"origin": "Paris", "destination": "Rome", "date": "2024-05-01", "seats": 2}),
        ToolCall("book_hotel", {"city": "Rome", "nights": 3})]
ANSWER = [{"book_flight": {"origin": ["Paris"], "destination": ["Rome"], "date": ["2024-05-01"], "seats": [2]}},
          {"book_hotel": {"city": ["Rome"], "nights": [3]}}]


def pairs():
    base = dict(tools=ToolCatalog.load([FLIGHT, HOTEL]), conversation=CONV, chosen=GOOD, source="parallel")
    return [
        PairRecord(id="p0", rejected=[GOOD[0], ToolCall("book_hotel", {"city": "Rome", "nights": 2})],
                   error_type="value_error:others", **base),  # schema-valid, wrong value
        PairRecord(id="p1", rejected=[GOOD[0], ToolCall("book_hotel", {"city": "Rome", "nights": "3"})],
                   error_type="type_error:simple", **base),  # type error
        PairRecord(id="p2", rejected=[GOOD[0], ToolCall("book_hotel", {"city": "Rome"})],
                   error_type="simple_function_checker:missing_required", **base),
        PairRecord(id="p3", tools=ToolCatalog.load([WEATHER]), conversation=[{"role": "user", "content": "Weather in Oslo?"}],
                   chosen=[ToolCall("get_weather", {"city": "Oslo"})], rejected=[ToolCall("get_weather", {"town": "Oslo"})],
                   error_type="simple_function_checker:unexpected_param", source="simple"),
    ]


def rows(records):
    return [json.dumps(r.to_fc_rewardbench(), sort_keys=True) for r in records]


@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_perturbations_are_deterministic_and_level_zero_is_identity(kind):
    ps = pairs()
    first = perturb_all(ps, kind, 0.4, seed=3)
    assert rows(first) == rows(perturb_all(pairs(), kind, 0.4, seed=3))
    assert rows(perturb_all(ps, kind, 0.0, seed=3)) == rows(ps)
    assert rows(first) != rows(ps)  # the perturbation does something at 0.4
    assert rows(ps) == rows(pairs())  # inputs are not modified in place
    if kind != "shuffle_tools":  # two tools can only be swapped one way: the seed cannot matter there
        assert any(rows(perturb_all(ps, kind, 0.4, seed=s)) != rows(first) for s in range(4, 10))


def test_typos_touch_the_requested_share_of_words_of_the_last_user_message():
    text = "one two three four five six seven eight nine ten"
    noisy = typo_text(text, 0.2, random.Random(0))
    changed = [a != b for a, b in zip(text.split(), noisy.split())]
    assert sum(changed) == 2 and len(noisy.split()) == 10
    p = perturb(pairs()[0], "typos", 0.5, seed=0)
    assert p.conversation[0] == CONV[0] and p.conversation[1]["content"] != CONV[1]["content"]
    assert (p.chosen, p.rejected, p.tools) == (pairs()[0].chosen, pairs()[0].rejected, pairs()[0].tools)


def test_renamed_parameters_keep_chosen_right_and_rejected_wrong():
    for p in pairs():
        new, mapping = rename_params(p, 1.0, random.Random(1))
        assert mapping and all(old != name for names in mapping.values() for old, name in names.items())
        answer = ANSWER if p.id != "p3" else [{"get_weather": {"city": ["Oslo"]}}]
        new_answer = [{f: {mapping.get(f, {}).get(k, k): v for k, v in params.items()}} for item in answer
                      for f, params in item.items()]
        before, after = GroundTruth(p.tools, answer, p.source), GroundTruth(new.tools, new_answer, new.source)
        assert before.check(p.chosen).valid and after.check(new.chosen).valid
        assert not before.check(p.rejected).valid and not after.check(new.rejected).valid
        assert before.check(p.rejected).error_type == after.check(new.rejected).error_type
        for old_calls, new_calls in ((p.chosen, new.chosen), (p.rejected, new.rejected)):
            assert check_calls(old_calls, p.tools).categories == check_calls(new_calls, new.tools).categories
        for spec in new.tools:
            assert set(spec.required) <= set(spec.properties)


def test_shuffle_and_distractors_keep_the_original_tools():
    ps = pairs()
    shuffled = perturb(ps[0], "shuffle_tools", 1.0, seed=0)
    assert sorted(shuffled.tools.names()) == sorted(ps[0].tools.names())
    many = PairRecord(id="m", tools=ToolCatalog.load([{**WEATHER, "name": f"t{i}"} for i in range(6)]), conversation=CONV,
                      chosen=[], rejected=[])
    orders = {tuple(perturb(many, "shuffle_tools", 0.5, seed=s).tools.names()) for s in range(6)}
    assert len(orders) > 1
    for order in orders:  # 3 of the 6 tools moved, the others in place
        assert sum(a != b for a, b in zip(order, many.tools.names())) == 3
    with_extra = perturb_all(ps, "distractors", 0.2, seed=0)  # 2 distractors each, from other pairs' catalogs
    for before, after in zip(ps, with_extra):
        names = after.tools.names()
        assert set(before.tools.names()) <= set(names) and len(names) == len(set(names))
    assert with_extra[3].tools.names().count("book_flight") + with_extra[3].tools.names().count("book_hotel") == 2
    assert set(with_extra[0].tools.names()) == {"book_flight", "book_hotel", "get_weather"}  # only one other name exists


def test_rules_accuracy_is_unchanged_by_query_typos():
    ps = pairs()
    result = evaluate_noise(RulesScorer(), ps, perturbations=["typos", "rename_params", "distractors"],
                            levels=[0, 0.2, 0.4, 1.0])
    # p0 is schema-valid on both sides (a tie for rules); the other three are rules wins.
    assert result.accuracy["typos"] == [0.75] * 4
    assert result.ties["typos"] == [1] * 4
    assert result.accuracy["rename_params"] == [0.75] * 4


def test_run_noise_writes_reports_and_cli(tmp_path):
    data = save_pairs(pairs(), tmp_path / "pairs.jsonl", schema="fc_rewardbench")
    results = run_noise(NoiseConfig(data=str(data), levels=[0, 0.5], out=str(tmp_path / "out")))
    assert results[0].accuracy["typos"] == [0.75, 0.75]
    assert (tmp_path / "out" / "noise_rules.png").read_bytes()[:4] == b"\x89PNG"
    assert "| typos | 0.750 | 0.750 |" in (tmp_path / "out" / "report.md").read_text()
    cli = CliRunner().invoke(app, ["eval", "noise", "--data", str(data), "--scorer", "rules", "--levels", "0,0.4",
                                   "--perturbations", "typos,shuffle_tools", "--out", str(tmp_path / "cli"), "--json"])
    assert cli.exit_code == 0, cli.output
    out = json.loads(cli.output.strip().splitlines()[-1])
    assert out["rules"]["levels"] == [0.0, 0.4] and set(out["rules"]["accuracy"]) == {"typos", "shuffle_tools"}
    assert load_pairs(data)[1].n_loaded == 4
