"""Training-set rendering in a process pool: ``tokenize_pairs(num_proc=N)`` gives the rows of one process."""

from __future__ import annotations

import multiprocessing

import pytest

from toolrm_rl.core.calls import ToolCall, ToolCatalog
from toolrm_rl.core.render import RenderSpec
from toolrm_rl.data.backbones import minilm_dir
from toolrm_rl.data.records import PairRecord
from toolrm_rl.model.train import tokenize_pairs

TOOLS = ToolCatalog.load([
    {"name": "get_weather", "description": "Weather for a city.", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}},
    {"name": "get_time", "description": "Local time in a city.", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}}, "required": ["city"]}},
])
CITIES = ["Paris", "Lyon", "Berlin", "Madrid", "Rome", "Oslo", "Vienna", "Prague", "Lisbon", "Dublin", "Athens"]


def _pairs() -> list[PairRecord]:
    """Queries with 1-3 negatives each (rows of a query share its chosen side); every fourth query so long
    that its inputs are cut to max_length (the cut count must not depend on where chunks split)."""
    pairs = []
    for q, city in enumerate(CITIES * 2):
        long = "please " * 200 if q % 4 == 0 else ""
        conv = [{"role": "user", "content": f"{long}What's the weather like in {city} today, in unit {q}?"}]
        negatives = [[ToolCall("get_time", {"city": city})], [ToolCall("get_weather", {"city": "Nowhere"})],
                     [ToolCall("get_weather", {"city": city}), ToolCall("get_time", {"city": city})]][:1 + q % 3]
        for k, wrong in enumerate(negatives):
            pairs.append(PairRecord(id=f"q{q}#{k}", tools=TOOLS, conversation=conv,
                                    chosen=[ToolCall("get_weather", {"city": city})], rejected=wrong))
    return pairs


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="the pool forks")
@pytest.mark.parametrize("group", [False, True])
def test_pool_rows_equal_one_process_rows(group):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    spec = RenderSpec(mode="plain", max_tokens=128, sep=" [SEP] ")
    pairs = _pairs()
    serial, serial_cut = tokenize_pairs(pairs, tokenizer, spec, 128, margin=0.5, group=group, num_proc=1)
    assert serial_cut > 0 and len(serial) == (len({p.id.split("#")[0] for p in pairs}) if group else len(pairs))
    for num_proc in (2, 3):
        pooled, pooled_cut = tokenize_pairs(pairs, tokenizer, spec, 128, margin=0.5, group=group, num_proc=num_proc)
        assert pooled.to_dict() == serial.to_dict() and pooled_cut == serial_cut


def test_an_input_past_the_model_length_is_cut_without_the_tokenizers_indexing_warning(caplog):
    """A context too long to fit is cut to max_length by tokenize_pairs itself (and counted as cut), so the
    tokenizer's "longer than the specified maximum ... indexing errors" warning must not reach the user."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())  # a fresh one: the warning is sent once per tokenizer
    conv = [{"role": "user", "content": "please " * 700 + "What's the weather in Paris?"}]
    pairs = [PairRecord(id="long", tools=TOOLS, conversation=conv, chosen=[ToolCall("get_weather", {"city": "Paris"})],
                        rejected=[ToolCall("get_time", {"city": "Paris"})])]
    spec = RenderSpec(mode="plain", max_tokens=128, sep=" [SEP] ")
    hf_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            rows, cut = tokenize_pairs(pairs, tokenizer, spec, 128, group=True, num_proc=1)
    finally:
        hf_logging.disable_propagation()
    assert cut == 2 and len(rows[0]["chosen_ids"]) == 128
    assert not [r for r in caplog.records if "maximum sequence length" in r.getMessage()]
