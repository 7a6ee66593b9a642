"""bench/bench_quality.py's evaluation of one trained model (the training side is the ``toolrm train`` CLI)."""

from __future__ import annotations

from toolrm_rl.core.calls import ToolCall, ToolCatalog
from toolrm_rl.data.backbones import minilm_dir
from toolrm_rl.data.records import PairRecord, save_pairs
from toolrm_rl.model import ToolRM

TOOLS = ToolCatalog.load([{"name": "invest", "description": "Invest an amount in a city's fund.", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "rate": {"type": "number"}},
    "required": ["city"]}}])


def _pair(i: int, text: str, chosen: dict, rejected: dict, error_type: str = "value_error:string") -> PairRecord:
    return PairRecord(id=f"p{i}", tools=TOOLS, conversation=[{"role": "user", "content": text}],
                      chosen=[ToolCall("invest", chosen)], rejected=[ToolCall("invest", rejected)],
                      error_type=error_type)


def test_evaluate_splits_schema_valid_value_errors_by_where_the_values_come_from(tmp_path, load_bench):
    """``rm:value_gold_verbatim`` counts schema-valid value errors whose gold is in the request and whose wrong
    value is not; ``rm:value_wrong_verbatim`` the reverse (the gold converts what the user wrote); pairs that
    fail the schema or are not value errors are in neither, and each accuracy is the model's own on its pairs."""
    pairs = [
        _pair(0, "Invest in Paris.", {"city": "Paris"}, {"city": "Rome"}),                       # gold verbatim
        _pair(1, "Invest in Lyon at 5%.", {"city": "Lyon", "rate": 0.05}, {"city": "Lyon", "rate": 5},
              "value_error:others"),                                                             # wrong verbatim
        _pair(2, "Invest in Nice.", {"city": "Nice"}, {"city": "Oslo"}),                         # gold verbatim
        _pair(3, "Invest in Metz.", {"city": "Metz"}, {"city": 7}, "type_error:simple"),         # fails the schema
        _pair(4, "Invest in Pau.", {"city": "Pau"}, {"city": "Dax"}, "wrong_count"),             # not a value error
    ]
    data = save_pairs(pairs, tmp_path / "dev.jsonl")
    rm = ToolRM.from_pretrained(minilm_dir(), num_layers=1)  # an untrained head: any ordering will do
    rm.model.save_pretrained(tmp_path / "rm")
    rm.tokenizer.save_pretrained(tmp_path / "rm")
    row = load_bench("bench_quality").evaluate(tmp_path / "rm", str(data))
    assert row["n_value_gold_verbatim"] == 2 and row["n_value_wrong_verbatim"] == 1
    assert row["n_schema_valid"] == 4
    reloaded = ToolRM.from_pretrained(tmp_path / "rm")
    scores = [reloaded.score([p.chosen_example(), p.rejected_example()]) for p in pairs]
    wins = [chosen > rejected for chosen, rejected in scores]
    assert row["rm:value_gold_verbatim"] == round((wins[0] + wins[2]) / 2, 4)
    assert row["rm:value_wrong_verbatim"] == float(wins[1])
